//! A randomized workload checker for `sea-orm-idempotent`, in the spirit of Jepsen and of
//! FoundationDB's simulation tests: the example tests check the combinations someone thought
//! of; this generates the ones nobody did.
//!
//! From a seed it generates histories (see [`history`]): a few clients at once, each running
//! operations on a small key space (so that they contend): every public form of the call, in
//! every context (a pool, a caller's transaction that commits or rolls back, `join!` of calls on
//! one transaction, a nested `begin()`, calls inside `make_data` on the same key, another key
//! or another database; batches on the pool, `many(..)` with and without an update function,
//! in chunks, their items' keys of one table and often repeated), with faults (a future dropped at a random point, a writer that bypasses
//! the lock, a killed session, deadlocks between callers' transactions, `statement_timeout` and
//! `lock_timeout` set by the caller, read-only transactions). It runs each history against a
//! real server ([`runner`]), records every call's answer and whether its context committed,
//! retries the calls whose errors were retryable, reads the final tables, and checks the
//! promise ([`invariants`]): one row per key, `Created` once per key among committed contexts,
//! committed rows present and rolled-back ones absent, every error typed and explained by a
//! fault, retryable errors curable, bounded calls bounded, no lock or transaction left behind.
//!
//! A history that breaks an invariant is shrunk (operations dropped while it still fails) and
//! printed with its seed and events: `cargo run --release -p checker -- --backend B --seed S`
//! replays the generator from there (the clients race, so a replay may need a few runs).
//! `CHECKER_TRACE=1` prints each history's timings.

pub mod entities;
pub mod history;
pub mod invariants;
pub mod rng;
pub mod runner;

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use crate::entities::{create_tables, empty_tables};
use crate::history::{Generator, History, Op, Table};
use crate::invariants::Row;
use crate::runner::{Event, World};

/// The backend a run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`DATABASE_URL`, or a throwaway cluster).
    Postgres,
    /// SQLite, on files in a temporary directory.
    Sqlite,
    /// MariaDB (`MYSQL_DATABASE_URL`, or a throwaway server).
    MariaDb,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 3] = [Backend::Postgres, Backend::Sqlite, Backend::MariaDb];

    /// The backend's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
            Backend::MariaDb => "mariadb",
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backend.
    pub backend: Backend,
    /// How long to generate histories for.
    pub duration: Duration,
    /// The seed of the generator.
    pub seed: u64,
    /// Print a progress line every few seconds.
    pub progress: bool,
    /// Generate no operation whose transaction waits in the application while it holds locks
    /// ([`Generator::without_cross_waits`]): to tell whether a violation needs them.
    pub without_cross_waits: bool,
}

/// A history that broke the promise.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The history as generated.
    pub history: History,
    /// The smallest history found that still fails.
    pub shrunk: History,
    /// What the shrunk history broke.
    pub broken: Vec<String>,
    /// The events of the shrunk history's failing run.
    pub events: Vec<Event>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Histories run (shrinking not counted).
    pub histories: usize,
    /// Calls made.
    pub calls: usize,
    /// Faults injected (drops, bypassing writers, kills, deadlocks, timeouts, read-only).
    pub faults: usize,
    /// The first violation, if any (a run stops at it).
    pub violation: Option<Violation>,
}

/// Something that stopped the checker itself (no server, a setup statement that failed).
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<DbErr> for HarnessError {
    fn from(err: DbErr) -> Self {
        HarnessError(format!("database: {err}"))
    }
}

/// The databases of a run, kept alive (and removed) with it.
struct Databases {
    world: World,
    /// MariaDB: a pool of the main database whose sessions are READ COMMITTED, where a new key
    /// of a unique-indexed integer key is one statement (on the server's REPEATABLE READ every
    /// call takes the locked path): every other history's calls run on it.
    read_committed: Option<DatabaseConnection>,
    _keep: Vec<Box<dyn std::any::Any + Send>>,
}

impl Databases {
    /// The worlds histories take turns in: the main one, and on MariaDB the same with its
    /// calls on READ COMMITTED sessions.
    fn worlds(&self) -> Vec<World> {
        let mut worlds = vec![self.world.clone()];
        if let Some(pool) = &self.read_committed {
            worlds.push(World {
                pool: pool.clone(),
                ..self.world.clone()
            });
        }
        worlds
    }
}

