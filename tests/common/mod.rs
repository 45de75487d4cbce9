//! Shared by the integration tests, one concern per submodule, every name re-exported here
//! (`use common::{new_pr, Workload, ...}`):
//!
//! - `rows`: the sample data and row counts;
//! - `race`: the racing workload ([`Workload`], [`Strategy`], [`Tally`]);
//! - `workers`: the same workload in worker processes (this test binary, re-run);
//! - `gate`: the start gate that releases worker processes together;
//! - `drops`: dropping a call at an exact await point;
//! - `keyed_rows`: `keyed_rows!`, an entity of keyed rows that looks first as told;
//! - `locks`: lock probes (`pg_locks` on PostgreSQL, InnoDB's lock waits on MySQL);
//! - `mysql`: MySQL's side of the probes (used through `locks` and the gate);
//! - `pools`: the pools a race runs over, connections open;
//! - `servers`: one test body on each server ([`Server`], `on_each_server!`): PostgreSQL and
//!   MariaDB, and the SQL that differs between them (kill a connection, list lock holders);
//! - `composite`: entities with composite natural keys and their race (used by path,
//!   `common::composite::...`, as its names are those of its entities);
//! - `versions`: the update form's entities, its race of out-of-order versions and its
//!   checks (used by path, `common::versions::...`);
//! - `wire`: round trips counted on the wire, by a relay in front of PostgreSQL.
//!
//! The sample pull request, the naive find-then-insert, the pool builder and temp dirs live in
//! `test_support` (the benchmark and the demo use them too) and are re-exported here.

// Each test binary uses its own subset of these.
#![allow(dead_code, unused_imports, unused_macros)]

pub(crate) mod composite;
mod drops;
mod gate;
pub(crate) mod keyed_rows;
mod locks;
pub(crate) mod mysql;
mod pools;
mod race;
mod rows;
mod servers;
pub(crate) mod versions;
pub(crate) mod wire;
mod workers;

pub(crate) use drops::drop_at_await_point;
pub(crate) use gate::{GATE, run_gated, run_gated_outputs, wait_at_gate};
pub(crate) use locks::{
    fail_then_probe, key_of, lock_is_free, lock_pids, lock_rows, poll_locks_until, try_lock,
    until_a_statement_waits_for_a_table, until_someone_waits,
};
pub(crate) use pools::open_pools;
pub(crate) use race::{Strategy, Tally, Workload, is_unique_violation, raw_lock_taker};
pub(crate) use rows::{rows_for, total_rows};
pub(crate) use servers::{Server, on_each_server};
/// A pool of `size` connections to `url`: [`test_support::connect`], under the name the
/// cancellation and hot-key tests know it by.
pub(crate) use test_support::connect as small_pool;
pub(crate) use test_support::{TempDir, new_pr};
pub(crate) use workers::{worker_line, worker_process, worker_tally};

/// The race `create_once` closes, on `pull_requests` with [`new_pr`]'s data: both callers find
/// nothing, both insert ([`test_support::naive_find_then_insert`]).
pub(crate) async fn naive_find_then_insert(
    db: &sea_orm::DatabaseConnection,
    pr_id: i64,
) -> Result<bool, sea_orm::DbErr> {
    test_support::naive_find_then_insert::<entity::PullRequest, _>(db, pr_id, new_pr(pr_id)).await
}
