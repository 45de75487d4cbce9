//! `create_once` side by side with what a user would write instead: the same deliveries,
//! through the same pool of 8 connections, on the same PostgreSQL server, in one run.
//!
//! ```text
//! cargo bench --bench strategies               # full run: table, ratios, benches/strategies.svg
//! cargo bench --bench strategies -- --quick    # small, for CI: target/strategies-quick.svg
//! cargo bench --bench strategies -- --svg out.svg
//! cargo bench --bench strategies -- --only new,storm   # scenarios: new, dup4, dup16, late, storm
//! ```
//!
//! Results, ratios against the targets and the run's settings: `BENCHMARKS.md`.
//!
//! Against `DATABASE_URL` when set (a fresh database is created on that server and dropped at
//! the end), otherwise against a throwaway cluster started from the installed PostgreSQL
//! binaries, exactly as the tests do (`test_support`), and removed when the run exits.
//!
//! Strategies (what "store this pull request once" can look like):
//! 1. `create_once`: the crate.
//! 2. floor: one `INSERT ... RETURNING` per delivery (SeaORM `ActiveModel::insert`), no
//!    de-duplication; with late redeliveries (every row exists) the floor is one plain
//!    `SELECT` by key instead. Only correct without duplicates: the physical floor.
//! 3. `INSERT ... ON CONFLICT (pr_id) DO NOTHING RETURNING`, then a `SELECT` when nothing came
//!    back (SeaORM `on_conflict_do_nothing_on`).
//! 4. naive find-then-insert without a lock, what most code does: its errors are counted.
//! 5. `LOCK TABLE pull_requests IN SHARE ROW EXCLUSIVE MODE`, then find-or-insert.
//! 6. the crate's statements written by hand on sqlx (no SeaORM): the cost of the abstraction.
//!
//! Strategies 2 to 5 are written with SeaORM, as a SeaORM user would write them, so
//! "crate / floor" is the price of de-duplication and "crate / sqlx" the price of SeaORM and
//! the crate's code around the same statements.
//!
//! Scenarios: new keys; simultaneous duplicates (each key delivered 4 and 16 times, the copies
//! adjacent in the work queue so that as many run at once as there are tasks); late
//! redeliveries (every row exists); and a hot-key storm (bursts of hundreds of callers on one
//! new key, one burst after another, while the measured tasks create distinct keys: their
//! throughput and p99 are compared with the new-keys run, which is the same work without the
//! storm). Each at 1, 8 and 32 tasks over the pool of 8.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use entity::{NewPullRequest, PullRequest, pull_requests};
use plotters::prelude::*;
use sea_orm::sqlx::{self, Acquire, PgPool, Row, postgres::PgRow};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, Statement, TransactionTrait, TryInsertResult,
};
use sea_orm_idempotent::{IdempotentCreate, Outcome};

/// Connections in the pool every strategy shares.
const POOL: u32 = 8;
/// Concurrent delivering tasks.
const TASKS: [usize; 3] = [1, 8, 32];
/// Keys of the storm's hot keys start here, far from the measured keys.
const HOT_KEYS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strategy {
    Crate,
    Floor,
    OnConflict,
    Naive,
    LockTable,
    Sqlx,
}

impl Strategy {
    const ALL: [Strategy; 6] = [
        Strategy::Crate,
        Strategy::Sqlx,
        Strategy::Floor,
        Strategy::OnConflict,
        Strategy::Naive,
        Strategy::LockTable,
    ];

    fn name(self) -> &'static str {
        match self {
            Strategy::Crate => "create_once (crate)",
            Strategy::Floor => "floor: INSERT RETURNING",
            Strategy::OnConflict => "ON CONFLICT DO NOTHING",
            Strategy::Naive => "naive find-then-insert",
            Strategy::LockTable => "LOCK TABLE",
            Strategy::Sqlx => "same statements on sqlx",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Strategy::Crate => RGBColor(31, 119, 180),
            Strategy::Sqlx => RGBColor(148, 103, 189),
            Strategy::Floor => RGBColor(127, 127, 127),
            Strategy::OnConflict => RGBColor(44, 160, 44),
            Strategy::Naive => RGBColor(214, 39, 40),
            Strategy::LockTable => RGBColor(255, 127, 14),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    NewKeys,
    Duplicates(usize),
    Late,
    Storm,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::NewKeys,
        Scenario::Duplicates(4),
        Scenario::Duplicates(16),
        Scenario::Late,
        Scenario::Storm,
    ];

