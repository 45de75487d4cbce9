//! # `lock_holders`: who holds (and who waits for) an advisory lock right now
//!
//! When a `create_once` is slow or times out, it is waiting for another session that holds the
//! same key. This program prints the advisory locks held and awaited in a PostgreSQL database,
//! read from `pg_locks` with their keys decoded back into `LockKey`s, joined with
//! `pg_stat_activity`: the session's pid, state, how long it has held or waited (its
//! transaction's age), its `application_name`, whom a waiter waits for, and its statement.
//! With `--pr ID` only the key `PullRequest::create_once` locks for that GitHub
//! pull-request id (`PullRequest::lock_holders`); with `--key N` only `LockKey::BigInt(N)`
//! (the key of the Python recipe `pg_advisory_xact_lock(zlib.crc32(name))`, or any `int8`).
//! `--probe` first checks that the server's advisory locks really lock
//! (`probe_advisory_locks`: one key, two connections).
//!
//! ## Run it
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app cargo run --example lock_holders
//! cargo run --example lock_holders -- --database-url postgres://... --pr 123
//! cargo run --example lock_holders -- --key 3670997212 --probe
//! ```
//!
//! PostgreSQL only (SQLite has no advisory locks). To see other roles' statements the role
//! needs `pg_read_all_stats`; otherwise PostgreSQL shows `<insufficient privilege>`. Exit
//! status 0 when it printed the table (even an empty one), 1 when the query or the probe
//! failed, 2 when it could not start.
//!
//! ## Poke it
//!
//! Hold pull request 123's key in one `psql` session and wait for it in another (the numbers
//! are `LockKey::for_entity("pull_requests", &123)`), then run `--pr 123`:
//!
//! ```text
//! psql app -c "SET application_name = 'holder'" \
//!          -c "BEGIN" -c "SELECT pg_advisory_xact_lock(724609916, -2008521774)" -c "SELECT pg_sleep(60)" &
//! psql app -c "SET application_name = 'waiter'" \
//!          -c "BEGIN" -c "SELECT pg_advisory_xact_lock(724609916, -2008521774)" &
//! cargo run --example lock_holders -- --pr 123
//! ```
//!
//! prints (the holder's transaction is 2.5 s old, the waiter has waited 0.97 s for pid 18964):
//!
//! ```text
//! key                          mode      status      pid state                     for application      blocked by query
//! (724609916, -2008521774)     exclusive held      18964 active                 2.466s holder           -          SELECT pg_sleep(60)
//! (724609916, -2008521774)     exclusive waiting   19013 active                 0.965s waiter           18964      SELECT pg_advisory_xact_lock(724609916, -2008521774)
//! ```
//!
//! A `create_once` that holds the key between statements shows as `idle in transaction`, and
//! one that waits shows the crate's own wait statement
//! (`DO $wait$ ... pg_advisory_xact_lock(...)`).
//! `for` is how long the session's transaction has been open: the holder's hold, and the
//! waiter's whole wait when it asked for the key first in its transaction, as `create_once`
//! does (`Wait::Forever` waits in slices, one statement each, so the statement's age would
//! show only the last slice); `blocked by` is `pg_blocking_pids`. End a stuck holder with
//! `SELECT pg_terminate_backend(PID)`.

use std::process::ExitCode;

use clap::Parser;
use entity::PullRequest;
use sea_orm::{Database, DatabaseConnection, DbBackend};
use sea_orm_idempotent::{Error, IdempotentCreate, LockHolders, LockKey, probe_advisory_locks};

/// Prints the advisory locks held and awaited in a PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "lock_holders")]
struct Args {
    /// PostgreSQL URL (default: `DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
    /// Only the key `PullRequest::create_once` locks for this GitHub pull-request id.
    #[arg(long, conflicts_with = "key")]
    pr: Option<i64>,
    /// Only `LockKey::BigInt(KEY)`.
    #[arg(long, allow_hyphen_values = true)]
    key: Option<i64>,
    /// First check that the server's advisory locks really lock (needs two connections).
    #[arg(long)]
    probe: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(url) = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|url| !url.is_empty())
    else {
        eprintln!("lock_holders: set DATABASE_URL or --database-url to a PostgreSQL database");
        return ExitCode::from(2);
    };
    let db = match Database::connect(url.as_str()).await {
        Ok(db) if db.get_database_backend() == DbBackend::Postgres => db,
        Ok(_) => {
            eprintln!("lock_holders: PostgreSQL only (SQLite and MySQL have no advisory locks)");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("lock_holders: cannot connect: {err}");
            return ExitCode::from(2);
        }
    };
    match run(&db, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lock_holders: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(db: &DatabaseConnection, args: &Args) -> Result<(), Error> {
    if args.probe {
        probe_advisory_locks(db).await?;
        println!("probe: an advisory lock held on one connection excluded another: real locks");
    }
    let holders = match (args.pr, args.key) {
        (Some(pr_id), _) => PullRequest::lock_holders(db, pr_id).await?,
        (None, Some(key)) => LockHolders::of(db, LockKey::BigInt(key)).await?,
        (None, None) => LockHolders::all(db).await?,
    };
    print!("{holders}");
    Ok(())
}
