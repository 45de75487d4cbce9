//! The benchmark's command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::per_call::Way;
use crate::place::Place;
use crate::scenario::{Scenario, Sizes};

/// What to run, where, and where the chart goes.
pub(crate) struct Options {
    /// `--quick`: small runs at 8 tasks only, for CI; still every place and strategy.
    pub(crate) quick: bool,
    /// How many deliveries a run has, per place, following from `quick`, and the storm's pace
    /// (`--storm-every-ms N`: a burst every N ms at most; 0 or absent: each as soon as the
    /// last is answered).
    pub(crate) sizes: Sizes,
    /// `--svg PATH`, else `benches/strategies.svg` (full) or `target/strategies-quick.svg`.
    pub(crate) svg: PathBuf,
    /// `--only new,dup4,...`, else new keys, duplicates x4, late redeliveries and the storm.
    pub(crate) scenarios: Vec<Scenario>,
    /// `--tasks 8,32` (the default; `--quick`: 8).
    pub(crate) tasks: Vec<usize>,
    /// `--network loopback|proxy|both|none` (PostgreSQL's places), `--no-sqlite` and
    /// `--no-mariadb`.
    pub(crate) places: Vec<Place>,
    /// `--delay-ms 1`: the delay the proxy adds in each direction.
    pub(crate) delay: Duration,
    /// `--fsync on|off`: the throwaway cluster's durability (on: PostgreSQL's defaults, every
    /// commit flushed; off: the tests' `fsync=off`, `synchronous_commit=off`,
    /// `full_page_writes=off`), SQLite's `synchronous` (FULL or OFF), and the throwaway
    /// MariaDB's `innodb_flush_log_at_trx_commit` (1, InnoDB's default; or the tests' 0).
    pub(crate) durable: bool,
    /// `--mariadb-isolation read-committed|repeatable-read`: the throwaway MariaDB's default
    /// isolation, for every strategy's sessions (REPEATABLE READ, MariaDB's default; the
    /// crate's one statement applies only on READ COMMITTED sessions).
    pub(crate) mariadb_read_committed: bool,
    /// `--per-call`: instead of the scenarios, one caller's late redeliveries, timed and
    /// costed per call (`per_call.rs`) at every place but the proxy.
    pub(crate) per_call: bool,
    /// `--batch`: the batch form against single calls and hand-written multi-row statements
    /// (`batch.rs`).
    pub(crate) batch: bool,
    /// `--ways sqlx,seaorm,crate,recorded` (all by default): which ways `--per-call` measures.
    pub(crate) ways: Vec<Way>,
    /// `--calls N`: calls per way and round for `--per-call` (20,000; `--quick`: 2,000).
    pub(crate) calls: usize,
}

const USAGE: &str = "try --quick, --svg PATH, --only new,dup4,dup16,late,storm, --tasks 8,32, \
     --network loopback|proxy|both|none, --no-sqlite, --no-mariadb, --delay-ms 1, --fsync on|off, --mariadb-isolation read-committed|repeatable-read, --storm-every-ms 100, --per-call, --batch, --ways sqlx,seaorm,crate,recorded, --calls 20000";

impl Options {
    /// Parses the process's arguments. `cargo bench` passes `--bench`; anything else unknown
    /// is a mistake worth reporting.
    pub(crate) fn from_args() -> Result<Options, String> {
        let mut quick = false;
        let mut svg: Option<PathBuf> = None;
        let mut scenarios = Scenario::DEFAULT.to_vec();
        let mut tasks: Option<Vec<usize>> = None;
        let mut network = vec![Place::Loopback, Place::Hop];
        let mut sqlite = true;
        let mut mariadb = true;
        let mut delay = Duration::from_millis(1);
        let mut durable = true;
        let mut mariadb_read_committed = false;
        let mut storm_every = None;
        let mut per_call = false;
        let mut batch = false;
        let mut ways = Way::ALL.to_vec();
        let mut calls = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value =
                |flag: &str| args.next().ok_or(format!("{flag} needs a value ({USAGE})"));
            match arg.as_str() {
                "--quick" => quick = true,
                "--svg" => svg = Some(value("--svg")?.into()),
                "--only" => scenarios = list(&value("--only")?, Scenario::parse)?,
                "--tasks" => {
                    tasks = Some(list(&value("--tasks")?, |t| {
                        t.parse().ok().filter(|&n| n > 0)
                    })?)
                }
                "--network" => {
                    network = match value("--network")?.as_str() {
                        "loopback" => vec![Place::Loopback],
                        "proxy" => vec![Place::Hop],
                        "both" => vec![Place::Loopback, Place::Hop],
                        "none" => vec![],
                        other => return Err(format!("unknown --network {other:?} ({USAGE})")),
                    }
                }
                "--no-sqlite" => sqlite = false,
                "--no-mariadb" => mariadb = false,
                "--delay-ms" => {
                    let ms: f64 = value("--delay-ms")?
                        .parse()
                        .map_err(|_| format!("--delay-ms takes milliseconds ({USAGE})"))?;
                    delay = Duration::try_from_secs_f64(ms / 1e3)
                        .map_err(|_| format!("--delay-ms {ms} is not a delay"))?;
                }
                "--fsync" => {
                    durable = match value("--fsync")?.as_str() {
                        "on" => true,
                        "off" => false,
                        other => return Err(format!("unknown --fsync {other:?} ({USAGE})")),
                    }
                }
                "--mariadb-isolation" => {
                    mariadb_read_committed = match value("--mariadb-isolation")?.as_str() {
                        "read-committed" => true,
                        "repeatable-read" => false,
                        other => {
                            return Err(format!("unknown --mariadb-isolation {other:?} ({USAGE})"));
                        }
                    }
                }
                "--storm-every-ms" => {
                    let ms: u64 = value("--storm-every-ms")?
                        .parse()
                        .map_err(|_| format!("--storm-every-ms takes milliseconds ({USAGE})"))?;
                    storm_every = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "--per-call" => per_call = true,
                "--batch" => batch = true,
                "--ways" => ways = list(&value("--ways")?, Way::parse)?,
                "--calls" => {
                    calls = Some(
                        value("--calls")?
                            .parse()
                            .ok()
                            .filter(|&n: &usize| n > 0)
                            .ok_or(format!("--calls takes a count ({USAGE})"))?,
                    )
                }
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?} ({USAGE})")),
            }
        }
        let svg = svg.unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            if quick {
                root.join("target").join("strategies-quick.svg")
            } else {
                root.join("benches").join("strategies.svg")
            }
        });
        let mut places = network;
        if sqlite {
            places.push(Place::Sqlite);
        }
        if mariadb {
            places.push(Place::MariaDb);
        }
        if places.is_empty() {
            return Err(format!(
                "nothing to run: --network none, --no-sqlite and --no-mariadb ({USAGE})"
            ));
        }
        Ok(Options {
            quick,
            sizes: if quick { Sizes::QUICK } else { Sizes::FULL }.with_storm_every(storm_every),
            svg,
            scenarios,
            tasks: tasks.unwrap_or(if quick { vec![8] } else { vec![8, 32] }),
            places,
            delay,
            durable,
            mariadb_read_committed,
            per_call,
            batch,
            ways,
            calls: calls.unwrap_or(if quick { 2_000 } else { 20_000 }),
        })
    }
}

/// `a,b,c`, each parsed by `parse`.
fn list<T>(names: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    names
        .split(',')
        .map(|name| parse(name).ok_or_else(|| format!("unknown value {name:?} ({USAGE})")))
        .collect()
}
