//! Debian's `pgbouncer` in front of a [`Cluster`], for the tests of pooling modes.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::os::{free_port, give_to_postgres, is_root, postgres_user_ids};
use crate::reaper::Reaper;
use crate::temp::unique_dir;

/// The environment variable that turns a missing `pgbouncer` into a test failure (CI sets it
/// to `1`); without it, PgBouncer tests on a machine without `pgbouncer` print a loud line and
/// pass without running.
pub const REQUIRE_PGBOUNCER: &str = "SEA_ORM_IDEMPOTENT_REQUIRE_PGBOUNCER";

/// How PgBouncer hands server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A client keeps one server connection from connect to disconnect (`pool_mode =
    /// session`): everything PostgreSQL offers works, session-scoped locks included.
    Session,
    /// A client holds a server connection only for one transaction (`pool_mode =
    /// transaction`): session state (session-scoped locks, `SET`, protocol-level prepared
    /// statements) stays on a server connection that other clients get next.
    Transaction,
}

impl PoolMode {
    fn setting(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// Debian's `pgbouncer` running in front of a [`Cluster`], on a free port, from a temp dir of
/// its own, as the `postgres` user when we are root (it refuses to run as root). Dropping it
/// (a panicking test too) stops it and removes the dir; a reaper does the same if the process
/// dies without dropping it.
#[derive(Debug)]
pub struct PgBouncer {
    /// Directory of its configuration, log and pid file.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    _reaper: Reaper,
}

impl PgBouncer {
    /// Whether `pgbouncer` is installed. When it is not, prints a loud line naming the package
    /// and returns `false`, so the calling test can pass without running; unless
    /// [`REQUIRE_PGBOUNCER`] is `1` (CI), in which case a missing `pgbouncer` is a failure.
    ///
    /// # Panics
    ///
    /// When `pgbouncer` is missing and [`REQUIRE_PGBOUNCER`] is `1`.
    pub fn installed() -> bool {
        if find_pgbouncer().is_some() {
            return true;
        }
        let required = std::env::var(REQUIRE_PGBOUNCER).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{REQUIRE_PGBOUNCER}=1 but `pgbouncer` is not installed: install the Debian \
             package `pgbouncer` (`apt-get install pgbouncer`)"
        );
        // Straight to the process's stderr: the test harness captures `eprintln!` of passing
        // tests, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED: `pgbouncer` is not installed, so this PgBouncer test did not run. \
             Install the Debian package `pgbouncer` (`apt-get install pgbouncer`) to run it; set \
             {REQUIRE_PGBOUNCER}=1 to make its absence a failure. !!!!!\n"
        );
        false
    }

    /// Starts `pgbouncer` in front of `cluster` in `mode`, with at most `server_connections`
    /// server connections per database and user (`default_pool_size`), and returns once it
    /// accepts connections. Check [`PgBouncer::installed`] first.
    ///
    /// # Panics
    ///
    /// When `pgbouncer` is not installed or does not start (its log is in the message).
    pub fn start(cluster: &Cluster, mode: PoolMode, server_connections: u32) -> PgBouncer {
        let program = find_pgbouncer().expect(
            "`pgbouncer` is not installed (Debian: `apt-get install pgbouncer`); \
             check PgBouncer::installed() first",
        );
        let as_root = is_root();
        let dir = unique_dir("pgbouncer");
        let port = free_port();
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             admin_users = postgres\n\
             pool_mode = {mode}\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 1000\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            pg_port = cluster.port,
            dir = dir.display(),
            mode = mode.setting(),
        );
        let config_path = dir.join("pgbouncer.ini");
        std::fs::write(&config_path, config).expect("write pgbouncer.ini");
        // `trust` still needs the user listed.
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("write userlist");
        let mut command = Command::new(program);
        command.arg(&config_path);
        if as_root {
            use std::os::unix::process::CommandExt;
            for path in [&dir, &config_path, &dir.join("userlist.txt")] {
                give_to_postgres(path);
            }
            let (uid, gid) = postgres_user_ids();
            command.uid(uid).gid(gid);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start pgbouncer: {e}"));
        let stop = ["kill", "-KILL", &child.id().to_string()].map(OsString::from);
        let reaper = Reaper::spawn(&dir, &stop);
        let mut bouncer = PgBouncer {
            dir,
            port,
            child,
            _reaper: reaper,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    /// Waits (bounded) until the port accepts connections, failing early if it exited.
    fn wait_until_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited at startup ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not listen within 30 s:\n{}",
                self.log()
            );
            // Startup polling, as `pg_ctl -w` does; nothing else to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of database `name` through this PgBouncer.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// PgBouncer's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGKILL: nothing to flush; the server sees its connections close and rolls back.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `pgbouncer` on `PATH` or where Debian installs it.
fn find_pgbouncer() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbouncer"));
    on_path
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|path| path.is_file())
}
