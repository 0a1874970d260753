//! `muxmed-torch`: the whole command line ([`muxmed::cli`]) with libtorch linked. `muxmed`
//! hands it the commands that need libtorch; run directly, it runs every command.

fn main() -> std::process::ExitCode {
    muxmed::cli::with_torch()
}
