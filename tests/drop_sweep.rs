//! The probe's sweep, kept: many calls, each dropped after a random 0–60 ms (a request
//! timeout, a client gone), over small pools, mixing every call form and callers'
//! transactions. Afterwards: no key has two rows, no key was reported `Created` twice, no
//! advisory lock is held, no session is left idle in a transaction, and every key is then
//! created exactly once.
//!
//! It guards the cancel safety of every await point at once. It found the crate sound before
//! the savepoint fixes too (each caller's transaction here is the call's own, dropped with
//! it; `tests/callers_transaction.rs` covers transactions that outlive a dropped call). It can
//! fail: with the advisory lock made a no-op (`Backend::lock` returning at once) it fails with
//! unique violations in `other_errors`.
//!
//! The second test drops the three-round-trip path (`src/backend/postgres/fast_path.rs`, a pooled connection
//! the crate owns outside SeaORM's transaction) at each of its await points in turn, over a
//! pool of one, and checks for leftovers after every dropped call. It fails when a dropped
//! session's connection is handed back to the pool instead of closed.

#![cfg(feature = "postgres")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::keyed_rows::keyed_rows;
use common::{drop_at_await_point, new_pr, small_pool};
use entity::{PullRequest, pull_requests};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QuerySelect, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Wait};
use test_support::TestDb;

const KEYS: i64 = 40;
const CALLS: u64 = 1_200;
const TASKS: u64 = 12;

