//! `create_once` against a real PostgreSQL server: concurrent tasks, several OS processes, a
//! caller's transaction, isolation levels, waiting, and `Send`.
//!
//! The race tests can fail: `naive_find_then_insert_races_on_the_same_workload` runs the
//! same workload with the lock left out (find, then insert, as most code does) and shows unique
//! violations; `create_once` on it shows none. `several_processes_create_each_key_once` does the
//! same across processes (the naive run first, then `create_once`).
//!
//! The in-process races run over TWO pools: callers of one pool on the same key take turns in
//! the crate's waiting room (`src/turns.rs`) before they reach the database, so over one
//! pool the advisory lock is never contended and the tests would pass without it. Spread over
//! two pools, each key's callers meet at the advisory lock, and with the lock made a no-op
//! these tests fail.
//!
//! (Over 400 lines: this is the core promise, and its races, processes, callers' transactions,
//! isolation levels and waits share one workload and its helpers.)

#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Strategy, Tally, Workload, key_of, lock_is_free, new_pr, open_pools, rows_for, run_gated,
    total_rows, wait_at_gate, worker_process,
};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, IsolationLevel, Statement, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::Barrier;

const KEYS: i64 = 100;
const CALLERS_PER_KEY: usize = 8;
const TASKS: usize = 64;
const POOL: u32 = 8;
/// Pools per racing process: same-key callers of different pools meet only at the advisory
/// lock (those of one pool take turns in the waiting room first).
const POOLS: usize = 2;

/// `TASKS` tasks over `POOLS` pools of `POOL` connections; every key in
/// `first_key..first_key + KEYS` is requested by `CALLERS_PER_KEY` tasks that start together
/// and walk the same keys in the same order, so the requests for a key arrive at once, and
/// each key's callers are split evenly between the pools ([`Workload::race`]).
const WORKLOAD: Workload = Workload {
    keys: KEYS,
    callers_per_key: CALLERS_PER_KEY,
    tasks: TASKS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_create_each_key_exactly_once() {
    let test_db = TestDb::new().await;
    let pools = open_pools(&test_db.url, POOLS, POOL).await;
    let db = &pools[0];

    let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1).await;

    assert_eq!(tally, WORKLOAD.exactly_once());
    WORKLOAD.assert_one_row_per_key(db, 1).await;
}

/// The same workload without the lock: duplicates collide on the unique constraint. This is
/// what `many_tasks_create_each_key_exactly_once` would see if `create_once` did not lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naive_find_then_insert_races_on_the_same_workload() {
    let test_db = TestDb::new().await;
    let pools = open_pools(&test_db.url, POOLS, POOL).await;
    let db = &pools[0];

    let tally = WORKLOAD.race(&pools, Strategy::Naive, 1).await;

    eprintln!("naive find-then-insert: {tally:?}");
    assert!(
        tally.unique_violations > 0,
        "the naive workload should race, or the test proves nothing: {tally:?}"
    );
    assert_eq!(tally.other_errors, 0);
    // The unique constraint still saves the data, at the price of errors a person triages.
    assert_eq!(total_rows(db).await, KEYS as u64);
}

/// Environment variables of the worker processes of `several_processes_create_each_key_once`.
const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_URL";
const WORKER_FIRST_KEY: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_FIRST_KEY";
/// `create_once` (the default, when unset) or `naive`: see [`Strategy::name`].
const WORKER_STRATEGY: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_STRATEGY";

/// One racing process. Started by `several_processes_create_each_key_once` with the database
/// in the environment, it waits at the parent's start gate, races there and reports its
/// tally; run plainly, it is a one-process run of the same workload on a database of its own
/// and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let first_key = std::env::var(WORKER_FIRST_KEY).unwrap().parse().unwrap();
            let strategy = std::env::var(WORKER_STRATEGY)
                .map_or(Strategy::CreateOnce, |name| Strategy::from_name(&name));
            let pools = open_pools(&url, POOLS, POOL).await;
            // Wait at the parent's gate, so that all processes start together.
            wait_at_gate(&pools[0]).await;
            let tally = WORKLOAD.race(&pools, strategy, first_key).await;
            tally.print_for_parent();
        }
        Err(_) => {
            let test_db = TestDb::new().await;
            let pools = open_pools(&test_db.url, POOLS, POOL).await;
            let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1_000).await;
            assert_eq!(tally.created, KEYS as usize);
            assert_eq!(tally.unique_violations + tally.other_errors, 0);
        }
    }
}

