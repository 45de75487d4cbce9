//! MariaDB only: a new key's lock row is made inside the crate's own transaction (no commit of
//! its own), so a creator that rolls back makes the row vanish while others wait for it. Their
//! waits must not become gap locks (InnoDB turns the waits of `INSERT IGNORE`, `INSERT ... ON
//! DUPLICATE KEY UPDATE` and `LOCK IN SHARE MODE` on a vanished row into gap locks, which
//! block the inserts of every other new key in the gap; see `tests/mysql_gap_locks.rs`).
//!
//! - `a_pool_creators_rollback_leaves_its_waiter_no_gap_lock`: A, on the pool, is the first
//!   to lock key 1 and rolls back (its `make_data` fails) while B, on the pool, waits for key
//!   1; B gets it and holds it; keys never locked before must then be granted at once, on the
//!   pool and in a caller's transaction. With B waiting by `INSERT ... ON DUPLICATE KEY
//!   UPDATE` instead of the crate's `UPDATE`, key 3 failed: `LockBusy` (checked by hand).
//! - `new_keys_race_with_failing_and_dropped_creators`: rounds of neighbouring new keys, each
//!   asked for at once by callers that succeed, whose `make_data` fails, or that are dropped
//!   midway, over a pool of several connections: every succeeding caller succeeds (no
//!   deadlock, no lock timeout, no unique violation), every key ends with one row, and a key
//!   nobody else asks for is locked at once meanwhile. (Its windows are too short to catch
//!   a gap lock reliably: the test above is the one that does.)
//!
//! On the per-key table of 0.1 and 0.2, whose rows the locks make: the slots (0.3) are made by
//! the migration.
#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use common::{key_of, new_pr, rows_for, until_someone_waits};
use entity::{NewPullRequest, PullRequest};
use sea_orm::{DatabaseConnection, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_creators_rollback_leaves_its_waiter_no_gap_lock() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    // Rows made by a lock: the per-key table's (the slots exist from the migration on).
    common::mysql::with_the_per_key_table(&test_db).await;
    let (db_a, db_b) = (test_db.connect(1).await, test_db.connect(1).await);
    let (db_c, observer) = (test_db.connect(1).await, test_db.connect(1).await);

    // A is the first ever to lock key 1, on the pool: its row is made inside its transaction.
    let (holding_tx, holding) = oneshot::channel::<()>();
    let (fail_tx, fail) = oneshot::channel::<()>();
    let a = tokio::spawn(async move {
        PullRequest::create_once_with(&db_a, 1, || async move {
            holding_tx.send(()).unwrap();
            fail.await.unwrap();
            Err::<NewPullRequest, _>("the API is down")
        })
        .await
    });
    holding.await.expect("A holds key 1");
    // B waits for key 1 and, once granted, holds it until told to finish.
    let (granted_tx, granted) = oneshot::channel::<()>();
    let (finish_tx, finish) = oneshot::channel::<()>();
    let b = tokio::spawn(async move {
        PullRequest::create_once_with(&db_b, 1, || async move {
            granted_tx.send(()).unwrap();
            finish.await.unwrap();
            Ok::<_, std::convert::Infallible>(new_pr(1))
        })
        .await
    });
    until_someone_waits(&observer, key_of(1)).await;
    // A fails: its transaction rolls back, and key 1's row vanishes under B's wait.
    fail_tx.send(()).unwrap();
    let a_result = a.await.unwrap();
    assert!(
        matches!(a_result, Err(Error::MakeData(_))),
        "A: {a_result:?}"
    );
    granted.await.expect("B was granted key 1");

    // Keys 3 to 6 were never locked: nobody holds them, whatever B holds.
    let rc = || Some(IsolationLevel::ReadCommitted);
    for (in_txn, key_3, key_4) in [(true, 3, 4), (false, 5, 6)] {
        let busy = PullRequest::once(key_3, new_pr(key_3)).wait(Wait::No);
        let bounded =
            PullRequest::once(key_4, new_pr(key_4)).wait(Wait::Timeout(Duration::from_secs(3)));
        let (busy, bounded) = if in_txn {
            let txn = db_c.begin_with_config(rc(), None).await.unwrap();
            let results = (busy.exec(&txn).await, bounded.exec(&txn).await);
            txn.commit().await.unwrap();
            results
        } else {
            (busy.exec(&db_c).await, bounded.exec(&db_c).await)
        };
        assert!(
            busy.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "in a caller's transaction: {in_txn}: key {key_3} with Wait::No: {busy:?}"
        );
        assert!(
            bounded.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "in a caller's transaction: {in_txn}: key {key_4} with a 3 s bound: {bounded:?}"
        );
    }
    finish_tx.send(()).unwrap();
    assert!(b.await.unwrap().unwrap().is_created());
    for key in [1, 3, 4, 5, 6] {
        assert_eq!(rows_for(&observer, key).await, 1, "key {key}");
    }
}

