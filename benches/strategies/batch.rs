//! `--batch`: issue 27's target for the batch form. On each place (PostgreSQL on loopback and
//! through the proxy, SQLite, MariaDB): 10,000 new keys stored by
//!
//! 1. the crate's batch, `PullRequest::many(items).chunk_size(500).exec(&db)`, one task;
//! 2. single `create_once` calls from 8 tasks over the same pool;
//! 3. by hand (PostgreSQL and SQLite), per chunk of 500 in one transaction: a multi-row
//!    `INSERT ... ON CONFLICT (pr_id) DO NOTHING RETURNING *`, then a `SELECT` of the keys it
//!    did not return (none, for new keys), then `COMMIT`;
//!
//! each on an empty table, the ways interleaved, the median of three rounds kept. The targets:
//! the batch at least 10x the single calls, and at least 0.8x the hand-written statements.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use entity::{NewPullRequest, PullRequest};
use sea_orm::sqlx::QueryBuilder;
use sea_orm_idempotent::IdempotentCreate;
use test_support::new_pr;

use crate::per_call::cpu;
use crate::place::{Db, Place, Raw};
use crate::row::model;
use crate::strategy::BoxError;
use crate::table;

/// New keys per measured run.
pub(crate) const KEYS: i64 = 10_000;
/// Items per chunk (the crate's batch) and per transaction (by hand).
const CHUNK: usize = 500;
/// Tasks of the single calls.
const SINGLE_TASKS: usize = 8;
/// Rounds; the median is kept.
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Batch,
    Singles,
    ByHand,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Batch => "many(..).chunk_size(500) (crate)",
            Way::Singles => "create_once, 8 tasks (crate)",
            Way::ByHand => "INSERT .. ON CONFLICT DO NOTHING RETURNING + SELECT, by hand",
        }
    }
}

fn items(keys: std::ops::Range<i64>) -> Vec<(i64, NewPullRequest)> {
    keys.map(|k| (k, new_pr(k))).collect()
}

/// What one run of a way took: wall time, and this process's user + system CPU (the client's
/// alone where the server is another process: PostgreSQL and MariaDB).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Spent {
    wall: Duration,
    client_cpu: Duration,
}

/// One run of `way` on an empty table: what it took, after checking every key has its row.
async fn run(db: &Db, way: Way) -> Result<Spent, BoxError> {
    table::empty(db).await?;
    let cpu_before = cpu().1;
    let started = Instant::now();
    match way {
        Way::Batch => {
            let outcomes = PullRequest::many(items(1..KEYS + 1))
                .chunk_size(CHUNK)
                .exec(&db.orm)
                .await?;
            if !outcomes.iter().all(|outcome| outcome.is_created()) {
                return Err("the batch met stored keys on an empty table".into());
            }
        }
        Way::Singles => {
            let next = Arc::new(AtomicI64::new(1));
            let tasks: Vec<_> = (0..SINGLE_TASKS)
                .map(|_| {
                    let (db, next) = (db.orm.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let key = next.fetch_add(1, Ordering::Relaxed);
                            if key > KEYS {
                                return Ok::<_, sea_orm_idempotent::Error>(());
                            }
                            PullRequest::create_once(&db, key, new_pr(key)).await?;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
        }
        Way::ByHand => by_hand(&db.raw).await?,
    }
    let spent = Spent {
        wall: started.elapsed(),
        client_cpu: cpu().1 - cpu_before,
    };
    let (rows, _) = table::count(db).await?;
    if rows != KEYS {
        return Err(format!("{} stored {rows} rows of {KEYS}", way.name()).into());
    }
    Ok(spent)
}

/// Way 3 on PostgreSQL or SQLite.
async fn by_hand(raw: &Raw) -> Result<(), BoxError> {
    macro_rules! chunks {
        ($pool:expr) => {{
            for start in (1..=KEYS).step_by(CHUNK) {
                let keys: Vec<i64> = (start..(start + CHUNK as i64).min(KEYS + 1)).collect();
                let mut txn = $pool.begin().await?;
                let mut insert = QueryBuilder::new(
                    "INSERT INTO pull_requests (pr_id, repository, number, title, author, state, \
                     head_sha, first_delivery_id, updated_at) ",
                );
                insert.push_values(&keys, |mut row, &key| {
                    let data = new_pr(key);
                    row.push_bind(key)
                        .push_bind(data.repository)
                        .push_bind(data.number)
                        .push_bind(data.title)
                        .push_bind(data.author)
                        .push_bind(data.state)
                        .push_bind(data.head_sha)
                        .push_bind(data.delivery_id)
                        .push_bind(data.updated_at);
                });
                insert.push(" ON CONFLICT (pr_id) DO NOTHING RETURNING *");
                let inserted = insert.build().fetch_all(&mut *txn).await?;
                let mut models = Vec::with_capacity(keys.len());
                for row in &inserted {
                    models.push(model(row)?);
                }
                let missing: Vec<i64> = keys
                    .iter()
                    .copied()
                    .filter(|k| !models.iter().any(|m| m.pr_id == *k))
                    .collect();
                if !missing.is_empty() {
                    let mut select =
                        QueryBuilder::new("SELECT * FROM pull_requests WHERE pr_id IN (");
                    let mut list = select.separated(", ");
                    for key in &missing {
                        list.push_bind(*key);
                    }
                    select.push(")");
                    for row in select.build().fetch_all(&mut *txn).await? {
                        models.push(model(&row)?);
                    }
                }
                txn.commit().await?;
                if models.len() != keys.len() {
                    return Err("by hand: a key without its row".into());
                }
            }
        }};
    }
    match raw {
        Raw::Pg(pool) => chunks!(pool),
        Raw::Sqlite(pool) => chunks!(pool),
        Raw::MySql(_) => return Err("no ON CONFLICT ... RETURNING on MariaDB".into()),
    }
    Ok(())
}

/// The report of one place: each way's median rate, and the two ratios against the targets.
pub(crate) async fn batch(db: &Db) -> Result<String, BoxError> {
    let mut ways = vec![Way::Batch, Way::Singles];
    if db.place != Place::MariaDb {
        ways.push(Way::ByHand);
    }
    let mut runs: Vec<Vec<Spent>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, &way) in ways.iter().enumerate() {
            runs[i].push(run(db, way).await?);
        }
    }
    // The median run by wall time, and its client CPU.
    let medians: Vec<Spent> = runs
        .iter_mut()
        .map(|runs| {
            runs.sort();
            runs[runs.len() / 2]
        })
        .collect();
    let rates: Vec<f64> = medians
        .iter()
        .map(|spent| KEYS as f64 / spent.wall.as_secs_f64())
        .collect();
    let mut out = String::from(
        "| way | keys/s (median of 3) | client CPU, µs per key |\n| --- | ---: | ---: |\n",
    );
    for ((way, rate), spent) in ways.iter().zip(&rates).zip(&medians) {
        let cpu_per_key = spent.client_cpu.as_secs_f64() * 1e6 / KEYS as f64;
        out.push_str(&format!(
            "| {} | {rate:.0} | {cpu_per_key:.1} |\n",
            way.name()
        ));
    }
    out.push_str(&format!(
        "\nbatch / single calls: {:.1}x (target >= 10x)",
        rates[0] / rates[1]
    ));
    if let Some(by_hand) = rates.get(2) {
        out.push_str(&format!(
            "; batch / by hand: {:.2}x (target >= 0.8x)",
            rates[0] / by_hand
        ));
    }
    out.push('\n');
    Ok(out)
}
