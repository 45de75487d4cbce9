//! The workers: `--concurrency` tasks taking the next delivery from one queue, the counts of
//! what came back, and the progress bar.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sea_orm::{DatabaseConnection, DbErr, SqlErr};
use sea_orm_idempotent::Error;

use crate::deliveries::Delivery;

/// Hands `deliveries` to `concurrency` workers, each storing the next one with
/// [`crate::deliver`] (`naive`: the find-then-insert instead), and counts what came back.
pub(crate) async fn deliver_all(
    db: &DatabaseConnection,
    deliveries: Arc<Vec<Delivery>>,
    concurrency: u32,
    naive: bool,
) -> Result<Stats, tokio::task::JoinError> {
    let stats = Arc::new(Stats::default());
    let progress = progress_bar(deliveries.len());
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (db, deliveries, stats, next, progress) = (
                db.clone(),
                deliveries.clone(),
                stats.clone(),
                next.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = crate::deliver(&db, delivery, naive).await;
                    stats.count(delivery, result);
                    progress.inc(1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    progress.finish_and_clear();
    Ok(Arc::into_inner(stats).expect("the workers are done"))
}

/// A progress bar on stderr with the rate and the time left; hidden when stderr is not a
/// terminal (piped, `--json` into a file, CI).
fn progress_bar(total: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total == 0 {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len}  {rate}  ETA {eta}")
        .expect("a valid template")
        .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
            let _ = write!(out, "{:.0} deliveries/s", state.per_sec());
        })
        .progress_chars("#>.");
    ProgressBar::new(total as u64).with_style(style)
}

/// Counts of the deliveries done so far.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) created: AtomicU64,
    pub(crate) existing: AtomicU64,
    pub(crate) errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The first few error messages, shown after the table.
    pub(crate) first_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn count(&self, delivery: &Delivery, result: Result<bool, Error>) {
        match result {
            Ok(true) => self.created.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.existing.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                *self
                    .errors
                    .lock()
                    .unwrap()
                    .entry(error_kind(&err))
                    .or_default() += 1;
                let mut first = self.first_errors.lock().unwrap();
                if first.len() < 3 {
                    first.push(format!("pr_id {}: {err}", delivery.pr_id));
                }
                0
            }
        };
    }
}

/// The kind of a failed delivery, as the summary groups them.
fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::LockTimeout { .. } => "lock_timeout",
        Error::LockBusy { .. } => "lock_busy",
        Error::Deadlock { .. } => "deadlock",
        Error::UnsafeIsolation { .. } => "unsafe_isolation",
        Error::UnsupportedBackend { .. } => "unsupported_backend",
        Error::MakeData(_) => "make_data",
        Error::Database(db_err) => match db_err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => "unique_violation",
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => "foreign_key_violation",
            _ if matches!(db_err, DbErr::ConnectionAcquire(_)) => "connection_acquire",
            _ if err.is_retryable() => "database_transient",
            _ => "database",
        },
        _ => "other",
    }
}
