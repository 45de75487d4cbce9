//! `--per-call`: what one late redelivery costs the client, one caller at a time, so that the
//! crate's own work is not hidden behind concurrency: wall time and the process's CPU
//! (`getrusage`: user, and user + system) per call, for
//!
//! - the plain sqlx `SELECT` by key (the floor of the late-redeliveries scenario),
//! - the same `SELECT` through SeaORM (`find_by_statement(..).one(..)`, the text built once), the
//!   way the crate sends its look: what SeaORM's statement path and decoding cost,
//! - `create_once`, with no tracing subscriber,
//! - `create_once` while a subscriber formats its span (a `tracing_subscriber` `fmt` layer
//!   writing to a sink): what the span costs when it is recorded.
//!
//! On PostgreSQL and MariaDB the server is another process, so the CPU is the client's alone;
//! on SQLite the database runs in the process and is counted too. Through the delay proxy the
//! relay runs in the process as well, so that place is left out. The waiting room's share is
//! not separable from the rest of the call here; BENCHMARKS.md has a profile that shows it.

use std::time::{Duration, Instant};

use entity::PullRequest;
use entity::pull_requests::{Column, Model};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryTrait, Statement};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

use crate::place::Db;
use crate::strategy::{Answer, BoxError, Strategy, deliver};
use crate::table;

/// Distinct keys the calls cycle through; every row exists before the first measured call.
const KEYS: usize = 1_000;
/// Rounds, each measuring every way once in turn; the median round of each way is kept.
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Way {
    Floor,
    SeaOrm,
    Crate,
    CrateRecorded,
}

impl Way {
    pub(crate) const ALL: [Way; 4] = [Way::Floor, Way::SeaOrm, Way::Crate, Way::CrateRecorded];

    /// The name `--ways` takes.
    pub(crate) fn parse(name: &str) -> Option<Way> {
        Way::ALL.into_iter().find(|way| way.short() == name)
    }

    fn short(self) -> &'static str {
        match self {
            Way::Floor => "sqlx",
            Way::SeaOrm => "seaorm",
            Way::Crate => "crate",
            Way::CrateRecorded => "recorded",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Way::Floor => "plain sqlx `SELECT` by key",
            Way::SeaOrm => "the same `SELECT` through SeaORM (`find_by_statement`)",
            Way::Crate => "`create_once`, no subscriber",
            Way::CrateRecorded => "`create_once`, a `fmt` subscriber recording its span",
        }
    }
}

/// Per call, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: f64,
    user: f64,
    user_and_system: f64,
}

/// Measures `calls` late redeliveries per way and round at `db`, one after another on one task,
/// and returns a Markdown table. (`--ways` picks some, say to count one way's instructions
/// under callgrind.)
pub(crate) async fn per_call(db: &Db, ways: &[Way], calls: usize) -> Result<String, BoxError> {
    table::empty(db).await?;
    table::fill(db, KEYS).await?;
    let mut measured: Vec<Vec<Cost>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, &way) in ways.iter().enumerate() {
            measured[i].push(measure(db, way, calls).await?);
        }
    }
    let mut table = String::from(
        "| one caller, late redeliveries | wall µs/call | user CPU µs/call | user + system µs/call |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    for (&way, mut costs) in ways.iter().zip(measured) {
        costs.sort_by(|a, b| a.user.total_cmp(&b.user));
        let median = costs[costs.len() / 2];
        table.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} |\n",
            way.name(),
            median.wall,
            median.user,
            median.user_and_system
        ));
    }
    table::empty(db).await?;
    Ok(table)
}

async fn measure(db: &Db, way: Way, calls: usize) -> Result<Cost, BoxError> {
    let backend = db.orm.get_database_backend();
    let look = PullRequest::find()
        .filter(Column::PrId.eq(0_i64))
        .build(backend)
        .sql;
    let calls_in_a_row = async {
        for call in 0..calls {
            let key = (call % KEYS) as i64 + 1;
            let answer = match way {
                Way::Floor => deliver(db, Strategy::Floor, true, key).await?,
                Way::SeaOrm => {
                    let statement = Statement::from_sql_and_values(backend, &look, [key.into()]);
                    match Model::find_by_statement(statement).one(&db.orm).await? {
                        Some(_) => Answer::Existing,
                        None => return Err(format!("key {key} is missing").into()),
                    }
                }
                Way::Crate | Way::CrateRecorded => deliver(db, Strategy::Crate, true, key).await?,
            };
            if let Answer::Created = answer {
                return Err(format!("key {key} was created again").into());
            }
        }
        Ok::<(), BoxError>(())
    };
    let (cpu_before, started) = (cpu(), Instant::now());
    match way {
        Way::Floor | Way::SeaOrm | Way::Crate => calls_in_a_row.await?,
        Way::CrateRecorded => {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
            calls_in_a_row.with_subscriber(subscriber).await?;
        }
    }
    let wall = started.elapsed();
    let cpu_after = cpu();
    let per_call = |spent: Duration| spent.as_secs_f64() * 1e6 / calls as f64;
    Ok(Cost {
        wall: per_call(wall),
        user: per_call(cpu_after.0 - cpu_before.0),
        user_and_system: per_call(cpu_after.1 - cpu_before.1),
    })
}

/// The process's CPU time so far: user, and user + system.
pub(crate) fn cpu() -> (Duration, Duration) {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage of this process");
    let duration = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec() as u64) + Duration::from_micros(time.tv_usec() as u64)
    };
    let user = duration(usage.user_time());
    (user, user + duration(usage.system_time()))
}
