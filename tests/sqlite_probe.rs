//! SQLite's paths probed from the side: the one-statement path (a unique index covers the key,
//! data in hand, `Wait::Forever`) and a batch's chunk in one statement, on a file in WAL and
//! rollback-journal mode, against another writer (another pool, or a `sqlite3` process).
//!
//! What each test catches:
//!
//! - a one statement (or chunk) behind another writer's lock that comes back as a raw
//!   `Database(SQLITE_BUSY)` instead of `LockTimeout { timeout: None }`, or writes anyway;
//! - a call or a batch dropped at any await point that leaves SQLite's write lock (or a read
//!   lock that blocks commits) held by a pooled connection, a pool that cannot serve the next
//!   call, or a chunk half written;
//! - a read-only file or a `query_only` connection where a stored row is not `Existing` or a
//!   new key is not the typed `ReadOnly`;
//! - a writer that bypasses the crate, inserting and deleting the row while calls run: a
//!   `Created` for its row, or an untyped error;
//! - `Wait::No` and `Wait::Timeout` behind another process's write lock that wait too long;
//! - keys SQLite holds equal (an integer and a real in a column without affinity) stored
//!   twice or created twice.

#![cfg(feature = "sqlite")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::keyed_rows::keyed_rows;
use common::{TempDir, drop_at_await_point};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sea_orm::sqlx::{Connection, Executor, SqliteConnection};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait};

keyed_rows!(never, "probe_rows", Never);
keyed_rows!(always, "probe_rows", Always);

const SCHEMA: &str = "CREATE TABLE probe_rows (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     k BIGINT NOT NULL UNIQUE, v TEXT NOT NULL); \
     CREATE TABLE probe_scratch (n INTEGER)";

/// A pool of `size` connections to `url` in `journal` mode, waiting `busy` for the write lock.
async fn pool(
    url: &str,
    size: u32,
    journal: SqliteJournalMode,
    busy: Duration,
) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, size);
    options.map_sqlx_sqlite_opts(move |o| o.journal_mode(journal).busy_timeout(busy));
    test_support::connect_with(options).await
}

/// A file with [`SCHEMA`], in `journal` mode.
async fn file(dir: &TempDir, journal: SqliteJournalMode) -> String {
    let url = dir.sqlite_url("probe.db");
    let db = pool(&url, 1, journal, Duration::from_secs(30)).await;
    db.execute_unprepared(SCHEMA).await.unwrap();
    db.close().await.unwrap();
    url
}

/// A connection of its own (not the crate's, not SeaORM's) that waits `busy` for locks.
async fn raw(url: &str, busy: Duration) -> SqliteConnection {
    let options: SqliteConnectOptions = url.parse().unwrap();
    SqliteConnection::connect_with(&options.busy_timeout(busy))
        .await
        .unwrap()
}

