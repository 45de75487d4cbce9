//! The MySQL server the MySQL tests run against: [`MYSQL_URL`]'s, or a throwaway MariaDB
//! started by this test process from the installed binaries (Debian: `mariadb-server`).
//!
//! The throwaway server gets a data directory of its own under the temp dir, a free port on
//! 127.0.0.1, and runs as the `mysql` user when we are root (`--user=mysql`). The reaper (the
//! same one as PostgreSQL's cluster) kills it and removes its directory when this process
//! exits, however it exits.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use migration::MigratorTrait;
use sea_orm::ConnectionTrait;

use crate::database::{TestDb, database_name};
use crate::os::{give_to, is_root, run};
use crate::pool::connect;
use crate::reaper::Reaper;
use crate::temp::unique_dir;

/// The environment variable naming an existing MySQL or MariaDB server for the tests
/// (`mysql://root:secret@127.0.0.1:3306`); each test creates its own database there.
pub const MYSQL_URL: &str = "MYSQL_DATABASE_URL";

/// The MySQL server of this test process: [`MYSQL_URL`]'s, or a MariaDB of our own.
#[derive(Debug)]
pub struct MySqlServer {
    /// `mysql://user@host:port` without a database name.
    base_url: String,
    /// The server this process started, if it started one.
    own: Option<MariaDb>,
}

static SERVER: OnceLock<Option<MySqlServer>> = OnceLock::new();

impl MySqlServer {
    /// The server of this test process, started on first use; `None` (after a loud line on
    /// stderr) when there is neither [`MYSQL_URL`] nor an installed MariaDB, so the calling
    /// test can pass without running.
    ///
    /// # Panics
    ///
    /// In CI (`CI=true`), when there is no server: a missing server is a failure there. Also
    /// when the installed MariaDB does not start (its log is in the message).
    pub fn get() -> Option<&'static MySqlServer> {
        SERVER
            .get_or_init(|| match std::env::var(MYSQL_URL) {
                Ok(url) if !url.is_empty() => Some(MySqlServer::external(&url)),
                _ => find_mariadbd().map(|program| MySqlServer::private_with(&program)),
            })
            .as_ref()
            .or_else(missing)
    }

    fn external(url: &str) -> MySqlServer {
        assert!(
            url.starts_with("mysql://"),
            "{MYSQL_URL} must be a mysql:// URL (got {url:?})"
        );
        let scheme_end = "mysql://".len();
        let base_url = match url[scheme_end..].find('/') {
            Some(slash) => url[..scheme_end + slash].to_owned(),
            None => url.to_owned(),
        };
        MySqlServer {
            base_url,
            own: None,
        }
    }

    /// A throwaway MariaDB of the caller's own, started now from the installed binaries even
    /// when [`MYSQL_URL`] is set: for tests that kill its connections wholesale. It is
    /// stopped and its files removed when dropped, or at the latest when the process exits.
    ///
    /// # Panics
    ///
    /// When MariaDB is not installed or does not start.
    pub fn private() -> MySqlServer {
        let program = find_mariadbd().unwrap_or_else(|| panic!("{}", NOT_INSTALLED));
        MySqlServer::private_with(&program)
    }

    fn private_with(mariadbd: &Path) -> MySqlServer {
        let own = MariaDb::start(mariadbd);
        MySqlServer {
            base_url: format!("mysql://root@127.0.0.1:{}", own.port),
            own: Some(own),
        }
    }

    /// A fresh database on this server named after `label`, migrated (the sample schema and
    /// the lock table). Dropped with the returned [`TestDb`] as [`TestDb::new`]'s are.
    ///
    /// # Panics
    ///
    /// As [`TestDb::named`].
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
    ///
    /// # Panics
    ///
    /// As [`TestDb::named`].
    pub async fn empty_database(&self, label: &str) -> TestDb {
        let name = database_name(label);
        let url = self.url(&name);
        let claim = TestDb::claim(&url);
        let admin_url = self.url("mysql");
        let admin = connect(&admin_url, 1).await;
        // Names are derived from test names ([a-z0-9_] only), never from test data.
        for sql in [
            format!("DROP DATABASE IF EXISTS `{name}`"),
            format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        ] {
            admin.execute_unprepared(&sql).await.expect(&sql);
        }
        admin.close().await.expect("close the admin connection");
        TestDb::claimed(claim, name, self.own.is_none().then_some(admin_url))
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }
}

