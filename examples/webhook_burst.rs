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
//! createdb -h 127.0.0.1 -U postgres app                 # PostgreSQL: the database must exist
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app cargo run --example webhook_burst
//! cargo run --example webhook_burst -- --prs 5000 --duplicates 4 --concurrency 32 --json
//! ```
//!
//! With no `DATABASE_URL` and no `--database-url` it uses an embedded SQLite file in the
//! current directory, created and migrated automatically; with a PostgreSQL or MariaDB URL it
//! migrates that database (pending migrations only; the database itself must exist) and runs
//! there. A server that does not answer fails the run within seconds, with the cause
//! ("Connection refused") and the address tried.
//!
//! Flags: `--prs N` distinct pull requests (default 1000), `--duplicates D` deliveries of each
//! (default 3), `--concurrency C` workers (default 16), `--first-pr-id ID` the first GitHub
//! pull-request id (the run uses `ID..ID+N`; default 1, and with `--naive` the id after the
//! highest one stored, so that the naive code meets new pull requests), `--seed S` for the
//! synthetic payloads and the arrival order (default 42), `--naive` find-then-insert without a
//! lock, `--backfill N` import N pull requests in one batch instead (`PullRequest::many`, 500 per
//! chunk, each chunk's outcomes handed to the progress bar as it is done), `--json` one JSON object on stdout instead of the table, `--database-url URL`.
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
//! - `--naive`, even right after the main job (it takes ids above the stored ones): errors
//!   (`unique_violation`) and exit status 1. With `--first-pr-id 1` it meets the stored pull
//!   requests instead, finds every row and has nothing to race for.
//!
//! The summary counts deliveries, rows created, duplicates absorbed, errors by kind, the rows
//! now in the table for the id range, throughput, and the lock wait (p50/p99 of the
//! `lock_wait_us` field that `create_once` records on its `create_once` tracing span, over the
//! calls that took the lock: a delivery that finds its row already stored takes none). The
//! exit status is 1 if any delivery failed, 2 if the run could not start.
//!
//! The crate's part is [`deliver`]; the flags, the synthetic burst, the workers and the report
//! are in `examples/webhook_burst/`.

#[path = "webhook_burst/backfill.rs"]
mod backfill;
#[path = "webhook_burst/cli.rs"]
mod cli;
mod common;
#[path = "webhook_burst/deliveries.rs"]
mod deliveries;
#[path = "webhook_burst/report.rs"]
mod report;
#[path = "webhook_burst/workers.rs"]
mod workers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use entity::{PullRequest, pull_requests};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome};
use tracing_subscriber::layer::SubscriberExt;

use cli::Args;
use deliveries::{Delivery, deliveries};
use report::{LockWaits, Summary};

/// Stores one delivery: creates its pull request's row unless it exists, and says whether this
/// call created it. Any number of copies of one delivery, at the same moment, in any number of
/// processes: one of them creates the row, the others get `Outcome::Existing`.
///
/// `naive`: what most code does instead, find then insert with no lock, which races
/// ([`test_support::naive_find_then_insert`], the tests' and the benchmark's copy).
async fn deliver(db: &DatabaseConnection, delivery: &Delivery, naive: bool) -> Result<bool, Error> {
    let (pr_id, data) = (delivery.pr_id, delivery.data.clone());
    if naive {
        return Ok(test_support::naive_find_then_insert::<PullRequest, _>(db, pr_id, data).await?);
    }
    match PullRequest::create_once(db, pr_id, data).await? {
        Outcome::Created(_) => Ok(true),
        Outcome::Existing(_) => Ok(false),
    }
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

/// Connects (and migrates), delivers the burst, counts the rows, and prints the summary.
async fn run(mut args: Args) -> Result<Summary, common::BoxError> {
    let target = common::target(args.database_url.clone(), "webhook_burst.db")?;
    eprintln!("{}", target.description);
    let db = common::connect(&target.url, args.concurrency).await?;
    if let Some(count) = args.backfill {
        let done = backfill::backfill(&db, args.first_pr_id(), count).await?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "backfill": count,
                    "created": done.created,
                    "existing": done.existing,
                    "seconds": done.elapsed.as_secs_f64(),
                })
            );
        } else {
            print!("{done}");
        }
        let summary = Summary {
            backend: db.get_database_backend(),
            args,
            deliveries: 0,
            created: done.created,
            existing: done.existing,
            errors_by_kind: Default::default(),
            rows: done.created + done.existing,
            elapsed: done.elapsed,
            lock_waits_us: Vec::new(),
        };
        db.close().await?;
        return Ok(summary);
    }
    if args.naive && args.first_pr_id.is_none() {
        let first = above_stored(&db).await?;
        eprintln!(
            "--naive: new pull requests from pr_id {first}, above every stored one \
             (--first-pr-id ID to choose)"
        );
        args.first_pr_id = Some(first);
    }
    let last_pr_id = args
        .first_pr_id()
        .checked_add(i64::from(args.prs.max(1)) - 1)
        .ok_or("--first-pr-id + --prs overflows a 64-bit pull-request id")?;

    let lock_waits = LockWaits::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(lock_waits.clone()),
    )?;

    let deliveries = Arc::new(deliveries(&args));
    let started = Instant::now();
    let stats = workers::deliver_all(&db, deliveries.clone(), args.concurrency, args.naive).await?;
    let elapsed = started.elapsed();

    let rows = if args.prs == 0 {
        0
    } else {
        PullRequest::find()
            .filter(pull_requests::Column::PrId.between(args.first_pr_id(), last_pr_id))
            .count(&db)
            .await?
    };
    let summary = Summary {
        backend: db.get_database_backend(),
        args,
        deliveries: deliveries.len() as u64,
        created: stats.created.into_inner(),
        existing: stats.existing.into_inner(),
        errors_by_kind: stats.errors.into_inner().unwrap(),
        rows,
        elapsed,
        lock_waits_us: lock_waits.sorted(),
    };
    if summary.args.json {
        println!("{}", summary.json());
    } else {
        print!("{summary}");
        for message in stats.first_errors.into_inner().unwrap() {
            eprintln!("error: {message}");
        }
    }
    db.close().await?;
    Ok(summary)
}

/// The pull-request id after the highest one stored (1 in an empty table): where `--naive`
/// starts by default. On pull requests stored already the naive code finds every row and has
/// nothing to race for, so right after the main job it would show no race at all.
async fn above_stored(db: &DatabaseConnection) -> Result<i64, common::BoxError> {
    let highest: Option<i64> = PullRequest::find()
        .select_only()
        .column_as(pull_requests::Column::PrId.max(), "highest")
        .into_tuple()
        .one(db)
        .await?
        .flatten();
    match highest {
        None => Ok(1),
        Some(highest) => Ok(highest
            .checked_add(1)
            .ok_or("the highest stored pr_id is i64::MAX; give --first-pr-id")?),
    }
}
