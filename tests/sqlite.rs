//! `create_once` on SQLite, always on a file database (an in-memory database is private to one
//! connection and proves nothing about locking): the sample schema end to end, many
//! connections, several OS processes, a caller's transaction, and how waits map.
//!
//! The race tests can fail: `naive_find_then_insert_races_on_sqlite_too` runs the same
//! workload with the IMMEDIATE transaction left out (find, then insert) and shows unique
//! violations; `create_once` on it shows none.
//!
//! (Over 400 lines on purpose: SQLite's whole promise in one file, as `create_once.rs` is
//! PostgreSQL's; its tests share the workload, the pool settings and the worker processes.)

#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Strategy, TempDir, Workload, new_pr, rows_for, total_rows, worker_process, worker_tally,
};
use entity::PullRequest;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait};
use tokio::sync::Barrier;

const KEYS: i64 = 50;
const CALLERS_PER_KEY: usize = 8;
const TASKS: usize = 32;
const POOL: u32 = 8;

/// A pool of `max_connections` connections to `url` in `journal` mode, each waiting for the
/// write lock at most `busy_timeout`.
async fn connect(
    url: &str,
    max_connections: u32,
    journal: SqliteJournalMode,
    busy_timeout: Duration,
) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, max_connections);
    options.map_sqlx_sqlite_opts(move |o| o.journal_mode(journal).busy_timeout(busy_timeout));
    test_support::connect_with(options).await
}

/// A migrated file database in `journal` mode; a generous `busy_timeout` (30 s), so a test
/// never fails because a slow machine kept a writer waiting longer than sqlx's default 5 s.
async fn migrated(url: &str, journal: SqliteJournalMode) -> DatabaseConnection {
    let db = connect(url, POOL, journal, Duration::from_secs(30)).await;
    Migrator::up(&db, None).await.expect("migrate");
    db
}

/// `TASKS` tasks over one pool; every key in `first_key..first_key + KEYS` is requested by
/// `CALLERS_PER_KEY` tasks that start together (a barrier) and walk the same keys in order.
const WORKLOAD: Workload = Workload {
    keys: KEYS,
    callers_per_key: CALLERS_PER_KEY,
    tasks: TASKS,
};

