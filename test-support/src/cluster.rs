//! A PostgreSQL cluster started by this test process from the installed binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::os::{give_to_postgres, is_root, run};
use crate::reaper::Reaper;
use crate::temp::unique_dir;

/// Whether a cluster's commits survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: a commit waits for no
    /// disk. The tests' setting: they check behaviour, and a crash only loses a throwaway
    /// cluster.
    Off,
    /// PostgreSQL's defaults (all three on): every commit waits for its WAL flush, as in
    /// production. The benchmark's headline setting, so the durable commit's cost is measured.
    Default,
}

/// A cluster started by this test process.
#[derive(Debug)]
pub struct Cluster {
    /// Directory holding the data directory, the socket and the log.
    pub dir: PathBuf,
    /// Directory of `pg_ctl`, `postgres`, ...
    pub bin_dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Stops the cluster and removes `dir` when this process exits.
    _reaper: Reaper,
}

impl Cluster {
    /// Creates and starts a new cluster from the installed binaries, with a reaper that stops
    /// it and removes its files when this `Cluster` is dropped or the process exits. Commits
    /// are not durable ([`Durability::Off`]): the tests want speed, not crash safety.
    pub(crate) fn start() -> Cluster {
        Cluster::start_with(Durability::Off)
    }

    /// As [`Cluster::start`], with the given durability.
    pub(crate) fn start_with(durability: Durability) -> Cluster {
        let bin_dir = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server to test against: install PostgreSQL's server binaries \
                 (Debian/Ubuntu: `apt-get install postgresql`; they are looked for on PATH and in \
                 /usr/lib/postgresql/*/bin) or set DATABASE_URL to a PostgreSQL server on which \
                 the tests may create databases"
            )
        });
        let as_root = is_root();
        let dir = unique_dir("pg");
        // The reaper first, so the directory is removed even if initdb or start fails. It
        // stops the server the fastest way (`-m immediate`); a missing data dir (initdb never
        // ran) only makes that step fail quietly.
        let mut stop: Vec<OsString> = Vec::new();
        if as_root {
            stop.extend(["runuser", "-u", "postgres", "--"].map(OsString::from));
        }
        stop.push(bin_dir.join("pg_ctl").into());
        stop.extend(["-D".into(), dir.join("data").into()]);
        stop.extend(["-m", "immediate", "-w", "stop"].map(OsString::from));
        let reaper = Reaper::spawn(&dir, &stop);
        if as_root {
            give_to_postgres(&dir);
        }
        let data = dir.join("data");
        run(
            pg_command(&bin_dir, "initdb", as_root)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .args(["--locale=C"]),
            "initdb",
        );
        let port = crate::os::free_port();
        let durability = match durability {
            Durability::Off => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Default => "",
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{durability}",
            dir.display()
        );
        let cluster = Cluster {
            dir,
            bin_dir,
            port,
            _reaper: reaper,
        };
        cluster.pg_ctl(&["-o", &options, "start"]);
        cluster
    }

    /// Runs `pg_ctl` with `args` on this cluster (as the `postgres` user when root), e.g.
    /// `["restart", "-m", "fast"]`. Waits for the operation to finish (`-w`).
    ///
    /// # Panics
    ///
    /// When `pg_ctl` fails (its output is in the message).
    pub fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        run(
            pg_command(&self.bin_dir, "pg_ctl", is_root())
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60"])
                .args(args),
            "pg_ctl",
        );
    }

    /// Restarts the server the way an operator's `systemctl restart` does (`pg_ctl restart
    /// -m fast`): every session is terminated (SQLSTATE 57P01, open transactions roll back),
    /// the server stops, and it starts again with the same options. Returns once it accepts
    /// connections again. Blocking: call it from `tokio::task::spawn_blocking` in async tests.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "restart"]);
    }
}

/// The directory of `initdb` and `pg_ctl`: on `PATH`, else the newest of Debian's
/// `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A command running a PostgreSQL binary, as `postgres` when we are root.
fn pg_command(bin_dir: &Path, program: &str, as_root: bool) -> Command {
    let program = bin_dir.join(program);
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
