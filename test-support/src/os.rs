//! What the servers need from the system: running as the `postgres` (or `mysql`) user when we
//! are root (none runs as root), running a program to completion, and a free port.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The `postgres` user's uid and gid.
pub(crate) fn postgres_user_ids() -> (u32, u32) {
    user_ids("postgres")
}

/// A system user's uid and gid (`postgres`, `mysql`: created by the servers' packages).
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "running as root, the test servers need the `{user}` user (Debian: created \
                     by `apt-get install postgresql` and `apt-get install mariadb-server`)"
                )
            })
    };
    (id("-u"), id("-g"))
}

/// Gives `path` to the `postgres` user (we are root; the servers run as `postgres`).
pub(crate) fn give_to_postgres(path: &Path) {
    give_to(path, "postgres");
}

/// Gives `path` to `user` (we are root; the servers do not run as root).
pub(crate) fn give_to(path: &Path, user: &str) {
    let (uid, gid) = user_ids(user);
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("give {} to the {user} user: {e}", path.display()));
}

/// Runs `command` to completion; panics with its output if it fails.
pub(crate) fn run(command: &mut Command, what: &str) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port free right now on 127.0.0.1 (the kernel picks it).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}
