//! What the run reports: the lock waits `create_once` records on its tracing span, and the
//! summary (a table, or `--json`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DbBackend;
use tracing::field::{Field, Visit};
use tracing::span::{Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::Args;

/// The `lock_wait_us` values `create_once` records on its `create_once` span, collected by a
/// tracing layer: the time each call waited for its lock (PostgreSQL: the advisory lock;
/// SQLite: `BEGIN IMMEDIATE`, the write lock).
#[derive(Clone, Default)]
pub(crate) struct LockWaits(Arc<Mutex<Vec<u64>>>);

impl LockWaits {
    pub(crate) fn sorted(&self) -> Vec<u64> {
        let mut waits = self.0.lock().unwrap().clone();
        waits.sort_unstable();
        waits
    }
}

impl<S> Layer<S> for LockWaits
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if ctx
            .metadata(span)
            .is_some_and(|m| m.name() == "create_once")
        {
            let mut visitor = LockWaitField(None);
            values.record(&mut visitor);
            if let Some(waited) = visitor.0 {
                self.0.lock().unwrap().push(waited);
            }
        }
    }
}

struct LockWaitField(Option<u64>);

impl Visit for LockWaitField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "lock_wait_us" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// The outcome of a run.
pub(crate) struct Summary {
    pub(crate) backend: DbBackend,
    pub(crate) args: Args,
    pub(crate) deliveries: u64,
    pub(crate) created: u64,
    pub(crate) existing: u64,
    pub(crate) errors_by_kind: BTreeMap<&'static str, u64>,
    pub(crate) rows: u64,
    pub(crate) elapsed: Duration,
    pub(crate) lock_waits_us: Vec<u64>,
}

impl Summary {
    pub(crate) fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    fn strategy(&self) -> &'static str {
        if self.args.naive {
            "naive"
        } else {
            "create_once"
        }
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            DbBackend::MySql => "mysql",
            _ => "other",
        }
    }

    fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "database": self.backend_name(),
            "strategy": self.strategy(),
            "prs": self.args.prs,
            "duplicates": self.args.duplicates,
            "concurrency": self.args.concurrency,
            "first_pr_id": self.args.first_pr_id(),
            "seed": self.args.seed,
            "deliveries": self.deliveries,
            "created": self.created,
            "existing": self.existing,
            "errors": self.errors(),
            "errors_by_kind": self.errors_by_kind,
            "rows": self.rows,
            "seconds": self.elapsed.as_secs_f64(),
            "deliveries_per_second": self.per_second(),
            "lock_wait_us": {
                "samples": self.lock_waits_us.len(),
                "p50": percentile(&self.lock_waits_us, 50.0),
                "p99": percentile(&self.lock_waits_us, 99.0),
            },
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        writeln!(
            f,
            "{} pull requests x {} deliveries, {} workers, {} on {}",
            a.prs,
            a.duplicates,
            a.concurrency,
            self.strategy(),
            self.backend_name()
        )?;
        writeln!(f, "  deliveries            {}", self.deliveries)?;
        writeln!(f, "  created               {}", self.created)?;
        writeln!(f, "  duplicates absorbed   {}", self.existing)?;
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        if kinds.is_empty() {
            writeln!(f, "  errors                0")?;
        } else {
            writeln!(
                f,
                "  errors                {}  ({})",
                self.errors(),
                kinds.join(", ")
            )?;
        }
        let last = a.first_pr_id() + i64::from(a.prs) - 1;
        writeln!(
            f,
            "  rows in table         {}  (pr_id {}..={last})",
            self.rows,
            a.first_pr_id()
        )?;
        writeln!(
            f,
            "  throughput            {:.0} deliveries/s  ({:.2} s)",
            self.per_second(),
            self.elapsed.as_secs_f64()
        )?;
        let ms = |us: Option<u64>| us.map_or(0.0, |us| us as f64 / 1000.0);
        match self.lock_waits_us.len() {
            0 if a.naive => writeln!(f, "  lock wait p50/p99     none: --naive takes no lock"),
            0 => writeln!(
                f,
                "  lock wait p50/p99     none: every delivery found its row"
            ),
            n => writeln!(
                f,
                "  lock wait p50/p99     {:.2} ms / {:.2} ms  ({n} calls took the lock)",
                ms(percentile(&self.lock_waits_us, 50.0)),
                ms(percentile(&self.lock_waits_us, 99.0)),
            ),
        }
    }
}
