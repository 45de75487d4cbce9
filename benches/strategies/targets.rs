//! Issue 25's targets, each checked against what this run measured: the ratio, the goal, met
//! or not. The baselines are what the issue names, written as a user would write them; a
//! target is never met by changing what it is measured against. "With a unique index" is the
//! crate as it runs on `pull_requests` (whose `pr_id` is unique: a new key is one statement);
//! "the lock path" is the crate on the same table with ids kept without gaps
//! (`locked_path.rs`), what a table without a unique index gets.

use std::fmt::Write as _;

use crate::place::Place;
use crate::report::{ratio, storm_vs_calm};
use crate::run::Run;
use crate::scenario::Scenario;
use crate::strategy::Strategy;

/// One target: at `places`, the `measure` must be at least `goal`.
struct Target {
    what: &'static str,
    places: &'static [Place],
    measure: Measure,
    goal: f64,
}

enum Measure {
    /// One crate strategy's deliveries/s over the other strategy's, in the scenario.
    Against(Strategy, Scenario, Strategy),
    /// Other callers' deliveries/s under the hot-key storm over the same work without it.
    StormKeep,
}

const PG: &[Place] = &[Place::Loopback, Place::Hop];

const TARGETS: [Target; 11] = [
    Target {
        what: "with a unique index, new keys: crate / ON CONFLICT, then SELECT",
        places: PG,
        measure: Measure::Against(Strategy::Crate, Scenario::NewKeys, Strategy::OnConflict),
        goal: 0.9,
    },
    Target {
        what: "with a unique index, duplicates x4: crate / ON CONFLICT, then SELECT",
        places: PG,
        measure: Measure::Against(
            Strategy::Crate,
            Scenario::Duplicates(4),
            Strategy::OnConflict,
        ),
        goal: 1.0,
    },
    Target {
        what: "late redeliveries: crate / plain sqlx SELECT by key",
        places: PG,
        measure: Measure::Against(Strategy::Crate, Scenario::Late, Strategy::Floor),
        goal: 1.0,
    },
    Target {
        what: "the lock path, new keys on loopback: crate / txn by hand",
        places: &[Place::Loopback],
        measure: Measure::Against(
            Strategy::CrateLocked,
            Scenario::NewKeys,
            Strategy::Transaction,
        ),
        goal: 1.0,
    },
    Target {
        what: "the lock path, new keys over a network hop: crate / txn by hand",
        places: &[Place::Hop],
        measure: Measure::Against(
            Strategy::CrateLocked,
            Scenario::NewKeys,
            Strategy::Transaction,
        ),
        goal: 1.3,
    },
    Target {
        what: "SQLite, new keys: crate / BEGIN IMMEDIATE by hand",
        places: &[Place::Sqlite],
        measure: Measure::Against(Strategy::Crate, Scenario::NewKeys, Strategy::Transaction),
        goal: 1.0,
    },
    Target {
        what: "SQLite, new keys: crate / ON CONFLICT, then SELECT",
        places: &[Place::Sqlite],
        measure: Measure::Against(Strategy::Crate, Scenario::NewKeys, Strategy::OnConflict),
        goal: 0.9,
    },
    Target {
        what: "MariaDB with a unique index, new keys: crate / INSERT IGNORE, then SELECT",
        places: &[Place::MariaDb],
        measure: Measure::Against(Strategy::Crate, Scenario::NewKeys, Strategy::InsertIgnore),
        goal: 0.9,
    },
    Target {
        what: "MariaDB, the lock path, new keys: crate / GET_LOCK by hand",
        places: &[Place::MariaDb],
        measure: Measure::Against(Strategy::CrateLocked, Scenario::NewKeys, Strategy::GetLock),
        goal: 1.0,
    },
    Target {
        what: "hot-key storm: other callers keep of their no-storm throughput",
        places: &[Place::Loopback, Place::Hop, Place::Sqlite],
        measure: Measure::StormKeep,
        goal: 0.8,
    },
    Target {
        what: "late redeliveries on SQLite: crate / plain sqlx SELECT by key",
        places: &[Place::Sqlite],
        measure: Measure::Against(Strategy::Crate, Scenario::Late, Strategy::Floor),
        goal: 0.9,
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
                    Measure::Against(mine, scenario, other) => {
                        ratio(runs, place, scenario, mine, other, t)
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