/// Runs `processes` copies of this test binary as `race_worker_process` with `strategy` on
/// `test_db` (each over `POOLS` pools), released together by the start gate (a lock held on
/// `direct`, coordinated through `pg_locks`), and returns their tallies.
async fn run_workers(
    direct: &DatabaseConnection,
    test_db: &TestDb,
    processes: usize,
    strategy: Strategy,
    first_key: i64,
) -> Vec<Tally> {
    let workers = (0..processes).map(|_| {
        let mut worker = worker_process("race_worker_process");
        worker
            .env(WORKER_URL, &test_db.url)
            .env(WORKER_STRATEGY, strategy.name())
            .env(WORKER_FIRST_KEY, first_key.to_string());
        worker
    });
    run_gated(direct, workers).await
}

/// Four OS processes (this test binary, re-run as `race_worker_process`), released together
/// by a start gate, race on the same keys at once: each key is created once in all, with no
/// errors.
///
/// The same run with the lock left out (`Strategy::Naive`, first, on a database of its own)
/// must get unique violations, so a workload too tame to catch a broken lock fails the test
/// instead of passing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_key_once() {
    const PROCESSES: usize = 4;
    const FIRST_KEY: i64 = 5_000;

    let naive_db = TestDb::new_part("naive").await;
    let direct = naive_db.connect(2).await;
    let mut naive = Tally::default();
    for tally in run_workers(&direct, &naive_db, PROCESSES, Strategy::Naive, FIRST_KEY).await {
        naive.add(tally);
    }
    eprintln!("naive find-then-insert across processes: {naive:?}");
    assert!(
        naive.unique_violations > 0,
        "the naive workload should race, or the test proves nothing: {naive:?}"
    );
    assert_eq!(total_rows(&direct).await, KEYS as u64);

    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    let mut created = 0;
    let mut total = Tally::default();
    for tally in run_workers(&db, &test_db, PROCESSES, Strategy::CreateOnce, FIRST_KEY).await {
        assert_eq!(tally.unique_violations, 0, "{tally:?}");
        assert_eq!(tally.other_errors, 0, "{tally:?}");
        created += tally.created;
        total.add(tally);
    }
    assert_eq!(
        created, KEYS as usize,
        "Created returned once per key across processes"
    );
    assert_eq!(
        total.existing,
        KEYS as usize * (CALLERS_PER_KEY * PROCESSES - 1),
        "{total:?}"
    );
    WORKLOAD.assert_one_row_per_key(&db, FIRST_KEY).await;
}

#[tokio::test]
async fn inside_a_callers_transaction_the_callers_commit_decides() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    let other = test_db.connect(1).await;

    // Rolled back: no row, and the lock is gone with the transaction.
    let txn = db.begin().await.unwrap();
    let outcome = PullRequest::create_once(&txn, 10, new_pr(10))
        .await
        .unwrap();
    assert!(outcome.is_created());
    assert!(
        !lock_is_free(&other, key_of(10)).await,
        "held until the caller ends"
    );
    assert_eq!(rows_for(&other, 10).await, 0, "not visible before commit");
    txn.rollback().await.unwrap();
    assert!(
        lock_is_free(&other, key_of(10)).await,
        "released by the rollback"
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

#[tokio::test]
async fn stricter_isolation_in_a_callers_transaction_is_refused_before_writing() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    // Key 21 exists already: the answer must not depend on the data (a look before the
    // isolation check would have answered Existing here and UnsafeIsolation for key 20).
    assert!(
        PullRequest::create_once(&db, 21, new_pr(21))
            .await
            .unwrap()
            .is_created()
    );
    for level in [IsolationLevel::RepeatableRead, IsolationLevel::Serializable] {
        for pr_id in [20, 21] {
            let txn = db.begin_with_config(Some(level), None).await.unwrap();
            let err = PullRequest::create_once(&txn, pr_id, new_pr(pr_id))
                .await
                .unwrap_err();
            match &err {
                Error::UnsafeIsolation { level: reported } => {
                    assert!(
                        reported == "repeatable read" || reported == "serializable",
                        "{reported}"
                    )
                }
                other => panic!("expected UnsafeIsolation for {pr_id}, got {other:?}"),
            }
            assert!(!err.is_retryable());
            txn.rollback().await.unwrap();
        }
    }
    assert_eq!(rows_for(&db, 20).await, 0);
    assert_eq!(rows_for(&db, 21).await, 1);
}

/// The crate's own transactions are READ COMMITTED even when the server defaults to
/// REPEATABLE READ.
#[tokio::test]
async fn own_transactions_are_read_committed_whatever_the_default() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    db.execute_unprepared(&format!(
        "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
        test_db.name
    ))
    .await
    .unwrap();
    let db = test_db.connect(1).await; // new sessions pick the default up
    let level = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_setting('default_transaction_isolation') AS level",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "level")
        .unwrap();
    assert_eq!(level, "repeatable read");
    assert!(
        PullRequest::create_once(&db, 30, new_pr(30))
            .await
            .unwrap()
            .is_created()
    );
}

