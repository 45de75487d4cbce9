//! # `webhook_burst`: a burst of duplicate GitHub webhooks, each pull request stored once
//!
//! GitHub delivers webhooks *at least* once: the same `pull_request` event can arrive twice,
//! at the same moment, on two workers. Both look for the row, both miss, both insert, and one
//! fails on the unique constraint. This program simulates such a burst: `--prs` pull requests,
//! each delivered `--duplicates` times, the copies of one pull request handed to different
//! workers (`--concurrency`) at the same moment, and stores every delivery with
//! `PullRequest::create_once`, which creates each row exactly once and reports the rest as
//! duplicates absorbed, with no errors. `--naive` runs the usual find-then-insert instead,
//! for contrast.
//!
//! ## Run it
//!
//! ```text
//! cargo run --example webhook_burst                     # embedded SQLite file ./webhook_burst.db
//! cargo run --example webhook_burst -- --naive          # the usual code: unique violations
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app cargo run --example webhook_burst
//! cargo run --example webhook_burst -- --prs 5000 --duplicates 4 --concurrency 32 --json
//! ```
//!
//! With no `DATABASE_URL` and no `--database-url` it uses an embedded SQLite file in the
//! current directory, created and migrated automatically; with a PostgreSQL URL it migrates
//! that database (pending migrations only) and runs there.
//!
//! Flags: `--prs N` distinct pull requests (default 1000), `--duplicates D` deliveries of each
//! (default 3), `--concurrency C` workers (default 16), `--first-pr-id ID` the first GitHub
//! pull-request id (default 1; the run uses `ID..ID+N`), `--seed S` for the synthetic payloads
//! and the arrival order (default 42), `--naive` find-then-insert without a lock, `--json` one
//! JSON object on stdout instead of the table, `--database-url URL`.
//!
//! ## Poke it
//!
//! - Run it twice: the second run finds every pull request stored (`created 0`, every delivery
//!   a duplicate absorbed).
//! - Start several processes at once on the same keys; together they create each pull request
//!   exactly once (the `created` counts sum to `--prs`):
//!
//!   ```text
//!   cargo build --example webhook_burst
//!   for i in 1 2 3 4; do target/debug/examples/webhook_burst --first-pr-id 9000 --json & done; wait
//!   ```
//!
//! - `--naive` on a fresh `--first-pr-id`: errors (`unique_violation`) and exit status 1.
//!
//! The summary counts deliveries, rows created, duplicates absorbed, errors by kind, the rows
//! now in the table for the id range, throughput, and the lock wait (p50/p99 of the
//! `lock_wait_us` field that `create_once` records on its `create_once` tracing span, over the
//! calls that took the lock: a delivery that finds its row already stored takes none). The
//! exit status is 1 if any delivery failed, 2 if the run could not start.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use entity::{NewPullRequest, PullRequest, pull_requests};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, SqlErr,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome};
use tracing::field::{Field, Visit};
use tracing::span::{Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Simulates a burst of duplicate GitHub `pull_request` webhooks and stores each pull request
/// exactly once with `PullRequest::create_once`.
#[derive(Debug, Parser)]
#[command(name = "webhook_burst")]
struct Args {
    /// Distinct pull requests.
    #[arg(long, default_value_t = 1000)]
    prs: u32,
    /// Deliveries of each pull request, arriving at the same moment on different workers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    duplicates: u32,
    /// Workers delivering concurrently (also the size of the connection pool).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// The first GitHub pull-request id; the run uses ID..ID+prs, so runs can share or avoid
    /// keys.
    #[arg(long, default_value_t = 1)]
    first_pr_id: i64,
    /// Seed of the synthetic payloads and of the arrival order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run the usual unprotected code instead: find, then insert, no lock.
    #[arg(long)]
    naive: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Database URL (default: DATABASE_URL, else an embedded SQLite file).
    #[arg(long)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(summary) if summary.errors() == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => {
            eprintln!("webhook_burst: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<Summary, common::BoxError> {
    let last_pr_id = args
        .first_pr_id
        .checked_add(i64::from(args.prs.max(1)) - 1)
        .ok_or("--first-pr-id + --prs overflows a 64-bit pull-request id")?;
    let target = common::target(args.database_url.clone(), "webhook_burst.db")?;
    eprintln!("{}", target.description);
    let db = common::connect(&target.url, args.concurrency).await?;

    let lock_waits = LockWaits::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(lock_waits.clone()),
    )?;

    let deliveries = Arc::new(deliveries(&args));
    let stats = Arc::new(Stats::default());
    let progress = (std::io::stderr().is_terminal() && !deliveries.is_empty())
        .then(|| tokio::spawn(show_progress(stats.clone(), deliveries.len())));

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (db, deliveries, stats, next) =
                (db.clone(), deliveries.clone(), stats.clone(), next.clone());
            let naive = args.naive;
            tokio::spawn(async move {
                while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = if naive {
                        naive_find_then_insert(&db, delivery).await
                    } else {
                        PullRequest::create_once(&db, delivery.pr_id, delivery.data.clone())
                            .await
                            .map(|outcome| matches!(outcome, Outcome::Created(_)))
                    };
                    stats.count(delivery, result);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[2K");
    }

    let rows = if args.prs == 0 {
        0
    } else {
        PullRequest::find()
            .filter(pull_requests::Column::PrId.between(args.first_pr_id, last_pr_id))
            .count(&db)
            .await?
    };
    let summary = Summary {
        backend: db.get_database_backend(),
        args,
        deliveries: deliveries.len() as u64,
        created: stats.created.load(Ordering::Relaxed),
        existing: stats.existing.load(Ordering::Relaxed),
        errors_by_kind: stats.errors.lock().unwrap().clone(),
        rows,
        elapsed,
        lock_waits_us: lock_waits.sorted(),
    };
    if summary.args.json {
        println!("{}", summary.json());
    } else {
        print!("{summary}");
        for message in stats.first_errors.lock().unwrap().iter() {
            eprintln!("error: {message}");
        }
    }
    db.close().await?;
    Ok(summary)
}

/// One webhook delivery: the pull request it announces and the payload it carries.
#[derive(Debug)]
struct Delivery {
    pr_id: i64,
    data: NewPullRequest,
}

/// Every delivery of the burst. The copies of one pull request are adjacent, so workers that
/// take the next delivery from the queue get them at the same moment; the order of the pull
/// requests is shuffled by `--seed` (the same in every process with the same seed).
fn deliveries(args: &Args) -> Vec<Delivery> {
    let mut pr_ids: Vec<i64> = (0..i64::from(args.prs))
        .map(|i| args.first_pr_id + i)
        .collect();
    let mut rng = Rng::new(args.seed, 0);
    for i in (1..pr_ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        pr_ids.swap(i, j);
    }
    pr_ids
        .into_iter()
        .flat_map(|pr_id| {
            let payload = payload(args.seed, pr_id);
            (0..args.duplicates).map(move |copy| Delivery {
                pr_id,
                data: NewPullRequest {
                    delivery_id: delivery_id(args.seed, pr_id, copy),
                    ..payload.clone()
                },
            })
        })
        .collect()
}

/// The synthetic `pull_request` payload of `pr_id`: the same for every delivery and process.
fn payload(seed: u64, pr_id: i64) -> NewPullRequest {
    const REPOSITORIES: [&str; 4] = [
        "octo-org/octo-repo",
        "octo-org/hello-world",
        "acme/api",
        "acme/web",
    ];
    const VERBS: [&str; 6] = ["Fix", "Add", "Remove", "Refactor", "Document", "Speed up"];
    const NOUNS: [&str; 6] = [
        "webhook retries",
        "login flow",
        "CI cache",
        "rate limiter",
        "README",
        "migrations",
    ];
    const AUTHORS: [&str; 5] = ["mona", "hubot", "octocat", "defunkt", "pjhyett"];
    let mut rng = Rng::new(seed, pr_id as u64);
    let mut pick = |n: usize| (rng.next() % n as u64) as usize;
    let repository = REPOSITORIES[pick(REPOSITORIES.len())].to_owned();
    let title = format!("{} {}", VERBS[pick(VERBS.len())], NOUNS[pick(NOUNS.len())]);
    let author = AUTHORS[pick(AUTHORS.len())].to_owned();
    let number = 1 + pick(5_000) as i32;
    let head_sha = format!(
        "{:016x}{:016x}{:08x}",
        rng.next(),
        rng.next(),
        rng.next() as u32
    );
    NewPullRequest {
        repository,
        number,
        title,
        author,
        state: "open".into(),
        head_sha,
        delivery_id: String::new(),
    }
}

/// An `X-GitHub-Delivery`-like GUID for one delivery.
fn delivery_id(seed: u64, pr_id: i64, copy: u32) -> String {
    let mut rng = Rng::new(seed ^ u64::from(copy).rotate_left(32), pr_id as u64);
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// SplitMix64: small, fast, and reproducible from the seed (no dependency needed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What most code does, and what races: look, then insert if missing, no lock.
async fn naive_find_then_insert(
    db: &DatabaseConnection,
    delivery: &Delivery,
) -> Result<bool, Error> {
    let found = PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(delivery.pr_id))
        .one(db)
        .await?;
    if found.is_some() {
        return Ok(false);
    }
    PullRequest::new_active_model(&delivery.pr_id, delivery.data.clone())
        .insert(db)
        .await?;
    Ok(true)
}

/// Counts of the deliveries done so far.
#[derive(Default)]
struct Stats {
    created: AtomicU64,
    existing: AtomicU64,
    done: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The first few error messages, shown after the table.
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn count(&self, delivery: &Delivery, result: Result<bool, Error>) {
        match result {
            Ok(true) => self.created.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.existing.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                *self
                    .errors
                    .lock()
                    .unwrap()
                    .entry(error_kind(&err))
                    .or_default() += 1;
                let mut first = self.first_errors.lock().unwrap();
                if first.len() < 3 {
                    first.push(format!("pr_id {}: {err}", delivery.pr_id));
                }
                0
            }
        };
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The kind of a failed delivery, as the summary groups them.
fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::LockTimeout { .. } => "lock_timeout",
        Error::LockBusy { .. } => "lock_busy",
        Error::Deadlock { .. } => "deadlock",
        Error::UnsafeIsolation { .. } => "unsafe_isolation",
        Error::UnsupportedBackend { .. } => "unsupported_backend",
        Error::MakeData(_) => "make_data",
        Error::Database(db_err) => match db_err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => "unique_violation",
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => "foreign_key_violation",
            _ if matches!(db_err, DbErr::ConnectionAcquire(_)) => "connection_acquire",
            _ if err.is_retryable() => "database_transient",
            _ => "database",
        },
        _ => "other",
    }
}

/// A progress bar on stderr, redrawn ten times a second (only when stderr is a terminal).
async fn show_progress(stats: Arc<Stats>, total: usize) {
    const WIDTH: usize = 30;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let done = stats.done.load(Ordering::Relaxed) as usize;
        let filled = WIDTH * done / total;
        eprint!(
            "\r[{}{}] {done}/{total} deliveries",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled)
        );
        let _ = std::io::stderr().flush();
    }
}

