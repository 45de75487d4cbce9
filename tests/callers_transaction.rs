//! `create_once` on a caller's transaction: calls that overlap on one transaction, and calls
//! dropped midway, never lose a row reported as `Created`, never surface a raw savepoint error
//! and never leave the caller's transaction silently aborted.
//!
//! These failed before the crate named its own savepoints and made calls on one transaction
//! take turns (with SeaORM's depth-numbered nested transactions):
//! - `overlapping_calls_on_one_transaction_keep_each_others_rows`: the failing call rolled back
//!   to `_sqlx_savepoint_1`, which undid the other call's insert; pr 1 had no row after COMMIT;
//! - `a_call_dropped_at_any_point_leaves_the_callers_transaction_whole`: a call dropped inside
//!   SeaORM's savepoint handling left the depth count wrong; the next call failed with a raw
//!   `savepoint "_sqlx_savepoint_1" does not exist`, or the caller's COMMIT answered ROLLBACK
//!   and its own row was gone.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{key_of, new_pr, rows_for};
use entity::{NewPullRequest, PullRequest};
use sea_orm::{ActiveModelTrait, DatabaseTransaction, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::oneshot;

/// How `b`'s `make_data` fails in [`overlap`].
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// `make_data` returns an error.
    MakeData,
    /// The data breaks the table's `CHECK (number > 0)`.
    Check,
}

/// The probe's repro: on one transaction, `b` (pr 2) is inside its `make_data` when `a` (pr 1)
/// starts; `b` then fails. Returns (a's result, b's result, rows of pr 1 after COMMIT).
async fn overlap(failure: Failure) -> (bool, Error, u64) {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    let txn = db.begin().await.unwrap();
    let (inside_tx, inside_rx) = oneshot::channel::<()>();
    let (a_done_tx, a_done_rx) = oneshot::channel::<()>();
    let a = async {
        inside_rx.await.unwrap();
        let created = PullRequest::create_once(&txn, 1, new_pr(1))
            .await
            .expect("a succeeds")
            .is_created();
        let _ = a_done_tx.send(());
        created
    };
    let b = PullRequest::create_once_with(&txn, 2, || async {
        inside_tx.send(()).unwrap();
        // Without turns `a` runs to completion right here; with them it waits for `b`, so
        // this bound lets `b` go on.
        let _ = tokio::time::timeout(Duration::from_millis(500), a_done_rx).await;
        match failure {
            Failure::MakeData => Err("the API is down"),
            Failure::Check => Ok(NewPullRequest {
                number: 0,
                ..new_pr(2)
            }),
        }
    });
    let (a, b) = tokio::join!(a, b);
    txn.commit().await.unwrap();
    (a, b.expect_err("b fails"), rows_for(&db, 1).await)
}

#[tokio::test]
async fn overlapping_calls_on_one_transaction_keep_each_others_rows() {
    let (a_created, b_err, rows) = overlap(Failure::MakeData).await;
    assert!(a_created);
    assert!(matches!(b_err, Error::MakeData(_)), "{b_err:?}");
    assert_eq!(
        rows, 1,
        "a returned Created: its row must survive b's failure"
    );
}

#[tokio::test]
async fn overlapping_calls_survive_a_constraint_violation() {
    let (a_created, b_err, rows) = overlap(Failure::Check).await;
    assert!(a_created);
    assert!(matches!(b_err, Error::Database(_)), "{b_err:?}");
    assert_eq!(
        rows, 1,
        "a returned Created: its row must survive b's failure"
    );
}

/// Inserts a row as the caller's own write, without the crate.
async fn callers_own_write(txn: &DatabaseTransaction, pr_id: i64) {
    PullRequest::new_active_model(&pr_id, new_pr(pr_id))
        .insert(txn)
        .await
        .expect("the caller's own insert");
}

