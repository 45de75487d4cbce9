//! `create_once` against what a user would write by hand with sqlx, on the same deliveries
//! through the same pool of 8 connections, in one run: PostgreSQL over loopback, PostgreSQL
//! through a proxy that adds a fixed delay each way (a network hop), an embedded SQLite file,
//! and MariaDB over loopback.
//!
//! ```text
//! cargo bench --bench strategies               # full run: tables, ratios, targets, benches/strategies.svg
//! cargo bench --bench strategies -- --quick    # small, 8 tasks, every place and strategy once (CI)
//! cargo bench --bench strategies -- --fsync off            # the tests' non-durable cluster
//! cargo bench --bench strategies -- --network loopback     # or proxy, both (default), none
//! cargo bench --bench strategies -- --delay-ms 1 --no-sqlite --tasks 8,32 --svg out.svg
//! cargo bench --bench strategies -- --only new,storm       # scenarios: new, dup4, dup16, late, storm
//! cargo bench --bench strategies -- --network none --no-sqlite --svg out.svg  # MariaDB alone
//! cargo bench --bench strategies -- --network none --no-sqlite --mariadb-isolation read-committed
//! cargo bench --bench strategies -- --per-call --network loopback  # one caller's CPU per call
//! cargo bench --bench strategies -- --batch --network loopback   # the batch form vs single calls
//! ```
//!
//! Results, the ratios against issue 25's targets and the run's settings: `BENCHMARKS.md`.
//!
//! PostgreSQL is `DATABASE_URL`'s server when set (a fresh database is created there and
//! dropped at the end), otherwise a throwaway cluster started from the installed binaries
//! (`test_support`), with PostgreSQL's default durability (every commit flushed) unless
//! `--fsync off`, and removed when the run exits. SQLite is a file in a temporary directory, in
//! WAL mode, `synchronous` FULL (OFF with `--fsync off`). MariaDB is `MYSQL_DATABASE_URL`'s
//! server when set, otherwise the test support's throwaway MariaDB, with InnoDB's default
//! `innodb_flush_log_at_trx_commit=1` (0 with `--fsync off`); `--no-mariadb` leaves it out.
//!
//! Strategies (`strategy.rs`): the crate; the hand-written transaction (advisory lock, or
//! `BEGIN IMMEDIATE` on SQLite); the same with a plain `SELECT` first; `ON CONFLICT DO NOTHING`
//! then `SELECT`; the floor (one plain `INSERT`, or one plain `SELECT` when every row exists);
//! and, on PostgreSQL, the crate's own statements on sqlx. On MariaDB, MySQL's forms instead:
//! `INSERT IGNORE` or `ON DUPLICATE KEY UPDATE` then `SELECT`, `LOCK TABLES`, `GET_LOCK`, the
//! naive find-then-insert, and the floor. Every one returns the full row.
//!
//! Scenarios (`scenario.rs`): new keys; duplicates x4 (the copies adjacent in the work queue, so
//! as many arrive at once as there are tasks); late redeliveries (every row exists); a hot-key
//! storm (bursts of callers on one new key, one burst after another, while the measured tasks
//! create distinct keys: their throughput is compared with the new-keys run). Each at 8 and 32
//! tasks over the pool.
//!
//! The parts, under `benches/strategies/`: `cli.rs`; `setup.rs` (servers, pools, the proxy,
//! the SQLite file, MariaDB) and `place.rs`; `proxy.rs` (the delay proxy); `strategy.rs`,
//! `locked_path.rs` (the crate's locked path, for tables without a unique index), `baseline_pg.rs`, `baseline_sqlite.rs`, `baseline_mysql.rs`, `row.rs` and `by_hand.rs` (the crate's statements,
//! checked against the crate by `tests/bench_statements.rs`); `scenario.rs`, `run.rs` (one
//! measured run and the storm) and `table.rs` (the bench's own untimed statements);
//! `report.rs`, `targets.rs` and `chart.rs`; `per_call.rs` (`--per-call`: one caller's
//! late redeliveries, wall time and CPU per call, with and without a subscriber recording the
//! crate's span).

#[path = "strategies/baseline_mysql.rs"]
mod baseline_mysql;
#[path = "strategies/baseline_pg.rs"]
mod baseline_pg;
#[path = "strategies/baseline_sqlite.rs"]
mod baseline_sqlite;
#[path = "strategies/batch.rs"]
mod batch;
#[path = "strategies/by_hand.rs"]
mod by_hand;
#[path = "strategies/chart.rs"]
mod chart;
#[path = "strategies/cli.rs"]
mod cli;
#[path = "strategies/locked_path.rs"]
mod locked_path;
#[path = "strategies/per_call.rs"]
mod per_call;
#[path = "strategies/place.rs"]
mod place;
#[path = "strategies/proxy.rs"]
mod proxy;
#[path = "strategies/report.rs"]
mod report;
#[path = "strategies/row.rs"]
mod row;
#[path = "strategies/run.rs"]
mod run;
#[path = "strategies/scenario.rs"]
mod scenario;
#[path = "strategies/setup.rs"]
mod setup;
#[path = "strategies/strategy.rs"]
mod strategy;
#[path = "strategies/table.rs"]
mod table;
#[path = "strategies/targets.rs"]
mod targets;