async fn table_exists(db: &DatabaseConnection, table: &str) -> bool {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
            [table.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap() == 1
}

/// The sample schema on SQLite: `up` creates a table `create_once` can fill, the
/// database's own `DEFAULT CURRENT_TIMESTAMP` decodes into the entity's
/// `DateTimeWithTimeZone`, and `down` removes exactly what `up` created.
#[tokio::test]
async fn the_sample_schema_works_end_to_end_on_a_file_database() {
    let dir = TempDir::new("sqlite-schema");
    let db = connect(
        &dir.sqlite_url("app.db"),
        1,
        SqliteJournalMode::Delete,
        Duration::from_secs(5),
    )
    .await;
    Migrator::up(&db, None).await.expect("up");
    let schema_after_up = schema(&db).await;

    let before = unix_seconds();
    let created = PullRequest::create_once(&db, 42, new_pr(42))
        .await
        .expect("create_once on SQLite")
        .into_model();
    let after = unix_seconds();
    let stamp = created.created_at.timestamp();
    assert!(
        (before - 1..=after + 1).contains(&stamp),
        "created_at {} is not the time of the insert",
        created.created_at
    );
    let existing = PullRequest::create_once(&db, 42, new_pr(42)).await.unwrap();
    assert!(!existing.is_created());
    assert_eq!(
        existing.into_model(),
        created,
        "the row reads back as stored"
    );

    Migrator::down(&db, None).await.expect("down");
    assert!(!table_exists(&db, "pull_requests").await);
    Migrator::up(&db, None).await.expect("up again");
    assert_eq!(schema(&db).await, schema_after_up, "down is up's inverse");
    assert_eq!(total_rows(&db).await, 0);
}

/// Every `CREATE` statement of the database except the migrations' bookkeeping table.
async fn schema(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Sqlite,
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL \
         AND name NOT LIKE 'seaql_migrations%' ORDER BY name",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<String>("", "sql").unwrap())
    .collect()
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn many_connections(journal: SqliteJournalMode) {
    let dir = TempDir::new("sqlite-connections");
    let db = migrated(&dir.sqlite_url("race.db"), journal).await;

    let tally = WORKLOAD
        .race(std::slice::from_ref(&db), Strategy::CreateOnce, 1)
        .await;

    assert_eq!(tally, WORKLOAD.exactly_once());
    WORKLOAD.assert_one_row_per_key(&db, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_key_once_in_rollback_journal_mode() {
    many_connections(SqliteJournalMode::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_key_once_in_wal_mode() {
    many_connections(SqliteJournalMode::Wal).await;
}

/// The same workload without the IMMEDIATE transaction: duplicates collide on the unique
/// constraint. This is what the two tests above would see if `create_once` did not take
/// SQLite's write lock before looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naive_find_then_insert_races_on_sqlite_too() {
    let dir = TempDir::new("sqlite-naive");
    let db = migrated(&dir.sqlite_url("naive.db"), SqliteJournalMode::Wal).await;

    let tally = WORKLOAD
        .race(std::slice::from_ref(&db), Strategy::Naive, 1)
        .await;

    eprintln!("naive find-then-insert on SQLite: {tally:?}");
    assert!(
        tally.unique_violations > 0,
        "the naive workload should race, or the race tests prove nothing: {tally:?}"
    );
    assert_eq!(total_rows(&db).await, KEYS as u64);
}

/// Environment of the worker processes of `several_processes_create_each_key_once_*`.
const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_SQLITE_WORKER_URL";
const WORKER_JOURNAL: &str = "SEA_ORM_IDEMPOTENT_SQLITE_WORKER_JOURNAL";
const WORKER_FIRST_KEY: i64 = 10_000;

/// One racing process. Started by `several_processes_create_each_key_once_*` with a migrated
/// database in the environment, it races there and reports its tally; run plainly, it runs
/// the same workload alone on a file of its own and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let journal = match std::env::var(WORKER_JOURNAL).as_deref() {
                Ok("wal") => SqliteJournalMode::Wal,
                _ => SqliteJournalMode::Delete,
            };
            let db = connect(&url, POOL, journal, Duration::from_secs(30)).await;
            let tally = WORKLOAD
                .race(
                    std::slice::from_ref(&db),
                    Strategy::CreateOnce,
                    WORKER_FIRST_KEY,
                )
                .await;
            tally.print_for_parent();
        }
        Err(_) => {
            let dir = TempDir::new("sqlite-worker");
            let db = migrated(&dir.sqlite_url("alone.db"), SqliteJournalMode::Delete).await;
            let tally = WORKLOAD
                .race(
                    std::slice::from_ref(&db),
                    Strategy::CreateOnce,
                    WORKER_FIRST_KEY,
                )
                .await;
            assert_eq!(tally.created, KEYS as usize);
            assert_eq!(tally.unique_violations + tally.other_errors, 0);
        }
    }
}

/// Four OS processes (this test binary, re-run as `sqlite_race_worker_process`) race on the
/// same keys of one file at once: each key is created once in all, with no errors.
async fn several_processes(journal: SqliteJournalMode, journal_name: &str) {
    const PROCESSES: usize = 4;
    let dir = TempDir::new("sqlite-processes");
    let url = dir.sqlite_url("shared.db");
    migrated(&url, journal).await.close().await.unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            worker_process("sqlite_race_worker_process")
                .env(WORKER_URL, &url)
                .env(WORKER_JOURNAL, journal_name)
                .output()
        })
        .collect();
    let mut created = 0;
    for child in children {
        let tally = worker_tally(&child.await.expect("run a worker process"));
        assert_eq!(tally.unique_violations, 0, "{tally:?}");
        assert_eq!(tally.other_errors, 0, "{tally:?}");
        created += tally.created;
    }
    assert_eq!(
        created, KEYS as usize,
        "Created returned once per key across processes"
    );
    let db = connect(&url, 1, journal, Duration::from_secs(30)).await;
    WORKLOAD.assert_one_row_per_key(&db, WORKER_FIRST_KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_key_once_in_rollback_journal_mode() {
    several_processes(SqliteJournalMode::Delete, "delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_key_once_in_wal_mode() {
    several_processes(SqliteJournalMode::Wal, "wal").await;
}

fn immediate() -> TransactionOptions {
    TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    }
}

/// While another connection holds the write lock, `create_once` waits as long as its
/// connection's `busy_timeout`, then fails with `LockTimeout` (the connection's bound, so
/// `timeout: None`) having written nothing; once the holder commits it goes through.
#[tokio::test]
async fn busy_timeout_bounds_the_wait_and_maps_to_lock_timeout() {
    let dir = TempDir::new("sqlite-busy");
    let url = dir.sqlite_url("busy.db");
    let holder_pool = migrated(&url, SqliteJournalMode::Wal).await;
    let impatient = connect(&url, 1, SqliteJournalMode::Wal, Duration::from_millis(100)).await;

    let holder = holder_pool.begin_with_options(immediate()).await.unwrap();
    let err = PullRequest::create_once(&impatient, 7, new_pr(7))
        .await
        .expect_err("the write lock is held");
    assert!(
        matches!(err, Error::LockTimeout { timeout: None, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    holder.commit().await.unwrap();

    assert_eq!(rows_for(&impatient, 7).await, 0, "nothing written");
    let outcome = PullRequest::create_once(&impatient, 7, new_pr(7))
        .await
        .unwrap();
    assert!(outcome.is_created());
}

/// The callers of one pool take turns for the write lock in the process, in arrival order
/// (src/turns.rs), not in SQLite's busy handler. With `busy_timeout` 0 a connection that finds
/// the lock taken fails at once, so 24 tasks creating new keys at the same moment on one pool
/// all succeed only if none of them ever met another at SQLite's lock. Without the turn
/// (`Place::Writer` not taken in src/call/mod.rs) this fails: most calls end in `LockTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pools_writers_take_turns_before_sqlites_lock() {
    const CALLERS: i64 = 24;
    let dir = TempDir::new("sqlite-writers");
    let url = dir.sqlite_url("writers.db");
    migrated(&url, SqliteJournalMode::Wal)
        .await
        .close()
        .await
        .unwrap();
    // Connecting sets pragmas that may wait for a lock: each connection gives up its busy
    // timeout only once it is open.
    let mut options = test_support::pool_options(&url, POOL);
    options.map_sqlx_sqlite_pool_opts(|pool| {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                sea_orm::sqlx::Executor::execute(conn, "PRAGMA busy_timeout = 0")
                    .await
                    .map(|_| ())
            })
        })
    });
    let db = test_support::connect_with(options).await;

    let start = Arc::new(Barrier::new(CALLERS as usize));
    let calls: Vec<_> = (1..=CALLERS)
        .map(|key| {
            let (db, start) = (db.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                PullRequest::create_once(&db, key, new_pr(key)).await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(outcome) => assert!(outcome.is_created()),
            Err(err) => failed.push(err.to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    assert_eq!(total_rows(&db).await, CALLERS as u64);
}

/// Advisory locks need PostgreSQL: on SQLite `acquire_advisory_lock` says so and points to
/// `create_once`, which works there.
#[tokio::test]
async fn advisory_locks_on_sqlite_point_to_create_once() {
    let dir = TempDir::new("sqlite-advisory");
    let db = migrated(&dir.sqlite_url("advisory.db"), SqliteJournalMode::Wal).await;
    let txn = db.begin().await.unwrap();
    let err = sea_orm_idempotent::acquire_advisory_lock(
        &txn,
        sea_orm_idempotent::LockKey::crc32("x"),
        Wait::Forever,
    )
    .await
    .expect_err("SQLite has no advisory locks");
    assert!(
        matches!(
            err,
            Error::UnsupportedBackend {
                backend: DbBackend::Sqlite,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("advisory locks need PostgreSQL") && message.contains("create_once"),
        "{message}"
    );
    txn.rollback().await.unwrap();
}

/// Inside a caller's IMMEDIATE transaction the work runs in a savepoint under the caller's
/// write lock: the caller's commit decides, and other creators wait for it.
#[tokio::test]
async fn inside_a_callers_immediate_transaction_the_callers_commit_decides() {
    let dir = TempDir::new("sqlite-caller");
    let url = dir.sqlite_url("caller.db");
    let db = migrated(&url, SqliteJournalMode::Wal).await;
    let impatient = connect(&url, 1, SqliteJournalMode::Wal, Duration::from_millis(100)).await;

    let txn = db.begin_with_options(immediate()).await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 5, new_pr(5))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        !PullRequest::create_once(&txn, 5, new_pr(5))
            .await
            .unwrap()
            .is_created(),
        "the savepoint's row is visible in the caller's transaction"
    );
    // Another creator cannot see or race the uncommitted row: it waits for the write lock.
    let err = PullRequest::create_once(&impatient, 5, new_pr(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    txn.rollback().await.unwrap();
    assert_eq!(rows_for(&db, 5).await, 0, "the caller's rollback undid it");

    let txn = db.begin_with_options(immediate()).await.unwrap();
    PullRequest::create_once(&txn, 5, new_pr(5)).await.unwrap();
    txn.commit().await.unwrap();
    let outcome = PullRequest::create_once(&impatient, 5, new_pr(5))
        .await
        .unwrap();
    assert!(!outcome.is_created());
    assert_eq!(rows_for(&db, 5).await, 1);
}

/// The one case SQLite cannot serve inside a caller's transaction: a DEFERRED transaction read
/// (so its snapshot predates another creator's commit), then calls `create_once` for the same
/// key. Its own look misses the row, but the guarded insert cannot take the write lock from a
/// stale snapshot: a retryable SQLITE_BUSY error, never a duplicate or a unique violation.
/// A retry in a new transaction finds the row.
#[tokio::test]
async fn a_stale_deferred_transaction_gets_a_retryable_error_not_a_duplicate() {
    let dir = TempDir::new("sqlite-stale");
    let url = dir.sqlite_url("stale.db");
    let db = migrated(&url, SqliteJournalMode::Wal).await;

    let stale = db.begin().await.unwrap(); // DEFERRED, SQLite's default
    assert_eq!(total_rows(&stale).await, 0); // takes the snapshot
    let other = PullRequest::create_once(&db, 9, new_pr(9)).await.unwrap();
    assert!(other.is_created());

    let err = PullRequest::create_once(&stale, 9, new_pr(9))
        .await
        .expect_err("a stale snapshot cannot write");
    assert!(err.is_retryable(), "{err:?}");
    let sqlite_err = match &err {
        Error::LockTimeout {
            timeout: None,
            source: Some(DbErr::Query(RuntimeErr::SqlxError(e))),
            ..
        } => e.as_database_error(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("expected a LockTimeout with SQLite's own error, got {err:?}"));
    assert_eq!(
        sqlite_err.code().as_deref(),
        Some("517"),
        "SQLITE_BUSY_SNAPSHOT: {err:?}"
    );
    stale.rollback().await.unwrap();

    let retry = db.begin().await.unwrap();
    let outcome = PullRequest::create_once(&retry, 9, new_pr(9))
        .await
        .unwrap();
    retry.commit().await.unwrap();
    assert!(!outcome.is_created());
    assert_eq!(rows_for(&db, 9).await, 1);
}

/// Busy errors are `LockTimeout { timeout: None }` on every path, as documented: here the
/// guarded insert inside a caller's DEFERRED transaction meets another connection's write lock
/// (before, this came back as `Error::Database` with SQLite's code 5).
#[tokio::test]
async fn busy_inside_a_callers_transaction_is_a_lock_timeout_too() {
    let dir = TempDir::new("sqlite-busy-caller");
    let url = dir.sqlite_url("busy-caller.db");
    let holder_pool = migrated(&url, SqliteJournalMode::Wal).await;
    let impatient = connect(&url, 1, SqliteJournalMode::Wal, Duration::from_millis(1)).await;

    let holder = holder_pool.begin_with_options(immediate()).await.unwrap();
    let txn = impatient.begin().await.unwrap(); // DEFERRED: takes no lock yet
    let err = PullRequest::create_once(&txn, 3, new_pr(3))
        .await
        .expect_err("the write lock is held");
    assert!(
        matches!(
            err,
            Error::LockTimeout {
                timeout: None,
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    txn.rollback().await.unwrap();
    holder.commit().await.unwrap();
    assert_eq!(rows_for(&impatient, 3).await, 0, "nothing written");
}

/// `make_data` runs once per key however many connections ask at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn make_data_runs_once_per_key_on_sqlite() {
    let dir = TempDir::new("sqlite-make");
    let db = migrated(&dir.sqlite_url("make.db"), SqliteJournalMode::Wal).await;
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (db, made, barrier) = (db.clone(), made.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                PullRequest::create_once_with(&db, 77, || async move {
                    made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(new_pr(77))
                })
                .await
                .map(|outcome| outcome.is_created())
            })
        })
        .collect();
    let mut created = 0;
    for handle in handles {
        created += usize::from(handle.await.unwrap().expect("no errors"));
    }
    assert_eq!(created, 1);
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(rows_for(&db, 77).await, 1);
}
