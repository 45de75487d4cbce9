//! Dropping a `create_once` that is waiting for a lock (a request timeout, a client gone), and
//! a bounded wait that times out inside a caller's transaction.
//!
//! Without bounded server-side waits this test fails: sqlx pings a connection before returning
//! it to the pool, the ping waits behind the abandoned lock statement, and that statement waits
//! for as long as the holder holds the key. With a pool of one the next call then cannot get a
//! connection: it fails with a pool timeout (set to 10 s here) instead of completing.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{key_of, lock_rows, new_pr, rows_for, small_pool, until_someone_waits};
use entity::PullRequest;
use sea_orm::TransactionTrait;
use sea_orm_idempotent::{IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_leaves_no_lock_and_no_stuck_connection() {
    let test_db = TestDb::new().await;
    let observer = test_db.connect(1).await;
    let holder = test_db.connect(1).await;
    // The caller's pool has ONE connection; its acquire timeout turns "stuck" into an error.
    let db = small_pool(&test_db.url, 1).await;

    let key = key_of(1);
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key, Wait::Forever)
        .await
        .unwrap();

    // The caller goes away while PostgreSQL has it waiting for the key.
    tokio::select! {
        result = PullRequest::create_once(&db, 1, new_pr(1)) => {
            panic!("create_once finished while the key was held: {result:?}")
        }
        () = until_someone_waits(&observer, key) => {}
    }

    // The pool's only connection comes back: another key completes while the holder still
    // holds key 1 (it would wait for the holder, i.e. forever here, if the abandoned wait
    // were not bounded).
    let other = PullRequest::create_once(&db, 2, new_pr(2)).await.unwrap();
    assert!(other.is_created());

    // The abandoned wait is over and was never granted: only the holder has the key.
    assert_eq!(lock_rows(&observer, key).await, (1, 0));
    held.commit().await.unwrap();
    assert_eq!(lock_rows(&observer, key).await, (0, 0));

    // Nothing was written for the departed caller; a new delivery creates the row once.
    assert_eq!(rows_for(&db, 1).await, 0);
    assert!(
        PullRequest::create_once(&db, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
}

/// Inside a caller's transaction, a call whose `Wait::Timeout` runs out (the
/// key is held by another connection) returns `Error::LockTimeout` and rolls back only its own
/// savepoint: the caller's transaction stays usable, and the row it created earlier in the same
/// transaction commits with it, while nothing is written for the timed-out key. (Nothing is
/// dropped here: the call returns its error.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_wait_leaves_the_callers_transaction_usable() {
    let test_db = TestDb::new().await;
    let holder = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let key = key_of(3);
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key, Wait::Forever)
        .await
        .unwrap();

    let txn = db.begin().await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 4, new_pr(4))
            .await
            .unwrap()
            .is_created()
    );
    let err = PullRequest::once(3, new_pr(3))
        .wait(Wait::Timeout(Duration::from_millis(50)))
        .exec(&txn)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sea_orm_idempotent::Error::LockTimeout { .. }),
        "{err:?}"
    );
    // The timeout rolled back only its own savepoint: the earlier row commits with the caller.
    txn.commit().await.unwrap();
    held.commit().await.unwrap();
    assert_eq!(rows_for(&db, 4).await, 1);
    assert_eq!(rows_for(&db, 3).await, 0);
}
