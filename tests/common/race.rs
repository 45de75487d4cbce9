//! The racing workload (`tests/create_once.rs`, `tests/sqlite.rs`, `tests/pgbouncer.rs`):
//! many callers asking for the same keys at once, and what their calls returned.

use std::sync::Arc;

use entity::{PullRequest, pull_requests};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    IsolationLevel, QueryFilter, SqlErr, TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Outcome, Wait, acquire_advisory_lock};
use tokio::sync::Barrier;

use super::{naive_find_then_insert, new_pr, rows_for, total_rows};

/// How the callers of a race create their rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// `PullRequest::create_once`.
    CreateOnce,
    /// Find, then insert, with no lock (nor SQLite's IMMEDIATE transaction): what most code
    /// does.
    Naive,
}

impl Strategy {
    /// The name a worker process is given in its environment.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::CreateOnce => "create_once",
            Strategy::Naive => "naive",
        }
    }

    pub(crate) fn from_name(name: &str) -> Strategy {
        match name {
            "create_once" => Strategy::CreateOnce,
            "naive" => Strategy::Naive,
            other => panic!("unknown strategy {other}"),
        }
    }
}

/// What the calls of a race returned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) created: usize,
    pub(crate) existing: usize,
    pub(crate) unique_violations: usize,
    pub(crate) other_errors: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, other: Tally) {
        self.created += other.created;
        self.existing += other.existing;
        self.unique_violations += other.unique_violations;
        self.other_errors += other.other_errors;
    }

    /// Counts one call's result (`Ok(created)`): created, found existing, a unique violation,
    /// or another error, printed after `what` so a failing test shows it.
    pub(crate) fn count(&mut self, result: Result<bool, Error>, what: impl FnOnce() -> String) {
        match result {
            Ok(true) => self.created += 1,
            Ok(false) => self.existing += 1,
            Err(Error::Database(e)) if is_unique_violation(&e) => self.unique_violations += 1,
            Err(e) => {
                eprintln!("{}: {e:?}", what());
                self.other_errors += 1
            }
        }
    }

    /// Counts one `create_once` outcome ([`Tally::count`]).
    pub(crate) fn count_outcome<M>(
        &mut self,
        result: Result<Outcome<M>, Error>,
        what: impl FnOnce() -> String,
    ) {
        self.count(result.map(|outcome| outcome.is_created()), what);
    }
}

pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// `tasks` tasks over one or more pools; every key in `first_key..first_key + keys` is
/// requested by `callers_per_key` tasks that start together (a barrier) and walk the same keys
/// in the same order, so the requests for a key arrive at once.
///
/// On PostgreSQL, callers of one pool on the same key take turns in the crate's waiting room
/// (`src/turns.rs`) before they reach the database, so over a single pool the advisory
/// lock is never contended and a race test would pass without it. Over several pools the
/// callers of each key are spread over all of them, and same-key callers of different pools
/// meet only at the advisory lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) keys: i64,
    pub(crate) callers_per_key: usize,
    pub(crate) tasks: usize,
}

impl Workload {
    /// The tally of a correct run: each key created once, every other call absorbed, no error.
    pub(crate) fn exactly_once(&self) -> Tally {
        let keys = usize::try_from(self.keys).expect("a positive key count");
        Tally {
            created: keys,
            existing: keys * (self.callers_per_key - 1),
            unique_violations: 0,
            other_errors: 0,
        }
    }

    /// Runs the workload over `pools` with `strategy` and sums what the calls returned.
    ///
    /// Task `t` walks the keys of group `t % groups` (`groups = tasks / callers_per_key`) as
    /// that group's caller number `t / groups`, and caller `c` of every group uses
    /// `pools[c % pools.len()]`: the callers of each key alternate between the pools (with
    /// two pools and 8 callers per key, 4 in each), and each pool gets an equal share of the
    /// tasks. (`pools[t % pools.len()]` would not do: with an even number of groups every
    /// caller of a key would be in the same pool.)
    pub(crate) async fn race(
        &self,
        pools: &[DatabaseConnection],
        strategy: Strategy,
        first_key: i64,
    ) -> Tally {
        let Workload {
            keys,
            callers_per_key,
            tasks,
        } = *self;
        assert!(!pools.is_empty(), "a race needs a pool");
        let groups = tasks / callers_per_key;
        let barrier = Arc::new(Barrier::new(tasks));
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let db = pools[(task / groups) % pools.len()].clone();
                let barrier = barrier.clone();
                let group = (task % groups) as i64;
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    barrier.wait().await;
                    for pr_id in
                        (first_key..first_key + keys).filter(|k| k % groups as i64 == group)
                    {
                        let result = match strategy {
                            Strategy::CreateOnce => {
                                PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                                    .await
                                    .map(|outcome| outcome.is_created())
                            }
                            Strategy::Naive => naive_find_then_insert(&db, pr_id)
                                .await
                                .map_err(Error::Database),
                        };
                        tally.count(result, || format!("{} {pr_id}", strategy.name()));
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        for handle in handles {
            total.add(handle.await.expect("task panicked"));
        }
        total
    }

    /// Asserts one row for each key in `first_key..first_key + keys` and no other row.
    pub(crate) async fn assert_one_row_per_key(&self, db: &impl ConnectionTrait, first_key: i64) {
        assert_eq!(total_rows(db).await, self.keys as u64);
        for pr_id in first_key..first_key + self.keys {
            assert_eq!(rows_for(db, pr_id).await, 1, "pr_id {pr_id}");
        }
    }
}

/// The Python recipe, by hand (a taker of the key's lock that is not the crate): in a
/// transaction at `level`, the key's advisory lock, a look, and a plain `INSERT` (no `ON
/// CONFLICT`) when the look missed, after a pause of `pause_ms` between the look and the
/// insert that widens the window a writer without the lock would slip into. `Ok(true)`: it
/// inserted.
pub(crate) async fn raw_lock_taker(
    db: &DatabaseConnection,
    level: IsolationLevel,
    pr_id: i64,
    pause_ms: u32,
) -> Result<bool, DbErr> {
    let txn = db.begin_with_config(Some(level), None).await?;
    acquire_advisory_lock(
        &txn,
        LockKey::for_entity("pull_requests", &pr_id),
        Wait::Forever,
    )
    .await
    .map_err(DbErr::from)?;
    let found = PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .one(&txn)
        .await?;
    if found.is_some() {
        txn.commit().await?;
        return Ok(false);
    }
    let seconds = f64::from(pause_ms) / 1000.0;
    let pause = match txn.get_database_backend() {
        DbBackend::Postgres => format!("SELECT pg_sleep({seconds})"),
        _ => format!("SELECT SLEEP({seconds})"),
    };
    txn.execute_unprepared(&pause).await?;
    let row = PullRequest::new_active_model(&pr_id, new_pr(pr_id));
    PullRequest::insert(row).exec(&txn).await?;
    txn.commit().await?;
    Ok(true)
}
