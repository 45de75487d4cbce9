//! Issue 12's targets, each checked against what this run measured: the ratio, the goal, met
//! or not. The baselines are what the issue names, written as a user would write them; a
//! target is never met by changing what it is measured against.

use std::fmt::Write as _;

use crate::place::Place;
use crate::report::{crate_over, storm_vs_calm};
use crate::run::Run;
use crate::scenario::Scenario;
use crate::strategy::Strategy;

/// One target: at `places`, the crate's `measure` must be at least `goal`.
struct Target {
    what: &'static str,
    places: &'static [Place],
    measure: Measure,
    goal: f64,
}

enum Measure {
    /// Crate deliveries/s over the other strategy's, in the scenario.
    Against(Scenario, Strategy),
    /// Other callers' deliveries/s under the hot-key storm over the same work without it.
    StormKeep,
}

const TARGETS: [Target; 6] = [
    Target {
        what: "new keys over a network hop: crate / txn by hand",
        places: &[Place::Hop],
        measure: Measure::Against(Scenario::NewKeys, Strategy::Transaction),
        goal: 1.3,
    },
    Target {
        what: "new keys on loopback: crate / txn by hand",
        places: &[Place::Loopback],
        measure: Measure::Against(Scenario::NewKeys, Strategy::Transaction),
        goal: 1.0,
    },
    Target {
        what: "new keys on loopback: crate / ON CONFLICT, then SELECT",
        places: &[Place::Loopback],
        measure: Measure::Against(Scenario::NewKeys, Strategy::OnConflict),
        goal: 0.6,
    },
    Target {
        what: "duplicates x4: crate / txn by hand",
        places: &[Place::Loopback, Place::Hop],
        measure: Measure::Against(Scenario::Duplicates(4), Strategy::Transaction),
        goal: 1.0,
    },
    Target {
        what: "late redeliveries: crate / plain sqlx SELECT by key",
        places: &[Place::Loopback, Place::Hop, Place::Sqlite],
        measure: Measure::Against(Scenario::Late, Strategy::Floor),
        goal: 0.9,
    },
    Target {
        what: "hot-key storm: other callers keep of their no-storm throughput",
        places: &[Place::Loopback, Place::Hop, Place::Sqlite],
        measure: Measure::StormKeep,
        goal: 0.8,
    },
];

/// The targets table, for the places and concurrencies that ran; and how many were met out of
/// how many measured.
pub(crate) fn targets(runs: &[Run], tasks: &[usize]) -> (String, usize, usize) {
    let mut out = String::from(
        "| target | place | tasks | measured | target | met |\n\
         | --- | --- | ---: | ---: | ---: | :---: |\n",
    );
    let (mut met, mut measured) = (0, 0);
    for target in &TARGETS {
        for &place in target.places {
            for &t in tasks {
                let value = match target.measure {
                    Measure::Against(scenario, other) => {
                        crate_over(runs, place, scenario, other, t)
                    }
                    Measure::StormKeep => {
                        storm_vs_calm(runs, place, Strategy::Crate, t).map(|(keep, ..)| keep)
                    }
                };
                let Some(value) = value else { continue };
                measured += 1;
                let ok = value >= target.goal;
                met += usize::from(ok);
                let _ = writeln!(
                    out,
                    "| {} | {} | {t} | {value:.2}x | >= {:.1}x | {} |",
                    target.what,
                    place.name(),
                    target.goal,
                    if ok { "met" } else { "**not met**" }
                );
            }
        }
    }
    (out, met, measured)
}
