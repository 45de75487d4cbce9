//! The markdown report: per place, the crate against every other strategy (deliveries/s and
//! the crate's ratio), then every run in detail; the targets follow (`targets.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::POOL;
use crate::place::Place;
use crate::run::Run;
use crate::scenario::{Scenario, Size};
use crate::strategy::Strategy;

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn find_run(
    runs: &[Run],
    place: Place,
    scenario: Scenario,
    strategy: Strategy,
    tasks: usize,
) -> Option<&Run> {
    runs.iter().find(|r| {
        r.place == place && r.scenario == scenario && r.strategy == strategy && r.tasks == tasks
    })
}

/// Deliveries/s of the crate over deliveries/s of `other`, in one cell.
pub(crate) fn crate_over(
    runs: &[Run],
    place: Place,
    scenario: Scenario,
    other: Strategy,
    tasks: usize,
) -> Option<f64> {
    ratio(runs, place, scenario, Strategy::Crate, other, tasks)
}

/// Deliveries/s of `mine` over deliveries/s of `other`, in one cell.
pub(crate) fn ratio(
    runs: &[Run],
    place: Place,
    scenario: Scenario,
    mine: Strategy,
    other: Strategy,
    tasks: usize,
) -> Option<f64> {
    Some(
        find_run(runs, place, scenario, mine, tasks)?.per_second()
            / find_run(runs, place, scenario, other, tasks)?.per_second(),
    )
}

/// The measured tasks' throughput under the storm over the same work without it (new keys),
/// and their p99 without and with it.
pub(crate) fn storm_vs_calm(
    runs: &[Run],
    place: Place,
    strategy: Strategy,
    tasks: usize,
) -> Option<(f64, Duration, Duration)> {
    let storm = find_run(runs, place, Scenario::Storm, strategy, tasks)?;
    let calm = find_run(runs, place, Scenario::NewKeys, strategy, tasks)?;
    Some((
        storm.per_second() / calm.per_second(),
        calm.percentile(0.99),
        storm.percentile(0.99),
    ))
}

/// `12345.6` as `12,346`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// One place's section: its description, the side-by-side table and the detail table.
pub(crate) fn place_report(
    runs: &[Run],
    place: Place,
    described: &str,
    size: Size,
    scenarios: &[Scenario],
    tasks: &[usize],
) -> String {
    let mut out = String::new();
    let strategies: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|s| scenarios.iter().any(|&sc| s.runs(place, sc)))
        .collect();
    let runs_per_cell = match size.repetitions {
        1 => "one run per cell".to_owned(),
        n => format!(
            "each cell the median of {n} runs with the strategies interleaved (the storm: one run)"
        ),
    };
    let _ = writeln!(
        out,
        "### {}\n\n{described}. Pool of {POOL} connections; {} measured deliveries per run ({} \
         of late redeliveries, {} under the storm, bursts of {} callers on one key, {}); \
         {runs_per_cell}.\n",
        place.name(),
        size.deliveries,
        size.late_deliveries,
        size.storm_deliveries,
        size.storm_callers,
        match size.storm_every {
            Some(every) => format!("one burst every {} ms at most", every.as_millis()),
            None => "each as soon as the last is answered".to_owned(),
        },
    );
    let _ = write!(out, "| scenario | tasks |");
    for strategy in &strategies {
        let _ = write!(out, " {} |", strategy.name());
    }
    let _ = writeln!(
        out,
        "\n| --- | ---: |{}",
        " ---: |".repeat(strategies.len())
    );
    for &scenario in scenarios {
        for &t in tasks {
            let _ = write!(out, "| {} | {t} |", scenario.name());
            for &strategy in &strategies {
                let cell = match find_run(runs, place, scenario, strategy, t) {
                    None => "-".to_owned(),
                    Some(run) if strategy == Strategy::Crate => {
                        format!("**{}/s**", thousands(run.per_second()))
                    }
                    Some(run) => {
                        let ratio = crate_over(runs, place, scenario, strategy, t)
                            .map_or(String::new(), |r| format!(" (crate {r:.2}x)"));
                        format!("{}/s{ratio}", thousands(run.per_second()))
                    }
                };
                let _ = write!(out, " {cell} |");
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "\n| scenario | strategy | tasks | deliveries/s | p50 ms | p99 ms | errors | rows = keys | notes |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | :---: | --- |"
    );
    for run in runs.iter().filter(|r| r.place == place) {
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
            notes(runs, run)
        );
    }
    out
}

/// What a run's row says besides its numbers.
fn notes(runs: &[Run], run: &Run) -> String {
    match (run.scenario, run.storm, run.strategy) {
        (Scenario::Storm, Some(storm), _) => {
            let (keep, calm_p99, storm_p99) =
                storm_vs_calm(runs, run.place, run.strategy, run.tasks).unwrap_or_default();
            format!(
                "x{keep:.2} of no-storm throughput, p99 {:.2} -> {:.2} ms; storm: {} bursts, \
                 {:.0} deliveries/s, slowest {:.0} ms, {} errors",
                ms(calm_p99),
                ms(storm_p99),
                storm.bursts,
                storm.deliveries as f64 / storm.elapsed.as_secs_f64(),
                ms(storm.max_latency),
                storm.errors
            )
        }
        (Scenario::Late, _, Strategy::Floor) => "plain SELECT by key".into(),
        (_, _, Strategy::Floor) => "plain INSERT".into(),
        _ => run
            .first_error
            .as_deref()
            .map(|e| format!("first error: {e}"))
            .unwrap_or_default(),
    }
}