/// Process-wide counter for database names.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn databases(backend: Backend) -> Result<Databases, HarnessError> {
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut read_committed = None;
    let label = |part: &str| format!("checker_{}_{run}_{part}", backend.name());
    let (pool, other, admin, keep): (_, _, _, Vec<Box<dyn std::any::Any + Send>>) = match backend {
        Backend::Postgres | Backend::MariaDb => {
            let (main, second) = if backend == Backend::Postgres {
                let main = test_support::TestDb::named(&label("main")).await;
                let second = test_support::TestDb::named(&label("other")).await;
                // Deadlocks are detected after deadlock_timeout (1 s by default): every
                // history with one would take that long. Set before the pools connect.
                let setup = main.connect(1).await;
                setup
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{}\" SET deadlock_timeout = '50ms'",
                        main.name
                    ))
                    .await?;
                setup.close().await?;
                (main, second)
            } else {
                let server = test_support::MySqlServer::get().ok_or_else(|| {
                    HarnessError(
                        "no MariaDB: install mariadb-server or set MYSQL_DATABASE_URL".to_owned(),
                    )
                })?;
                (
                    server.database(&label("main")).await,
                    server.database(&label("other")).await,
                )
            };
            let pools = (
                main.connect(10).await,
                second.connect(4).await,
                main.connect(2).await,
            );
            if backend == Backend::MariaDb {
                read_committed = Some(test_support::connect_read_committed(&main.url, 10).await);
            }
            (
                pools.0,
                pools.1,
                pools.2,
                vec![Box::new(main), Box::new(second)],
            )
        }
        Backend::Sqlite => {
            let dir = test_support::TempDir::new(&label("files"));
            let main = dir.sqlite_url("main.db");
            let pools = (
                test_support::connect(&main, 10).await,
                test_support::connect(&dir.sqlite_url("other.db"), 4).await,
                test_support::connect(&main, 2).await,
            );
            (pools.0, pools.1, pools.2, vec![Box::new(dir)])
        }
    };
    create_tables(&pool).await?;
    create_tables(&other).await?;
    Ok(Databases {
        world: World {
            backend,
            pool,
            other,
            admin,
        },
        read_committed,
        _keep: keep,
    })
}

/// The rows of the checker's tables on `db`.
async fn rows_of(db: &DatabaseConnection, database: usize) -> Result<Vec<Row>, DbErr> {
    let backend = db.get_database_backend();
    let mut rows = Vec::new();
    for (table, sql) in [
        (
            Table::Unique,
            "SELECT id, k, NULL AS tag, v FROM chk_unique",
        ),
        (Table::Loose, "SELECT id, k, NULL AS tag, v FROM chk_loose"),
        (Table::Pairs, "SELECT id, k, tag, v FROM chk_pairs"),
    ] {
        for row in db
            .query_all_raw(Statement::from_string(backend, sql))
            .await?
        {
            rows.push(Row {
                database,
                table,
                id: row.try_get("", "id")?,
                k: row.try_get("", "k")?,
                tag: row.try_get::<Option<String>>("", "tag")?,
                v: row.try_get("", "v")?,
            });
        }
    }
    Ok(rows)
}