/// A sweep of drop points over every step of a call on a caller's transaction: its savepoint,
/// the try-lock, a contended wait (the key held by another session) and its end, the insert,
/// the release. After each drop the caller makes another call and commits. Either that call
/// succeeds and the caller's own write is committed, or it fails loudly with
/// `TransactionAborted`; never a raw savepoint error, never a silent rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_at_any_point_leaves_the_callers_transaction_whole() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    let holder_db = test_db.connect(1).await;
    let mut aborted = 0;
    for step in 0..120_i64 {
        // Every other round the key is held by another session, so the call waits (bounded
        // at 20 ms) and the drop lands before, during or after the wait.
        let contended = step % 2 == 1;
        let dropped_key = 10_000 + step;
        let holder = holder_db.begin().await.unwrap();
        if contended {
            acquire_advisory_lock(&holder, key_of(dropped_key), Wait::Forever)
                .await
                .unwrap();
        }
        let txn = db.begin().await.unwrap();
        let own = 20_000 + step;
        callers_own_write(&txn, own).await;
        let drop_after = Duration::from_micros(u64::try_from(step).unwrap() * 250);
        let _ = tokio::time::timeout(
            drop_after,
            PullRequest::once(dropped_key, new_pr(dropped_key))
                .wait(Wait::Timeout(Duration::from_millis(20)))
                .exec(&txn),
        )
        .await;
        holder.rollback().await.unwrap();
        let next_key = 30_000 + step;
        match PullRequest::create_once(&txn, next_key, new_pr(next_key)).await {
            Ok(outcome) => {
                assert!(outcome.is_created(), "step {step}");
                txn.commit().await.unwrap();
                assert_eq!(
                    rows_for(&db, own).await,
                    1,
                    "step {step}: the caller's own write was silently rolled back"
                );
                assert_eq!(rows_for(&db, next_key).await, 1, "step {step}");
            }
            Err(Error::TransactionAborted(_)) => {
                aborted += 1;
                txn.rollback().await.unwrap();
            }
            Err(other) => panic!("step {step}: {other:?}"),
        }
    }
    // The crate's statements never abort the caller's transaction when their call is dropped
    // (no data here breaks a constraint), so this sweep never sees an aborted one.
    assert_eq!(aborted, 0);
}

/// A caller's transaction aborted by the caller's own failed statement: the crate's call says
/// so, typed, instead of a raw "current transaction is aborted".
#[tokio::test]
async fn an_aborted_callers_transaction_is_reported_as_such() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let txn = db.begin().await.unwrap();
    let broken = NewPullRequest {
        number: 0,
        ..new_pr(1)
    };
    PullRequest::new_active_model(&1, broken)
        .insert(&txn)
        .await
        .expect_err("CHECK (number > 0)");
    let err = PullRequest::create_once(&txn, 2, new_pr(2))
        .await
        .expect_err("the transaction is aborted");
    assert!(matches!(err, Error::TransactionAborted(_)), "{err:?}");
    assert!(!err.is_retryable());
    txn.rollback().await.unwrap();
}

/// A call made inside the `make_data` of a call on the same transaction runs nested in its
/// savepoint (it does not wait for its own caller's turn), and both rows are committed.
#[tokio::test]
async fn a_call_inside_make_data_on_the_same_transaction_nests() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let txn = db.begin().await.unwrap();
    let outer = tokio::time::timeout(
        Duration::from_secs(30),
        PullRequest::create_once_with(&txn, 1, || async {
            let (x, y) = tokio::join!(
                PullRequest::create_once(&txn, 2, new_pr(2)),
                PullRequest::create_once(&txn, 3, new_pr(3)),
            );
            assert!(x?.is_created() && y?.is_created());
            Ok::<_, Error>(new_pr(1))
        }),
    )
    .await
    .expect("a nested call must not wait for its own caller")
    .unwrap();
    assert!(outer.is_created());
    txn.commit().await.unwrap();
    for pr_id in 1..=3 {
        assert_eq!(rows_for(&db, pr_id).await, 1);
    }
}
