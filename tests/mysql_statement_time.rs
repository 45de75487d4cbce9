//! MariaDB: a session's `max_statement_time`, meant for the application's queries, does not
//! cut a lock wait short (as PostgreSQL's `statement_timeout` does not: `tests/timeouts.rs`).
//!
//! Before the lock statements set `max_statement_time = 0` for themselves, with
//! `max_statement_time = 0.5` on the session every wait below failed after half a second with
//! error 1969 ("Query execution was interrupted (max_statement_time exceeded)"), an untyped
//! `Error::Database`, though the holder let go well within the call's bound.
//!
//! The holder keeps the key past the statement time with a sleep: outlasting it is what these
//! tests are about. Whether the waiter waits is read from the process list.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::{key_of, new_pr, rows_for, until_someone_waits};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;

/// A pool of one session whose statements may run for at most half a second.
async fn short_statements(test_db: &TestDb) -> DatabaseConnection {
    let db = test_db.connect(1).await;
    db.execute_unprepared("SET SESSION max_statement_time = 0.5")
        .await
        .unwrap();
    db
}

/// Holds pr `pr`'s key (its lock row committed first) on `holder` while `call` waits for it,
/// past the session's statement time, then lets go; returns what `call` returned.
async fn outlast_the_statement_time<T: Send + 'static>(
    holder: &DatabaseConnection,
    pr: i64,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(pr), Wait::Forever)
        .await
        .unwrap();
    let waiter = tokio::spawn(call);
    until_someone_waits(holder, key_of(pr)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !waiter.is_finished(),
        "the wait ended while the key was held"
    );
    held.commit().await.unwrap();
    waiter.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_max_statement_time_does_not_end_a_wait() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder = test_db.connect(2).await;
    let db = short_statements(&test_db).await;
    // Every key's lock row exists (committed) before it is held, as the holder's lock needs.
    for pr in 1..=4 {
        let txn = holder.begin().await.unwrap();
        acquire_advisory_lock(&txn, key_of(pr), Wait::No)
            .await
            .unwrap();
        txn.commit().await.unwrap();
    }

    let forever = {
        let db = db.clone();
        async move { PullRequest::create_once(&db, 1, new_pr(1)).await }
    };
    let outcome = outlast_the_statement_time(&holder, 1, forever).await;
    assert!(
        outcome
            .expect("Wait::Forever outlasts max_statement_time")
            .is_created()
    );

    let bounded = {
        let db = db.clone();
        async move {
            PullRequest::once(2, new_pr(2))
                .wait(Wait::Timeout(Duration::from_secs(5)))
                .exec(&db)
                .await
        }
    };
    let outcome = outlast_the_statement_time(&holder, 2, bounded).await;
    assert!(
        outcome
            .expect("Wait::Timeout(5s) outlasts max_statement_time")
            .is_created()
    );

    let batch = {
        let db = db.clone();
        async move { PullRequest::create_many_once(&db, [(3, new_pr(3))]).await }
    };
    let outcomes = outlast_the_statement_time(&holder, 3, batch).await;
    assert!(outcomes.expect("a batch outlasts max_statement_time")[0].is_created());

    let in_callers_transaction = {
        let db = db.clone();
        async move {
            let txn = db.begin().await.unwrap();
            let result = acquire_advisory_lock(&txn, key_of(4), Wait::Forever).await;
            txn.commit().await.unwrap();
            result
        }
    };
    outlast_the_statement_time(&holder, 4, in_callers_transaction)
        .await
        .expect("a caller's transaction's wait outlasts max_statement_time");

    for pr in 1..=3 {
        assert_eq!(rows_for(&db, pr).await, 1);
    }
    // The session's own limit still holds for its other statements.
    let err = db
        .execute_unprepared("SELECT SLEEP(2)")
        .await
        .map(|_| ())
        .expect_err("the session's max_statement_time still applies");
    assert!(format!("{err:?}").contains("1969"), "{err:?}");
}
