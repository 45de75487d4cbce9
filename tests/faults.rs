//! Faults: a lock holder's connection killed under it, a burst whose connections are killed
//! or whose server restarts, and a `make_data` that fails or panics. The promise under test:
//! exactly one row per key, nothing half-written, every failure a typed error that says
//! whether to retry, and a pool that recovers by itself. The tests that apply to both servers
//! run on PostgreSQL and MariaDB (`name::postgres`, `name::mariadb`:
//! `common::on_each_server!`); the server restart runs on a private PostgreSQL cluster.
//!
//! Coordination is through channels and the database (`pg_locks`, MariaDB's process list),
//! never sleeps.
//!
//! (Over 450 lines on purpose: every fault a call can meet, killed holders, restarts, failing
//! and panicking `make_data`, read side by side on both servers, with their shared probes.)

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Server, fail_then_probe, key_of, lock_is_free, new_pr, on_each_server, open_pools,
    poll_locks_until, rows_for, total_rows,
};
use entity::{NewPullRequest, PullRequest};
use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Retry, Wait, acquire_advisory_lock};
use tokio::sync::{mpsc, oneshot, watch};

on_each_server! {
    /// The holder of a key's lock has its connection killed (`pg_terminate_backend`,
    /// `KILL CONNECTION`, as an operator or a failover does) while it is inside `make_data`,
    /// with another caller waiting for the same key: the holder gets a typed error that says
    /// "retry", the waiter is granted the lock when the dead connection's transaction ends and
    /// creates the row, once, and the holder's pool of one recovers by itself (its retry finds
    /// the row).
    ///
    /// Catches: a lost connection classified as not retryable (remove the class-57P and `Io`
    /// arms of `is_transient` in src/error.rs: the holder's assertion fails, its error is
    /// `Database(Query(SqlxError(Database(PgDatabaseError { code: "57P01" ...)))` or an I/O
    /// error); a lock that outlived the killed session (a lock held by a leaked transaction on
    /// another connection, or MariaDB's session-scoped `GET_LOCK` on a connection that
    /// survived, would keep the waiter waiting: the bounded wait fails); a row written before
    /// `make_data` finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_lock_holder_gets_a_retryable_error_and_the_waiter_creates_the_row(
        server: Server,
    ) {
        const PR: i64 = 100;
        let Some(test_db) = server.database().await else {
            return;
        };
        let holder_db = test_db.connect(1).await;
        let waiter_db = test_db.connect(1).await;
        let observer = test_db.connect(1).await;
        // A pool of one: the call below runs on this connection.
        let holder_id = server.connection_id(&holder_db).await;

        let (inside_tx, inside_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let holder_db = holder_db.clone();
            async move {
                PullRequest::create_once_with(&holder_db, PR, move || async move {
                    inside_tx.send(()).unwrap();
                    // Paused here, holding the lock, while the test kills our connection.
                    go_rx.await.unwrap();
                    Ok::<_, Infallible>(new_pr(PR))
                })
                .await
            }
        });
        inside_rx.await.expect("the holder reaches make_data");
        if let Some(holders) = server.lock_holders(&observer, key_of(PR)).await {
            assert_eq!(holders, [holder_id], "the holder's connection holds the key");
        }
        assert!(!lock_is_free(&observer, key_of(PR)).await, "the key is held");

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

        server.kill_connection(&observer, holder_id).await;

        // The waiter is granted the lock once the killed connection is gone, and creates the
        // row.
        let created = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter goes on once the holder is killed")
            .unwrap()
            .expect("the waiter succeeds");
        assert!(created.is_created(), "{created:?}");

        // The holder's make_data returns; its connection is gone.
        go_tx.send(()).unwrap();
        let err = holder.await.unwrap().expect_err("the killed holder fails");
        eprintln!("killed holder's error on {server:?}: {err:?}");
        assert!(
            err.is_retryable(),
            "a killed connection is retryable: {err:?}"
        );
        assert!(
            matches!(err, Error::Database(_)),
            "typed as a database error: {err:?}"
        );
        assert_eq!(rows_for(&observer, PR).await, 1);

        // Its pool of one recovers by itself: the retry opens a new connection and finds the
        // row.
        let retried = Retry::default()
            .run(|| PullRequest::create_once(&holder_db, PR, new_pr(PR)))
            .await
            .unwrap();
        assert!(matches!(retried, Outcome::Existing(_)), "{retried:?}");
        assert_eq!(total_rows(&observer).await, 1);
    }

    /// A caller's own transaction holds a key (`acquire_advisory_lock`) when its connection is
    /// killed while another caller waits for the key: the server rolls the holder back, which
    /// frees the key; the waiter creates the row once; the holder's next `create_once` in its
    /// dead transaction fails with a retryable error and writes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_callers_transaction_frees_its_keys_and_fails_retryably(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let holder = test_db.connect(1).await;
        let admin = test_db.connect(1).await;
        let db = test_db.connect(1).await;
        let held = holder.begin().await.unwrap();
        acquire_advisory_lock(&held, key_of(7), Wait::Forever)
            .await
            .unwrap();
        let holder_id = server.connection_id(&held).await;

        let waiter =
            tokio::spawn(async move { PullRequest::create_once(&db, 7, new_pr(7)).await });
        common::until_someone_waits(&admin, key_of(7)).await;
        server.kill_connection(&admin, holder_id).await;

        let outcome = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter goes on once the holder is killed")
            .unwrap()
            .unwrap();
        assert!(outcome.is_created());
        let err = PullRequest::create_once(&held, 8, new_pr(8))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(rows_for(&admin, 7).await, 1);
        assert_eq!(rows_for(&admin, 8).await, 0);
    }

    /// A burst of deliveries (`BURST_KEYS` keys, `BURST_CALLERS_PER_KEY` deliveries each, over
    /// two pools so that same-key callers meet at the lock) while every connection of the
    /// burst is killed (`pg_terminate_backend`, `KILL CONNECTION`). `BURST_PINNED` calls are
    /// held inside `make_data`, with their locks and connections, until the kill is over, so
    /// it is guaranteed to hit lock holders in flight (and the callers waiting for their keys);
    /// the rest of the burst runs on.
    ///
    /// Then: every failure is a typed retryable error; the same pools, never rebuilt, serve the
    /// retries of the failed deliveries ([`Retry`]); and there is exactly one row per key, with
    /// `Created` returned at most once per key (at most: a COMMIT that reached the server just
    /// before its connection died, but whose answer did not reach us, is an error the retry
    /// turns into `Existing`).
    ///
    /// Catches: a killed connection's error classified as not retryable; pools that do not
    /// recover (the retries fail); a lock that outlives its killed holder (the retries wait);
    /// a duplicate row or a unique violation. On MariaDB, with the MySQL arm of
    /// `Backend::lock` (src/backend/mod.rs) made a no-op, it failed with 7 and 5 unique violations
    /// (not retryable) among the burst's failures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_connections_during_a_burst_fail_retryably_and_retries_create_each_key_once(
        server: Server,
    ) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let pools = open_pools(&test_db.url, 2, BURST_POOL).await;
        let admin = test_db.connect(1).await;
        let (created, failed) = burst_with_kills(server, &pools, &admin).await;

        eprintln!("{} of the burst's calls failed on {server:?}:", failed.len());
        for (pr_id, err) in &failed {
            eprintln!("  {pr_id}: retryable={} {err:?}", err.is_retryable());
        }
        assert!(
            failed.len() >= BURST_PINNED,
            "the kill must break at least the pinned calls, or the test proves nothing"
        );
        let not_retryable: Vec<_> = failed.iter().filter(|(_, e)| !e.is_retryable()).collect();
        assert!(
            not_retryable.is_empty(),
            "every failure must be retryable: {not_retryable:?}"
        );

        // The same pools, never rebuilt, serve the retries.
        let mut created = created;
        for (n, (pr_id, _)) in failed.iter().enumerate() {
            let db = &pools[n % pools.len()];
            let outcome = Retry::default()
                .run(|| PullRequest::create_once(db, *pr_id, new_pr(*pr_id)))
                .await
                .unwrap_or_else(|e| panic!("retry of {pr_id} failed: {e:?}"));
            created[*pr_id as usize] += usize::from(outcome.is_created());
        }
        assert_eq!(total_rows(&admin).await, BURST_KEYS as u64);
        for pr_id in 1..=BURST_KEYS {
            assert_eq!(rows_for(&admin, pr_id).await, 1, "pr_id {pr_id}");
            assert!(created[pr_id as usize] <= 1, "Created twice for {pr_id}");
        }
    }
}

