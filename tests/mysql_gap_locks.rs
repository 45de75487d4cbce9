//! MariaDB only: one key's lock never blocks another key (issue 22).
//!
//! When a key's lock row was inserted by a transaction that then rolled back, InnoDB turned
//! the locks that other transactions were waiting with on that row (the crate's
//! `INSERT ... ON DUPLICATE KEY UPDATE`) into *gap* locks, which outlive the wait: the holder
//! of the key then blocked inserts of every missing key's lock row in the gap (here, with the
//! lock table otherwise empty, all of them). Repro: A, in a caller's transaction, is the first
//! to lock key 1 (its lock row does not exist yet) and rolls back; B waited for key 1, gets it
//! and stays open; then keys 3 (`Wait::No`) and 4 (a 3 s bound), never locked before, must be
//! granted at once, in a caller's transaction and on the pool. Before the fix key 3 failed
//! with `LockBusy` and key 4 with `LockTimeout`, for B on a caller's transaction and for B on
//! the crate's own transaction (a pool call whose `make_data` holds the lock).
//!
//! On the per-key table of 0.1 and 0.2, whose rows the locks make: the slots (0.3) are made by
//! the migration, so no lock makes or removes a row there.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::{key_of, new_pr, rows_for, until_someone_waits};
use entity::PullRequest;
use sea_orm::{DatabaseConnection, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{IdempotentCreate, Wait};
use test_support::TestDb;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy)]
enum On {
    CallersTransaction,
    Pool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_first_lock_blocks_no_other_key_b_in_a_callers_transaction() {
    rolled_back_first_lock_blocks_no_other_key(On::CallersTransaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_first_lock_blocks_no_other_key_b_on_the_pool() {
    rolled_back_first_lock_blocks_no_other_key(On::Pool).await;
}

async fn rolled_back_first_lock_blocks_no_other_key(b_on: On) {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    // Rows made by a lock: the per-key table's (the slots exist from the migration on).
    common::mysql::with_the_per_key_table(&test_db).await;
    let (db_a, db_b) = (test_db.connect(1).await, test_db.connect(1).await);
    let (db_c, observer) = (test_db.connect(1).await, test_db.connect(1).await);
    let rc = || Some(IsolationLevel::ReadCommitted);

    // A is the first ever to lock key 1, in its transaction.
    let txn_a = db_a.begin_with_config(rc(), None).await.unwrap();
    assert!(
        PullRequest::create_once(&txn_a, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
    // B waits for key 1 and, once granted, holds it until told to finish.
    let (granted_tx, granted) = oneshot::channel::<()>();
    let (finish_tx, finish) = oneshot::channel::<()>();
    let b = tokio::spawn(hold_key_1(db_b, b_on, granted_tx, finish));
    until_someone_waits(&observer, key_of(1)).await;
    txn_a.rollback().await.unwrap();
    granted.await.expect("B was granted key 1");

    // Keys 3 and 4 were never locked: nobody holds them.
    for c_on in [On::CallersTransaction, On::Pool] {
        let (key_3, key_4) = match c_on {
            On::CallersTransaction => (3, 4),
            On::Pool => (5, 6),
        };
        let busy = PullRequest::once(key_3, new_pr(key_3)).wait(Wait::No);
        let bounded =
            PullRequest::once(key_4, new_pr(key_4)).wait(Wait::Timeout(Duration::from_secs(3)));
        let txn_c = match c_on {
            On::CallersTransaction => Some(db_c.begin_with_config(rc(), None).await.unwrap()),
            On::Pool => None,
        };
        let (busy, bounded) = match &txn_c {
            Some(txn_c) => (busy.exec(txn_c).await, bounded.exec(txn_c).await),
            None => (busy.exec(&db_c).await, bounded.exec(&db_c).await),
        };
        assert!(
            busy.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "B on {b_on:?}, C on {c_on:?}: key {key_3} with Wait::No: {busy:?}"
        );
        assert!(
            bounded.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "B on {b_on:?}, C on {c_on:?}: key {key_4} with a 3 s bound: {bounded:?}"
        );
        if let Some(txn_c) = txn_c {
            txn_c.commit().await.unwrap();
        }
    }
    finish_tx.send(()).unwrap();
    b.await.unwrap();
    for key in [1, 3, 4, 5, 6] {
        assert_eq!(rows_for(&observer, key).await, 1, "key {key}");
    }
}

/// B: takes key 1 (waiting for A), says so, and holds it until `finish`; on a caller's
/// transaction it then commits, on the pool its `make_data` returns.
async fn hold_key_1(
    db: DatabaseConnection,
    on: On,
    granted: oneshot::Sender<()>,
    finish: oneshot::Receiver<()>,
) {
    match on {
        On::CallersTransaction => {
            let txn = db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
                .unwrap();
            let outcome = PullRequest::create_once(&txn, 1, new_pr(1)).await.unwrap();
            assert!(outcome.is_created());
            granted.send(()).unwrap();
            finish.await.unwrap();
            txn.commit().await.unwrap();
        }
        On::Pool => {
            let outcome = PullRequest::create_once_with(&db, 1, || async move {
                granted.send(()).unwrap();
                finish.await.unwrap();
                Ok::<_, std::convert::Infallible>(new_pr(1))
            })
            .await
            .unwrap();
            assert!(outcome.is_created());
        }
    }
}
