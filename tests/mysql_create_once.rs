//! `create_once` against a real MariaDB (the throwaway server of `test_support`, or
//! `MYSQL_DATABASE_URL`'s): many tasks over two pools, several OS processes released together,
//! a caller's transaction committed and rolled back, a caller's stale REPEATABLE READ snapshot,
//! bounded waits, and a missing lock table.
//!
//! The races can fail: each runs the naive find-then-insert on the same workload first and
//! requires unique violations, and with the crate's lock statement made a no-op (the
//! `SELECT ... FOR UPDATE` of the lock row replaced by a plain `SELECT`) both race tests fail
//! with unique violations (recorded in the CHANGELOG entry of the MySQL backend).
//!
//! The races use the same workload as `tests/create_once.rs` (`common::Workload`, two pools,
//! so that same-key callers meet at the lock and not only in the waiting room), and the same
//! start gate for processes (`common::run_gated`: a lock the parent holds, here the crate's
//! lock-table row, with the waiters seen in InnoDB's lock waits).

#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use common::{
    Strategy, Tally, Workload, key_of, lock_is_free, new_pr, open_pools, rows_for, run_gated,
    total_rows, wait_at_gate, worker_process,
};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;

const POOL: u32 = 8;
const POOLS: usize = 2;
const WORKLOAD: Workload = Workload {
    keys: 100,
    callers_per_key: 8,
    tasks: 64,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_create_each_key_exactly_once_and_the_naive_twin_races() {
    let Some(naive_db) = TestDb::mysql_part("naive").await else {
        return;
    };
    let naive = WORKLOAD
        .race(
            &open_pools(&naive_db.url, POOLS, POOL).await,
            Strategy::Naive,
            1,
        )
        .await;
    eprintln!("naive find-then-insert on MariaDB: {naive:?}");
    assert!(
        naive.unique_violations > 0,
        "the naive workload should race, or the test proves nothing: {naive:?}"
    );

    let test_db = TestDb::mysql().await.unwrap();
    let pools = open_pools(&test_db.url, POOLS, POOL).await;
    let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1).await;
    assert_eq!(tally, WORKLOAD.exactly_once());
    WORKLOAD.assert_one_row_per_key(&pools[0], 1).await;
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_TEST_MYSQL_WORKER_URL";
const WORKER_STRATEGY: &str = "SEA_ORM_IDEMPOTENT_TEST_MYSQL_WORKER_STRATEGY";
const FIRST_KEY: i64 = 5_000;

/// One racing process, started by `several_processes_create_each_key_once`; run plainly it
/// does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_worker_process() {
    let Ok(url) = std::env::var(WORKER_URL) else {
        return;
    };
    let strategy = Strategy::from_name(&std::env::var(WORKER_STRATEGY).unwrap());
    let pools = open_pools(&url, POOLS, POOL).await;
    wait_at_gate(&pools[0]).await;
    WORKLOAD
        .race(&pools, strategy, FIRST_KEY)
        .await
        .print_for_parent();
}

async fn run_workers(test_db: &TestDb, strategy: Strategy) -> Tally {
    let direct = test_db.connect(2).await;
    let workers = (0..4).map(|_| {
        let mut worker = worker_process("race_worker_process");
        worker
            .env(WORKER_URL, &test_db.url)
            .env(WORKER_STRATEGY, strategy.name());
        worker
    });
    let mut total = Tally::default();
    for tally in run_gated(&direct, workers).await {
        total.add(tally);
    }
    total
}

/// Four processes released together by the start gate: each key once in all, no errors; the
/// naive run of the same workload first must collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_key_once() {
    let Some(naive_db) = TestDb::mysql_part("naive").await else {
        return;
    };
    let naive = run_workers(&naive_db, Strategy::Naive).await;
    eprintln!("naive find-then-insert across processes on MariaDB: {naive:?}");
    assert!(naive.unique_violations > 0, "{naive:?}");

    let test_db = TestDb::mysql().await.unwrap();
    let total = run_workers(&test_db, Strategy::CreateOnce).await;
    let keys = WORKLOAD.keys as usize;
    assert_eq!(
        total,
        Tally {
            created: keys,
            existing: keys * (WORKLOAD.callers_per_key * 4 - 1),
            unique_violations: 0,
            other_errors: 0,
        }
    );
    WORKLOAD
        .assert_one_row_per_key(&test_db.connect(1).await, FIRST_KEY)
        .await;
}

