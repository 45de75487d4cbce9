//! Dev-only test support: a throwaway PostgreSQL cluster per test process and a fresh,
//! migrated database per test.
//!
//! - `DATABASE_URL` set: that server is used; each test gets its own database on it, dropped
//!   when the test passes and kept (its name printed) when it fails.
//! - Otherwise: one cluster is created per test process from the installed PostgreSQL binaries
//!   (`PATH` or `/usr/lib/postgresql/*/bin`; as root they run as the `postgres` user, since
//!   PostgreSQL refuses to run as root). A reaper process stops it and removes its files when
//!   the test process exits, however it exits (a panicking test, Ctrl-C, a kill).
//! - Neither: the first test panics with a message saying what to install or set.
//!
//! Database names are derived from the test's name (the test harness names the thread that
//! runs it), so tests never share a database and no test picks names by hand.
//!
//! Tests that break the server on purpose (restart it, kill connections wholesale) ask for a
//! cluster of their own with [`Server::private`]: it is always started from the installed
//! binaries, even when `DATABASE_URL` is set, so a user's server is never restarted. It is
//! stopped and removed when dropped (or when the process exits). [`PgBouncer`] starts Debian's
//! `pgbouncer` in front of such a cluster.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The PostgreSQL server tests run against.
#[derive(Debug)]
pub struct Server {
    /// `postgres://user@host:port` without a database name.
    base_url: String,
    /// Query string of `DATABASE_URL` (e.g. `?sslmode=disable`), kept for every database.
    query: String,
    /// The cluster this process started, if it started one.
    cluster: Option<Cluster>,
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
    /// Held open until the process exits: the reaper cleans up when it reads EOF.
    _reaper_stdin: Mutex<ChildStdin>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The server of this test process, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server::external(&url),
        _ => Server::private(),
    })
}

impl Server {
    fn external(url: &str) -> Server {
        assert!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "DATABASE_URL must be a PostgreSQL URL for the tests (got {url:?})"
        );
        let (without_query, query) = match url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (url, String::new()),
        };
        // Strip the database name: each test gets its own.
        let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
        let base_url = match without_query[scheme_end..].find('/') {
            Some(slash) => without_query[..scheme_end + slash].to_owned(),
            None => without_query.to_owned(),
        };
        Server {
            base_url,
            query,
            cluster: None,
        }
    }

    fn of_cluster(cluster: Cluster) -> Server {
        Server {
            base_url: format!("postgres://postgres@127.0.0.1:{}", cluster.port),
            query: String::new(),
            cluster: Some(cluster),
        }
    }

    /// A throwaway cluster of the caller's own, started now from the installed binaries even
    /// when `DATABASE_URL` is set: for tests that restart the server, kill its connections or
    /// put a proxy in front of it. It is stopped and its files removed when the returned
    /// `Server` is dropped (a panicking test too), or at the latest when the process exits.
    ///
    /// # Panics
    ///
    /// When PostgreSQL's server binaries are not installed (the message says what to install).
    pub fn private() -> Server {
        Server::of_cluster(Cluster::start())
    }

    /// A fresh database on this server named after `label`, migrated. Dropped with the
    /// returned [`TestDb`] as [`TestDb::new`]'s are.
    pub async fn database(&self, label: &str) -> TestDb {
        let db = self.empty_database(label).await;
        let conn = db.connect(1).await;
        migration::Migrator::up(&conn, None)
            .await
            .expect("migrate the test database");
        conn.close().await.expect("close the migration connection");
        db
    }

    /// A fresh database on this server named after `label`, without the migrations.
    pub async fn empty_database(&self, label: &str) -> TestDb {
        let name = database_name(label);
        let admin_url = self.url("postgres");
        let admin = connect(&admin_url, 1).await;
        // Names are derived here from test names ([a-z0-9_] only), never from test data.
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .expect("drop a leftover test database");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        admin.close().await.expect("close the admin connection");
        TestDb {
            url: self.url(&name),
            name,
            // A cluster of our own disappears whole; on a shared server, clean up.
            drop_via: self.cluster.is_none().then_some(admin_url),
        }
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}{}", self.base_url, self.query)
    }

    /// The cluster this process started, or `None` when `DATABASE_URL` was given.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }
}