async fn count(db: &impl ConnectionTrait, keys: &[i64]) -> i64 {
    let list = keys
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT count(*) AS n FROM probe_rows WHERE k IN ({list})"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// The error a batch's chunk failed with, or the call's.
fn cause(err: &Error) -> &Error {
    match err {
        Error::Batch { source, .. } => source,
        other => other,
    }
}

/// `sqlite3` (another OS process) holding the write lock of `path` until it is killed.
fn sqlite3_holding_write_lock(path: &str) -> Child {
    let mut child = Command::new("sqlite3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the sqlite3 shell (Debian: sqlite3)");
    let stdin = child.stdin.as_mut().unwrap();
    stdin
        .write_all(b"BEGIN IMMEDIATE;\nSELECT 'held';\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held", "sqlite3 took the write lock");
    child
}

fn path_of(url: &str) -> String {
    url.trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

/// The one statement and a batch's chunk behind another connection's write lock, held longer
/// than the caller's `busy_timeout`: `LockTimeout { timeout: None }`, never a raw busy error,
/// and nothing written.
async fn one_statement_behind_a_holder(journal: SqliteJournalMode) {
    let dir = TempDir::new("probe-busy");
    let url = file(&dir, journal).await;
    for size in [1, 4] {
        let db = pool(&url, size, journal, Duration::from_millis(100)).await;
        // The catalog learnt, the path taken once.
        let first = 1000 * i64::from(size);
        assert!(
            never::Entity::create_once(&db, first, "a".into())
                .await
                .unwrap()
                .is_created()
        );
        let mut holder = raw(&url, Duration::from_secs(5)).await;
        holder.execute("BEGIN IMMEDIATE").await.unwrap();

        let err = never::Entity::create_once(&db, first + 1, "b".into())
            .await
            .expect_err("the write lock is held");
        assert!(
            matches!(err, Error::LockTimeout { timeout: None, .. }),
            "one statement, pool of {size}: {err:?}"
        );
        assert!(err.is_retryable());
        let err = never::Entity::create_many_once(
            &db,
            vec![(first + 2, "c".to_owned()), (first + 3, "d".to_owned())],
        )
        .await
        .expect_err("the write lock is held");
        assert!(
            matches!(cause(&err), Error::LockTimeout { timeout: None, .. }),
            "chunk, pool of {size}: {err:?}"
        );
        holder.execute("ROLLBACK").await.unwrap();
        assert_eq!(count(&db, &[first + 1, first + 2, first + 3]).await, 0);
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn one_statement_behind_a_holder_is_a_lock_timeout_in_wal_mode() {
    one_statement_behind_a_holder(SqliteJournalMode::Wal).await;
}

#[tokio::test]
async fn one_statement_behind_a_holder_is_a_lock_timeout_in_rollback_journal_mode() {
    one_statement_behind_a_holder(SqliteJournalMode::Delete).await;
}

/// Another writer (a checker connection of its own) can take the write lock and commit a
/// write: no connection of the crate's pool holds a lock.
async fn no_lock_left(url: &str, after: &str) {
    let mut checker = raw(url, Duration::from_secs(2)).await;
    checker
        .execute("BEGIN IMMEDIATE")
        .await
        .unwrap_or_else(|err| panic!("the write lock is held after {after}: {err}"));
    checker
        .execute("INSERT INTO probe_scratch (n) VALUES (1)")
        .await
        .unwrap();
    checker
        .execute("COMMIT")
        .await
        .unwrap_or_else(|err| panic!("a read lock blocks commits after {after}: {err}"));
    checker.close().await.unwrap();
}

/// A call and a batch dropped at each await point on a pool of one: no lock left, the pool
/// serves the next call, and a chunk is all written or not at all.
async fn dropped_at_each_await_point(journal: SqliteJournalMode) {
    let dir = TempDir::new("probe-drop");
    let url = file(&dir, journal).await;
    let db = pool(&url, 1, journal, Duration::from_secs(5)).await;
    let mut finished = (false, false);
    for pendings in 0..200 {
        let key = 10 * (pendings as i64 + 1);
        if !finished.0 {
            let call = never::Entity::create_once(&db, key, "x".into());
            match drop_at_await_point(call, pendings).await {
                Some(result) => {
                    assert!(result.unwrap().is_created());
                    finished.0 = true;
                }
                None => no_lock_left(&url, &format!("a call dropped at {pendings}")).await,
            }
            assert!(count(&db, &[key]).await <= 1);
        }
        if !finished.1 {
            let chunk = vec![
                (key + 1, "c".to_owned()),
                (key + 2, "c".to_owned()),
                (key + 3, "c".to_owned()),
            ];
            let call = never::Entity::create_many_once(&db, chunk);
            match drop_at_await_point(call, pendings).await {
                Some(result) => {
                    assert!(result.unwrap().iter().all(|o| o.is_created()));
                    finished.1 = true;
                }
                None => no_lock_left(&url, &format!("a batch dropped at {pendings}")).await,
            }
            let written = count(&db, &[key + 1, key + 2, key + 3]).await;
            assert!(
                written == 0 || written == 3,
                "{written} of 3 after {pendings}"
            );
        }
        // The pool of one serves the next call.
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            never::Entity::create_once(&db, key + 5, "n".into()),
        )
        .await
        .expect("the pool serves the next call");
        assert!(next.unwrap().is_created());
        if finished == (true, true) {
            return;
        }
    }
    panic!("the calls never finished");
}

#[tokio::test]
async fn dropped_calls_leave_no_lock_in_wal_mode() {
    dropped_at_each_await_point(SqliteJournalMode::Wal).await;
}

#[tokio::test]
async fn dropped_calls_leave_no_lock_in_rollback_journal_mode() {
    dropped_at_each_await_point(SqliteJournalMode::Delete).await;
}

/// Stored rows `Existing`, new keys the typed `ReadOnly`, through the one-statement entity and
/// the looking one, single and batch.
async fn read_only_answers(db: &DatabaseConnection, what: &str) {
    for (stored, new) in [(1, 2), (1, 3)] {
        let outcome = never::Entity::create_once(db, stored, "x".into()).await;
        assert!(!outcome.expect(what).is_created(), "{what}");
        let outcome = always::Entity::create_once(db, stored, "x".into()).await;
        assert!(!outcome.expect(what).is_created(), "{what}");
        let err = never::Entity::create_once(db, new, "x".into())
            .await
            .expect_err(what);
        assert!(matches!(err, Error::ReadOnly(_)), "{what}: {err:?}");
        let batch = never::Entity::create_many_once(db, vec![(stored, "x".to_owned())]).await;
        assert!(!batch.expect(what)[0].is_created(), "{what}");
        let err = never::Entity::create_many_once(
            db,
            vec![(stored, "x".to_owned()), (new, "x".to_owned())],
        )
        .await
        .expect_err(what);
        assert!(matches!(cause(&err), Error::ReadOnly(_)), "{what}: {err:?}");
    }
}

#[tokio::test]
async fn read_only_file_and_query_only_connection() {
    let dir = TempDir::new("probe-ro");
    let url = file(&dir, SqliteJournalMode::Delete).await;
    let db = pool(&url, 1, SqliteJournalMode::Delete, Duration::from_secs(5)).await;
    never::Entity::create_once(&db, 1, "x".into())
        .await
        .unwrap();
    db.close().await.unwrap();

    let read_only = pool(
        &url.replace("mode=rwc", "mode=ro"),
        1,
        SqliteJournalMode::Delete,
        Duration::from_secs(5),
    )
    .await;
    read_only_answers(&read_only, "mode=ro").await;

    let mut options = test_support::pool_options(&url, 1);
    options.map_sqlx_sqlite_pool_opts(|pool| {
        pool.after_connect(|conn, _| {
            Box::pin(async move { conn.execute("PRAGMA query_only = 1").await.map(|_| ()) })
        })
    });
    let query_only = test_support::connect_with(options).await;
    read_only_answers(&query_only, "query_only").await;
}

/// A writer that bypasses the crate inserts (with its own data) and deletes the row of one
/// key over and over while calls for that key run: a call's `Created` row is always one it
/// inserted (its own data), and no call fails.
async fn bypassing_writer(journal: SqliteJournalMode, size: u32) {
    let dir = TempDir::new("probe-bypass");
    let url = file(&dir, journal).await;
    let db = pool(&url, size, journal, Duration::from_secs(30)).await;
    never::Entity::create_once(&db, 1, "warm".into())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conn = raw(&url, Duration::from_secs(30)).await;
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                conn.execute("INSERT OR IGNORE INTO probe_rows (k, v) VALUES (7, 'bypass')")
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                conn.execute("DELETE FROM probe_rows WHERE k = 7")
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                rounds += 1;
            }
            rounds
        })
    };
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut created = 0;
                for _ in 0..150 {
                    match never::Entity::create_once(&db, 7, "crate".into()).await {
                        Ok(outcome) => {
                            if outcome.is_created() {
                                assert_eq!(
                                    outcome.model().v,
                                    "crate",
                                    "Created for a row it did not insert"
                                );
                                created += 1;
                            }
                        }
                        Err(err) => panic!("a call failed: {err:?}"),
                    }
                }
                created
            })
        })
        .collect();
    let mut created = 0;
    for caller in callers {
        created += caller.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    eprintln!("{journal:?}, pool of {size}: {created} created, {rounds} bypassing rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bypassing_writer_never_makes_a_created_for_its_row_wal() {
    bypassing_writer(SqliteJournalMode::Wal, 1).await;
    bypassing_writer(SqliteJournalMode::Wal, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bypassing_writer_never_makes_a_created_for_its_row_rollback_journal() {
    bypassing_writer(SqliteJournalMode::Delete, 1).await;
    bypassing_writer(SqliteJournalMode::Delete, 4).await;
}

/// Another OS process (`sqlite3`) holds the write lock: `Wait::No` is `LockBusy` at once and
/// `Wait::Timeout(200ms)` `LockTimeout` with that bound, near it, on a pool that would wait
/// 30 s; nothing written, single and batch.
#[tokio::test]
async fn bounded_waits_behind_another_process() {
    for journal in [SqliteJournalMode::Wal, SqliteJournalMode::Delete] {
        let dir = TempDir::new("probe-waits");
        let url = file(&dir, journal).await;
        let db = pool(&url, 2, journal, Duration::from_secs(30)).await;
        never::Entity::create_once(&db, 1, "x".into())
            .await
            .unwrap();
        let mut holder = sqlite3_holding_write_lock(&path_of(&url));

        let started = Instant::now();
        let err = never::Entity::once(2, "x".into())
            .wait(Wait::No)
            .exec(&db)
            .await
            .expect_err("held");
        assert!(
            matches!(err, Error::LockBusy { .. }),
            "{journal:?}: {err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let bound = Duration::from_millis(200);
        let started = Instant::now();
        let err = never::Entity::once(2, "x".into())
            .wait(Wait::Timeout(bound))
            .exec(&db)
            .await
            .expect_err("held");
        let took = started.elapsed();
        assert!(
            matches!(err, Error::LockTimeout { timeout: Some(b), .. } if b == bound),
            "{journal:?}: {err:?}"
        );
        assert!(took >= bound && took < Duration::from_secs(3), "{took:?}");

        let err = never::Entity::many(vec![(3, "x".to_owned())])
            .wait(Wait::Timeout(bound))
            .exec(&db)
            .await
            .expect_err("held");
        assert!(
            matches!(
                cause(&err),
                Error::LockTimeout {
                    timeout: Some(_),
                    ..
                }
            ),
            "{journal:?}: {err:?}"
        );

        holder.kill().unwrap();
        holder.wait().unwrap();
        assert_eq!(count(&db, &[2, 3]).await, 0);
        assert!(
            never::Entity::create_once(&db, 2, "x".into())
                .await
                .unwrap()
                .is_created()
        );
    }
}

/// Keys SQLite holds equal that Rust does not: an integer key and a real key in a column
/// without type affinity (`k` declared with no type). SQLite compares 1 and 1.0 equal, and
/// its unique index holds one of them: one row, `Created` once. A real key for a model that
/// reads `k` as an `i64` is refused with `KeyType` (sqlx could not decode the other's storage
/// anyway), before anything is written.
#[allow(unreachable_pub)]
mod nums {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    pub(crate) mod ints {
        use super::*;
        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "nums")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub k: i64,
            pub v: String,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
        impl sea_orm_idempotent::IdempotentCreate for Entity {
            type Key = i64;
            type Data = String;
            fn key_column() -> Column {
                Column::K
            }
            fn new_active_model(_: &i64, v: String) -> ActiveModel {
                ActiveModel {
                    v: Set(v),
                    ..Default::default()
                }
            }
        }
    }

    pub(crate) mod reals {
        use super::*;
        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "nums")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub k: i64,
            pub v: String,
        }
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
        impl sea_orm_idempotent::IdempotentCreate for Entity {
            type Key = f64;
            type Data = String;
            fn key_column() -> Column {
                Column::K
            }
            fn new_active_model(_: &f64, v: String) -> ActiveModel {
                ActiveModel {
                    v: Set(v),
                    ..Default::default()
                }
            }
        }
    }
}

#[tokio::test]
async fn an_integer_and_an_equal_real_are_one_key() {
    let dir = TempDir::new("probe-nums");
    let url = dir.sqlite_url("nums.db");
    let db = pool(&url, 2, SqliteJournalMode::Wal, Duration::from_secs(5)).await;
    db.execute_unprepared(
        "CREATE TABLE nums (id INTEGER PRIMARY KEY AUTOINCREMENT, k UNIQUE NOT NULL, v TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let first = nums::ints::Entity::create_once(&db, 1, "int".into())
        .await
        .unwrap();
    assert!(first.is_created());
    let again = nums::ints::Entity::create_once(&db, 1, "int".into())
        .await
        .unwrap();
    assert!(!again.is_created());
    // A real key for the integer column: refused, typed, before anything is written.
    let err = nums::reals::Entity::create_once(&db, 1.0, "real".into())
        .await
        .expect_err("an f64 key for an i64 field");
    assert!(matches!(err, Error::KeyType { .. }), "{err:?}");
    // The batch does not check the key's Rust type against the field's; it finds the row
    // SQLite holds equal: never `Created`, never an untyped error.
    match nums::reals::Entity::create_many_once(&db, vec![(1.0, "real".to_owned())]).await {
        Ok(outcomes) => assert_eq!(outcomes[0].model().id, first.model().id),
        Err(err) => assert!(matches!(cause(&err), Error::KeyType { .. }), "{err:?}"),
    }
    // The same real stored by a writer that bypasses the crate is the integer's key.
    let dup = db
        .execute_unprepared("INSERT INTO nums (k, v) VALUES (1.0, 'bypass')")
        .await
        .expect_err("SQLite's unique index holds 1 and 1.0 equal");
    assert!(dup.to_string().contains("UNIQUE"), "{dup}");
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) AS n FROM nums",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
}

/// An entity keyed by text, `name`, whose look is as the test says.
macro_rules! names {
    ($module:ident, $look:ident) => {
        #[allow(unreachable_pub)]
        mod $module {
            use sea_orm::ActiveValue::Set;
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = "names")]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                pub name: String,
                pub v: String,
            }
            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}
            impl ActiveModelBehavior for ActiveModel {}
            impl sea_orm_idempotent::IdempotentCreate for Entity {
                type Key = String;
                type Data = String;
                fn key_column() -> Column {
                    Column::Name
                }
                fn new_active_model(_: &String, v: String) -> ActiveModel {
                    ActiveModel {
                        v: Set(v),
                        ..Default::default()
                    }
                }
                fn look_first() -> sea_orm_idempotent::LookFirst {
                    sea_orm_idempotent::LookFirst::$look
                }
            }
        }
    };
}
names!(names_never, Never);
names!(names_always, Always);