    /// The name `--only` takes.
    fn short(self) -> String {
        match self {
            Scenario::NewKeys => "new".into(),
            Scenario::Duplicates(n) => format!("dup{n}"),
            Scenario::Late => "late".into(),
            Scenario::Storm => "storm".into(),
        }
    }

    fn name(self) -> String {
        match self {
            Scenario::NewKeys => "new keys".into(),
            Scenario::Duplicates(n) => format!("duplicates x{n}"),
            Scenario::Late => "late redeliveries".into(),
            Scenario::Storm => "hot-key storm (others)".into(),
        }
    }

    /// The measured deliveries, in queue order: duplicates of a key are adjacent, so that the
    /// tasks take them at the same moment.
    fn deliveries(self, keys: usize) -> Vec<i64> {
        let copies = match self {
            Scenario::Duplicates(n) => n,
            _ => 1,
        };
        let distinct = keys / copies;
        (1..=distinct as i64)
            .flat_map(|key| std::iter::repeat_n(key, copies))
            .collect()
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// Measured deliveries per run (divisible by 16).
    deliveries: usize,
    /// Measured deliveries per hot-key storm run (the other callers' distinct keys).
    storm_deliveries: usize,
    /// Callers per burst of the hot-key storm.
    storm_callers: usize,
    /// Runs per strategy, scenario and concurrency (the median is reported; the storm runs
    /// once).
    repetitions: usize,
}

const FULL: Size = Size {
    deliveries: 1_600,
    storm_deliveries: 640,
    repetitions: 3,
    storm_callers: 200,
};
const QUICK: Size = Size {
    deliveries: 160,
    storm_deliveries: 160,
    repetitions: 1,
    storm_callers: 100,
};

/// What a delivery got back.
enum Answer {
    Created,
    Existing,
}

/// The handles a strategy may use: one pool, seen through SeaORM or directly through sqlx.
#[derive(Clone)]
struct Db {
    orm: DatabaseConnection,
    sqlx: PgPool,
}

/// One strategy, one scenario, one concurrency.
struct Run {
    scenario: Scenario,
    strategy: Strategy,
    tasks: usize,
    deliveries: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    created: usize,
    expected_created: usize,
    rows: i64,
    distinct_keys: i64,
    storm: Option<StormTally>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StormTally {
    bursts: usize,
    deliveries: usize,
    errors: usize,
    /// From the first burst to the end of the last.
    elapsed: Duration,
    /// The slowest storm delivery (the hot key's callers pay for their key).
    max_latency: Duration,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    fn correct(&self) -> bool {
        self.rows == self.distinct_keys && self.created == self.expected_created
    }
}

fn main() -> Result<(), Box<dyn StdError>> {
    // `cargo bench` passes `--bench`; anything else unknown is a mistake worth reporting.
    let mut quick = false;
    let mut svg: Option<PathBuf> = None;
    let mut only: Option<Vec<Scenario>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--svg" => svg = Some(args.next().ok_or("--svg needs a path")?.into()),
            "--only" => {
                let names = args.next().ok_or("--only needs scenarios")?;
                let picked = names
                    .split(',')
                    .map(|name| {
                        Scenario::ALL
                            .into_iter()
                            .find(|s| s.short() == name)
                            .ok_or_else(|| format!("unknown scenario {name:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                only = Some(picked);
            }
            "--bench" => {}
            other => {
                return Err(format!("unknown argument {other:?} (try --quick, --svg PATH, --only new,dup4,dup16,late,storm)").into());
            }
        }
    }
    let size = if quick { QUICK } else { FULL };
    let svg = svg.unwrap_or_else(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if quick {
            root.join("target").join("strategies-quick.svg")
        } else {
            root.join("benches").join("strategies.svg")
        }
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(
            size,
            quick,
            &svg,
            &only.unwrap_or(Scenario::ALL.to_vec()),
        ))
}

async fn bench(
    size: Size,
    quick: bool,
    svg: &Path,
    scenarios: &[Scenario],
) -> Result<(), Box<dyn StdError>> {
    let started = Instant::now();
    let test_db = test_support::TestDb::named(if quick {
        "bench_strategies_quick"
    } else {
        "bench_strategies"
    })
    .await;
    let orm = test_support::connect(&test_db.url, POOL).await;
    let db = Db {
        sqlx: orm.get_postgres_connection_pool().clone(),
        orm,
    };
    let server = describe_server(&db).await?;
    eprintln!(
        "{server}; pool {POOL}; {} deliveries per run; storm bursts of {} callers",
        size.deliveries, size.storm_callers
    );
    warm_up(&db).await?;

    let mut runs = Vec::new();
    for &scenario in scenarios {
        for tasks in TASKS {
            // Repetitions interleave the strategies; the median run of each is kept.
            let repetitions = if scenario == Scenario::Storm {
                1
            } else {
                size.repetitions
            };
            let mut tries: Vec<Vec<Run>> = Strategy::ALL.iter().map(|_| Vec::new()).collect();
            for _ in 0..repetitions {
                for (i, strategy) in Strategy::ALL.into_iter().enumerate() {
                    tries[i].push(run(&db, scenario, strategy, tasks, size).await?);
                }
            }
            for mut tried in tries {
                tried.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
                let run = tried.swap_remove(tried.len() / 2);
                let strategy = run.strategy;
                eprintln!(
                    "{:<24} {:<26} {:>2} tasks {:>8.0}/s p99 {:>7.2} ms errors {}{}",
                    scenario.name(),
                    strategy.name(),
                    tasks,
                    run.per_second(),
                    ms(run.percentile(0.99)),
                    run.errors,
                    run.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                );
                runs.push(run);
            }
        }
    }

    let report = report(&runs, &server, size, quick);
    println!("{report}");
    chart(svg, &runs, &server)?;
    eprintln!(
        "chart written to {}; whole run took {:.0} s",
        svg.display(),
        started.elapsed().as_secs_f64()
    );
    db.orm.close().await?;
    Ok(())
}

async fn describe_server(db: &Db) -> Result<String, DbErr> {
    let row = db
        .orm
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('server_version') AS version, \
             current_setting('fsync') AS fsync, \
             current_setting('synchronous_commit') AS sync_commit, \
             current_setting('shared_buffers') AS shared_buffers",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("server settings".into()))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(format!(
        "PostgreSQL {} (fsync={}, synchronous_commit={}, shared_buffers={}), {cores} cores",
        row.try_get::<String>("", "version")?,
        row.try_get::<String>("", "fsync")?,
        row.try_get::<String>("", "sync_commit")?,
        row.try_get::<String>("", "shared_buffers")?,
    ))
}

/// Opens every pooled connection and prepares every strategy's statements on them, so no
/// strategy pays for connecting or preparing inside its measurement.
async fn warm_up(db: &Db) -> Result<(), Box<dyn StdError>> {
    for strategy in Strategy::ALL {
        truncate(db).await?;
        let handles: Vec<_> = (0..POOL as i64 * 2)
            .map(|task| {
                let db = db.clone();
                tokio::spawn(async move {
                    for key in 0..4 {
                        let _ = deliver(&db, strategy, false, task * 4 + key + 1).await;
                        let _ = deliver(&db, strategy, false, task * 4 + key + 1).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await?;
        }
    }
    truncate(db).await?;
    Ok(())
}

async fn truncate(db: &Db) -> Result<(), DbErr> {
    db.orm
        .execute_unprepared("TRUNCATE pull_requests RESTART IDENTITY")
        .await
        .map(|_| ())
}

/// Stores rows for keys `1..=keys` in one statement (untimed), for late redeliveries.
async fn prefill(db: &Db, keys: usize) -> Result<(), DbErr> {
    db.orm
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO pull_requests \
             (pr_id, repository, number, title, author, state, head_sha, first_delivery_id) \
             SELECT g, 'octo-org/octo-repo', g % 100000 + 1, 'Pull request ' || g, 'mona', \
             'open', lpad(to_hex(g), 40, '0'), 'delivery-' || g \
             FROM generate_series(1::bigint, $1::bigint) AS g",
            [(keys as i64).into()],
        ))
        .await?;
    db.orm
        .execute_unprepared("ANALYZE pull_requests")
        .await
        .map(|_| ())
}

async fn run(
    db: &Db,
    scenario: Scenario,
    strategy: Strategy,
    tasks: usize,
    size: Size,
) -> Result<Run, Box<dyn StdError>> {
    truncate(db).await?;
    let deliveries = scenario.deliveries(match scenario {
        Scenario::Storm => size.storm_deliveries,
        _ => size.deliveries,
    });
    let measured_keys = deliveries.iter().max().copied().unwrap_or(0);
    let rows_exist = scenario == Scenario::Late;
    if rows_exist {
        prefill(db, deliveries.len()).await?;
    }
    let queue = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let measured_done = Arc::new(AtomicBool::new(false));

    let storm = (scenario == Scenario::Storm).then(|| {
        tokio::spawn(storm(
            db.clone(),
            strategy,
            size.storm_callers,
            measured_done.clone(),
        ))
    });

    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (db, queue, next) = (db.clone(), queue.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = TaskTally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&key) = queue.get(i) else { break };
                    let t0 = Instant::now();
                    let answer = deliver(&db, strategy, rows_exist, key).await;
                    tally.latencies.push(t0.elapsed());
                    tally.count(answer);
                }
                tally
            })
        })
        .collect();
    let mut tally = TaskTally::default();
    for handle in handles {
        tally.merge(handle.await?);
    }
    let elapsed = started.elapsed();
    measured_done.store(true, Ordering::Relaxed);
    let storm = match storm {
        Some(handle) => Some(handle.await?),
        None => None,
    };

    let counts = db
        .orm
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS rows, count(DISTINCT pr_id) AS keys FROM pull_requests",
        ))
        .await?
        .ok_or("no count row")?;
    let rows: i64 = counts.try_get("", "rows")?;
    // Every key any delivery asked for (measured keys, and the storm's hot keys).
    let distinct_keys = measured_keys + storm.map_or(0, |s| s.bursts as i64);
    tally.latencies.sort();
    Ok(Run {
        scenario,
        strategy,
        tasks,
        deliveries: queue.len(),
        elapsed,
        latencies: tally.latencies,
        errors: tally.errors,
        first_error: tally.first_error,
        created: tally.created,
        expected_created: if rows_exist {
            0
        } else {
            measured_keys as usize
        },
        rows,
        distinct_keys,
        storm,
    })
}