impl TestDb {
    /// A fresh database on the MySQL server of this test process ([`MySqlServer::get`]), named
    /// after the running test, migrated; `None` when there is no server outside CI (a loud
    /// line says so), so the test returns without running.
    ///
    /// # Panics
    ///
    /// As [`TestDb::new`] and [`MySqlServer::get`].
    pub async fn mysql() -> Option<TestDb> {
        let label = crate::database::current_test();
        Some(MySqlServer::get()?.database(&label).await)
    }

    /// [`TestDb::mysql`] for a second database of the same test, named after `part`.
    ///
    /// # Panics
    ///
    /// As [`TestDb::new_part`] and [`MySqlServer::get`].
    pub async fn mysql_part(part: &str) -> Option<TestDb> {
        let label = format!("{}__{part}", crate::database::current_test());
        Some(MySqlServer::get()?.database(&label).await)
    }
}

const NOT_INSTALLED: &str = "no MySQL server to test against: install MariaDB's server \
     (Debian/Ubuntu: `apt-get install mariadb-server`; `mariadbd` is looked for on PATH and in \
     /usr/sbin) or set MYSQL_DATABASE_URL to a MySQL/MariaDB server on which the tests may \
     create databases";

/// No server: a failure in CI, a loud skip elsewhere.
fn missing() -> Option<&'static MySqlServer> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {NOT_INSTALLED}"
    );
    // Straight to the process's stderr: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED: {NOT_INSTALLED}. This MySQL test did not run (in CI, CI=true, it \
         fails instead). !!!!!\n"
    );
    None
}

/// `mariadbd` on `PATH` or where Debian installs it.
fn find_mariadbd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("mariadbd"));
    on_path
        .chain([PathBuf::from("/usr/sbin/mariadbd")])
        .find(|path| path.is_file())
}

/// A MariaDB server started by this test process.
#[derive(Debug)]
pub struct MariaDb {
    /// Its directory: data, socket, log.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _reaper: Reaper,
}

impl MariaDb {
    fn start(mariadbd: &Path) -> MariaDb {
        let as_root = is_root();
        let dir = unique_dir("mariadb");
        let data = dir.join("data");
        let user: &[&str] = if as_root { &["--user=mysql"] } else { &[] };
        // Temporary tables in a directory of this server's own, not the shared /tmp: a
        // bootstrap there failed once while other servers started (its temporary table's file
        // was gone, "Could not remove temporary table ... error: 2").
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).expect("make the server's temporary directory");
        let tmpdir = format!("--tmpdir={}", tmp.display());
        if as_root {
            give_to(&dir, "mysql");
            give_to(&tmp, "mysql");
        }
        let install = mariadbd.with_file_name("mariadb-install-db");
        let install = if install.is_file() {
            install
        } else {
            PathBuf::from("mariadb-install-db")
        };
        run(
            Command::new(install)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(user)
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg(&tmpdir)
                .current_dir(&dir),
            "mariadb-install-db",
        );
        let port = crate::os::free_port();
        let log = dir.join("server.log");
        let child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .arg(&tmpdir)
            .args(user)
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--max-connections=500",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", mariadbd.display()));
        // SIGKILL: a throwaway server has nothing to flush; then its directory goes.
        let stop = ["kill", "-KILL", &child.id().to_string()].map(OsString::from);
        let reaper = Reaper::spawn(&dir, &stop);
        let mut server = MariaDb {
            dir,
            port,
            child,
            _reaper: reaper,
        };
        server.wait_until_ready();
        server
    }

    /// Waits (bounded) until the server accepts connections, failing early if it exited.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mariadbd exited at startup ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not listen within 60 s:\n{}",
                self.log()
            );
            // Startup polling, as `pg_ctl -w` does; nothing else to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
