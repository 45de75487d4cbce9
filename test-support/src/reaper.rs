//! The reaper: a process that cleans up after this one however it exits.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

/// Held open until this process exits (or the holder is dropped): the reaper process reads
/// its pipe, and when the read reaches EOF (our end closed, whatever way we exited) it runs
/// its stop command and removes its directory.
#[derive(Debug)]
pub(crate) struct Reaper(#[allow(dead_code)] ChildStdin);

impl Reaper {
    /// Starts a reaper that, once this process exits or the returned `Reaper` is dropped,
    /// runs `stop` (a program and its arguments; its failure is ignored) and then removes
    /// `dir`. It runs in its own process group so a Ctrl-C aimed at the tests does not kill it
    /// first.
    // The reaper outlives this process by design, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn spawn(dir: &Path, stop: &[OsString]) -> Reaper {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("cat >/dev/null; dir=$1; shift; \"$@\" >/dev/null 2>&1; rm -rf \"$dir\"")
            .arg("reaper")
            .arg(dir)
            .args(stop)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a reaper");
        let mut stdin = child.stdin.take().expect("reaper stdin");
        // Nothing is ever written but this; it proves the pipe is open.
        stdin.flush().expect("reaper pipe");
        Reaper(stdin)
    }
}