/// Text keys that differ only in case, under a unique index SQLite compares with NOCASE: the
/// second is the first's row (`Existing`), never a unique violation or a second row.
async fn case_insensitive_keys(schema: &str) {
    let dir = TempDir::new("probe-nocase");
    let url = dir.sqlite_url("names.db");
    let db = pool(&url, 2, SqliteJournalMode::Wal, Duration::from_secs(5)).await;
    db.execute_unprepared(schema).await.unwrap();
    let first = names_never::Entity::create_once(&db, "Foo".into(), "1".into())
        .await
        .unwrap();
    assert!(first.is_created());
    let second = names_never::Entity::create_once(&db, "foo".into(), "2".into()).await;
    let second = second.unwrap_or_else(|err| panic!("{schema}: one statement: {err:?}"));
    assert!(!second.is_created(), "{schema}: {second:?}");
    let third = names_always::Entity::create_once(&db, "FOO".into(), "3".into()).await;
    let third = third.unwrap_or_else(|err| panic!("{schema}: looking first: {err:?}"));
    assert!(!third.is_created(), "{schema}: {third:?}");
    let batch =
        names_never::Entity::create_many_once(&db, vec![("fOO".to_owned(), "4".to_owned())])
            .await
            .unwrap_or_else(|err| panic!("{schema}: batch: {err:?}"));
    assert!(!batch[0].is_created(), "{schema}");
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) AS n FROM names",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1, "{schema}");
}

#[tokio::test]
async fn keys_equal_under_a_nocase_column_are_one_key() {
    case_insensitive_keys(
        "CREATE TABLE names (id INTEGER PRIMARY KEY AUTOINCREMENT, \
         name TEXT COLLATE NOCASE NOT NULL UNIQUE, v TEXT NOT NULL)",
    )
    .await;
}
