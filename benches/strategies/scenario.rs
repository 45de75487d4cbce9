//! The scenarios of the benchmark, and how big a run is.

use std::time::Duration;

use crate::place::Place;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scenario {
    NewKeys,
    Duplicates(usize),
    Late,
    Storm,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 5] = [
        Scenario::NewKeys,
        Scenario::Duplicates(4),
        Scenario::Duplicates(16),
        Scenario::Late,
        Scenario::Storm,
    ];

    /// What runs without `--only`: the scenarios of issue 25's targets.
    pub(crate) const DEFAULT: [Scenario; 4] = [
        Scenario::NewKeys,
        Scenario::Duplicates(4),
        Scenario::Late,
        Scenario::Storm,
    ];

    /// The scenario `--only` calls `name`.
    pub(crate) fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.short() == name)
    }

    /// The name `--only` takes.
    pub(crate) fn short(self) -> String {
        match self {
            Scenario::NewKeys => "new".into(),
            Scenario::Duplicates(n) => format!("dup{n}"),
            Scenario::Late => "late".into(),
            Scenario::Storm => "storm".into(),
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            Scenario::NewKeys => "new keys".into(),
            Scenario::Duplicates(n) => format!("duplicates x{n}"),
            Scenario::Late => "late redeliveries".into(),
            Scenario::Storm => "hot-key storm (others)".into(),
        }
    }

    /// The measured deliveries, in queue order: duplicates of a key are adjacent, so that the
    /// tasks take them at the same moment.
    pub(crate) fn deliveries(self, keys: usize) -> Vec<i64> {
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
pub(crate) struct Size {
    /// Measured deliveries per run (divisible by 16).
    pub(crate) deliveries: usize,
    /// Measured deliveries per late-redeliveries run: a look is cheap, so more of them are
    /// needed for a run long enough to rise above the noise of a shared machine.
    pub(crate) late_deliveries: usize,
    /// Measured deliveries per hot-key storm run (the other callers' distinct keys).
    pub(crate) storm_deliveries: usize,
    /// Callers per burst of the hot-key storm.
    pub(crate) storm_callers: usize,
    /// `--storm-every-ms`: a burst starts this long after the one before started, or when
    /// that one is answered if it took longer (the same storm for every strategy that keeps
    /// up); `None`: as soon as the one before is answered (a closed loop, so a strategy that
    /// answers storms faster is sent more of them).
    pub(crate) storm_every: Option<Duration>,
    /// Runs per strategy, scenario and concurrency (the median is reported; the storm runs
    /// once).
    pub(crate) repetitions: usize,
}

/// How big a run is at each place: each takes about as long. Through the delay proxy every
/// statement waits for the delay, and on SQLite every durable commit waits for its own flush
/// (there is no group commit across connections), so runs there are smaller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) loopback: Size,
    pub(crate) hop: Size,
    pub(crate) sqlite: Size,
    pub(crate) mariadb: Size,
}

impl Sizes {
    /// Every place's storm paced as `--storm-every-ms` says.
    pub(crate) fn with_storm_every(mut self, every: Option<Duration>) -> Sizes {
        for size in [
            &mut self.loopback,
            &mut self.hop,
            &mut self.sqlite,
            &mut self.mariadb,
        ] {
            size.storm_every = every;
        }
        self
    }

    /// The size of runs at `place`.
    pub(crate) fn at(self, place: Place) -> Size {
        match place {
            Place::Loopback => self.loopback,
            Place::Hop => self.hop,
            Place::Sqlite => self.sqlite,
            Place::MariaDb => self.mariadb,
        }
    }

    pub(crate) const FULL: Sizes = Sizes {
        loopback: Size {
            deliveries: 2_400,
            late_deliveries: 12_000,
            storm_deliveries: 960,
            storm_callers: 200,
            storm_every: None,
            repetitions: 3,
        },
        hop: Size {
            deliveries: 800,
            late_deliveries: 1_600,
            storm_deliveries: 320,
            storm_callers: 200,
            storm_every: None,
            repetitions: 3,
        },
        sqlite: Size {
            deliveries: 1_200,
            late_deliveries: 9_600,
            storm_deliveries: 480,
            storm_callers: 200,
            storm_every: None,
            repetitions: 3,
        },
        mariadb: Size {
            deliveries: 1_200,
            late_deliveries: 6_000,
            storm_deliveries: 480,
            storm_callers: 200,
            storm_every: None,
            repetitions: 3,
        },
    };

    /// Every place and strategy once, in seconds: for CI, so the benchmark cannot rot.
    pub(crate) const QUICK: Sizes = Sizes {
        loopback: QUICK_SIZE,
        hop: Size {
            deliveries: 48,
            late_deliveries: 48,
            storm_deliveries: 32,
            ..QUICK_SIZE
        },
        sqlite: QUICK_SIZE,
        mariadb: QUICK_SIZE,
    };
}

const QUICK_SIZE: Size = Size {
    deliveries: 96,
    late_deliveries: 96,
    storm_deliveries: 64,
    storm_callers: 50,
    storm_every: None,
    repetitions: 1,
};