const BURST_KEYS: i64 = 40;
const BURST_CALLERS_PER_KEY: usize = 4;
const BURST_TASKS: usize = 16;
const BURST_POOL: u32 = 8;
const BURST_PINNED: usize = 3;

/// What each burst key's calls returned (`Created` counts, indexed by key) and the failed
/// calls.
type BurstResults = (Vec<usize>, Vec<(i64, Error)>);

/// Runs the burst of `killed_connections_during_a_burst_...` over `pools`: once
/// `BURST_PINNED` calls are inside `make_data` (holding their keys), kills every connection to
/// the database but `admin`'s, then lets the pinned calls go on.
async fn burst_with_kills(
    server: Server,
    pools: &[DatabaseConnection],
    admin: &DatabaseConnection,
) -> BurstResults {
    let make_data_calls = Arc::new(AtomicUsize::new(0));
    let (pinned_tx, mut pinned_rx) = mpsc::unbounded_channel::<i64>();
    let (killed_tx, killed_rx) = watch::channel(false);

    // Delivery n is for key 1 + n / CALLERS_PER_KEY and goes to task n % TASKS: the deliveries
    // of a key go to CALLERS_PER_KEY different tasks, which reach it together; task t uses
    // pool t % 2, so a key's callers are in both pools.
    let mut handles = Vec::new();
    for task in 0..BURST_TASKS {
        let (db, calls, pinned_tx, killed_rx) = (
            pools[task % pools.len()].clone(),
            make_data_calls.clone(),
            pinned_tx.clone(),
            killed_rx.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mine = (0..BURST_KEYS * BURST_CALLERS_PER_KEY as i64)
                .filter(|n| *n as usize % BURST_TASKS == task)
                .map(|n| 1 + n / BURST_CALLERS_PER_KEY as i64);
            for pr_id in mine {
                let (calls, pinned_tx, mut killed_rx) =
                    (calls.clone(), pinned_tx.clone(), killed_rx.clone());
                let result = PullRequest::create_once_with(&db, pr_id, move || async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < BURST_PINNED {
                        pinned_tx.send(pr_id).unwrap();
                        killed_rx.wait_for(|done| *done).await.unwrap();
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

    for _ in 0..BURST_PINNED {
        pinned_rx
            .recv()
            .await
            .expect("a call is pinned inside make_data");
    }
    let victims = server.other_connections(admin).await;
    assert!(
        victims.len() >= BURST_PINNED,
        "the pinned calls' connections are among {victims:?}"
    );
    for id in victims {
        // A connection may have gone by itself meanwhile; PostgreSQL then reports `false`.
        kill_if_there(server, admin, id).await;
    }
    killed_tx.send(true).unwrap();

    let mut created = vec![0_usize; BURST_KEYS as usize + 1];
    let mut failed = Vec::new();
    for handle in handles {
        for (pr_id, result) in handle.await.expect("task panicked") {
            match result {
                Ok(outcome) => created[pr_id as usize] += usize::from(outcome.is_created()),
                Err(err) => failed.push((pr_id, err)),
            }
        }
    }
    (created, failed)
}

/// Kills connection `id` unless it is already gone.
async fn kill_if_there(server: Server, admin: &DatabaseConnection, id: i64) {
    if server.other_connections(admin).await.contains(&id) {
        server.kill_connection(admin, id).await;
    }
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
/// The restart runs on a private cluster, never on a `DATABASE_URL` server. (On both servers,
/// `killed_connections_during_a_burst_...` kills the burst's connections instead.)
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_during_a_burst_fails_retryably_and_retries_create_each_key_once() {
    const KEYS: i64 = 40;
    const CALLERS_PER_KEY: usize = 4;
    const TASKS: usize = 16;
    const POOL: u32 = 8;
    const PINNED: usize = 3;

    let server = test_support::Server::private();
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

on_each_server! {
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
    async fn make_data_error_writes_nothing_and_releases_the_lock_at_once(server: Server) {
        const ROUNDS: i64 = 25;
        let Some(test_db) = server.database().await else {
            return;
        };
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
    async fn make_data_panic_writes_nothing_and_releases_the_lock(server: Server) {
        const PR: i64 = 300;
        let Some(test_db) = server.database().await else {
            return;
        };
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
}
