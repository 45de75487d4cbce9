//! Bounded waits on SQLite: code written for PostgreSQL, with `Wait::Timeout` and `Wait::No`,
//! runs unchanged on a SQLite file. Every pool here waits up to 30 s for the write lock
//! (`busy_timeout`); another pool holds the lock (`BEGIN IMMEDIATE`) while a call runs.
//!
//! What each test catches:
//!
//! - a bound of 300 ms that waits for the pool's 30 s `busy_timeout` instead (it hits the
//!   hang guard), or a refusal (`UnsupportedBackend`, the old behaviour);
//! - `Wait::No` that waits, or that refuses a free lock;
//! - a connection handed back to the pool with the call's `busy_timeout` (every connection of
//!   the pool is checked, after calls that end, and after calls dropped at each await point):
//!   with the restore left out, every check fails;
//! - a bound that waits for the in-process writer turn longer than asked (the turn's own
//!   5 s bound, `WRITER_WAIT`);
//! - inside a caller's DEFERRED transaction, a bound that does not apply (the old refusal), or
//!   a connection left with another `busy_timeout`.
//!
//! No test asserts a duration: each asserts that the error came while the lock was still held
//! (the holder releases only after it), with a generous guard against a hang.

#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::{TempDir, drop_at_await_point, new_pr, rows_for};
use entity::PullRequest;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::sqlx::{Executor, Row};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait};

/// The pool's `busy_timeout`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// What a call's bound is in these tests.
const BOUND: Duration = Duration::from_millis(300);
/// Far longer than any bound here, far shorter than `BUSY_TIMEOUT`: a call still waiting
/// after it waits for the connection's `busy_timeout`, not for the caller's bound.
const HANG_GUARD: Duration = Duration::from_secs(10);
/// Connections per pool.
const POOL: u32 = 3;

/// A pool of [`POOL`] connections to `url` in WAL mode, each waiting up to [`BUSY_TIMEOUT`].
async fn connect(url: &str) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, POOL);
    options.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
    });
    test_support::connect_with(options).await
}

/// A migrated file in `dir`: the pool the calls use, and another pool (the holder's).
async fn two_pools(dir: &TempDir) -> (DatabaseConnection, DatabaseConnection) {
    let url = dir.sqlite_url("waits.db");
    let db = connect(&url).await;
    Migrator::up(&db, None).await.expect("migrate");
    (db, connect(&url).await)
}

fn with_mode(mode: SqliteTransactionMode) -> TransactionOptions {
    TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(mode),
    }
}

/// Another connection holding SQLite's write lock until it is rolled back.
async fn hold_write_lock(other: &DatabaseConnection) -> DatabaseTransaction {
    other
        .begin_with_options(with_mode(SqliteTransactionMode::Immediate))
        .await
        .expect("BEGIN IMMEDIATE on a free file")
}

/// `call`, which must end long before the pool's `busy_timeout` would.
async fn guarded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("the call waited for the connection's busy_timeout, not for its own bound")
}

/// The `busy_timeout` of the connection `db` (a caller's transaction) runs on.
async fn busy_timeout_of(db: &impl ConnectionTrait) -> Duration {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA busy_timeout",
        ))
        .await
        .unwrap()
        .unwrap();
    Duration::from_millis(row.try_get::<i64>("", "timeout").unwrap() as u64)
}

/// Every connection of the pool has its `busy_timeout` as the pool set it: all [`POOL`] are
/// taken at once (waiting for any a call still uses), so each is seen.
async fn assert_every_connection_restored(db: &DatabaseConnection, after: &str) {
    let pool = db.get_sqlite_connection_pool();
    let mut held = Vec::new();
    for _ in 0..POOL {
        held.push(pool.acquire().await.expect("a connection"));
    }
    for (i, conn) in held.iter_mut().enumerate() {
        let row = conn.fetch_one("PRAGMA busy_timeout").await.unwrap();
        let ms: i64 = row.get("timeout");
        assert_eq!(
            Duration::from_millis(ms as u64),
            BUSY_TIMEOUT,
            "connection {i} of the pool after {after}"
        );
    }
}

