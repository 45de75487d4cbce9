//! One test's own database, named after the test.

use std::collections::BTreeSet;
use std::sync::Mutex;

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::pool::connect;
use crate::server::{Server, server};

/// One test's own database, created empty and migrated.
pub struct TestDb {
    /// The database's name, derived from the test's name.
    pub name: String,
    /// Its URL, to hand to other connections or processes.
    pub url: String,
    /// The admin URL to drop it through, on a shared server; `None` on a cluster of our own,
    /// which disappears whole.
    drop_via: Option<String>,
    /// This process's claim on `url`, given up when the `TestDb` is dropped.
    _claim: Claim,
}

impl TestDb {
    /// A fresh database for the running test, named after the test, migrated.
    ///
    /// # Panics
    ///
    /// When not called on the test's own thread (the test harness names it after the test):
    /// inside `tokio::spawn` on a multi-threaded runtime, or on a thread of the test's own,
    /// the thread is not the test's and its name would be shared by every test doing the
    /// same. Call it at the top of the test, or use [`TestDb::named`]. Also when the test
    /// already holds its database: use [`TestDb::new_part`] for a second one.
    pub async fn new() -> TestDb {
        TestDb::named(&current_test()).await
    }

    /// Another fresh database for the running test, named after the test and `part`, migrated:
    /// for a test that needs more than one (`TestDb::new()` twice would be the same database,
    /// and is refused).
    ///
    /// # Panics
    ///
    /// As [`TestDb::new`], and when the test already holds a database for `part`.
    pub async fn new_part(part: &str) -> TestDb {
        TestDb::named(&format!("{}__{part}", current_test())).await
    }

    /// A fresh database named after `label`, migrated, for code that is not a test (the
    /// benchmark) or a test that must name a database itself.
    ///
    /// # Panics
    ///
    /// When this process already holds a database of that name: give each its own label.
    pub async fn named(label: &str) -> TestDb {
        server().database(label).await
    }

    /// A fresh database named after `label`, without the migrations (for tests of what
    /// happens when they were not run).
    ///
    /// # Panics
    ///
    /// As [`TestDb::named`].
    pub async fn empty(label: &str) -> TestDb {
        server().empty_database(label).await
    }

    /// A new pool of at most `max_connections` connections to this database.
    pub async fn connect(&self, max_connections: u32) -> DatabaseConnection {
        connect(&self.url, max_connections).await
    }

    /// Claims `url` for one `TestDb` of this process, before its database is (re)created.
    pub(crate) fn claim(url: &str) -> Claim {
        Claim::new(url)
    }

    /// The `TestDb` of the database `name`, created under `claim`.
    pub(crate) fn claimed(claim: Claim, name: String, drop_via: Option<String>) -> TestDb {
        TestDb {
            url: claim.0.clone(),
            name,
            drop_via,
            _claim: claim,
        }
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
                    let drop = if admin_url.starts_with("mysql:") {
                        format!("DROP DATABASE IF EXISTS `{name}`")
                    } else {
                        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
                    };
                    admin.execute_unprepared(&drop).await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The databases (URLs) this process's live `TestDb`s hold.
static CLAIMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One live `TestDb`'s hold on its URL: a second `TestDb` of the same database in this process
/// would drop and recreate it under the first one's feet, so it is refused instead.
#[derive(Debug)]
pub(crate) struct Claim(String);

impl Claim {
    fn new(url: &str) -> Claim {
        let fresh = CLAIMED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(url.to_owned());
        assert!(
            fresh,
            "the test database {url} is already in use in this process: two TestDb::new() in one \
             test, or two tests with the same TestDb::named label; give each database a label \
             of its own"
        );
        Claim(url.to_owned())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.0);
    }
}

/// The running test's name, from its thread's name ([`test_name`]).
///
/// # Panics
///
/// When the thread is not a test's, with a message saying what to do instead.
pub(crate) fn current_test() -> String {
    let thread = std::thread::current();
    let Some(test) = test_name(thread.name()) else {
        panic!(
            "TestDb::new() names the database after the running test, which it reads from the \
             name the test harness gives the test's thread; this thread is {:?}, not a test's \
             (inside tokio::spawn, or a thread of your own?), and every test doing the same \
             would share its database. Call TestDb::new() at the top of the test, before \
             spawning, or use TestDb::named(\"a-label-of-this-test\")",
            thread.name().unwrap_or("unnamed")
        )
    };
    test.to_owned()
}

/// The test's name, if `thread` is the name the test harness gives the thread running a test:
/// its path in the test crate (`module::test_name`). Not `main` (a program's main thread, or a
/// harness running tests without threads), not a runtime's worker (`tokio-rt-worker`), not
/// unnamed.
fn test_name(thread: Option<&str>) -> Option<&str> {
    let name = thread?;
    let is_identifier = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    (name != "main" && name.split("::").all(is_identifier)).then_some(name)
}

/// `t_<label, sanitised, shortened>_<hash>`: at most 63 bytes (PostgreSQL's identifier limit).
/// The hash covers the full label and the test binary's name, so distinct labels, and equal
/// test names in two test binaries on one shared server, get distinct databases.
pub(crate) fn database_name(label: &str) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    name_for(&binary, label)
}

