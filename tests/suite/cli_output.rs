//! What the binary does with its standard output: a reader that went away
//! (`muxmed ... | head`) ends it quietly, as it ends other Unix tools.

#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_muxmed_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    // A pipe whose read end is closed before muxmed starts: its first write fails for sure.
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors; the read end is closed at once and the write
    // end is owned by the OwnedFd handed to the child.
    let write_end = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        OwnedFd::from_raw_fd(fds[1])
    };
    let out = crate::muxmed()
        .args(["config", "--pipeline", "chestxray"])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
