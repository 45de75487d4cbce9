//! A hot key: many callers of one pool on the same key at once (a webhook redelivered in a
//! burst). They take turns in the crate's waiting room (`src/turns.rs`) before taking a
//! connection, so they never hold more than one of the pool's connections and callers of other
//! keys keep going.
//!
//! `same_key_waiters_leave_the_pool_to_other_keys` fails without the waiting room: the hot
//! key's callers take both connections of the pool and wait in PostgreSQL for the key, so the
//! other key's call cannot get a connection and fails with the pool's acquire timeout (10 s
//! here), and `pg_locks` shows two waiters instead of one. Coordination is through the
//! database (a lock held from another connection, `pg_locks` polled), never sleeps.

#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Tally, key_of, lock_rows, new_pr, rows_for, small_pool, total_rows, until_someone_waits,
};
use entity::PullRequest;
use sea_orm::TransactionTrait;
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::Barrier;

/// Bursts on a few hot keys and a crowd of distinct keys, all at once, over a pool of two:
/// every key is created exactly once, `Created` comes back exactly once per key, no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_keys_keep_the_create_once_guarantees_over_a_small_pool() {
    const HOT_KEYS: std::ops::Range<i64> = 1_000..1_005;
    const CALLERS_PER_HOT_KEY: usize = 40;
    const DISTINCT: std::ops::Range<i64> = 2_000..2_032;
    let test_db = TestDb::new().await;
    let db = small_pool(&test_db.url, 2).await;

    let deliveries: Vec<i64> = HOT_KEYS
        .flat_map(|k| std::iter::repeat_n(k, CALLERS_PER_HOT_KEY))
        .chain(DISTINCT)
        .collect();
    let barrier = Arc::new(Barrier::new(deliveries.len()));
    let handles: Vec<_> = deliveries
        .into_iter()
        .map(|pr_id| {
            let (db, barrier) = (db.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                (
                    pr_id,
                    PullRequest::create_once(&db, pr_id, new_pr(pr_id)).await,
                )
            })
        })
        .collect();
    let mut hot = Tally::default();
    let mut distinct = Tally::default();
    for handle in handles {
        let (pr_id, result) = handle.await.expect("task panicked");
        if HOT_KEYS.contains(&pr_id) {
            hot.count_outcome(result, || format!("create_once {pr_id}"));
        } else {
            distinct.count_outcome(result, || format!("create_once {pr_id}"));
        }
    }

    let hot_keys = HOT_KEYS.count();
    assert_eq!(
        hot,
        Tally {
            created: hot_keys,
            existing: hot_keys * (CALLERS_PER_HOT_KEY - 1),
            unique_violations: 0,
            other_errors: 0,
        }
    );
    assert_eq!(
        distinct,
        Tally {
            created: DISTINCT.count(),
            existing: 0,
            unique_violations: 0,
            other_errors: 0,
        }
    );
    for pr_id in HOT_KEYS.chain(DISTINCT) {
        assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
    }
    assert_eq!(total_rows(&db).await, (hot_keys + DISTINCT.count()) as u64);
}

/// While another connection holds a hot key, its callers on a pool of two must not take both
/// connections: one of them waits in PostgreSQL, the rest wait in the crate, and another key
/// still completes on the pool's second connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_waiters_leave_the_pool_to_other_keys() {
    const HOT: i64 = 3_000;
    const OTHER: i64 = 3_001;
    const WAITERS: usize = 8;
    let test_db = TestDb::new().await;
    let observer = test_db.connect(1).await;
    let holder = test_db.connect(1).await;
    let db = small_pool(&test_db.url, 2).await;

    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(HOT), Wait::Forever)
        .await
        .unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { PullRequest::create_once(&db, HOT, new_pr(HOT)).await })
        })
        .collect();
    until_someone_waits(&observer, key_of(HOT)).await;

    let other = PullRequest::create_once(&db, OTHER, new_pr(OTHER))
        .await
        .expect("another key completes while the hot key's callers wait");
    assert!(other.is_created(), "{other:?}");
    // The holder, and at most one of the hot key's callers waiting in PostgreSQL (none for a
    // moment between two of its bounded wait slices); the rest wait in the crate.
    let (granted, waiting) = lock_rows(&observer, key_of(HOT)).await;
    assert_eq!(granted, 1);
    assert!(
        waiting <= 1,
        "{waiting} of the hot key's callers wait in PostgreSQL"
    );

    held.commit().await.unwrap();
    let mut tally = Tally::default();
    for waiter in waiters {
        tally.count_outcome(waiter.await.expect("task panicked"), || {
            format!("create_once {HOT}")
        });
    }
    assert_eq!(
        tally,
        Tally {
            created: 1,
            existing: WAITERS - 1,
            unique_violations: 0,
            other_errors: 0,
        }
    );
    assert_eq!(rows_for(&db, HOT).await, 1);
}

/// Callers that bound their wait keep their semantics behind a caller that waits forever:
/// `Wait::No` does not wait in the crate either (the database answers busy), and
/// `Wait::Timeout` times out with the bound it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_waits_keep_their_meaning_behind_a_waiting_caller() {
    const HOT: i64 = 4_000;
    let test_db = TestDb::new().await;
    let observer = test_db.connect(1).await;
    let holder = test_db.connect(1).await;
    let db = small_pool(&test_db.url, 2).await;

    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(HOT), Wait::Forever)
        .await
        .unwrap();
    let patient = tokio::spawn({
        let db = db.clone();
        async move { PullRequest::create_once(&db, HOT, new_pr(HOT)).await }
    });
    until_someone_waits(&observer, key_of(HOT)).await;

    let busy = PullRequest::once(HOT, new_pr(HOT))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap_err();
    assert!(matches!(busy, Error::LockBusy { .. }), "{busy:?}");

    let bound = Duration::from_millis(200);
    let timed_out = PullRequest::once(HOT, new_pr(HOT))
        .wait(Wait::Timeout(bound))
        .exec(&db)
        .await
        .unwrap_err();
    assert!(
        matches!(timed_out, Error::LockTimeout { timeout: Some(t), .. } if t == bound),
        "{timed_out:?}"
    );

    held.commit().await.unwrap();
    assert!(patient.await.unwrap().unwrap().is_created());
    let again = PullRequest::once(HOT, new_pr(HOT))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap();
    assert!(matches!(again, Outcome::Existing(_)), "{again:?}");
    assert_eq!(rows_for(&db, HOT).await, 1);
}
