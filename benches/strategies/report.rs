//! The markdown report: every run, the ratios against the crate, and the targets.

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::Run;
use crate::scenario::{Scenario, Size};
use crate::strategy::Strategy;
use crate::{POOL, TASKS};

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn find_run(
    runs: &[Run],
    scenario: Scenario,
    strategy: Strategy,
    tasks: usize,
) -> Option<&Run> {
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

pub(crate) fn report(runs: &[Run], server: &str, size: Size, quick: bool) -> String {
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
