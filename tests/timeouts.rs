//! Server-side timeouts meant for the application's queries do not cut a lock wait short, and
//! every setting a wait changes is restored.
//!
//! These failed before the wait turned `statement_timeout` off for itself: with
//! `statement_timeout = 500ms` on the database, `Wait::Forever` and `Wait::Timeout(5s)` failed
//! after 0.5 s with an untyped, non-retryable `Error::Database` (SQLSTATE 57014), though the
//! holder let go within the bound; and a `deadlock_timeout` so large that twice it overflows
//! `lock_timeout` made every contended `Wait::Forever` fail with "invalid value for parameter".
//!
//! The holder keeps the key past the statement timeout with a sleep: outlasting a timeout is
//! what these tests are about. Whether the waiter is waiting is read from `pg_locks`.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{key_of, lock_pids, new_pr, rows_for, until_someone_waits};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;

/// The test database with `setting = value` for every new session (`ALTER DATABASE ... SET`).
async fn database_with(test_db: &TestDb, setting: &str, value: &str) {
    let admin = test_db.connect(1).await;
    // Names come from this file, never from data.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" SET {setting} = '{value}'",
            test_db.name
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

async fn show(db: &impl ConnectionTrait, setting: &str) -> String {
    db.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT current_setting($1) AS value",
        [setting.into()],
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "value")
    .unwrap()
}

/// Holds pr 1's key on `holder` while `call` waits for it, past the 500 ms statement timeout,
/// then lets go; returns what `call` returned.
async fn outlast_the_statement_timeout<T: Send + 'static>(
    holder: &DatabaseConnection,
    observer: &DatabaseConnection,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(1), Wait::Forever)
        .await
        .unwrap();
    let waiter = tokio::spawn(call);
    until_someone_waits(observer, key_of(1)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !waiter.is_finished(),
        "the wait ended while the key was held"
    );
    held.commit().await.unwrap();
    waiter.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_does_not_end_a_wait() {
    let test_db = TestDb::new().await;
    database_with(&test_db, "statement_timeout", "500ms").await;
    let holder = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    let db = test_db.connect(2).await;
    assert_eq!(show(&db, "statement_timeout").await, "500ms");

    let forever = {
        let db = db.clone();
        async move { PullRequest::create_once(&db, 1, new_pr(1)).await }
    };
    let outcome = outlast_the_statement_timeout(&holder, &observer, forever).await;
    assert!(
        outcome
            .expect("Wait::Forever outlasts statement_timeout")
            .is_created()
    );

    let bounded = {
        let db = db.clone();
        async move {
            let txn = db.begin().await.unwrap();
            let result =
                acquire_advisory_lock(&txn, key_of(1), Wait::Timeout(Duration::from_secs(5))).await;
            // Both timeouts are as they were after the wait.
            let settings = (
                show(&txn, "statement_timeout").await,
                show(&txn, "lock_timeout").await,
            );
            txn.commit().await.unwrap();
            (result, settings)
        }
    };
    let (result, settings) = outlast_the_statement_timeout(&holder, &observer, bounded).await;
    result.expect("Wait::Timeout(5s) outlasts statement_timeout");
    assert_eq!(settings, ("500ms".to_owned(), "0".to_owned()));

    assert_eq!(rows_for(&db, 1).await, 1);
}

/// A cancel request (`pg_cancel_backend`, or a statement timeout that still applied) that ends
/// a lock wait is a typed, retryable `LockTimeout`, and the transaction stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_is_a_lock_timeout() {
    let test_db = TestDb::new().await;
    let holder = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(3), Wait::Forever)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        let txn = db.begin().await.unwrap();
        let result = acquire_advisory_lock(&txn, key_of(3), Wait::Forever).await;
        let usable = show(&txn, "lock_timeout").await;
        txn.rollback().await.unwrap();
        (result, usable)
    });
    until_someone_waits(&observer, key_of(3)).await;
    let waiting = lock_pids(&observer, key_of(3), false).await;
    observer
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_cancel_backend($1)",
            [waiting[0].into()],
        ))
        .await
        .unwrap();
    let (result, lock_timeout) = waiter.await.unwrap();
    let err = result.expect_err("cancelled");
    assert!(
        matches!(err, Error::LockTimeout { timeout: None, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        lock_timeout, "0",
        "restored, and the transaction still answers"
    );
    held.rollback().await.unwrap();
}

/// With a `deadlock_timeout` so large that twice it is beyond `lock_timeout`'s range, a
/// `Wait::Forever` slice is capped instead of being refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_deadlock_timeout_does_not_overflow_the_slice() {
    let test_db = TestDb::new().await;
    database_with(&test_db, "deadlock_timeout", "2000000s").await;
    let holder = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(4), Wait::Forever)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move { PullRequest::create_once(&db, 4, new_pr(4)).await });
    until_someone_waits(&observer, key_of(4)).await;
    held.commit().await.unwrap();
    assert!(waiter.await.unwrap().unwrap().is_created());
}