/// What a history left behind once it is over: advisory locks and sessions idle in a
/// transaction (PostgreSQL), open InnoDB transactions (MariaDB, holding lock-table rows).
/// Polled for a few seconds: a dropped call's rollback may still be on its way.
async fn leftovers(world: &World) -> Vec<String> {
    let admin = &world.admin;
    let queries: &[(&str, &str)] = match world.backend {
        Backend::Postgres => &[
            (
                "advisory locks held",
                "SELECT COUNT(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                 WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            ),
            (
                "sessions idle in a transaction",
                "SELECT COUNT(*) AS n, string_agg(left(query, 200), ' | ') AS what \
                 FROM pg_stat_activity WHERE datname = current_database() \
                 AND state LIKE 'idle in transaction%'",
            ),
        ],
        Backend::MariaDb => &[(
            "open InnoDB transactions",
            "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX t \
             JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
             WHERE p.DB = DATABASE()",
        )],
        Backend::Sqlite => &[],
    };
    let backend = admin.get_database_backend();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        for (what, sql) in queries {
            let (n, detail) = match admin
                .query_one_raw(Statement::from_string(backend, *sql))
                .await
            {
                Ok(Some(row)) => (
                    row.try_get::<i64>("", "n").unwrap_or(-1),
                    row.try_get::<Option<String>>("", "what")
                        .ok()
                        .flatten()
                        .map(|what| format!(" (last statements: {what})")),
                ),
                Ok(None) => (0, None),
                Err(err) => {
                    left.push(format!("{what}: the check failed: {err}"));
                    continue;
                }
            };
            if n != 0 {
                left.push(format!("{what}: {n}{}", detail.unwrap_or_default()));
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `history` on empty tables and checks it: the events and what it broke.
async fn run_and_check(
    world: &World,
    history: &History,
) -> Result<(Vec<Event>, Vec<String>), HarnessError> {
    let began = Instant::now();
    empty_tables(&world.admin).await?;
    empty_tables(&world.other).await?;
    if std::env::var_os("CHECKER_TRACE").is_some() {
        eprintln!("[trace] emptied in {:?}", began.elapsed());
    }
    let (mut events, hung) = runner::run(world, history).await;
    if hung {
        let broken = vec![format!(
            "the history did not finish within {:?}: a call hangs",
            runner::HISTORY_LIMIT
        )];
        // Its clients are aborted; whatever they held ends with their connections.
        return Ok((events, broken));
    }
    let ran = Instant::now();
    let left = leftovers(world).await;
    if std::env::var_os("CHECKER_TRACE").is_some() {
        let slowest = events.iter().map(|e| e.elapsed).max().unwrap_or_default();
        eprintln!(
            "[trace] ops {} slowest call {slowest:?} leftovers check {:?}",
            history.len(),
            ran.elapsed()
        );
    }
    events.extend(runner::retry(world, &events).await);
    let mut rows = rows_of(&world.admin, 0).await?;
    rows.extend(rows_of(&world.other, 1).await?);
    let broken = invariants::check(world.backend, history, &events, &rows, &left);
    if std::env::var_os("CHECKER_TRACE").is_some() {
        eprintln!("[trace] history done in {:?}", began.elapsed());
    }
    Ok((events, broken))
}

/// Drops operations from `history` while it still fails (each candidate run up to 3 times:
/// the clients race), within `budget`.
async fn shrink(
    world: &World,
    history: &History,
    failed: (Vec<Event>, Vec<String>),
    budget: Duration,
) -> Result<(History, Vec<Event>, Vec<String>), HarnessError> {
    let deadline = Instant::now() + budget;
    let (mut smallest, mut failed) = (history.clone(), failed);
    let mut index = 0;
    while index < smallest.len() && Instant::now() < deadline {
        let candidate = smallest.without(index);
        let mut still = None;
        for _ in 0..3 {
            let run = run_and_check(world, &candidate).await?;
            if !run.1.is_empty() {
                still = Some(run);
                break;
            }
        }
        match still {
            Some(run) => {
                smallest = candidate;
                failed = run;
            }
            None => index += 1,
        }
    }
    Ok((smallest, failed.0, failed.1))
}

/// Counts the faults a history injects.
fn faults_in(history: &History) -> usize {
    history
        .clients
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Bypass { .. } | Op::LockTaker { .. } | Op::Kill | Op::Deadlock { .. } => 1,
            Op::Txn { setup, calls, .. } => {
                usize::from(*setup != history::Setup::Plain)
                    + calls.iter().filter(|c| c.drop_after_us.is_some()).count()
            }
            Op::Pool(call) => usize::from(call.drop_after_us.is_some()),
            Op::Batch { items, .. } => {
                usize::from(items.first().is_some_and(|c| c.drop_after_us.is_some()))
            }
            Op::Nested { outer, nested, .. } => {
                usize::from(outer.drop_after_us.is_some())
                    + usize::from(nested.drop_after_us.is_some())
            }
        })
        .sum()
}

/// Runs the checker: histories from `config.seed` for `config.duration`, stopping at the first
/// violation (shrunk).
pub async fn run(config: &Config) -> Result<Report, HarnessError> {
    let dbs = databases(config.backend).await?;
    let worlds = dbs.worlds();
    let mut generator = Generator::new(config.seed, config.backend);
    if config.without_cross_waits {
        generator = generator.without_cross_waits();
    }
    let mut report = Report::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while started.elapsed() < config.duration {
        let history = generator.history();
        let world = &worlds[report.histories % worlds.len()];
        let (events, broken) = run_and_check(world, &history).await?;
        report.histories += 1;
        report.calls += events.len();
        report.faults += faults_in(&history);
        if !broken.is_empty() {
            let (shrunk, events, broken) =
                shrink(world, &history, (events, broken), Duration::from_secs(60)).await?;
            report.violation = Some(Violation {
                history,
                shrunk,
                broken,
                events,
            });
            break;
        }
        if config.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "[checker] {}: {:.0?} histories {} calls {} faults {} violations 0",
                config.backend.name(),
                started.elapsed(),
                report.histories,
                report.calls,
                report.faults,
            );
        }
    }
    Ok(report)
}
