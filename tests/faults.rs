//! Faults: a lock holder's connection killed under it, a server restart in the middle of a
//! burst, and a `make_data` that fails or panics. The promise under test: exactly one row per
//! key, nothing half-written, every failure a typed error that says whether to retry, and a
//! pool that recovers by itself.
//!
//! Coordination is through channels and the database (`pg_locks`), never sleeps.

#![cfg(feature = "postgres")]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    fail_then_probe, key_of, lock_is_free, lock_pids, new_pr, poll_locks_until, rows_for,
    total_rows,
};
use entity::{NewPullRequest, PullRequest};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Retry};
use test_support::{Server, TestDb};
use tokio::sync::{mpsc, oneshot, watch};

/// The holder of a key's lock has its backend killed (`pg_terminate_backend`, as an operator
/// or a failover does) while it is inside `make_data`, with another caller waiting for the
/// same key: the holder gets a typed error that says "retry", the waiter is granted the lock
/// when the dead backend's transaction ends and creates the row, once, and the holder's pool
/// of one recovers by itself (its retry finds the row).
///
/// Catches: a lost connection classified as not retryable (remove the class-57P and `Io`
/// arms of `is_transient` in src/error.rs: the holder's assertion fails, its error is
/// `Database(Query(SqlxError(Database(PgDatabaseError { code: "57P01" ...)))` or an I/O
/// error); a lock that outlived the killed session (session-scoped `pg_advisory_lock` is
/// released too, but a lock held by a leaked transaction on another connection would keep the
/// waiter waiting: the bounded wait fails); a row written before `make_data` finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_lock_holder_gets_a_retryable_error_and_the_waiter_creates_the_row() {
    const PR: i64 = 100;
    let test_db = TestDb::new().await;
    let holder_db = test_db.connect(1).await;
    let waiter_db = test_db.connect(1).await;
    let observer = test_db.connect(1).await;

    let (inside_tx, inside_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let holder = tokio::spawn({
        let holder_db = holder_db.clone();
        async move {
            PullRequest::create_once_with(&holder_db, PR, move || async move {
                inside_tx.send(()).unwrap();
                // Paused here, holding the lock, while the test kills our backend.
                go_rx.await.unwrap();
                Ok::<_, Infallible>(new_pr(PR))
            })
            .await
        }
    });
    inside_rx.await.expect("the holder reaches make_data");
    let holders = lock_pids(&observer, key_of(PR), true).await;
    assert_eq!(holders.len(), 1, "one backend holds the key: {holders:?}");

    let waiter = tokio::spawn({
        let waiter_db = waiter_db.clone();
        async move { PullRequest::create_once(&waiter_db, PR, new_pr(PR)).await }
    });
    poll_locks_until(
        &observer,
        key_of(PR),
        false,
        Duration::from_secs(30),
        "the waiter waits",
        |w| w.len() == 1,
    )
    .await;

    let terminated = observer
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend($1) AS terminated",
            [holders[0].into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<bool>("", "terminated")
        .unwrap();
    assert!(terminated);

    // The waiter is granted the lock once the killed backend is gone, and creates the row.
    let created = waiter.await.unwrap().expect("the waiter succeeds");
    assert!(created.is_created(), "{created:?}");

    // The holder's make_data returns; its connection is gone.
    go_tx.send(()).unwrap();
    let err = holder.await.unwrap().expect_err("the killed holder fails");
    eprintln!("killed holder's error: {err:?}");
    assert!(
        err.is_retryable(),
        "a killed connection is retryable: {err:?}"
    );
    assert!(
        matches!(err, Error::Database(_)),
        "typed as a database error: {err:?}"
    );
    assert_eq!(rows_for(&observer, PR).await, 1);

    // Its pool of one recovers by itself: the retry opens a new connection and finds the row.
    let retried = Retry::default()
        .run(|| PullRequest::create_once(&holder_db, PR, new_pr(PR)))
        .await
        .unwrap();
    assert!(matches!(retried, Outcome::Existing(_)), "{retried:?}");
    assert_eq!(total_rows(&observer).await, 1);
}

/// A burst of concurrent deliveries (`KEYS` keys, `CALLERS_PER_KEY` deliveries each) on one
/// pool while the server restarts (`pg_ctl restart -m fast`, which terminates every session).
/// `PINNED` calls are held inside `make_data`, with their locks and connections, until the
/// restart is over, so the restart is guaranteed to hit calls in flight (and the callers
/// waiting for their keys); the rest of the burst runs on through the restart.
///
/// Then: every failure is a typed retryable error; the same pool, never rebuilt, serves the
/// retries of the failed deliveries ([`Retry`]); and there is exactly one row per key, with
/// `Created` returned at most once per key. (At most, not exactly: a COMMIT that reached the
/// server just before it went down, but whose answer did not reach us, is an error the retry
/// turns into `Existing`.)
///
/// Catches: any failure mode classified as not retryable (remove the `Io` or class-08/57P arms
/// from `is_transient` in src/error.rs and the assertion on failures lists them); a pool that
/// does not recover (the retries fail); a duplicate row or a unique violation after recovery.
/// The restart runs on a private cluster, never on a `DATABASE_URL` server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_during_a_burst_fails_retryably_and_retries_create_each_key_once() {
    const KEYS: i64 = 40;
    const CALLERS_PER_KEY: usize = 4;
    const TASKS: usize = 16;
    const POOL: u32 = 8;
    const PINNED: usize = 3;

    let server = Server::private();
    let test_db = server.database("restart_burst").await;
    let db = test_db.connect(POOL).await;

    let make_data_calls = Arc::new(AtomicUsize::new(0));
    let (pinned_tx, mut pinned_rx) = mpsc::unbounded_channel::<i64>();
    let (restarted_tx, restarted_rx) = watch::channel(false);

    // Delivery n is for key 1 + n / CALLERS_PER_KEY and goes to task n % TASKS: the
    // deliveries of a key go to CALLERS_PER_KEY different tasks, which reach it together.
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (db, calls, pinned_tx, restarted_rx) = (
            db.clone(),
            make_data_calls.clone(),
            pinned_tx.clone(),
            restarted_rx.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mine = (0..KEYS * CALLERS_PER_KEY as i64)
                .filter(|n| *n as usize % TASKS == task)
                .map(|n| 1 + n / CALLERS_PER_KEY as i64);
            for pr_id in mine {
                let (calls, pinned_tx, mut restarted_rx) =
                    (calls.clone(), pinned_tx.clone(), restarted_rx.clone());
                let result = PullRequest::create_once_with(&db, pr_id, move || async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < PINNED {
                        pinned_tx.send(pr_id).unwrap();
                        restarted_rx.wait_for(|done| *done).await.unwrap();
                    }
                    Ok::<NewPullRequest, Infallible>(new_pr(pr_id))
                })
                .await;
                results.push((pr_id, result));
            }
            results
        }));
    }
    drop(pinned_tx);

    for _ in 0..PINNED {
        pinned_rx
            .recv()
            .await
            .expect("a call is pinned inside make_data");
    }
    let cluster = server.cluster().expect("a private cluster");
    tokio::task::block_in_place(|| cluster.restart());
    restarted_tx.send(true).unwrap();

    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.extend(handle.await.expect("task panicked"));
    }
    let mut created = vec![0_usize; KEYS as usize + 1];
    let mut failed = Vec::new();
    for (pr_id, result) in outcomes {
        match result {
            Ok(outcome) => created[pr_id as usize] += usize::from(outcome.is_created()),
            Err(err) => failed.push((pr_id, err)),
        }
    }
    eprintln!("{} of the burst's calls failed:", failed.len());
    for (pr_id, err) in &failed {
        eprintln!("  {pr_id}: retryable={} {err:?}", err.is_retryable());
    }
    assert!(
        failed.len() >= PINNED,
        "the restart must break at least the pinned calls, or the test proves nothing"
    );
    let not_retryable: Vec<_> = failed.iter().filter(|(_, e)| !e.is_retryable()).collect();
    assert!(
        not_retryable.is_empty(),
        "every failure must be retryable: {not_retryable:?}"
    );

    // The same pool, never rebuilt, serves the retries.
    for (pr_id, _) in &failed {
        let outcome = Retry::default()
            .run(|| PullRequest::create_once(&db, *pr_id, new_pr(*pr_id)))
            .await
            .unwrap_or_else(|e| panic!("retry of {pr_id} failed: {e:?}"));
        created[*pr_id as usize] += usize::from(outcome.is_created());
    }
    assert_eq!(total_rows(&db).await, KEYS as u64);
    for pr_id in 1..=KEYS {
        assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
        assert!(created[pr_id as usize] <= 1, "Created twice for {pr_id}");
    }
}

