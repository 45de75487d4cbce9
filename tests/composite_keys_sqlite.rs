//! Composite natural keys on SQLite, on a file database: keys of two columns (`(org_id,
//! login)`) and three (`(tenant, repo_id, number)`), each created exactly once and `Created`
//! exactly once by many connections of one pool and by several OS processes. The entities and
//! the race are `tests/common/composite.rs`, shared with the PostgreSQL tests.
//!
//! The race tests can fail, and were seen to: with the IMMEDIATE begin of `Backend::begin`
//! (`src/backend.rs`) made a plain (DEFERRED) begin, all four fail: callers of one key look
//! at once, `make_data` runs for keys another caller creates (332 runs for 45 rows made in
//! one run), and writers whose snapshot went stale get `SQLITE_BUSY` (287 errors). Half the
//! callers pass a `make_data` for this reason: with the data given up front, the guarded
//! insert (`INSERT ... SELECT ... WHERE NOT EXISTS`, one statement under SQLite's write lock)
//! alone keeps out duplicates, and a race of `create_once` only would pass without the
//! IMMEDIATE begin.

#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::composite::{KEYS, Race, SQLITE_TABLES, assert_one_row_per_key, race_both};
use common::{TempDir, worker_process};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{ConnectionTrait, DatabaseConnection};

const POOL: u32 = 8;
const PROCESSES: usize = 4;

/// A pool on `url` in `journal` mode, each connection waiting up to 30 s for the write lock.
async fn connect(url: &str, journal: SqliteJournalMode) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, POOL);
    options.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(journal)
            .busy_timeout(Duration::from_secs(30))
    });
    test_support::connect_with(options).await
}

/// The composite tables in a new file of `dir`.
async fn with_tables(dir: &TempDir, journal: SqliteJournalMode) -> (String, DatabaseConnection) {
    let url = dir.sqlite_url("composite.db");
    let db = connect(&url, journal).await;
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    (url, db)
}

async fn many_connections(journal: SqliteJournalMode) {
    let dir = TempDir::new("sqlite-composite");
    let (_, db) = with_tables(&dir, journal).await;
    race_both(std::slice::from_ref(&db))
        .await
        .assert_exactly_once(2 * KEYS, 1);
    assert_one_row_per_key(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_composite_key_once_in_wal_mode() {
    many_connections(SqliteJournalMode::Wal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_composite_key_once_in_rollback_journal_mode() {
    many_connections(SqliteJournalMode::Delete).await;
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_SQLITE_COMPOSITE_WORKER_URL";

/// One racing process of `several_processes_create_each_composite_key_once`; run plainly, it
/// races alone on a file of its own and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_composite_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let db = connect(&url, SqliteJournalMode::Wal).await;
            race_both(std::slice::from_ref(&db))
                .await
                .print_for_parent();
        }
        Err(_) => {
            let dir = TempDir::new("sqlite-composite-worker");
            let (_, db) = with_tables(&dir, SqliteJournalMode::Wal).await;
            race_both(std::slice::from_ref(&db))
                .await
                .assert_exactly_once(2 * KEYS, 1);
        }
    }
}

/// Four OS processes race on the same composite keys of one file: each key is created once
/// in all, `Created` once, no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_composite_key_once() {
    let dir = TempDir::new("sqlite-composite-processes");
    let (url, db) = with_tables(&dir, SqliteJournalMode::Wal).await;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            worker_process("sqlite_composite_race_worker_process")
                .env(WORKER_URL, &url)
                .output()
        })
        .collect();
    let mut total = Race::default();
    for child in children {
        total.add(Race::of_worker(&child.await.expect("run a worker process")));
    }
    total.assert_exactly_once(2 * KEYS, PROCESSES);
    assert_one_row_per_key(&db).await;
}
