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

#![cfg(feature = "postgres")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{new_pr, small_pool};
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
