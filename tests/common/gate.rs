//! The start gate of racing worker processes (`tests/create_once.rs`, `tests/pgbouncer.rs`,
//! `tests/composite_keys.rs`, `tests/update_form.rs`): they wait at a lock the parent holds,
//! and go together when it opens. On MySQL the lock is the crate's lock-table row, and the waiters are seen in InnoDB's
//! lock waits.

use std::time::Duration;

use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{LockKey, Wait, acquire_advisory_lock, acquire_shared_advisory_lock};

use super::{Tally, poll_locks_until, worker_tally};

/// The start gate: the parent holds it (exclusive) while its worker processes start; each
/// worker waits for it (shared, so they pass together) before racing.
pub(crate) const GATE: LockKey = LockKey::BigInt(9_000_001);

/// Worker side: waits at the parent's [`GATE`] on `db` (directly or through a pooler, the
/// same database as the parent's), and returns once the parent opens it.
pub(crate) async fn wait_at_gate(db: &DatabaseConnection) {
    let gate = db.begin().await.unwrap();
    acquire_shared_advisory_lock(&gate, GATE, Wait::Forever)
        .await
        .unwrap();
    gate.commit().await.unwrap();
}

/// Parent side: holds [`GATE`] on `direct` (a pool of at least two connections: one holds
/// the gate, another polls `pg_locks`), starts `workers` (worker processes that call
/// [`wait_at_gate`] on the database `direct` is connected to), opens the gate once every one
/// of them waits at it (seen in `pg_locks`, for at most 60 s), so all start at once, and
/// returns their tallies in order. A worker still running when this panics is killed.
pub(crate) async fn run_gated(
    direct: &DatabaseConnection,
    workers: impl IntoIterator<Item = tokio::process::Command>,
) -> Vec<Tally> {
    run_gated_outputs(direct, workers)
        .await
        .iter()
        .map(worker_tally)
        .collect()
}

/// [`run_gated`], returning what each worker printed, for workers that report more than a
/// [`Tally`].
pub(crate) async fn run_gated_outputs(
    direct: &DatabaseConnection,
    workers: impl IntoIterator<Item = tokio::process::Command>,
) -> Vec<std::process::Output> {
    let gate = direct.begin().await.unwrap();
    acquire_advisory_lock(&gate, GATE, Wait::Forever)
        .await
        .unwrap();
    let children: Vec<_> = workers
        .into_iter()
        .map(|mut worker| tokio::spawn(worker.kill_on_drop(true).output()))
        .collect();
    let processes = children.len();
    poll_locks_until(
        direct,
        GATE,
        false,
        Duration::from_secs(60),
        &format!("{processes} processes reach the gate"),
        |waiters| waiters.len() >= processes,
    )
    .await;
    gate.commit().await.unwrap(); // all processes go at once

    let mut outputs = Vec::with_capacity(processes);
    for child in children {
        outputs.push(child.await.unwrap().expect("run a worker process"));
    }
    outputs
}