impl Cluster {
    /// Creates and starts a new cluster from the installed binaries, with a reaper that stops
    /// it and removes its files when this `Cluster` is dropped or the process exits.
    fn start() -> Cluster {
        let bin_dir = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server to test against: install PostgreSQL's server binaries \
                 (Debian/Ubuntu: `apt-get install postgresql`; they are looked for on PATH and in \
                 /usr/lib/postgresql/*/bin) or set DATABASE_URL to a PostgreSQL server on which \
                 the tests may create databases"
            )
        });
        let as_root = is_root();
        let dir = temp_dir("pg");
        // The reaper first, so the directory is removed even if initdb or start fails.
        let reaper = spawn_reaper(&dir, &bin_dir, as_root);
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
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        let cluster = Cluster {
            dir,
            bin_dir,
            port,
            _reaper_stdin: Mutex::new(reaper),
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

/// A directory of its own under the system's temp dir, named `sea-orm-idempotent-<what>-...`.
fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sea-orm-idempotent-{what}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Gives `path` to the `postgres` user (we are root; the servers run as `postgres`).
fn give_to_postgres(path: &Path) {
    let (uid, gid) = postgres_user_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("give {} to the postgres user: {e}", path.display()));
}

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
    _reaper_stdin: ChildStdin,
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
        let dir = temp_dir("pgbouncer");
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
        let reaper = spawn_process_reaper(child.id(), &dir);
        let mut bouncer = PgBouncer {
            dir,
            port,
            child,
            _reaper_stdin: reaper,
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

/// One test's own database, created empty and migrated.
pub struct TestDb {
    /// The database's name, derived from the test's name.
    pub name: String,
    /// Its URL, to hand to other connections or processes.
    pub url: String,
    /// The admin URL to drop it through, on a shared server; `None` on a cluster of our own,
    /// which disappears whole.
    drop_via: Option<String>,
}

impl TestDb {
    /// A fresh database for the running test (named after the test's thread), migrated.
    pub async fn new() -> TestDb {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("main").to_owned();
        TestDb::named(&test).await
    }

    /// A fresh database named after `label`, migrated. For a test that needs two.
    pub async fn named(label: &str) -> TestDb {
        server().database(label).await
    }

    /// A fresh database named after `label`, without the migrations (for tests of what
    /// happens when they were not run).
    pub async fn empty(label: &str) -> TestDb {
        server().empty_database(label).await
    }

    /// A new pool of at most `max_connections` connections to this database.
    pub async fn connect(&self, max_connections: u32) -> DatabaseConnection {
        connect(&self.url, max_connections).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if self.drop_via.is_some() {
                eprintln!("test database kept for inspection: {}", self.url);
            } else {
                eprintln!(
                    "test database {} goes with the throwaway cluster when the tests exit; \
                     set DATABASE_URL to keep a failed test's database for inspection",
                    self.url
                );
            }
            return;
        }
        let Some(admin_url) = self.drop_via.clone() else {
            return;
        };
        let name = self.name.clone();
        // Drop cannot be async, and may run inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let admin = connect(&admin_url, 1).await;
                    admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A pool to `url` with at most `max_connections` connections, quiet and quick to fail.
pub async fn connect(url: &str, max_connections: u32) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// `t_<test name, sanitised, shortened>_<crc of the full name>`: at most 63 bytes (PostgreSQL's
/// identifier limit), distinct for distinct test names.
fn database_name(test: &str) -> String {
    let sanitized: String = test
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    let tail: String = sanitized
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "t_{}_{:08x}",
        tail.trim_matches('_'),
        fnv1a(test.as_bytes())
    )
}

/// A small stable hash, so shortened names stay distinct.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn postgres_user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "running as root, PostgreSQL needs the `postgres` user (Debian: installed \
                     with `apt-get install postgresql`)"
                )
            })
    };
    (id("-u"), id("-g"))
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

fn run(command: &mut Command, what: &str) {
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
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}

/// Starts a process that waits for this one to exit (its stdin reaches EOF when our end of
/// the pipe closes, whatever way we exit), then stops the cluster and removes its directory.
/// It runs in its own process group so a Ctrl-C aimed at the tests does not kill it first.
// The reaper outlives this process by design, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn spawn_reaper(dir: &Path, bin_dir: &Path, as_root: bool) -> ChildStdin {
    use std::os::unix::process::CommandExt;
    let pg_ctl = bin_dir.join("pg_ctl");
    let run_as = if as_root {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "cat >/dev/null; \
         if [ -d \"$1/data\" ]; then {run_as}\"$2\" -D \"$1/data\" -m immediate -w stop >/dev/null 2>&1; fi; \
         rm -rf \"$1\""
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("reaper")
        .arg(dir)
        .arg(pg_ctl)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster reaper");
    let mut stdin = child.stdin.take().expect("reaper stdin");
    // Nothing is ever written but this; it proves the pipe is open.
    stdin.flush().expect("reaper pipe");
    stdin
}

/// Like [`spawn_reaper`], for one process of ours (`pgbouncer`): when this process exits
/// without having stopped it, the reaper kills it and removes `dir`.
#[allow(clippy::zombie_processes)]
fn spawn_process_reaper(pid: u32, dir: &Path) -> ChildStdin {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat >/dev/null; kill -KILL \"$1\" 2>/dev/null; rm -rf \"$2\"")
        .arg("reaper")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the pgbouncer reaper");
    child.stdin.take().expect("reaper stdin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_valid_and_distinct() {
        let a = database_name("tests::create::many_tasks_race_on_the_same_keys");
        let b = database_name("tests::create::many_tasks_race_on_the_same_keys_naive");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert_eq!(database_name("x"), database_name("x"));
    }

    #[test]
    fn external_urls_lose_their_database_but_keep_options() {
        let server = Server::external("postgres://u:p@db:5432/app?sslmode=disable");
        assert_eq!(
            server.url("t_x"),
            "postgres://u:p@db:5432/t_x?sslmode=disable"
        );
        let server = Server::external("postgres://u@db");
        assert_eq!(server.url("t_x"), "postgres://u@db/t_x");
    }
}