/// The race of `many_tasks_create_each_key_exactly_once` on a database whose default is
/// REPEATABLE READ: the crate's plain `BEGIN` would be REPEATABLE READ there, so every call
/// must notice (in the statement that tries the lock) and begin again with READ COMMITTED set.
/// Seen to fail both ways: with the fallback in `Call::begin_and_lock` (src/call.rs) removed,
/// all 800 calls returned `UnsafeIsolation`; with the isolation check of the try statement
/// (src/lock.rs) removed, so that calls went on under REPEATABLE READ, 25 contended callers
/// looked with a snapshot older than the lock and collided on the unique constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeatable_read_default_still_creates_each_key_once() {
    let test_db = TestDb::new().await;
    let admin = test_db.connect(1).await;
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
            test_db.name
        ))
        .await
        .unwrap();
    let pools = open_pools(&test_db.url, POOLS, POOL).await; // new sessions pick the default up

    let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1).await;

    assert_eq!(tally, WORKLOAD.exactly_once());
    WORKLOAD.assert_one_row_per_key(&pools[0], 1).await;
}

#[tokio::test]
async fn waiting_can_be_bounded_or_refused() {
    let test_db = TestDb::new().await;
    let holder = test_db.connect(1).await;
    let db = test_db.connect(1).await; // one connection: it must be usable after the error

    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(40), Wait::Forever)
        .await
        .unwrap();

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = PullRequest::once(40, new_pr(40))
        .wait(Wait::Timeout(timeout))
        .exec(&db)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, Error::LockTimeout { key, timeout: Some(t), .. } if key == key_of(40) && t == timeout),
        "{err:?}"
    );
    // The message names the table, the natural key and the bound as people write it.
    assert_eq!(
        err.to_string(),
        format!(
            "the lock of pull_requests key 40 (lock key {}) not granted within 300 ms",
            key_of(40)
        )
    );
    assert!(err.is_retryable());
    assert!(
        waited >= timeout,
        "gave up after {waited:?}, before the {timeout:?} bound"
    );

    let err = PullRequest::once(40, new_pr(40))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LockBusy { key, .. } if key == key_of(40)),
        "{err:?}"
    );
    assert!(err.to_string().contains("pull_requests key 40"), "{err}");

    // The single pooled connection is usable, and the holder was never disturbed.
    assert_eq!(rows_for(&db, 40).await, 0);
    held.commit().await.unwrap();
    assert!(
        PullRequest::once(40, new_pr(40))
            .wait(Wait::No)
            .exec(&db)
            .await
            .unwrap()
            .is_created()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn make_data_runs_once_per_key_however_many_callers() {
    let test_db = TestDb::new().await;
    // Callers alternate between two pools, so they meet at the advisory lock, not only in
    // one pool's waiting room.
    let pools = open_pools(&test_db.url, POOLS, POOL).await;
    let db = &pools[0];
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|task| {
            let db = pools[task % pools.len()].clone();
            let (calls, barrier) = (calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                PullRequest::create_once_with(&db, 50, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(new_pr(50))
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for handle in handles {
        created += usize::from(handle.await.unwrap().is_created());
    }
    assert_eq!(created, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(rows_for(db, 50).await, 1);
}

#[tokio::test]
async fn the_existing_row_is_returned_as_stored() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let first = PullRequest::create_once(&db, 60, new_pr(60)).await.unwrap();
    let mut changed = new_pr(60);
    changed.title = "a later delivery's title".into();
    let second = PullRequest::create_once(&db, 60, changed).await.unwrap();
    assert!(first.is_created() && !second.is_created());
    assert_eq!(first.model(), second.model());
    assert_eq!(second.into_model().title, "Pull request 60");
}

/// axum handlers and `tokio::spawn` need `Send` futures; this does not compile otherwise.
#[tokio::test]
async fn create_once_futures_are_send() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let txn = db.begin().await.unwrap();
    let in_txn = assert_send(PullRequest::create_once_with(&txn, 71, || async {
        Ok::<_, std::io::Error>(new_pr(71))
    }));
    assert!(in_txn.await.unwrap().is_created());
    txn.commit().await.unwrap();
    let future = assert_send(PullRequest::create_once(&db, 70, new_pr(70)));
    assert!(future.await.unwrap().is_created());
    let spawned = tokio::spawn(assert_send(async move {
        PullRequest::create_once(&db, 72, new_pr(72)).await
    }));
    let outcome = spawned.await.unwrap().unwrap();
    assert!(outcome.is_created());
}
