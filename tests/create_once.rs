//! `create_once` against a real PostgreSQL server and a real MariaDB, the same tests on both
//! (`name::postgres`, `name::mariadb`: `common::on_each_server!`): concurrent tasks, several OS
//! processes, a caller's transaction, waiting, `make_data`, and `Send`; then what only one of
//! them has: PostgreSQL's isolation levels and REPEATABLE READ default, MariaDB's stale
//! snapshots, `Wait::Forever` in slices, rounded timeouts and its lock table.
//!
//! The race tests can fail: `naive_find_then_insert_races_on_the_same_workload` runs the
//! same workload with the lock left out (find, then insert, as most code does) and shows unique
//! violations; `create_once` on it shows none. `several_processes_create_each_key_once` does the
//! same across processes (the naive run first, then `create_once`). On MariaDB, with the
//! crate's lock made a no-op (the MySQL arm of `Backend::lock` in src/backend/mod.rs returning
//! `Ok(())`, so `create_once` takes no lock-table row lock), two runs each:
//! `many_tasks_create_each_key_exactly_once::mariadb` failed with 37 and 13 unique violations,
//! `several_processes_create_each_key_once::mariadb` with 12 and 8 in the first worker checked,
//! and `make_data_runs_once_per_key_however_many_callers::mariadb` with a duplicate-key error
//! (1062) in both.
//!
//! The in-process races run over TWO pools: callers of one pool on the same key take turns in
//! the crate's waiting room (`src/turns.rs`) before they reach the database, so over one
//! pool the lock is never contended and the tests would pass without it. Spread over two
//! pools, each key's callers meet at the lock, and with the lock made a no-op these tests
//! fail.
//!
//! (Over 400 lines: this is the core promise, and its races, processes, callers' transactions,
//! isolation levels and waits share one workload and its helpers.)

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Server, Strategy, Tally, Workload, key_of, lock_is_free, new_pr, on_each_server, open_pools,
    rows_for, run_gated, total_rows, wait_at_gate, worker_process,
};
use entity::PullRequest;
#[cfg(feature = "postgres")]
use sea_orm::Statement;
use sea_orm::{ConnectionTrait, DatabaseConnection, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::Barrier;

const KEYS: i64 = 100;
const CALLERS_PER_KEY: usize = 8;
const TASKS: usize = 64;
const POOL: u32 = 8;
/// Pools per racing process: same-key callers of different pools meet only at the lock
/// (those of one pool take turns in the waiting room first).
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

on_each_server! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_tasks_create_each_key_exactly_once(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let pools = open_pools(&test_db.url, POOLS, POOL).await;
        let db = &pools[0];

        let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1).await;

        assert_eq!(tally, WORKLOAD.exactly_once());
        WORKLOAD.assert_one_row_per_key(db, 1).await;
    }

    /// The same workload without the lock: duplicates collide on the unique constraint. This
    /// is what `many_tasks_create_each_key_exactly_once` would see if `create_once` did not
    /// lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn naive_find_then_insert_races_on_the_same_workload(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let pools = open_pools(&test_db.url, POOLS, POOL).await;
        let db = &pools[0];

        let tally = WORKLOAD.race(&pools, Strategy::Naive, 1).await;

        eprintln!("naive find-then-insert on {server:?}: {tally:?}");
        assert!(
            tally.unique_violations > 0,
            "the naive workload should race, or the test proves nothing: {tally:?}"
        );
        assert_eq!(tally.other_errors, 0);
        // The unique constraint still saves the data, at the price of errors a person triages.
        assert_eq!(total_rows(db).await, KEYS as u64);
    }
}

/// Environment variables of the worker processes of `several_processes_create_each_key_once`.
const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_URL";
const WORKER_FIRST_KEY: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_FIRST_KEY";
/// `create_once` (the default, when unset) or `naive`: see [`Strategy::name`].
const WORKER_STRATEGY: &str = "SEA_ORM_IDEMPOTENT_TEST_WORKER_STRATEGY";

/// One racing process. Started by `several_processes_create_each_key_once` with the database
/// (either server's: the URL says which) in the environment, it waits at the parent's start
/// gate, races there and reports its tally; run plainly, it is a one-process run of the same
/// workload on a PostgreSQL database of its own and checks it.
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
        Err(_) if cfg!(feature = "postgres") => {
            let test_db = TestDb::new().await;
            let pools = open_pools(&test_db.url, POOLS, POOL).await;
            let tally = WORKLOAD.race(&pools, Strategy::CreateOnce, 1_000).await;
            assert_eq!(tally.created, KEYS as usize);
            assert_eq!(tally.unique_violations + tally.other_errors, 0);
        }
        Err(_) => {}
    }
}

/// Runs `processes` copies of this test binary as `race_worker_process` with `strategy` on
/// `test_db` (each over `POOLS` pools), released together by the start gate (a lock held on
/// `direct`, its waiters seen in `pg_locks` or MariaDB's process list), and returns their
/// tallies.
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

