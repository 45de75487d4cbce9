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
//!
//! The parts, under `benches/strategies/`: `strategy.rs` (strategies 1 to 5 and the call each
//! delivery makes), `by_hand.rs` (strategy 6, checked against the crate by
//! `tests/bench_statements.rs`), `scenario.rs`, `run.rs` (one measured run and the storm),
//! `report.rs` (markdown), `chart.rs` (SVG) and `cli.rs`.

#[path = "strategies/by_hand.rs"]
mod by_hand;
#[path = "strategies/chart.rs"]
mod chart;
#[path = "strategies/cli.rs"]
mod cli;
#[path = "strategies/report.rs"]
mod report;
#[path = "strategies/run.rs"]
mod run;
#[path = "strategies/scenario.rs"]
mod scenario;
#[path = "strategies/strategy.rs"]
mod strategy;

use std::time::Instant;

use chart::chart;
use cli::Options;
use report::{ms, report};
use run::{Run, describe_server, run, warm_up};
use scenario::Scenario;
use strategy::{Db, Strategy};

/// Connections in the pool every strategy shares.
const POOL: u32 = 8;
/// Concurrent delivering tasks.
const TASKS: [usize; 3] = [1, 8, 32];
/// Keys of the storm's hot keys start here, far from the measured keys.
const HOT_KEYS: i64 = 1_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::from_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(options))
}

/// Runs every strategy on `options.scenarios` at each concurrency of [`TASKS`], prints the
/// report and writes the chart.
async fn bench(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let Options {
        quick,
        size,
        svg,
        scenarios,
    } = options;
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
    for &scenario in &scenarios {
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
    chart(&svg, &runs, &server)?;
    eprintln!(
        "chart written to {}; whole run took {:.0} s",
        svg.display(),
        started.elapsed().as_secs_f64()
    );
    db.orm.close().await?;
    Ok(())
}