/// The `lock_wait_us` values `create_once` records on its `create_once` span, collected by a
/// tracing layer: the time each call waited for its lock (PostgreSQL: the advisory lock;
/// SQLite: `BEGIN IMMEDIATE`, the write lock).
#[derive(Clone, Default)]
struct LockWaits(Arc<Mutex<Vec<u64>>>);

impl LockWaits {
    fn sorted(&self) -> Vec<u64> {
        let mut waits = self.0.lock().unwrap().clone();
        waits.sort_unstable();
        waits
    }
}

impl<S> Layer<S> for LockWaits
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if ctx
            .metadata(span)
            .is_some_and(|m| m.name() == "create_once")
        {
            let mut visitor = LockWaitField(None);
            values.record(&mut visitor);
            if let Some(waited) = visitor.0 {
                self.0.lock().unwrap().push(waited);
            }
        }
    }
}

struct LockWaitField(Option<u64>);

impl Visit for LockWaitField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "lock_wait_us" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

struct Summary {
    backend: DbBackend,
    args: Args,
    deliveries: u64,
    created: u64,
    existing: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    rows: u64,
    elapsed: Duration,
    lock_waits_us: Vec<u64>,
}

impl Summary {
    fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    fn strategy(&self) -> &'static str {
        if self.args.naive {
            "naive"
        } else {
            "create_once"
        }
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            DbBackend::MySql => "mysql",
            _ => "other",
        }
    }

    fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "database": self.backend_name(),
            "strategy": self.strategy(),
            "prs": self.args.prs,
            "duplicates": self.args.duplicates,
            "concurrency": self.args.concurrency,
            "first_pr_id": self.args.first_pr_id,
            "seed": self.args.seed,
            "deliveries": self.deliveries,
            "created": self.created,
            "existing": self.existing,
            "errors": self.errors(),
            "errors_by_kind": self.errors_by_kind,
            "rows": self.rows,
            "seconds": self.elapsed.as_secs_f64(),
            "deliveries_per_second": self.per_second(),
            "lock_wait_us": {
                "samples": self.lock_waits_us.len(),
                "p50": percentile(&self.lock_waits_us, 50.0),
                "p99": percentile(&self.lock_waits_us, 99.0),
            },
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        writeln!(
            f,
            "{} pull requests x {} deliveries, {} workers, {} on {}",
            a.prs,
            a.duplicates,
            a.concurrency,
            self.strategy(),
            self.backend_name()
        )?;
        writeln!(f, "  deliveries            {}", self.deliveries)?;
        writeln!(f, "  created               {}", self.created)?;
        writeln!(f, "  duplicates absorbed   {}", self.existing)?;
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        if kinds.is_empty() {
            writeln!(f, "  errors                0")?;
        } else {
            writeln!(
                f,
                "  errors                {}  ({})",
                self.errors(),
                kinds.join(", ")
            )?;
        }
        let last = a.first_pr_id + i64::from(a.prs) - 1;
        writeln!(
            f,
            "  rows in table         {}  (pr_id {}..={last})",
            self.rows, a.first_pr_id
        )?;
        writeln!(
            f,
            "  throughput            {:.0} deliveries/s  ({:.2} s)",
            self.per_second(),
            self.elapsed.as_secs_f64()
        )?;
        let ms = |us: Option<u64>| us.map_or(0.0, |us| us as f64 / 1000.0);
        match self.lock_waits_us.len() {
            0 if a.naive => writeln!(f, "  lock wait p50/p99     none: --naive takes no lock"),
            0 => writeln!(
                f,
                "  lock wait p50/p99     none: every delivery found its row"
            ),
            n => writeln!(
                f,
                "  lock wait p50/p99     {:.2} ms / {:.2} ms  ({n} calls took the lock)",
                ms(percentile(&self.lock_waits_us, 50.0)),
                ms(percentile(&self.lock_waits_us, 99.0)),
            ),
        }
    }
}
