//! Shared by the integration tests: sample data and small assertions, the racing workload and
//! its worker processes, advisory-lock probes, and a temp dir per test.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use entity::{NewPullRequest, PullRequest, pull_requests};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryFilter, SqlErr,
    Statement, TransactionTrait,
};
use sea_orm_idempotent::{
    Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock, acquire_shared_advisory_lock,
};
use tokio::sync::Barrier;

/// A plausible new pull request for `pr_id`.
pub(crate) fn new_pr(pr_id: i64) -> NewPullRequest {
    NewPullRequest {
        repository: "octo-org/octo-repo".into(),
        number: i32::try_from(pr_id.rem_euclid(100_000) + 1).unwrap(),
        title: format!("Pull request {pr_id}"),
        author: "mona".into(),
        state: "open".into(),
        head_sha: format!("{:040x}", pr_id),
        delivery_id: format!("delivery-{pr_id}"),
    }
}

/// Rows stored for `pr_id`.
pub(crate) async fn rows_for(db: &impl ConnectionTrait, pr_id: i64) -> u64 {
    PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .count(db)
        .await
        .unwrap()
}

/// Rows in the table.
pub(crate) async fn total_rows(db: &impl ConnectionTrait) -> u64 {
    PullRequest::find().count(db).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// The racing workload (`tests/create_once.rs`, `tests/sqlite.rs`, `tests/pgbouncer.rs`)

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

/// Marks the line a worker process prints its tally on.
const WORKER_TALLY: &str = "WORKER_TALLY";

impl Tally {
    pub(crate) fn add(&mut self, other: Tally) {
        self.created += other.created;
        self.existing += other.existing;
        self.unique_violations += other.unique_violations;
        self.other_errors += other.other_errors;
    }

    /// Prints the line [`worker_tally`] reads back in the parent process.
    pub(crate) fn print_for_parent(&self) {
        println!(
            "{WORKER_TALLY} created={} existing={} unique_violations={} other_errors={}",
            self.created, self.existing, self.unique_violations, self.other_errors
        );
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
/// (`src/local_queue.rs`) before they reach the database, so over a single pool the advisory
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
                        match result {
                            Ok(true) => tally.created += 1,
                            Ok(false) => tally.existing += 1,
                            Err(Error::Database(e)) if is_unique_violation(&e) => {
                                tally.unique_violations += 1
                            }
                            Err(e) => {
                                eprintln!("{} {pr_id}: {e:?}", strategy.name());
                                tally.other_errors += 1
                            }
                        }
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

/// The race `create_once` closes: both callers find nothing, both insert.
pub(crate) async fn naive_find_then_insert(
    db: &DatabaseConnection,
    pr_id: i64,
) -> Result<bool, DbErr> {
    let found = PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .one(db)
        .await?;
    if found.is_some() {
        return Ok(false);
    }
    PullRequest::new_active_model(&pr_id, new_pr(pr_id))
        .insert(db)
        .await?;
    Ok(true)
}

/// This test binary, to be re-run as a worker process that runs only the test `test_name`
/// (add its environment, then `.output()`).
pub(crate) fn worker_process(test_name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command.args([test_name, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// The tally a worker process printed ([`Tally::print_for_parent`]); panics, with the
/// worker's output, if it failed or printed none.
pub(crate) fn worker_tally(output: &Output) -> Tally {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "worker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(WORKER_TALLY).map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no tally from worker:\n{stdout}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    Tally {
        created: field("created"),
        existing: field("existing"),
        unique_violations: field("unique_violations"),
        other_errors: field("other_errors"),
    }
}

// ---------------------------------------------------------------------------------------------
// The start gate of racing worker processes (PostgreSQL: `tests/create_once.rs`,
// `tests/pgbouncer.rs`)

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

    let mut tallies = Vec::with_capacity(processes);
    for child in children {
        tallies.push(worker_tally(
            &child.await.unwrap().expect("run a worker process"),
        ));
    }
    tallies
}

// ---------------------------------------------------------------------------------------------
// Advisory-lock probes (PostgreSQL)

/// The key `create_once` locks for pull request `pr_id`: the entity's namespace, which is its
/// table's name.
pub(crate) fn key_of(pr_id: i64) -> LockKey {
    assert_eq!(PullRequest::lock_namespace(), "pull_requests");
    LockKey::for_entity("pull_requests", &pr_id)
}

/// Backends holding (`granted`) or waiting for (`!granted`) the advisory lock `key` in this
/// database, from `pg_locks`. A `BigInt(k)` key appears as `classid = k >> 32,
/// objid = k & 0xFFFFFFFF, objsubid = 1`; a `Pair(a, b)` as `classid = a, objid = b,
/// objsubid = 2` (as unsigned 32-bit `oid`s).
pub(crate) async fn lock_pids(db: &DatabaseConnection, key: LockKey, granted: bool) -> Vec<i32> {
    let (classid, objid, objsubid) = match key {
        LockKey::BigInt(k) => ((k >> 32) as u32, k as u32, 1),
        LockKey::Pair(a, b) => (a as u32, b as u32, 2),
    };
    db.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pid FROM pg_locks \
         WHERE locktype = 'advisory' \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = $3 AND granted = $4 \
         ORDER BY pid",
        [
            i64::from(classid).into(),
            i64::from(objid).into(),
            objsubid.into(),
            granted.into(),
        ],
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i32>("", "pid").unwrap())
    .collect()
}

/// Backends holding and waiting for `key`, from `pg_locks`: (granted, waiting).
pub(crate) async fn lock_rows(observer: &DatabaseConnection, key: LockKey) -> (usize, usize) {
    (
        lock_pids(observer, key, true).await.len(),
        lock_pids(observer, key, false).await.len(),
    )
}

/// Resolves once a session waits for `key` (polling `pg_locks`, not sleeping blindly); panics
/// if nobody does within 30 s, so a regression fails instead of hanging.
pub(crate) async fn until_someone_waits(observer: &DatabaseConnection, key: LockKey) {
    poll_locks_until(
        observer,
        key,
        false,
        Duration::from_secs(30),
        &format!("a session waits for {key}"),
        |waiters| !waiters.is_empty(),
    )
    .await;
}

/// A pool of `size` connections whose acquire timeout (10 s) turns "no connection for us"
/// into an error instead of a hang.
pub(crate) async fn small_pool(url: &str, size: u32) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(options).await.unwrap()
}

/// Polls `pg_locks` until `condition` holds for [`lock_pids`], for at most `within` (a test
/// that waits forever proves nothing). The interval only paces the polling; the database
/// decides when we go on.
pub(crate) async fn poll_locks_until(
    db: &DatabaseConnection,
    key: LockKey,
    granted: bool,
    within: Duration,
    what: &str,
    condition: impl Fn(&[i32]) -> bool,
) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let pids = lock_pids(db, key, granted).await;
        if condition(&pids) {
            return pids;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `txn` (another connection's open transaction) can take `key` right now
/// ([`Wait::No`]).
pub(crate) async fn try_lock(txn: &DatabaseTransaction, key: LockKey) -> bool {
    match acquire_advisory_lock(txn, key, Wait::No).await {
        Ok(()) => true,
        Err(Error::LockBusy { .. }) => false,
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Whether another connection (`db`) can take `key` right now ([`Wait::No`]).
pub(crate) async fn lock_is_free(db: &DatabaseConnection, key: LockKey) -> bool {
    let txn = db.begin().await.unwrap();
    let free = try_lock(&txn, key).await;
    txn.rollback().await.unwrap();
    free
}

/// Runs `create`, which must fail, and probes `key` from `other` the moment it returns: the
/// probe's transaction is opened first, so on the single-threaded test runtime its one
/// statement is on the wire before any background task of the failed call's pool runs (such
/// as sqlx's return-to-pool ping, which flushes the ROLLBACK a dropped transaction queued).
/// Returns the error and whether the lock was free.
pub(crate) async fn fail_then_probe<T: std::fmt::Debug>(
    other: &DatabaseConnection,
    key: LockKey,
    create: impl std::future::Future<Output = Result<T, Error>>,
) -> (Error, bool) {
    let probe = other.begin().await.unwrap();
    let err = create.await.expect_err("the create fails");
    let free = try_lock(&probe, key).await;
    probe.rollback().await.unwrap();
    (err, free)
}

// ---------------------------------------------------------------------------------------------
// Files

/// A directory of its own under the system's temp dir, removed when the test passes and kept
/// (its path printed) when it fails.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "sea-orm-idempotent-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    /// The URL of SQLite file `file` in this directory (created on first connect).
    pub(crate) fn sqlite_url(&self, file: &str) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join(file).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("files kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