#[derive(Default)]
struct TaskTally {
    latencies: Vec<Duration>,
    created: usize,
    errors: usize,
    first_error: Option<String>,
}

impl TaskTally {
    fn count(&mut self, answer: Result<Answer, Box<dyn StdError + Send + Sync>>) {
        match answer {
            Ok(Answer::Created) => self.created += 1,
            Ok(Answer::Existing) => {}
            Err(e) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| short(&e.to_string()));
            }
        }
    }

    fn merge(&mut self, other: TaskTally) {
        self.latencies.extend(other.latencies);
        self.created += other.created;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn short(message: &str) -> String {
    message.chars().take(90).collect()
}

/// Bursts of `callers` simultaneous deliveries of one new key, one burst after another,
/// until the measured tasks are done.
async fn storm(db: Db, strategy: Strategy, callers: usize, done: Arc<AtomicBool>) -> StormTally {
    let mut tally = StormTally::default();
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let key = HOT_KEYS + tally.bursts as i64;
        tally.bursts += 1;
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let failed = deliver(&db, strategy, false, key).await.is_err();
                    (failed, t0.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (failed, latency) = handle.await.unwrap_or((true, Duration::ZERO));
            tally.deliveries += 1;
            tally.errors += usize::from(failed);
            tally.max_latency = tally.max_latency.max(latency);
        }
    }
    tally.elapsed = started.elapsed();
    tally
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// One delivery of pull request `key`, stored with `strategy`.
async fn deliver(
    db: &Db,
    strategy: Strategy,
    rows_exist: bool,
    key: i64,
) -> Result<Answer, BoxError> {
    match strategy {
        Strategy::Crate => Ok(
            match PullRequest::create_once(&db.orm, key, new_pr(key)).await? {
                Outcome::Created(_) => Answer::Created,
                Outcome::Existing(_) => Answer::Existing,
            },
        ),
        Strategy::Floor if rows_exist => match find(&db.orm, key).await? {
            Some(_) => Ok(Answer::Existing),
            None => Err("the row is missing".into()),
        },
        Strategy::Floor => {
            PullRequest::new_active_model(&key, new_pr(key))
                .insert(&db.orm)
                .await?;
            Ok(Answer::Created)
        }
        Strategy::OnConflict => {
            let inserted = PullRequest::insert(PullRequest::new_active_model(&key, new_pr(key)))
                .on_conflict_do_nothing_on([pull_requests::Column::PrId])
                .exec_with_returning(&db.orm)
                .await;
            match inserted {
                Ok(TryInsertResult::Inserted(_)) => Ok(Answer::Created),
                // SeaORM reports "RETURNING gave no row" as RecordNotFound on PostgreSQL.
                Ok(_) | Err(DbErr::RecordNotFound(_) | DbErr::RecordNotInserted) => {
                    match find(&db.orm, key).await? {
                        Some(_) => Ok(Answer::Existing),
                        None => Err("conflicted, then found nothing".into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
        Strategy::Naive => {
            if find(&db.orm, key).await?.is_some() {
                return Ok(Answer::Existing);
            }
            PullRequest::new_active_model(&key, new_pr(key))
                .insert(&db.orm)
                .await?;
            Ok(Answer::Created)
        }
        Strategy::LockTable => {
            let txn = db.orm.begin().await?;
            txn.execute_unprepared("LOCK TABLE pull_requests IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            let answer = if find(&txn, key).await?.is_some() {
                Answer::Existing
            } else {
                PullRequest::new_active_model(&key, new_pr(key))
                    .insert(&txn)
                    .await?;
                Answer::Created
            };
            txn.commit().await?;
            Ok(answer)
        }
        Strategy::Sqlx => by_hand::create_once(&db.sqlx, key, new_pr(key)).await,
    }
}

async fn find(db: &impl ConnectionTrait, key: i64) -> Result<Option<pull_requests::Model>, DbErr> {
    PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(key))
        .one(db)
        .await
}

/// A plausible new pull request for `pr_id` (as the tests build them).
fn new_pr(pr_id: i64) -> NewPullRequest {
    NewPullRequest {
        repository: "octo-org/octo-repo".into(),
        number: (pr_id.rem_euclid(100_000) + 1) as i32,
        title: format!("Pull request {pr_id}"),
        author: "mona".into(),
        state: "open".into(),
        head_sha: format!("{pr_id:040x}"),
        delivery_id: format!("delivery-{pr_id}"),
    }
}

/// Strategy 6: the statements `create_once` sends (see `tests/round_trips.rs`, `src/lock.rs`,
/// `src/create.rs`), written by hand on sqlx, without SeaORM: the same SQL text, the same
/// bound values, the same transaction shape, decoding the same model.
mod by_hand {
    use super::*;

    const FIND: &str = r#"SELECT "pull_requests"."id", "pull_requests"."pr_id", "pull_requests"."repository", "pull_requests"."number", "pull_requests"."title", "pull_requests"."author", "pull_requests"."state", "pull_requests"."head_sha", "pull_requests"."first_delivery_id", "pull_requests"."created_at" FROM "pull_requests" WHERE "pull_requests"."pr_id" = $1 LIMIT $2"#;

    /// What SeaORM's `begin_with_config(Some(ReadCommitted), None)` sends after `BEGIN`.
    const READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED";

    /// The isolation check and a try-lock in one statement (uncontended: the only lock round
    /// trip).
    const TRY_LOCK: &str = "SELECT CASE WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL ELSE pg_try_advisory_xact_lock($1, $2) END AS acquired, current_setting('transaction_isolation') AS isolation, current_setting('lock_timeout') AS lock_timeout";

    /// Contended: one bounded wait in a savepoint. `Wait::Forever` waits in slices of twice
    /// the server's `deadlock_timeout` (at least a second), then restores `lock_timeout` ($3).
    const WAIT_LOCK: &str = "SELECT CASE WHEN set_config('lock_timeout', greatest(1000, ceil(extract(epoch FROM current_setting('deadlock_timeout')::interval) * 2000))::bigint || 'ms', true) IS NULL THEN NULL ELSE (SELECT set_config('lock_timeout', $3, true) FROM pg_advisory_xact_lock($1, $2)) END AS restored";

    const INSERT_UNLESS_EXISTS: &str = r#"INSERT INTO "pull_requests" ("pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id") SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS(SELECT 1 FROM "pull_requests" WHERE "pull_requests"."pr_id" = $9) RETURNING "id", "pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id", "created_at""#;

    pub(super) async fn create_once(
        pool: &PgPool,
        key: i64,
        data: NewPullRequest,
    ) -> Result<Answer, BoxError> {
        let found = sqlx::query(FIND)
            .bind(key)
            .bind(1_i64)
            .fetch_optional(pool)
            .await?;
        if let Some(row) = found {
            model(&row)?;
            return Ok(Answer::Existing);
        }
        let mut txn = pool.begin().await?;
        sqlx::query(READ_COMMITTED).execute(&mut *txn).await?;
        match lock_then_insert(&mut txn, key, data).await {
            Ok(answer) => {
                txn.commit().await?;
                Ok(answer)
            }
            Err(err) => {
                // As the crate does: roll back now, so the lock is free when the caller sees
                // the error.
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }

    async fn lock_then_insert(
        txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        key: i64,
        data: NewPullRequest,
    ) -> Result<Answer, BoxError> {
        let namespace = crc32fast::hash(b"pull_requests") as i32;
        let hashed = crc32fast::hash(key.to_string().as_bytes()) as i32;
        let attempt = sqlx::query(TRY_LOCK)
            .bind(namespace)
            .bind(hashed)
            .fetch_one(&mut **txn)
            .await?;
        match attempt.try_get::<Option<bool>, _>("acquired")? {
            Some(true) => {}
            Some(false) => {
                let previous: String = attempt.try_get("lock_timeout")?;
                loop {
                    let mut savepoint = (&mut **txn).begin().await?;
                    let waited = sqlx::query(WAIT_LOCK)
                        .bind(namespace)
                        .bind(hashed)
                        .bind(&previous)
                        .execute(&mut *savepoint)
                        .await;
                    match waited {
                        Ok(_) => {
                            savepoint.commit().await?;
                            break;
                        }
                        // lock_not_available: only this slice ran out; wait again.
                        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                            savepoint.rollback().await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None => return Err("unsafe isolation level".into()),
        }
        let inserted = sqlx::query(INSERT_UNLESS_EXISTS)
            .bind(key)
            .bind(data.repository)
            .bind(data.number)
            .bind(data.title)
            .bind(data.author)
            .bind(data.state)
            .bind(data.head_sha)
            .bind(data.delivery_id)
            .bind(key)
            .fetch_optional(&mut **txn)
            .await?;
        Ok(match inserted {
            Some(row) => {
                model(&row)?;
                Answer::Created
            }
            None => {
                let row = sqlx::query(FIND)
                    .bind(key)
                    .bind(1_i64)
                    .fetch_optional(&mut **txn)
                    .await?
                    .ok_or("the insert found a row that is no longer there")?;
                model(&row)?;
                Answer::Existing
            }
        })
    }

    /// Decodes the whole row, as SeaORM does.
    fn model(row: &PgRow) -> Result<pull_requests::Model, sqlx::Error> {
        Ok(pull_requests::Model {
            id: row.try_get("id")?,
            pr_id: row.try_get("pr_id")?,
            repository: row.try_get("repository")?,
            number: row.try_get("number")?,
            title: row.try_get("title")?,
            author: row.try_get("author")?,
            state: row.try_get("state")?,
            head_sha: row.try_get("head_sha")?,
            first_delivery_id: row.try_get("first_delivery_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn find_run(runs: &[Run], scenario: Scenario, strategy: Strategy, tasks: usize) -> Option<&Run> {
    runs.iter()
        .find(|r| r.scenario == scenario && r.strategy == strategy && r.tasks == tasks)
}

/// The ratio of two strategies' throughput in one scenario.
fn ratio(runs: &[Run], scenario: Scenario, a: Strategy, b: Strategy, tasks: usize) -> Option<f64> {
    Some(
        find_run(runs, scenario, a, tasks)?.per_second()
            / find_run(runs, scenario, b, tasks)?.per_second(),
    )
}

/// The measured tasks' throughput and p99 under the storm, against the same work without it.
fn storm_vs_calm(
    runs: &[Run],
    strategy: Strategy,
    tasks: usize,
) -> Option<(f64, Duration, Duration)> {
    let storm = find_run(runs, Scenario::Storm, strategy, tasks)?;
    let calm = find_run(runs, Scenario::NewKeys, strategy, tasks)?;
    Some((
        storm.per_second() / calm.per_second(),
        calm.percentile(0.99),
        storm.percentile(0.99),
    ))
}

fn report(runs: &[Run], server: &str, size: Size, quick: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Results{}\n\n{server}; pool of {POOL} connections; {} measured deliveries per run \
         ({} under the storm); storm bursts of {} callers on one key; each cell is the median \
         of {} runs (the storm: one run).\n",
        if quick {
            " (--quick: small runs, noisy)"
        } else {
            ""
        },
        size.deliveries,
        size.storm_deliveries,
        size.storm_callers,
        size.repetitions
    );
    let _ = writeln!(
        out,
        "| scenario | strategy | tasks | deliveries/s | p50 ms | p99 ms | errors | rows = keys | notes |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | :---: | --- |"
    );
    for run in runs {
        let notes = match (run.scenario, run.storm) {
            (Scenario::Storm, Some(storm)) => {
                let (keep, calm_p99, storm_p99) =
                    storm_vs_calm(runs, run.strategy, run.tasks).unwrap_or_default();
                format!(
                    "x{keep:.2} of no-storm throughput, p99 {:.2} -> {:.2} ms; storm: {} bursts, {:.0} deliveries/s, slowest {:.0} ms, {} errors",
                    ms(calm_p99),
                    ms(storm_p99),
                    storm.bursts,
                    storm.deliveries as f64 / storm.elapsed.as_secs_f64(),
                    ms(storm.max_latency),
                    storm.errors
                )
            }
            _ if run.strategy == Strategy::Floor && run.scenario == Scenario::Late => {
                "plain SELECT by key".into()
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            run.scenario.name(),
            run.strategy.name(),
            run.tasks,
            run.per_second(),
            ms(run.percentile(0.5)),
            ms(run.percentile(0.99)),
            run.errors,
            if run.correct() {
                "yes".to_owned()
            } else {
                format!(
                    "**no** ({} rows, {} keys, {} created)",
                    run.rows, run.distinct_keys, run.created
                )
            },
            notes
        );
    }

    let _ = writeln!(
        out,
        "\n## Ratios (deliveries/s of the crate / deliveries/s of the other)\n\n\
         | scenario | tasks | crate / sqlx | crate / floor | crate / LOCK TABLE |\n\
         | --- | ---: | ---: | ---: | ---: |"
    );
    for scenario in Scenario::ALL {
        for tasks in TASKS {
            let cell = |other| {
                ratio(runs, scenario, Strategy::Crate, other, tasks)
                    .map_or("-".to_owned(), |r| format!("{r:.2}x"))
            };
            let _ = writeln!(
                out,
                "| {} | {tasks} | {} | {} | {} |",
                scenario.name(),
                cell(Strategy::Sqlx),
                cell(Strategy::Floor),
                cell(Strategy::LockTable)
            );
        }
    }

    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | tasks | measured | met |\n| --- | ---: | ---: | :---: |"
    );
    let mut target = |name: &str, tasks: usize, measured: Option<f64>, goal: f64| {
        let (text, met) = match measured {
            Some(m) => (format!("{m:.2}x"), if m >= goal { "yes" } else { "**no**" }),
            None => ("-".to_owned(), "-"),
        };
        let _ = writeln!(out, "| {name} | {tasks} | {text} | {met} |");
    };
    for tasks in TASKS {
        target(
            "new keys: crate / same statements on sqlx >= 1.0x",
            tasks,
            ratio(
                runs,
                Scenario::NewKeys,
                Strategy::Crate,
                Strategy::Sqlx,
                tasks,
            ),
            1.0,
        );
    }
    for tasks in TASKS {
        target(
            "late redeliveries: crate / plain SELECT by key >= 0.8x",
            tasks,
            ratio(
                runs,
                Scenario::Late,
                Strategy::Crate,
                Strategy::Floor,
                tasks,
            ),
            0.8,
        );
    }
    for scenario in [
        Scenario::NewKeys,
        Scenario::Duplicates(4),
        Scenario::Duplicates(16),
    ] {
        target(
            &format!("{}: crate / LOCK TABLE >= 5x", scenario.name()),
            32,
            ratio(runs, scenario, Strategy::Crate, Strategy::LockTable, 32),
            5.0,
        );
    }
    for tasks in TASKS {
        target(
            "hot-key storm: other callers keep >= 0.8x of no-storm throughput",
            tasks,
            storm_vs_calm(runs, Strategy::Crate, tasks).map(|(keep, ..)| keep),
            0.8,
        );
    }
    out
}

/// Deliveries/s by strategy and concurrency, one panel per scenario, and the storm's p99.
fn chart(path: &Path, runs: &[Run], server: &str) -> Result<(), Box<dyn StdError>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1280, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(56);
    let (body, legend) = rest.split_vertically(770);
    top.draw(&Text::new(
        "create_once side by side: deliveries/s by strategy and concurrency (pool of 8)",
        (16, 8),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))?;
    top.draw(&Text::new(
        format!("{server}; hollow bar: the strategy gave errors or wrong rows there"),
        (16, 34),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;

    let panels = body.split_evenly((2, 3));
    for (i, panel) in panels.iter().enumerate() {
        let storm_p99 = i == Scenario::ALL.len();
        let scenario = Scenario::ALL.get(i).copied().unwrap_or(Scenario::Storm);
        let value = |run: &Run| {
            if storm_p99 {
                ms(run.percentile(0.99))
            } else {
                run.per_second()
            }
        };
        let max = runs
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(value)
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.12;
        let caption = if storm_p99 {
            "hot-key storm: other callers' p99 (ms)".to_owned()
        } else {
            scenario.name()
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(26)
            .y_label_area_size(58)
            .build_cartesian_2d(0.0_f64..TASKS.len() as f64, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let width = 0.8 / Strategy::ALL.len() as f64;
        for (g, &tasks) in TASKS.iter().enumerate() {
            for (s, &strategy) in Strategy::ALL.iter().enumerate() {
                let Some(run) = find_run(runs, scenario, strategy, tasks) else {
                    continue;
                };
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let style = if run.correct() && run.errors == 0 {
                    strategy.color().filled()
                } else {
                    // Hollow bars: the strategy gave errors or wrong rows here.
                    strategy.color().stroke_width(2)
                };
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, value(run))],
                    style,
                )))?;
            }
            let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                format!("{tasks} task{}", if tasks == 1 { "" } else { "s" }),
                (px - 22, py + 6),
                ("sans-serif", 13).into_font().color(&BLACK),
            ))?;
        }
    }

    for (i, strategy) in Strategy::ALL.into_iter().enumerate() {
        let x = 16 + i as i32 * 208;
        legend.draw(&Rectangle::new(
            [(x, 8), (x + 14, 22)],
            strategy.color().filled(),
        ))?;
        legend.draw(&Text::new(
            strategy.name(),
            (x + 20, 8),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
    }
    root.present()?;
    Ok(())
}
