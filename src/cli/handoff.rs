//! Handing a command to `muxmed-torch`, the binary beside `muxmed` that links libtorch.
//!
//! `muxmed` replaces itself with `muxmed-torch` (exec: same process id, so signals, exit
//! status and `--resume` hints behave as if `muxmed` had run the command), passing the id of
//! the sources it was built from. `muxmed-torch` refuses to run for a `muxmed` built from
//! other sources: a stale `muxmed-torch` (after `cargo build --bin muxmed`, say) would train
//! with old code without a word.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{commands, finish, Command};

/// Set by `muxmed` on the command it hands over: the [`SOURCE_ID`] of its build.
pub const HANDOFF_ENV: &str = "MUXMED_HANDED_OVER_BY";

/// A hash of the sources a binary was built from (src/, Cargo.toml, Cargo.lock, build.rs;
/// computed by build.rs).
pub const SOURCE_ID: &str = env!("MUXMED_SOURCE_ID");

/// Where `muxmed-torch` should be: beside the running binary.
pub fn torch_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let name = format!("muxmed-torch{}", std::env::consts::EXE_SUFFIX);
    Ok(exe.parent().unwrap_or(Path::new(".")).join(name))
}

/// Runs `cmd` in `muxmed-torch`; returns only if that cannot start. Without a
/// `muxmed-torch`, `doctor` still reports everything else.
pub(super) fn to_torch_binary(cmd: &Command) -> ExitCode {
    let path = match torch_binary() {
        Ok(p) => p,
        Err(e) => return finish(Err(anyhow::anyhow!("cannot locate this binary: {e}"))),
    };
    if path.is_file() {
        return exec(&path);
    }
    let missing = format!(
        "there is no {}: build both binaries with `make build` (or `cargo build --release`)",
        path.display()
    );
    if let Command::Doctor(a) = cmd {
        return finish(commands::doctor(a, || {
            let check = crate::doctor::Check {
                name: "libtorch",
                value: format!("not available to this muxmed: {missing}"),
            };
            (vec![check], false)
        }));
    }
    let name = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    finish(Err(anyhow::anyhow!(
        "`muxmed {name}` needs libtorch, which runs in muxmed-torch, and {missing}"
    )))
}

#[cfg(unix)]
fn exec(path: &Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    // Keep the name the user typed, so clap's usage lines say `muxmed`.
    let arg0 = args.next().unwrap_or_else(|| "muxmed".into());
    let e = std::process::Command::new(path)
        .arg0(arg0)
        .args(args)
        .env(HANDOFF_ENV, SOURCE_ID)
        .exec();
    finish(Err(
        anyhow::Error::new(e).context(format!("starting {}", path.display()))
    ))
}

/// In `muxmed-torch`: an error when the `muxmed` that handed over the command was built
/// from other sources.
#[cfg(feature = "torch")]
pub(super) fn check_caller() -> anyhow::Result<()> {
    match std::env::var(HANDOFF_ENV) {
        Ok(caller) if caller != SOURCE_ID => anyhow::bail!(
            "{} was built from other sources than the muxmed that handed it this command \
             (source {SOURCE_ID} here, {caller} there): rebuild both with `make build` \
             (or `cargo build --release`)",
            torch_binary().map_or_else(|_| "muxmed-torch".into(), |p| p.display().to_string())
        ),
        _ => Ok(()),
    }
}