fn name_for(binary: &str, label: &str) -> String {
    let sanitized: String = label
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
        fnv1a(format!("{binary}\0{label}").as_bytes())
    )
}

/// A small stable hash, so shortened names stay distinct.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// A server's test databases.
impl Server {
    /// A fresh database on this server named after `label`, migrated. Dropped with the
    /// returned [`TestDb`] as [`TestDb::new`]'s are.
    ///
    /// # Panics
    ///
    /// When this process already has a live database of that name on this server: give each
    /// database of a test its own label.
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
    /// As [`Server::database`].
    pub async fn empty_database(&self, label: &str) -> TestDb {
        let name = database_name(label);
        let url = self.url(&name);
        // Claimed before anything is dropped: a second claim of a live name panics here,
        // before it could drop the first holder's database.
        let claim = TestDb::claim(&url);
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
        // A cluster of our own disappears whole; on a shared server, clean up.
        TestDb::claimed(claim, name, self.cluster().is_none().then_some(admin_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_valid_and_distinct() {
        let a = name_for(
            "create_once-1",
            "tests::create::many_tasks_race_on_the_same_keys",
        );
        let b = name_for(
            "create_once-1",
            "tests::create::many_tasks_race_on_the_same_keys_naive",
        );
        let c = name_for(
            "sqlite-2",
            "tests::create::many_tasks_race_on_the_same_keys",
        );
        assert_ne!(a, b);
        assert_ne!(a, c, "the same test name in two binaries");
        for name in [&a, &b, &c] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert_eq!(name_for("x", "x"), name_for("x", "x"));
    }

    #[test]
    fn only_a_test_threads_name_is_a_test_name() {
        assert_eq!(test_name(Some("one_test")), Some("one_test"));
        assert_eq!(
            test_name(Some("module::one_test")),
            Some("module::one_test")
        );
        for not_a_test in [
            None,
            Some("main"),
            Some("tokio-runtime-worker"),
            Some("tokio-rt-worker"),
            Some(""),
            Some("my worker"),
            Some("a::"),
        ] {
            assert_eq!(test_name(not_a_test), None, "{not_a_test:?}");
        }
    }

    /// The bug this guards against: inside `tokio::spawn` the thread is a runtime worker (named
    /// `tokio-runtime-worker` or `tokio-rt-worker`), and every test calling `TestDb::new()`
    /// there would share (and drop, and recreate) one database. It panics before touching any
    /// server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_refuses_a_thread_that_is_not_a_test() {
        let spawned = tokio::spawn(async { TestDb::new().await.name.clone() }).await;
        let panic = spawned.expect_err("TestDb::new() inside tokio::spawn must panic");
        let message = panic.into_panic();
        let message = message
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        // A runtime worker's name ("tokio-runtime-worker", "tokio-rt-worker" in newer tokio).
        assert!(message.contains("this thread is \"tokio-"), "{message}");
        assert!(message.contains("TestDb::named"), "{message}");
    }

    #[test]
    fn a_database_is_claimed_once_at_a_time() {
        let url = "postgres://x/t_claim_test";
        let first = Claim::new(url);
        let again = std::panic::catch_unwind(|| Claim::new(url));
        assert!(
            again.is_err(),
            "a second claim of a live database must panic"
        );
        drop(first);
        let _after = Claim::new(url); // free again once the first is dropped
    }
}
