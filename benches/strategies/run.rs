//! One measured run: a strategy, a scenario, a concurrency; and the hot-key storm beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::place::{Db, Place};
use crate::scenario::{Scenario, Size};
use crate::strategy::{Answer, BoxError, Strategy, deliver};
use crate::{HOT_KEYS, POOL, table};

/// One strategy, one scenario, one concurrency, at one place.
pub(crate) struct Run {
    pub(crate) place: Place,
    pub(crate) scenario: Scenario,
    pub(crate) strategy: Strategy,
    pub(crate) tasks: usize,
    pub(crate) deliveries: usize,
    pub(crate) elapsed: Duration,
    /// Sorted.
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) created: usize,
    pub(crate) expected_created: usize,
    pub(crate) rows: i64,
    pub(crate) distinct_keys: i64,
    pub(crate) storm: Option<StormTally>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StormTally {
    pub(crate) bursts: usize,
    pub(crate) deliveries: usize,
    pub(crate) errors: usize,
    /// From the first burst to the end of the last.
    pub(crate) elapsed: Duration,
    /// The slowest storm delivery (the hot key's callers pay for their key).
    pub(crate) max_latency: Duration,
}

impl Run {
    pub(crate) fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    pub(crate) fn correct(&self) -> bool {
        self.rows == self.distinct_keys && self.created == self.expected_created
    }
}

/// Opens every pooled connection and prepares every strategy's statements on them, so no
/// strategy pays for connecting or preparing inside its measurement.
pub(crate) async fn warm_up(db: &Db) -> Result<(), Box<dyn std::error::Error>> {
    for strategy in Strategy::ALL {
        if !strategy.runs(db.place, Scenario::NewKeys) {
            continue;
        }
        table::empty(db).await?;
        let handles: Vec<_> = (0..POOL as i64 * 2)
            .map(|task| {
                let db = db.clone();
                tokio::spawn(async move {
                    for key in 0..4 {
                        let key = task * 4 + key + 1;
                        let _ = deliver(&db, strategy, false, key).await;
                        let _ = deliver(&db, strategy, false, key).await;
                        let _ = deliver(&db, strategy, true, key).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await?;
        }
    }
    table::empty(db).await?;
    Ok(())
}

pub(crate) async fn run(
    db: &Db,
    scenario: Scenario,
    strategy: Strategy,
    tasks: usize,
    size: Size,
) -> Result<Run, Box<dyn std::error::Error>> {
    table::empty(db).await?;
    let deliveries = scenario.deliveries(match scenario {
        Scenario::Storm => size.storm_deliveries,
        Scenario::Late => size.late_deliveries,
        _ => size.deliveries,
    });
    let measured_keys = deliveries.iter().max().copied().unwrap_or(0);
    let rows_exist = scenario == Scenario::Late;
    if rows_exist {
        table::fill(db, deliveries.len()).await?;
    }
    let queue = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let measured_done = Arc::new(AtomicBool::new(false));

    let storm = (scenario == Scenario::Storm).then(|| {
        tokio::spawn(storm(
            db.clone(),
            strategy,
            size.storm_callers,
            size.storm_every,
            measured_done.clone(),
        ))
    });

    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (db, queue, next) = (db.clone(), queue.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = TaskTally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&key) = queue.get(i) else { break };
                    let t0 = Instant::now();
                    let answer = deliver(&db, strategy, rows_exist, key).await;
                    tally.latencies.push(t0.elapsed());
                    tally.count(answer);
                }
                tally
            })
        })
        .collect();
    let mut tally = TaskTally::default();
    for handle in handles {
        tally.merge(handle.await?);
    }
    let elapsed = started.elapsed();
    measured_done.store(true, Ordering::Relaxed);
    let storm = match storm {
        Some(handle) => Some(handle.await?),
        None => None,
    };

    let (rows, _) = table::count(db).await?;
    // Every key any delivery asked for (measured keys, and the storm's hot keys).
    let distinct_keys = measured_keys + storm.map_or(0, |s| s.bursts as i64);
    tally.latencies.sort();
    Ok(Run {
        place: db.place,
        scenario,
        strategy,
        tasks,
        deliveries: queue.len(),
        elapsed,
        latencies: tally.latencies,
        errors: tally.errors,
        first_error: tally.first_error,
        created: tally.created,
        expected_created: if rows_exist {
            0
        } else {
            measured_keys as usize
        },
        rows,
        distinct_keys,
        storm,
    })
}

#[derive(Default)]
struct TaskTally {
    latencies: Vec<Duration>,
    created: usize,
    errors: usize,
    first_error: Option<String>,
}

impl TaskTally {
    fn count(&mut self, answer: Result<Answer, BoxError>) {
        match answer {
            Ok(Answer::Created) => self.created += 1,
            Ok(Answer::Existing) => {}
            Err(e) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| short(&e.to_string()));
            }
        }
    }

    fn merge(&mut self, other: TaskTally) {
        self.latencies.extend(other.latencies);
        self.created += other.created;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn short(message: &str) -> String {
    message.chars().take(90).collect()
}

/// Bursts of `callers` simultaneous deliveries of one new key, one burst after another,
/// until the measured tasks are done.
async fn storm(
    db: Db,
    strategy: Strategy,
    callers: usize,
    every: Option<Duration>,
    done: Arc<AtomicBool>,
) -> StormTally {
    let mut tally = StormTally::default();
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let burst_started = tokio::time::Instant::now();
        let key = HOT_KEYS + tally.bursts as i64;
        tally.bursts += 1;
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let failed = deliver(&db, strategy, false, key).await.is_err();
                    (failed, t0.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (failed, latency) = handle.await.unwrap_or((true, Duration::ZERO));
            tally.deliveries += 1;
            tally.errors += usize::from(failed);
            tally.max_latency = tally.max_latency.max(latency);
        }
        if let Some(every) = every {
            tokio::time::sleep_until(burst_started + every).await;
        }
    }
    tally.elapsed = started.elapsed();
    tally
}
