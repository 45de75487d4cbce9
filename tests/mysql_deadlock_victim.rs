//! MariaDB only: what InnoDB does to a caller's transaction that the crate must not hide.
//!
//! A deadlock (error 1213) makes InnoDB roll back the victim's WHOLE transaction, and the
//! session goes on in autocommit. `deadlock_victims_later_calls_fail_typed_and_write_nothing`
//! provokes a real deadlock between two callers' transactions (coordinated through the
//! server's process list, no sleeps), then calls again on the victim's transaction: that call
//! must fail with `Error::TransactionAborted` and write nothing. Before the fix that call ran
//! in autocommit: it failed with a raw, non-retryable `1305 SAVEPOINT sea_orm_idempotent_N
//! does not exist` after its row had been auto-committed (it survived the caller's rollback),
//! or, as in the run recorded in the fix's commit, it never returned (killed after 10 min).
#![cfg(feature = "mysql")]

mod common;

use common::{key_of, new_pr, rows_for, until_someone_waits};
use entity::PullRequest;
use sea_orm::{DatabaseTransaction, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate};
use test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_victims_later_calls_fail_typed_and_write_nothing() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let (db_a, db_b) = (test_db.connect(1).await, test_db.connect(1).await);
    let observer = test_db.connect(1).await;
    // READ COMMITTED: under MariaDB's default REPEATABLE READ, two callers' transactions
    // creating different keys wait for each other on the entity table (a separate issue).
    let rc = || Some(IsolationLevel::ReadCommitted);
    let txn_a = db_a.begin_with_config(rc(), None).await.unwrap();
    let txn_b = db_b.begin_with_config(rc(), None).await.unwrap();
    // A holds key 1, B holds key 2.
    assert!(
        PullRequest::create_once(&txn_a, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        PullRequest::create_once(&txn_b, 2, new_pr(2))
            .await
            .unwrap()
            .is_created()
    );
    // A waits for key 2 ...
    let a = tokio::spawn(async move {
        let result = PullRequest::create_once(&txn_a, 2, new_pr(2)).await;
        (txn_a, result)
    });
    until_someone_waits(&observer, key_of(2)).await;
    // ... and B asks for key 1: a cycle, which InnoDB breaks by rolling one of them back.
    let b_result = PullRequest::create_once(&txn_b, 1, new_pr(1)).await;
    let (txn_a, a_result) = a.await.unwrap();
    let (victim, survivor): (DatabaseTransaction, DatabaseTransaction) =
        match (&a_result, &b_result) {
            (Err(err), Ok(_)) => {
                assert!(matches!(err, Error::Deadlock { .. }), "{err:?}");
                (txn_a, txn_b)
            }
            (Ok(_), Err(err)) => {
                assert!(matches!(err, Error::Deadlock { .. }), "{err:?}");
                (txn_b, txn_a)
            }
            other => panic!("expected one deadlock victim, got {other:?}"),
        };
    let deadlock = a_result.err().or(b_result.err()).unwrap();
    assert!(deadlock.is_retryable());
    assert!(deadlock.needs_new_transaction(), "{deadlock:?}");
    assert!(
        deadlock.to_string().contains("retry the whole transaction"),
        "{deadlock}"
    );

    // The victim's transaction is gone: its next call fails typed and writes nothing.
    let err = PullRequest::create_once(&victim, 3, new_pr(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TransactionAborted(_)), "{err:?}");
    assert!(err.needs_new_transaction());
    // So does the general lock on it.
    let err =
        sea_orm_idempotent::acquire_advisory_lock(&victim, key_of(4), sea_orm_idempotent::Wait::No)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::TransactionAborted(_)), "{err:?}");
    victim.rollback().await.unwrap();
    survivor.commit().await.unwrap();
    assert_eq!(
        rows_for(&observer, 3).await,
        0,
        "the victim's later call wrote a row"
    );
    assert_eq!(rows_for(&observer, 1).await, 1);
    assert_eq!(rows_for(&observer, 2).await, 1);
}
