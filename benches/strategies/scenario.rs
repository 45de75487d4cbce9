//! The scenarios of the benchmark, and how big a run is.

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
    /// Measured deliveries per hot-key storm run (the other callers' distinct keys).
    pub(crate) storm_deliveries: usize,
    /// Callers per burst of the hot-key storm.
    pub(crate) storm_callers: usize,
    /// Runs per strategy, scenario and concurrency (the median is reported; the storm runs
    /// once).
    pub(crate) repetitions: usize,
}

pub(crate) const FULL: Size = Size {
    deliveries: 1_600,
    storm_deliveries: 640,
    repetitions: 3,
    storm_callers: 200,
};
pub(crate) const QUICK: Size = Size {
    deliveries: 160,
    storm_deliveries: 160,
    repetitions: 1,
    storm_callers: 100,
};