on_each_server! {
    /// Four OS processes (this test binary, re-run as `race_worker_process`), released
    /// together by a start gate, race on the same keys at once: each key is created once in
    /// all, with no errors.
    ///
    /// The same run with the lock left out (`Strategy::Naive`, first, on a database of its
    /// own) must get unique violations, so a workload too tame to catch a broken lock fails
    /// the test instead of passing it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_processes_create_each_key_once(server: Server) {
        const PROCESSES: usize = 4;
        const FIRST_KEY: i64 = 5_000;

        let Some(naive_db) = server.database_part("naive").await else {
            return;
        };
        let direct = naive_db.connect(2).await;
        let mut naive = Tally::default();
        for tally in run_workers(&direct, &naive_db, PROCESSES, Strategy::Naive, FIRST_KEY).await
        {
            naive.add(tally);
        }
        eprintln!("naive find-then-insert across processes on {server:?}: {naive:?}");
        assert!(
            naive.unique_violations > 0,
            "the naive workload should race, or the test proves nothing: {naive:?}"
        );
        assert_eq!(total_rows(&direct).await, KEYS as u64);

        let test_db = server.database().await.unwrap();
        let db = test_db.connect(2).await;
        let mut created = 0;
        let mut total = Tally::default();
        for tally in run_workers(&db, &test_db, PROCESSES, Strategy::CreateOnce, FIRST_KEY).await
        {
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
    async fn inside_a_callers_transaction_the_callers_commit_decides(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
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
}

#[cfg(feature = "postgres")]
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
                Error::UnsafeIsolation {
                    level: reported, ..
                } => {
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
#[cfg(feature = "postgres")]
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
/// Seen to fail both ways: with the fallback in `Call::begin_and_lock` (src/call/under_lock.rs) removed,
/// all 800 calls returned `UnsafeIsolation`; with the isolation check of the try statement
/// (src/backend/postgres/lock.rs) removed, so that calls went on under REPEATABLE READ, 25 contended callers
/// looked with a snapshot older than the lock and collided on the unique constraint.
#[cfg(feature = "postgres")]
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

on_each_server! {
    /// `Wait::Timeout` gives up with `LockTimeout`, never before the bound; `Wait::No` with
    /// `LockBusy`; both retryable, both naming the row; the connection (a pool of one) stays
    /// usable and the holder undisturbed. (MariaDB rounds the bound up to whole seconds:
    /// `a_timeout_is_rounded_up_to_whole_seconds_on_mariadb`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_can_be_bounded_or_refused(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
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
        assert!(err.is_retryable());

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
    async fn make_data_runs_once_per_key_however_many_callers(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        // Callers alternate between two pools, so they meet at the lock, not only in one
        // pool's waiting room.
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
    async fn the_existing_row_is_returned_as_stored(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
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
    async fn create_once_futures_are_send(server: Server) {
        fn assert_send<T: Send>(value: T) -> T {
            value
        }
        let Some(test_db) = server.database().await else {
            return;
        };
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
}

/// MariaDB bounds a lock wait in whole seconds (`innodb_lock_wait_timeout`): 300 ms is rounded
/// up, never down: the wait ends at or after the bound, and within 2 s.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_rounded_up_to_whole_seconds_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(30), Wait::Forever)
        .await
        .unwrap();

    let bound = Duration::from_millis(300);
    let started = Instant::now();
    let err = PullRequest::once(30, new_pr(30))
        .wait(Wait::Timeout(bound))
        .exec(&db)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, Error::LockTimeout { timeout: Some(t), .. } if t == bound),
        "{err:?}"
    );
    assert!(
        waited >= bound && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    held.commit().await.unwrap();
}

/// The hazard MariaDB's snapshot check exists for: a caller's REPEATABLE READ transaction
/// reads (its snapshot starts), then another caller creates the row, then the first calls
/// `create_once` for the same key. Its snapshot cannot see the row: refused before anything
/// is written. A READ COMMITTED caller in the same position gets `Existing`, and a REPEATABLE
/// READ caller whose snapshot is newer than the row is served too. (With the check removed,
/// the refused call fails instead with "the insert found a row ... that is no longer there".)
/// PostgreSQL refuses REPEATABLE READ outright:
/// `stricter_isolation_in_a_callers_transaction_is_refused_before_writing`.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_callers_snapshot_older_than_the_row_is_refused_before_writing_on_mariadb() {
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

/// `Wait::Forever` on MariaDB waits in server-side slices (a bounded wait, renewed), so a
/// dropped caller's wait ends within a slice; it still waits past them until the holder
/// commits.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forever_waits_across_slices_until_the_holder_commits_on_mariadb() {
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

/// MariaDB's locks live in a table the user's migrations create: without it, a typed error
/// that names the function making it, and nothing written.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_missing_lock_table_is_a_typed_error_naming_it_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(1).await;
    db.execute_unprepared("DROP TABLE sea_orm_idempotent_lock_slots")
        .await
        .unwrap();
    let err = PullRequest::create_once(&db, 1, new_pr(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingLockTable { .. }), "{err:?}");
    assert!(err.to_string().contains("mysql_lock_slots()"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(rows_for(&db, 1).await, 0);
}