#[tokio::test]
async fn inside_a_callers_transaction_the_callers_commit_decides() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    let other = test_db.connect(1).await;

    // Rolled back: no row, and the lock goes with the transaction.
    let txn = db.begin().await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );
    assert!(!lock_is_free(&other, key_of(10)).await, "held to the end");
    assert_eq!(rows_for(&other, 10).await, 0, "not visible before commit");
    txn.rollback().await.unwrap();
    assert!(
        lock_is_free(&other, key_of(10)).await,
        "released by rollback"
    );
    assert_eq!(rows_for(&other, 10).await, 0);

    // Committed: the row is there, created once.
    let txn = db.begin().await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        !PullRequest::create_once(&txn, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    assert_eq!(rows_for(&other, 10).await, 1);
    assert!(lock_is_free(&other, key_of(10)).await);
}

/// The hazard the snapshot check exists for: a caller's REPEATABLE READ transaction reads (its
/// snapshot starts), then another caller creates the row, then the first calls `create_once`
/// for the same key. Its snapshot cannot see the row: refused before anything is written.
/// A READ COMMITTED caller in the same position gets `Existing`, and a REPEATABLE READ caller
/// whose snapshot is newer than the row is served too. (With the check removed, the refused
/// call fails instead with "the insert found a row ... that is no longer there".)
#[tokio::test]
async fn a_callers_snapshot_older_than_the_row_is_refused_before_writing() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    let other = test_db.connect(1).await;

    let stale = db
        .begin_with_config(Some(IsolationLevel::RepeatableRead), None)
        .await
        .unwrap();
    let committed = db
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await
        .unwrap();
    assert_eq!(rows_for(&stale, 20).await, 0); // the snapshot starts here
    assert_eq!(rows_for(&committed, 20).await, 0);
    assert!(
        PullRequest::create_once(&other, 20, new_pr(20))
            .await
            .unwrap()
            .is_created()
    );

    let err = PullRequest::create_once(&stale, 20, new_pr(20))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeIsolation { .. }), "{err:?}");
    assert!(!err.is_retryable());
    stale.rollback().await.unwrap();

    let outcome = PullRequest::create_once(&committed, 20, new_pr(20))
        .await
        .unwrap();
    assert!(!outcome.is_created());
    committed.commit().await.unwrap();

    let fresh = db
        .begin_with_config(Some(IsolationLevel::RepeatableRead), None)
        .await
        .unwrap();
    assert!(
        !PullRequest::create_once(&fresh, 20, new_pr(20))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        PullRequest::create_once(&fresh, 21, new_pr(21))
            .await
            .unwrap()
            .is_created()
    );
    fresh.commit().await.unwrap();
    assert_eq!(rows_for(&other, 20).await, 1);
    assert_eq!(rows_for(&other, 21).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_can_be_bounded_or_refused() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(30), Wait::Forever)
        .await
        .unwrap();
    let data = || async { Ok::<_, std::convert::Infallible>(new_pr(30)) };

    let err = PullRequest::once_with(30, data)
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    assert!(err.is_retryable());

    // 300 ms is rounded up to InnoDB's whole second: never less than asked, under 2 s.
    let bound = Duration::from_millis(300);
    let started = Instant::now();
    let err = PullRequest::once_with(30, data)
        .wait(Wait::Timeout(bound))
        .exec(&db)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, Error::LockTimeout { timeout: Some(t), .. } if t == bound),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        waited >= bound && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // The connection is usable; the holder's commit frees the key.
    assert_eq!(rows_for(&db, 30).await, 0);
    held.commit().await.unwrap();
    assert!(
        PullRequest::once_with(30, data)
            .wait(Wait::No)
            .exec(&db)
            .await
            .unwrap()
            .is_created()
    );
}

/// `Wait::Forever` waits past its server-side slices until the holder commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forever_waits_across_slices_until_the_holder_commits() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(40), Wait::Forever)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move { PullRequest::create_once(&db, 40, new_pr(40)).await });
    common::until_someone_waits(&observer, key_of(40)).await;
    // Longer than one slice (2 s), so the wait has to be renewed at least once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!waiter.is_finished());
    held.commit().await.unwrap();
    assert!(waiter.await.unwrap().unwrap().is_created());
    assert_eq!(total_rows(&observer).await, 1);
}

#[tokio::test]
async fn a_missing_lock_table_is_a_typed_error_naming_it() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(1).await;
    db.execute_unprepared("DROP TABLE sea_orm_idempotent_locks")
        .await
        .unwrap();
    let err = PullRequest::create_once(&db, 1, new_pr(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingLockTable { .. }), "{err:?}");
    assert!(err.to_string().contains("mysql_lock_table()"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(rows_for(&db, 1).await, 0);
}