/// A small deterministic generator (no dependency; the sweep is the same every run).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One call in one of the four forms; `Some(true)` when it created the row and that is final
/// (a caller's transaction counts once committed).
async fn call(db: &DatabaseConnection, form: u64, pr_id: i64) -> Result<bool, Error> {
    let ready = || async move { Ok::<_, std::convert::Infallible>(new_pr(pr_id)) };
    let outcome: Outcome<pull_requests::Model> = match form {
        0 => PullRequest::create_once(db, pr_id, new_pr(pr_id)).await?,
        1 => PullRequest::create_once_with(db, pr_id, ready).await?,
        2 => {
            PullRequest::once_with(pr_id, ready)
                .wait(Wait::Timeout(Duration::from_millis(15)))
                .exec(db)
                .await?
        }
        _ => {
            let txn = db.begin().await?;
            let outcome = PullRequest::create_once(&txn, pr_id, new_pr(pr_id)).await?;
            txn.commit().await?;
            outcome
        }
    };
    Ok(outcome.is_created())
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_anywhere_leave_nothing_behind() {
    let test_db = TestDb::new().await;
    let pools = [
        small_pool(&test_db.url, 2).await,
        small_pool(&test_db.url, 3).await,
    ];
    let created: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let other_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let pools = pools.clone();
            let (created, other_errors) = (created.clone(), other_errors.clone());
            tokio::spawn(async move {
                let mut state = 0x9E37_79B9_7F4A_7C15 ^ (task + 1);
                for _ in 0..CALLS / TASKS {
                    let pr_id = i64::try_from(next(&mut state) % KEYS as u64).unwrap();
                    let form = next(&mut state) % 4;
                    let db = &pools[usize::try_from(next(&mut state) % 2).unwrap()];
                    let drop_after = Duration::from_micros(next(&mut state) % 60_000);
                    match tokio::time::timeout(drop_after, call(db, form, pr_id)).await {
                        Err(_dropped) => {}
                        Ok(Ok(true)) => *created.lock().unwrap().entry(pr_id).or_default() += 1,
                        Ok(Ok(false)) => {}
                        Ok(Err(err)) if err.is_retryable() => {}
                        Ok(Err(err)) => other_errors.lock().unwrap().push(format!("{err:?}")),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let other_errors = other_errors.lock().unwrap().clone();
    assert!(other_errors.is_empty(), "{other_errors:#?}");
    let created = created.lock().unwrap().clone();
    assert!(
        created.values().all(|&n| n == 1),
        "a key was reported Created twice: {created:?}"
    );

    // Abandoned waits end within their bound; the pools' connections come back idle.
    let observer = test_db.connect(1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let locks = count(
            &observer,
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await;
        let idle_in_transaction = count(
            &observer,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .await;
        if locks == 0 && idle_in_transaction == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{locks} advisory locks held, {idle_in_transaction} sessions idle in a transaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rows: Vec<i64> = PullRequest::find()
        .select_only()
        .column(pull_requests::Column::PrId)
        .into_tuple()
        .all(&observer)
        .await
        .unwrap();
    let mut unique = rows.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), rows.len(), "a key has two rows");

    // Every key is now created exactly once (or was already).
    for pr_id in 0..KEYS {
        let outcome = PullRequest::create_once(&pools[0], pr_id, new_pr(pr_id))
            .await
            .unwrap();
        assert_eq!(
            outcome.is_created(),
            !rows.contains(&pr_id),
            "pr {pr_id}: Created must mean no row existed"
        );
        if outcome.is_created() {
            assert!(!created.contains_key(&pr_id), "pr {pr_id} created twice");
        }
    }
}

// Rows keyed by `k`, whose calls never look first: every call takes the three-round-trip path
// of a new key on a connection (`src/backend/postgres/fast_path.rs`), which holds a pooled connection outside
// SeaORM's `DatabaseTransaction`.
keyed_rows!(fresh_keys, "fresh_keys", Never);

/// Advisory locks held and sessions idle in a transaction, polled until both are zero (a
/// closed connection's server process ends a moment after the client closed it); the counts
/// still seen after `patience`.
async fn leftovers(observer: &DatabaseConnection, patience: Duration) -> (i64, i64) {
    let deadline = Instant::now() + patience;
    loop {
        let locks = count(
            observer,
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await;
        let idle_in_transaction = count(
            observer,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .await;
        if (locks, idle_in_transaction) == (0, 0) || Instant::now() > deadline {
            return (locks, idle_in_transaction);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The three-round-trip path (a pooled connection the crate owns outside SeaORM's
/// transaction), dropped at every await point, over a pool of ONE connection: for each key,
/// calls are dropped after their 1st, 2nd, 3rd, ... wait (taking the connection, BEGIN with the
/// try-lock, the guarded insert, the read of an existing row, COMMIT, and every wait for a
/// socket inside them) until one completes, first for a new key, then again for its
/// redelivery. After every dropped call: no advisory lock held and no session idle in a
/// transaction; every key reported `Created` at most once; at the end the one connection
/// still serves calls and every key has exactly one row.
///
/// (Dropping by poll count instead of a timer: see [`drop_at_await_point`].)
///
/// It fails without the guard (`Session`'s `Drop` in `src/backend/postgres/fast_path.rs` not calling
/// `close_on_drop`, so a dropped session's connection goes back to the pool as it is): the
/// first call dropped after BEGIN and the try-lock were sent leaves the pool's connection
/// `idle in transaction` holding the key's advisory lock, and the check fails with "after a
/// call dropped at await point 3 for key 0 (new key): 1 advisory locks held, 1 sessions idle
/// in a transaction" (the point's number depends on how many socket waits come first). With
/// the guard, typically 5 to 8 calls per key and path are dropped before one completes; most
/// new keys are then created by a call dropped after its COMMIT was sent, which the server
/// committed, so `Created` was never reported for them: at most once, as promised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_round_trip_path_dropped_at_every_await_point_leaves_nothing_behind() {
    const SWEPT_KEYS: i64 = 6;
    let test_db = TestDb::new().await;
    let observer = test_db.connect(1).await;
    observer
        .execute_unprepared(
            "CREATE TABLE fresh_keys (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE, \
             v text NOT NULL)",
        )
        .await
        .unwrap();
    let db = small_pool(&test_db.url, 1).await;
    let mut created: HashMap<i64, usize> = HashMap::new();
    let mut dropped = 0;
    let mut deepest = 0;
    for k in 0..SWEPT_KEYS {
        for path in ["new key", "redelivery"] {
            let mut point = 0;
            let done = loop {
                let call = fresh_keys::Entity::create_once(&db, k, format!("v{k}"));
                if let Some(result) = drop_at_await_point(call, point).await {
                    break result.unwrap();
                }
                dropped += 1;
                let (locks, idle) = leftovers(&observer, Duration::from_secs(3)).await;
                assert_eq!(
                    (locks, idle),
                    (0, 0),
                    "after a call dropped at await point {point} for key {k} ({path}): {locks} \
                     advisory locks held, {idle} sessions idle in a transaction"
                );
                point += 1;
            };
            deepest = deepest.max(point);
            if done.is_created() {
                *created.entry(k).or_default() += 1;
            }
        }
    }
    assert!(
        created.values().all(|&n| n == 1),
        "a key was reported Created more than once: {created:?}"
    );
    // A call dropped after COMMIT was sent may have created the row unreported, never twice.
    // Each sweep drops a call at every point where it waited, whatever their number (a
    // reply already read with the previous one costs no wait): the sweep is the proof of
    // coverage. This only checks that calls did wait, on several round trips.
    assert!(
        deepest >= 3,
        "calls completed after {deepest} waits at most"
    );
    assert!(dropped >= 2 * SWEPT_KEYS, "{dropped} calls dropped");

    // The pool's one connection still serves calls, and every key has exactly one row.
    for k in 0..SWEPT_KEYS + 1 {
        let outcome = fresh_keys::Entity::create_once(&db, k, format!("v{k}"))
            .await
            .unwrap();
        assert_eq!(outcome.is_created(), k == SWEPT_KEYS, "key {k}");
    }
    let rows = count(&observer, "SELECT count(*) AS n FROM fresh_keys").await;
    let keys = count(&observer, "SELECT count(DISTINCT k) AS n FROM fresh_keys").await;
    assert_eq!((rows, keys), (SWEPT_KEYS + 1, SWEPT_KEYS + 1));
    assert_eq!(leftovers(&observer, Duration::from_secs(3)).await, (0, 0));
}