/// How a caller of a round asks for its key.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// `create_once`: must create the row or find it.
    Succeeds,
    /// `make_data` fails after the lock is granted: the transaction rolls back, and with it a
    /// lock row this caller made.
    Fails,
    /// Dropped after a few milliseconds, wherever it is.
    Dropped,
    /// A key nobody else asks for, never locked before, locked with `Wait::No` in a caller's
    /// READ COMMITTED transaction: must be granted at once, whatever the other callers hold
    /// (a gap lock left by a wait would refuse it: its row's insert would wait).
    Fresh,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_race_with_failing_and_dropped_creators() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    common::mysql::with_the_per_key_table(&test_db).await;
    let db = test_db.connect(8).await;
    let observer = test_db.connect(1).await;
    const ROUNDS: i64 = 100;
    const KEYS: i64 = 6;
    let orders = [
        [
            Caller::Fails,
            Caller::Succeeds,
            Caller::Dropped,
            Caller::Fresh,
        ],
        [
            Caller::Dropped,
            Caller::Fails,
            Caller::Succeeds,
            Caller::Fresh,
        ],
        [
            Caller::Fails,
            Caller::Fails,
            Caller::Succeeds,
            Caller::Fresh,
        ],
    ];
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut calls = Vec::new();
        for k in 0..KEYS {
            // Neighbouring ids, new in every round.
            let pr_id = 1_000 + round * KEYS + k;
            let order = orders[((round + k) % orders.len() as i64) as usize];
            for (position, caller) in order.into_iter().enumerate() {
                let db = db.clone();
                calls.push(tokio::spawn(async move {
                    let result = call(&db, pr_id, caller, position).await;
                    (pr_id, caller, result)
                }));
            }
        }
        for call in calls {
            let (pr_id, caller, result) = call.await.unwrap();
            match (caller, result) {
                (Caller::Succeeds | Caller::Fresh, Ok(())) | (Caller::Dropped, _) => {}
                (Caller::Fails, Err(Error::MakeData(_))) => {}
                // A failing caller that came after the row was created finds it.
                (Caller::Fails, Ok(())) => {}
                (caller, Err(err)) => panic!("round {round}, key {pr_id}, {caller:?}: {err:?}"),
            }
        }
        for k in 0..KEYS {
            let pr_id = 1_000 + round * KEYS + k;
            assert_eq!(
                rows_for(&observer, pr_id).await,
                1,
                "round {round}, key {pr_id}"
            );
        }
    }
    println!("{ROUNDS} rounds in {:?}", started.elapsed());
}

/// Where the fresh keys' ids start (one for each key of a round).
const FRESH: i64 = 1_000_000;

/// One caller's call: `Ok` when it created the row or found it.
async fn call(
    db: &DatabaseConnection,
    pr_id: i64,
    caller: Caller,
    position: usize,
) -> Result<(), Error> {
    let wait = Wait::Timeout(Duration::from_secs(10));
    match caller {
        // Holds the lock a moment: long enough for others to meet what it holds.
        Caller::Succeeds => PullRequest::once_with(pr_id, || async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::convert::Infallible>(new_pr(pr_id))
        })
        .wait(wait)
        .exec(db)
        .await
        .map(drop),
        Caller::Fresh => {
            // After the others have begun. Only the lock table: a guarded insert with
            // `Wait::No` may also meet the entity table's AUTO-INC lock, which a concurrent
            // `INSERT ... SELECT` holds to its end (`innodb_autoinc_lock_mode = 1`).
            tokio::time::sleep(Duration::from_millis(3)).await;
            let txn = db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
                .unwrap();
            let fresh = key_of(FRESH + pr_id);
            let locked = acquire_advisory_lock(&txn, fresh, Wait::No).await;
            txn.commit().await.unwrap();
            locked
        }
        Caller::Fails => PullRequest::once_with(pr_id, || async move {
            tokio::task::yield_now().await;
            Err::<NewPullRequest, _>("the API is down")
        })
        .wait(wait)
        .exec(db)
        .await
        .map(drop),
        Caller::Dropped => {
            let call = PullRequest::once_with(pr_id, || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, std::convert::Infallible>(new_pr(pr_id))
            })
            .wait(wait)
            .exec(db);
            let bound = Duration::from_millis(1 + 2 * position as u64);
            match tokio::time::timeout(bound, call).await {
                Ok(result) => result.map(drop),
                Err(_) => Ok(()),
            }
        }
    }
}
