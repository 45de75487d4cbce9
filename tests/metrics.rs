//! The `metrics` feature (src/metrics.rs): every call counted by entity, outcome and error kind,
//! every lock wait timed, through the `metrics` facade, here into a recorder of the test's own.
//! The test support turns the feature on, so `cargo test --workspace` runs this file.

#![cfg(all(feature = "metrics", feature = "sqlite"))]

mod common;

use std::sync::{Arc, Mutex};

use entity::PullRequest;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, TransactionTrait};
use sea_orm_idempotent::{IdempotentCreate, Wait};

/// Every value recorded: the metric's name, its labels, the value.
type Recorded = Arc<Mutex<Vec<(String, Vec<(String, String)>, f64)>>>;

struct Capture(Recorded);

struct Handle {
    key: Key,
    recorded: Recorded,
}

impl Handle {
    fn push(&self, value: f64) {
        let labels = self
            .key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        self.recorded
            .lock()
            .unwrap()
            .push((self.key.name().to_owned(), labels, value));
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.push(value as f64);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: key.clone(),
            recorded: self.0.clone(),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle {
            key: key.clone(),
            recorded: self.0.clone(),
        }))
    }
}

/// How many calls were counted with these labels.
fn calls(recorded: &Recorded, outcome: &str, error_kind: &str) -> f64 {
    recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, labels, _)| {
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            name == "sea_orm_idempotent_calls_total"
                && label("entity") == Some("pull_requests")
                && label("outcome") == Some(outcome)
                && label("error_kind") == Some(error_kind)
        })
        .map(|(_, _, value)| value)
        .sum()
}

#[tokio::test]
async fn calls_are_counted_by_outcome_and_error_kind_and_waits_are_timed() {
    let recorded = Recorded::default();
    metrics::set_global_recorder(Capture(recorded.clone())).expect("the test's recorder");
    let dir = common::TempDir::new("metrics");
    let url = dir.sqlite_url("metrics.db");
    let db = test_support::connect(&url, 2).await;
    Migrator::up(&db, None).await.unwrap();

    let pr = |pr_id: i64| PullRequest::create_once(&db, pr_id, common::new_pr(pr_id));
    assert!(pr(1).await.unwrap().is_created());
    assert!(!pr(1).await.unwrap().is_created());
    // Another connection holds SQLite's write lock: `Wait::No` answers `LockBusy` at once.
    let holder = test_support::connect(&url, 1).await;
    let held = holder
        .begin_with_config(None, None)
        .await
        .expect("a transaction");
    held.execute_unprepared("DELETE FROM pull_requests WHERE 0")
        .await
        .unwrap();
    let busy = PullRequest::once(2, common::new_pr(2))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap_err();
    assert_eq!(busy.kind(), "lock_busy", "{busy:?}");
    held.rollback().await.unwrap();

    assert_eq!(calls(&recorded, "created", ""), 1.0);
    assert_eq!(calls(&recorded, "existing", ""), 1.0);
    assert_eq!(calls(&recorded, "error", "lock_busy"), 1.0);
    let waits = recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _, _)| name == "sea_orm_idempotent_lock_wait_seconds")
        .count();
    assert!(waits >= 1, "the creating call's lock wait is timed");
}
