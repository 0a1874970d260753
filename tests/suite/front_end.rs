//! The two binaries: `muxmed` runs what needs no libtorch itself and hands the rest, whole,
//! to `muxmed-torch` beside it (src/cli/handoff.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder inside target/ holding a hard link to the `muxmed` under test (the binary looks
/// for `muxmed-torch` beside itself, so it must be run from a folder the test controls).
fn front_end_alone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = dir.path().join("muxmed");
    std::fs::hard_link(env!("CARGO_BIN_EXE_muxmed"), &exe).unwrap();
    (dir, exe)
}

/// A stand-in `muxmed-torch` that prints its arguments and the handoff variable, exit 7.
#[cfg(unix)]
fn fake_torch_binary(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("muxmed-torch");
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"args: $*\"\necho \"caller: $MUXMED_HANDED_OVER_BY\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(exe: &Path, args: &[&str], cwd: &Path) -> (i32, String, String) {
    let o = Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[cfg(unix)]
#[test]
fn libtorch_commands_are_handed_over_whole_with_the_exit_status() {
    let (dir, exe) = front_end_alone();
    fake_torch_binary(dir.path());
    let (code, out, err) = run(
        &exe,
        &[
            "train",
            "--pipeline",
            "chestxray-demo",
            "--set",
            "train.epochs=1",
        ],
        dir.path(),
    );
    assert_eq!(code, 7, "{out}{err}");
    assert!(
        out.contains("args: train --pipeline chestxray-demo --set train.epochs=1"),
        "{out}"
    );
    assert!(
        out.contains(&format!("caller: {}", muxmed::cli::SOURCE_ID)),
        "{out}"
    );
    // Sub-commands that need libtorch only in one form.
    for args in [
        vec!["evaluate", "--run", "reports/x"],
        vec!["bench", "model", "--iters", "1"],
        vec!["search", "run"],
        vec!["doctor"],
    ] {
        let (code, out, _) = run(&exe, &args, dir.path());
        assert_eq!(code, 7, "{args:?}: {out}");
        assert!(out.contains(&format!("args: {}", args.join(" "))), "{out}");
    }
}

#[cfg(unix)]
#[test]
fn commands_without_libtorch_run_in_the_front_end() {
    let (dir, exe) = front_end_alone();
    fake_torch_binary(dir.path());
    let points = dir.path().join("points.csv");
    std::fs::write(&points, "error,madds\n0.2,3\n0.3,1\n0.4,4\n").unwrap();
    let (code, out, err) = run(
        &exe,
        &[
            "search",
            "front",
            "--points",
            "points.csv",
            "--ref",
            "1,5",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("args:"), "handed over: {out}");
    assert!(out.contains("\"hypervolume\""), "{out}");
    // clap's own errors come from the front end too, with the usual tips.
    let (code, _, err) = run(&exe, &["trian"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("a similar subcommand exists: 'train'"),
        "{err}"
    );
}

#[test]
fn without_muxmed_torch_a_libtorch_command_says_how_to_build_it() {
    let (dir, exe) = front_end_alone();
    let (code, out, err) = run(&exe, &["train"], dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let missing = dir.path().join("muxmed-torch");
    assert!(
        err.contains("`muxmed train` needs libtorch")
            && err.contains(&missing.display().to_string())
            && err.contains("make build"),
        "{err}"
    );
    // doctor still reports the rest, and says libtorch is not available.
    let (code, out, _) = run(&exe, &["doctor"], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("libtorch") && out.contains("not available"),
        "{out}"
    );
    assert!(out.contains("reports"), "{out}");
}

/// What the dynamic loader loads for `BINARY --version` (LD_DEBUG=libs lists each library
/// it initialises).
#[cfg(all(feature = "torch", target_os = "linux"))]
fn loaded_libraries(binary: &str) -> String {
    let o = Command::new(binary)
        .arg("--version")
        .env("LD_DEBUG", "libs")
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(all(feature = "torch", target_os = "linux"))]
#[test]
fn muxmed_starts_without_libtorch_and_muxmed_torch_with_it() {
    let front = loaded_libraries(env!("CARGO_BIN_EXE_muxmed"));
    let torch = loaded_libraries(env!("CARGO_BIN_EXE_muxmed-torch"));
    assert!(torch.contains("calling init:") && torch.contains("libtorch_cpu.so"));
    assert!(front.contains("calling init:"), "{front}");
    assert!(
        !front.contains("libtorch_cpu") && !front.contains("libc10"),
        "{front}"
    );
}

#[cfg(feature = "torch")]
#[test]
fn muxmed_torch_refuses_a_caller_built_from_other_sources() {
    let torch = env!("CARGO_BIN_EXE_muxmed-torch");
    let o = Command::new(torch)
        .arg("--version")
        .env("MUXMED_HANDED_OVER_BY", "0123456789abcdef")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("built from other sources") && err.contains("0123456789abcdef"),
        "{err}"
    );
    let o = Command::new(torch)
        .arg("--version")
        .env("MUXMED_HANDED_OVER_BY", muxmed::cli::SOURCE_ID)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
