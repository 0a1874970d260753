//! `muxmed`: the command line ([`muxmed::cli`]). Commands that need libtorch are handed to
//! `muxmed-torch` beside this binary, so the others start without loading libtorch.

fn main() -> std::process::ExitCode {
    muxmed::cli::front_end()
}
