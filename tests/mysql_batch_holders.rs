//! MariaDB only: a batch's chunk of new keys whose lock rows are made inside its own
//! transaction meets a key a single call holds, its lock row made by that call and not yet
//! committed. The chunk's insert of its lock rows never waits: it fails at once, and the
//! chunk waits for the held row in key order (`FOR UPDATE`). When the holder commits, the
//! key is `Existing`; when it rolls back, the row vanishes under the chunk's wait, the chunk
//! begins again and makes it. Either way every other key is `Created`, each key has one row,
//! and while the chunk holds its keys (in `make_data`) a key never locked before, between
//! the chunk's keys, is granted at once (`Wait::No`) in a caller's READ COMMITTED
//! transaction: no wait of the chunk became a gap lock.
#![cfg(feature = "mysql")]

mod common;

use common::{key_of, new_pr, rows_for, until_someone_waits};
use entity::{NewPullRequest, PullRequest};
use sea_orm::{IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait};
use std::sync::Arc;
use test_support::TestDb;

use tokio::sync::{Notify, mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_waits_for_a_held_new_key_that_is_then_committed() {
    chunk_meets_a_held_new_key(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_waits_for_a_held_new_key_that_is_then_rolled_back() {
    chunk_meets_a_held_new_key(false).await;
}

async fn chunk_meets_a_held_new_key(holder_commits: bool) {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let (db_a, db_b) = (test_db.connect(1).await, test_db.connect(2).await);
    let (db_c, observer) = (test_db.connect(1).await, test_db.connect(1).await);
    // The chunk's keys are the even ones; the fresh keys, locked while the chunk holds its
    // own, are odd ones between them.
    let chunk: Vec<i64> = (1..=8).map(|k| 2 * k).collect();
    let held = 8;

    // A is the first ever to lock `held`: its row is made inside its transaction.
    let (holding_tx, holding) = oneshot::channel::<()>();
    let (end_tx, end) = oneshot::channel::<()>();
    let a = tokio::spawn(async move {
        PullRequest::create_once_with(&db_a, held, || async move {
            holding_tx.send(()).unwrap();
            end.await.unwrap();
            if holder_commits {
                Ok(new_pr(held))
            } else {
                Err("the API is down")
            }
        })
        .await
    });
    holding.await.expect("A holds the key");
    // B, the batch, waits for it; once granted it holds its keys until told to finish.
    let (granted_tx, mut granted) = mpsc::unbounded_channel::<Vec<i64>>();
    let finish = Arc::new(Notify::new());
    let b = tokio::spawn({
        let keys = chunk.clone();
        let finish = finish.clone();
        async move {
            PullRequest::many_with(keys, move |missing: Vec<i64>| {
                let (granted_tx, finish) = (granted_tx.clone(), finish.clone());
                async move {
                    granted_tx.send(missing.clone()).unwrap();
                    finish.notified().await;
                    Ok::<Vec<NewPullRequest>, std::io::Error>(
                        missing.into_iter().map(new_pr).collect(),
                    )
                }
            })
            .exec(&db_b)
            .await
        }
    });
    until_someone_waits(&observer, key_of(held)).await;
    end_tx.send(()).unwrap();
    let a_result = a.await.unwrap();
    if holder_commits {
        assert!(a_result.unwrap().is_created());
    } else {
        assert!(
            matches!(a_result, Err(Error::MakeData(_))),
            "A: {a_result:?}"
        );
    }
    let missing = granted.recv().await.expect("B was granted its keys");
    let expected: Vec<i64> = chunk
        .iter()
        .copied()
        .filter(|&k| !holder_commits || k != held)
        .collect();
    assert_eq!(missing, expected, "the keys B makes");

    // Keys never locked before, between B's: nobody holds them, whatever B holds.
    for fresh in [held - 1, held + 1, 1, 17] {
        let txn = db_c
            .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await
            .unwrap();
        let result = PullRequest::once(fresh, new_pr(fresh))
            .wait(Wait::No)
            .exec(&txn)
            .await;
        txn.commit().await.unwrap();
        assert!(
            result.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "key {fresh} with Wait::No while the chunk holds its keys: {result:?}"
        );
    }
    finish.notify_one();
    let outcomes = b.await.unwrap().unwrap();
    let shape: Vec<(i64, bool)> = outcomes
        .iter()
        .map(|outcome| (outcome.model().pr_id, outcome.is_created()))
        .collect();
    let want: Vec<(i64, bool)> = chunk
        .iter()
        .map(|&k| (k, !(holder_commits && k == held)))
        .collect();
    assert_eq!(shape, want);
    for key in chunk.iter().copied().chain([held - 1, held + 1, 1, 17]) {
        assert_eq!(rows_for(&observer, key).await, 1, "key {key}");
    }
}