/// A bound of 300 ms on a pool whose `busy_timeout` is 30 s: `LockTimeout` with that bound
/// while the other connection still holds the lock; the message names SQLite's lock, not a
/// PostgreSQL lock key. Nothing is written, and once the lock is free the same call creates.
#[tokio::test]
async fn a_bound_ends_the_wait_for_another_connection() {
    let dir = TempDir::new("sqlite-bound");
    let (db, other) = two_pools(&dir).await;
    let holder = hold_write_lock(&other).await;

    let err = guarded(
        PullRequest::once(7, new_pr(7))
            .wait(Wait::Timeout(BOUND))
            .exec(&db),
    )
    .await
    .expect_err("the write lock is held");
    assert!(
        matches!(err, Error::LockTimeout { timeout: Some(bound), .. } if bound == BOUND),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "SQLite's write lock (for pull_requests key 7) not granted within 300 ms"
    );
    assert_every_connection_restored(&db, "a bound that ran out").await;
    holder.rollback().await.unwrap();

    assert_eq!(rows_for(&db, 7).await, 0, "nothing written");
    let outcome = PullRequest::once(7, new_pr(7))
        .wait(Wait::Timeout(BOUND))
        .exec(&db)
        .await
        .unwrap();
    assert!(outcome.is_created());
    assert_every_connection_restored(&db, "a bounded call that created").await;
}

/// `Wait::No`: `LockBusy` at once while another connection holds the lock, `Created` when it
/// is free; the connections keep their `busy_timeout`.
#[tokio::test]
async fn wait_no_answers_at_once() {
    let dir = TempDir::new("sqlite-no-wait");
    let (db, other) = two_pools(&dir).await;
    let holder = hold_write_lock(&other).await;

    let err = guarded(PullRequest::once(8, new_pr(8)).wait(Wait::No).exec(&db))
        .await
        .expect_err("the write lock is held");
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "SQLite's write lock (for pull_requests key 8) is held by another transaction"
    );
    assert_every_connection_restored(&db, "Wait::No on a held lock").await;
    holder.rollback().await.unwrap();

    let outcome = PullRequest::once(8, new_pr(8))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap();
    assert!(outcome.is_created());
    let again = PullRequest::once(8, new_pr(8))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap();
    assert!(!again.is_created());
    assert_every_connection_restored(&db, "Wait::No on a free lock").await;
}

/// A call dropped at each of its await points (a request timeout, a client gone) never hands a
/// connection back with its own `busy_timeout`: with the lock held (the bound runs out, or
/// `Wait::No`) and free (the call creates), until the sweep lets the call finish.
#[tokio::test]
async fn a_dropped_call_leaves_every_connection_as_it_was() {
    let dir = TempDir::new("sqlite-drops");
    let (db, other) = two_pools(&dir).await;
    let mut key = 100;
    for held in [true, false] {
        for wait in [Wait::Timeout(BOUND), Wait::No] {
            let holder = if held {
                Some(hold_write_lock(&other).await)
            } else {
                None
            };
            for pendings in 0.. {
                key += 1;
                let call = PullRequest::once(key, new_pr(key)).wait(wait).exec(&db);
                let finished = guarded(drop_at_await_point(call, pendings)).await;
                let case = format!("held: {held}, {wait:?}, dropped after {pendings} pendings");
                assert_every_connection_restored(&db, &case).await;
                if let Some(result) = finished {
                    match result {
                        Ok(outcome) => assert!(!held && outcome.is_created(), "{case}"),
                        Err(err) => assert!(
                            held && matches!(
                                err,
                                Error::LockTimeout { .. } | Error::LockBusy { .. }
                            ),
                            "{case}: {err:?}"
                        ),
                    }
                    break;
                }
            }
            if let Some(holder) = holder {
                holder.rollback().await.unwrap();
            }
        }
    }
}

