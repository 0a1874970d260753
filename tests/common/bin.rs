//! The `muxmed` binary as a test runs it: from the crate's folder, as a user of the README
//! does (a test that works elsewhere sets its own `current_dir`).

/// A `muxmed` command ready for its arguments.
pub fn muxmed() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}
