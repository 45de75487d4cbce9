//! `--backfill N`: import N pull requests in batches (the batch form, `PullRequest::many`),
//! with a progress bar, instead of the burst of single deliveries.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use entity::PullRequest;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sea_orm::DatabaseConnection;
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome};

/// Items per batch, and per chunk (one transaction) of each batch.
const BATCH: usize = 500;

/// What a backfill did.
pub(crate) struct Backfilled {
    pub(crate) created: u64,
    pub(crate) existing: u64,
    pub(crate) elapsed: Duration,
}

impl fmt::Display for Backfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.created + self.existing;
        let rate = total as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON);
        writeln!(
            f,
            "backfill: {total} pull requests in {:.2} s ({rate:.0}/s): created {}, existing {}",
            self.elapsed.as_secs_f64(),
            self.created,
            self.existing
        )
    }
}

/// Imports pull requests `first..first + count` in batches of [`BATCH`], each one
/// `PullRequest::many(items).exec(&db)`: per chunk the keys' locks in one statement, one look
/// and one multi-row insert.
pub(crate) async fn backfill(
    db: &DatabaseConnection,
    first: i64,
    count: u32,
) -> Result<Backfilled, Error> {
    let started = Instant::now();
    let bar = progress_bar(count as u64);
    let (mut created, mut existing) = (0, 0);
    let ids: Vec<i64> = (0..i64::from(count)).map(|i| first + i).collect();
    for batch in ids.chunks(BATCH) {
        let items = batch
            .iter()
            .map(|&pr_id| (pr_id, test_support::new_pr(pr_id)));
        let outcomes = PullRequest::many(items).chunk_size(BATCH).exec(db).await?;
        for outcome in &outcomes {
            match outcome {
                Outcome::Created(_) => created += 1,
                Outcome::Existing(_) => existing += 1,
            }
        }
        bar.inc(outcomes.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Backfilled {
        created,
        existing,
        elapsed: started.elapsed(),
    })
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total == 0 {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len}  {rate}  ETA {eta}")
        .expect("a valid template")
        .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
            let _ = write!(out, "{:.0} pull requests/s", state.per_sec());
        });
    ProgressBar::new(total).with_style(style)
}