/// Two callers of one pool: while the first holds the pool's writer turn (and SQLite's lock)
/// inside its `make_data`, the second, bounded to 300 ms, gets `LockTimeout` with its bound
/// while the first is still inside: the in-process wait is bounded too, not by the turn's own
/// 5 s (`WRITER_WAIT`, longer than the guard here), and `Wait::No` does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_ends_the_wait_for_a_writer_of_the_same_pool() {
    /// Shorter than `WRITER_WAIT` (5 s): a caller that waits for the turn as long as that
    /// fails the guard.
    const TURN_GUARD: Duration = Duration::from_secs(4);
    let dir = TempDir::new("sqlite-writer-turn");
    let (db, _) = two_pools(&dir).await;
    let (inside_tx, inside_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn({
        let db = db.clone();
        async move {
            PullRequest::create_once_with(&db, 1, || async move {
                inside_tx.send(()).unwrap();
                release_rx.await.unwrap();
                Ok::<_, std::convert::Infallible>(new_pr(1))
            })
            .await
        }
    });
    inside_rx.await.unwrap();

    let err = tokio::time::timeout(
        TURN_GUARD,
        PullRequest::once(2, new_pr(2))
            .wait(Wait::Timeout(BOUND))
            .exec(&db),
    )
    .await
    .expect("waited for the writer turn longer than its bound")
    .expect_err("the first caller writes");
    assert!(
        matches!(err, Error::LockTimeout { timeout: Some(bound), .. } if bound == BOUND),
        "{err:?}"
    );
    let err = tokio::time::timeout(
        TURN_GUARD,
        PullRequest::once(2, new_pr(2)).wait(Wait::No).exec(&db),
    )
    .await
    .expect("Wait::No waited for the writer turn")
    .expect_err("the first caller writes");
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    assert!(!first.is_finished(), "the first caller is still inside");

    release_tx.send(()).unwrap();
    assert!(first.await.unwrap().unwrap().is_created());
    let outcome = PullRequest::once(2, new_pr(2))
        .wait(Wait::Timeout(BOUND))
        .exec(&db)
        .await
        .unwrap();
    assert!(outcome.is_created());
    assert_every_connection_restored(&db, "waits for the writer turn").await;
}

/// Inside a caller's DEFERRED transaction the bound applies to the write lock too: the call
/// returns `LockTimeout` (or `LockBusy`) while another connection holds the lock, not after
/// the connection's 30 s (SQLite never lets a transaction that has read wait for the write
/// lock: the answer comes at once), the caller's connection keeps its `busy_timeout` and its
/// transaction is usable; once the lock is free the same call creates, and the caller's commit
/// keeps the row.
#[tokio::test]
async fn a_bound_applies_inside_a_callers_transaction() {
    let dir = TempDir::new("sqlite-callers-bound");
    let (db, other) = two_pools(&dir).await;
    let txn = db
        .begin_with_options(with_mode(SqliteTransactionMode::Deferred))
        .await
        .unwrap();
    let holder = hold_write_lock(&other).await;

    let err = guarded(
        PullRequest::once(9, new_pr(9))
            .wait(Wait::Timeout(BOUND))
            .exec(&txn),
    )
    .await
    .expect_err("the write lock is held");
    assert!(
        matches!(err, Error::LockTimeout { timeout: Some(bound), .. } if bound == BOUND),
        "{err:?}"
    );
    assert_eq!(busy_timeout_of(&txn).await, BUSY_TIMEOUT);
    let err = guarded(PullRequest::once(9, new_pr(9)).wait(Wait::No).exec(&txn))
        .await
        .expect_err("the write lock is held");
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    assert_eq!(busy_timeout_of(&txn).await, BUSY_TIMEOUT);
    // It has tried to write: a new one for what follows (see below).
    txn.rollback().await.unwrap();

    // Dropped at each await point, the call leaves the caller's connection as it was. A
    // transaction of its own each time: one that has tried to write holds a read lock, and
    // SQLite then refuses its next write at once, without a wait to drop the call in. How
    // many times a statement is pending depends on the connection's thread: three sweeps.
    for _sweep in 0..3 {
        for pendings in 0.. {
            let txn = db
                .begin_with_options(with_mode(SqliteTransactionMode::Deferred))
                .await
                .unwrap();
            let call = PullRequest::once(9, new_pr(9))
                .wait(Wait::Timeout(BOUND))
                .exec(&txn);
            let finished = guarded(drop_at_await_point(call, pendings)).await;
            assert_eq!(
                busy_timeout_of(&txn).await,
                BUSY_TIMEOUT,
                "dropped after {pendings} pendings"
            );
            txn.rollback().await.unwrap();
            assert_every_connection_restored(&db, &format!("dropped after {pendings} pendings"))
                .await;
            if let Some(result) = finished {
                let err = result.expect_err("the write lock is held");
                assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
                break;
            }
        }
    }
    holder.rollback().await.unwrap();

    let txn = db
        .begin_with_options(with_mode(SqliteTransactionMode::Deferred))
        .await
        .unwrap();
    let outcome = PullRequest::once(9, new_pr(9))
        .wait(Wait::Timeout(BOUND))
        .exec(&txn)
        .await
        .unwrap();
    assert!(outcome.is_created());
    assert_eq!(busy_timeout_of(&txn).await, BUSY_TIMEOUT);
    txn.commit().await.unwrap();
    assert_eq!(rows_for(&db, 9).await, 1);
    assert_every_connection_restored(&db, "calls in a caller's transaction").await;
}
