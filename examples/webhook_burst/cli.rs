//! The demo's flags.

use clap::Parser;

/// Simulates a burst of duplicate GitHub `pull_request` webhooks and stores each pull request
/// exactly once with `PullRequest::create_once`.
#[derive(Debug, Parser)]
#[command(name = "webhook_burst")]
pub(crate) struct Args {
    /// Distinct pull requests.
    #[arg(long, default_value_t = 1000)]
    pub(crate) prs: u32,
    /// Deliveries of each pull request, arriving at the same moment on different workers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) duplicates: u32,
    /// Workers delivering concurrently (also the size of the connection pool).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) concurrency: u32,
    /// The first GitHub pull-request id; the run uses ID..ID+prs, so runs can share or avoid
    /// keys. Default: 1; with --naive, the id after the highest one stored, so the naive code
    /// meets new pull requests (on stored ones it finds every row and has nothing to race for).
    #[arg(long)]
    pub(crate) first_pr_id: Option<i64>,
    /// Seed of the synthetic payloads and of the arrival order.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Run the usual unprotected code instead: find, then insert, no lock.
    #[arg(long)]
    pub(crate) naive: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Import N pull requests (from --first-pr-id) in one batch instead of the burst:
    /// `PullRequest::many(..)` in chunks of 500, with a progress bar moved by each chunk; stored
    /// ones come back existing.
    #[arg(long, value_name = "N")]
    pub(crate) backfill: Option<u32>,
    /// Database URL (default: DATABASE_URL, else an embedded SQLite file).
    #[arg(long)]
    pub(crate) database_url: Option<String>,
}

impl Args {
    /// The first pull-request id of the run, once `run` has chosen it (see `--first-pr-id`).
    pub(crate) fn first_pr_id(&self) -> i64 {
        self.first_pr_id.unwrap_or(1)
    }
}