use std::time::Instant;

use cli::Options;
use report::{ms, place_report};
use run::{Run, run, warm_up};
use scenario::Scenario;
use strategy::Strategy;

/// Connections in the pool of each place.
const POOL: u32 = 8;
/// Keys of the storm's hot keys start here, far from the measured keys.
const HOT_KEYS: i64 = 1_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::from_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(options))
}

/// Runs every strategy on each place, scenario and concurrency asked for, prints the report and
/// writes the chart.
async fn bench(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let opened = setup::open(&options)
        .await
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    let machine = setup::machine();
    eprintln!("{machine}; pool {POOL} per place");
    if options.per_call {
        return per_call(&options, &opened, &machine).await;
    }
    if options.batch {
        return batch(&options, &opened, &machine).await;
    }

    let mut runs = Vec::new();
    let mut loads = Vec::new();
    for (db, described) in &opened.places {
        let place = db.place;
        let size = options.sizes.at(place);
        eprintln!("{}: {described}", place.name());
        let load_before = setup::load_average();
        warm_up(db).await?;
        for &scenario in &options.scenarios {
            let strategies: Vec<Strategy> = Strategy::ALL
                .into_iter()
                .filter(|s| s.runs(place, scenario))
                .collect();
            for &tasks in &options.tasks {
                // Repetitions interleave the strategies; the median run of each is kept.
                let repetitions = if scenario == Scenario::Storm {
                    1
                } else {
                    size.repetitions
                };
                let mut tries: Vec<Vec<Run>> = strategies.iter().map(|_| Vec::new()).collect();
                for _ in 0..repetitions {
                    for (i, &strategy) in strategies.iter().enumerate() {
                        tries[i].push(run(db, scenario, strategy, tasks, size).await?);
                    }
                }
                for mut tried in tries {
                    tried.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
                    let run = tried.swap_remove(tried.len() / 2);
                    progress(&run);
                    runs.push(run);
                }
            }
        }
        loads.push(format!(
            "load average (1 min) {load_before} before, {} after",
            setup::load_average()
        ));
    }

    let places: Vec<_> = opened.places.iter().map(|(db, _)| db.place).collect();
    println!(
        "## Results{}\n\nMachine: {machine}. Took {:.0} s.\n",
        if options.quick {
            " (--quick: small runs, noisy)"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    for ((db, described), load) in opened.places.iter().zip(&loads) {
        let size = options.sizes.at(db.place);
        let section = place_report(
            &runs,
            db.place,
            &format!("{described}; {load}"),
            size,
            &options.scenarios,
            &options.tasks,
        );
        println!("{section}");
    }
    let (table, met, measured) = targets::targets(&runs, &options.tasks);
    // Issue 25's targets cover every place.
    if measured > 0 {
        println!("## Targets ({met} of {measured} met)\n\n{table}");
    }
    let durability = if options.durable {
        "durable commits (fsync on)"
    } else {
        "--fsync off"
    };
    chart::chart(
        &options.svg,
        &runs,
        &places,
        &options.scenarios,
        &options.tasks,
        &format!("{durability}; pool of {POOL}; {machine}"),
    )?;
    eprintln!(
        "chart written to {}; whole run took {:.0} s",
        options.svg.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(opened.close().await?)
}

/// `--per-call`: one caller's late redeliveries at every place but the proxy (whose relay
/// would count as the client's CPU), printed as one table per place.
async fn per_call(
    options: &Options,
    opened: &setup::Opened,
    machine: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let calls = options.calls;
    println!(
        "## CPU per call (--per-call)\n\nMachine: {machine}. {calls} calls per way and round, \
         one after another on one task; the median of 3 rounds (by user CPU), the ways \
         interleaved.\n"
    );
    for (db, described) in &opened.places {
        if db.place == place::Place::Hop {
            continue;
        }
        warm_up(db).await?;
        let table = per_call::per_call(db, &options.ways, calls)
            .await
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        println!("### {}\n\n{described}\n\n{table}", db.place.name());
    }
    Ok(opened.close().await?)
}

/// `--batch`: issue 27's target for the batch form, one table per place.
async fn batch(
    options: &Options,
    opened: &setup::Opened,
    machine: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let durability = if options.durable {
        "durable commits (fsync on)"
    } else {
        "--fsync off"
    };
    println!(
        "## The batch form (--batch)\n\nMachine: {machine}; {durability}; pool {POOL}. {} new keys \
         per run, on an empty table.\n",
        batch::KEYS
    );
    for (db, described) in &opened.places {
        warm_up(db).await?;
        let table = batch::batch(db)
            .await
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        println!("### {}\n\n{described}\n\n{table}", db.place.name());
    }
    Ok(opened.close().await?)
}

/// One line on stderr per kept run, as the bench goes.
fn progress(run: &Run) {
    eprintln!(
        "{:<12} {:<24} {:<26} {:>2} tasks {:>8.0}/s p99 {:>7.2} ms errors {}{}",
        run.place.short(),
        run.scenario.name(),
        run.strategy.name(),
        run.tasks,
        run.per_second(),
        ms(run.percentile(0.99)),
        run.errors,
        run.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
}