fn github_api_down() -> std::io::Error {
    std::io::Error::other("GitHub API answered 502")
}

fn panicking_fetch(pr_id: i64) -> NewPullRequest {
    panic!("make_data panicked while building pull request {pr_id}")
}

/// `make_data` fails: the caller gets `Error::MakeData` with the cause as its source (not
/// retryable: the same call would fail the same way), no row is written, and the lock is free
/// the moment the call returns: another connection's `Wait::No` probe, sent right then, gets
/// it. The pool of one is usable at once. Repeated `ROUNDS` times: what it guards is a race.
///
/// The runtime is single-threaded and the probe's transaction is open beforehand, so the
/// probe's one statement is on the wire before any background task of the pool runs. That is
/// what makes it catch a failed call whose transaction is rolled back only by the pool's
/// return-to-pool task (sqlx pings a returned connection, flushing the ROLLBACK queued by the
/// dropped transaction, in a spawned task) instead of before the call returns: the probe then
/// finds the lock still held. It also catches a lock that outlives the call altogether (a
/// session-scoped lock, a transaction left open), a row written before `make_data` ran, and
/// the error misreported as retryable or without its cause.
#[tokio::test]
async fn make_data_error_writes_nothing_and_releases_the_lock_at_once() {
    const ROUNDS: i64 = 25;
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let other = test_db.connect(1).await;

    let mut still_held = Vec::new();
    for pr_id in 200..200 + ROUNDS {
        let (err, free) = fail_then_probe(
            &other,
            key_of(pr_id),
            PullRequest::create_once_with(&db, pr_id, || async {
                Err::<NewPullRequest, _>(github_api_down())
            }),
        )
        .await;
        if !free {
            still_held.push(pr_id);
        }
        match &err {
            Error::MakeData(source) => assert_eq!(source.to_string(), "GitHub API answered 502"),
            other => panic!("expected MakeData, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(rows_for(&other, pr_id).await, 0);
    }
    assert!(
        still_held.is_empty(),
        "the lock was still held after the call returned for {} of {ROUNDS} keys: {still_held:?}",
        still_held.len()
    );
    assert!(
        PullRequest::create_once(&db, 200, new_pr(200))
            .await
            .unwrap()
            .is_created(),
        "the pool of one is usable"
    );
}

/// `make_data` panics (in a spawned task, as a web handler's would): the panic reaches the
/// task's `JoinHandle`, no row is written, and the lock is released by the rollback of the
/// dropped transaction, with no use of the pool and no timeout involved: another connection
/// takes it with `Wait::No` as soon as the panicked call's connection is back in its pool
/// (sqlx's return-to-pool flushes the queued ROLLBACK before the connection becomes
/// available: `db.ping()` on the pool of one waits for exactly that).
///
/// Catches: a lock that survives the unwinding (a session-scoped `pg_advisory_lock` stays on
/// the pooled connection after ROLLBACK, so the probe is refused), a transaction leaked open,
/// a row written before `make_data` ran, a pool left unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_data_panic_writes_nothing_and_releases_the_lock() {
    const PR: i64 = 300;
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let other = test_db.connect(1).await;

    let panicked = tokio::spawn({
        let db = db.clone();
        async move {
            PullRequest::create_once_with(&db, PR, || async {
                Ok::<_, Infallible>(panicking_fetch(PR))
            })
            .await
        }
    })
    .await
    .expect_err("the task panics");
    assert!(panicked.is_panic());

    db.ping()
        .await
        .expect("the pool of one hands its connection out again");
    assert!(lock_is_free(&other, key_of(PR)).await, "released");
    assert_eq!(rows_for(&other, PR).await, 0);
    assert!(
        PullRequest::create_once(&db, PR, new_pr(PR))
            .await
            .unwrap()
            .is_created()
    );
}
