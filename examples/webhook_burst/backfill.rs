//! `--backfill N`: import N pull requests in one batch (the batch form, `PullRequest::many`,
//! its chunks' outcomes handed over one at a time), with a progress bar, instead of the burst of
//! single deliveries.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use entity::PullRequest;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sea_orm::DatabaseConnection;
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome};

/// Items per chunk (one transaction) of the batch.
const CHUNK: usize = 500;

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

/// Imports pull requests `first..first + count` in one batch,
/// `PullRequest::many(items).for_each_chunk(&db, ..)`: per chunk of [`CHUNK`] the keys' locks
/// in one statement, one look and one multi-row insert. The items are made as the batch pulls
/// them and each chunk's outcomes are counted and dropped as it hands them over, so memory
/// stays that of one chunk however large `count` is.
pub(crate) async fn backfill(
    db: &DatabaseConnection,
    first: i64,
    count: u32,
) -> Result<Backfilled, Error> {
    let started = Instant::now();
    let bar = progress_bar(count as u64);
    let (mut created, mut existing) = (0, 0);
    let items = (0..i64::from(count)).map(|i| (first + i, test_support::new_pr(first + i)));
    PullRequest::many(items)
        .chunk_size(CHUNK)
        .for_each_chunk(db, |_, outcomes| {
            for outcome in &outcomes {
                match outcome {
                    Outcome::Created(_) => created += 1,
                    Outcome::Existing(_) => existing += 1,
                }
            }
            bar.inc(outcomes.len() as u64);
        })
        .await?;
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
