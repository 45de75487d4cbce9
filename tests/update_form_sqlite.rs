//! The update form (`once(..).update(..)`) on SQLite, on a file database: every version of a
//! document delivered at once and out of order, by many connections of one pool and by several
//! OS processes, ends at the newest version and is `Created` once; the outcomes, and the
//! strict form's refusal, as on PostgreSQL (`tests/common/versions.rs`).
//!
//! The race tests can fail, and were seen to: with the IMMEDIATE begin of `Backend::begin`
//! (`src/backend/mod.rs`) made a plain (DEFERRED) begin, both fail: 86 of 96 calls (one
//! process) and 301 of 384 (four) failed with `SQLITE_BUSY` and only 8 of 12 documents were
//! created: callers of one document looked at once, and writers whose snapshot went stale
//! could not write.

#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::versions::{
    SQLITE_TABLES, Upserts, a_refusal_leaves_the_callers_transaction_usable,
    assert_newest_versions, outcomes_in_order, race, same_key_different_data_is_refused,
};
use common::{TempDir, worker_process};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{ConnectionTrait, DatabaseConnection};

const POOL: u32 = 8;
const TASKS: usize = 16;
const PROCESSES: usize = 4;

/// A pool on `url` in WAL mode, each connection waiting up to 30 s for the write lock.
async fn connect(url: &str) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, POOL);
    options.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30))
    });
    test_support::connect_with(options).await
}

/// The tables in a new file of `dir`.
async fn with_tables(dir: &TempDir) -> (String, DatabaseConnection) {
    let url = dir.sqlite_url("update_form.db");
    let db = connect(&url).await;
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    (url, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_keep_the_newest_version() {
    let dir = TempDir::new("sqlite-update-form");
    let (_, db) = with_tables(&dir).await;
    race(std::slice::from_ref(&db), TASKS)
        .await
        .assert_each_created_once(1);
    assert_newest_versions(&db).await;
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_SQLITE_UPDATE_FORM_WORKER_URL";

/// One racing process of `several_processes_keep_the_newest_version`; run plainly, it races
/// alone on a file of its own and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_update_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let db = connect(&url).await;
            race(std::slice::from_ref(&db), TASKS)
                .await
                .print_for_parent();
        }
        Err(_) => {
            let dir = TempDir::new("sqlite-update-form-worker");
            let (_, db) = with_tables(&dir).await;
            race(std::slice::from_ref(&db), TASKS)
                .await
                .assert_each_created_once(1);
            assert_newest_versions(&db).await;
        }
    }
}

/// Four OS processes deliver every version of every document to one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_keep_the_newest_version() {
    let dir = TempDir::new("sqlite-update-form-processes");
    let (url, db) = with_tables(&dir).await;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            worker_process("sqlite_update_race_worker_process")
                .env(WORKER_URL, &url)
                .output()
        })
        .collect();
    let mut total = Upserts::default();
    for child in children {
        total.add(Upserts::of_worker(
            &child.await.expect("run a worker process"),
        ));
    }
    total.assert_each_created_once(PROCESSES);
    assert_newest_versions(&db).await;
}

#[tokio::test]
async fn the_outcomes_are_created_updated_and_unchanged() {
    let dir = TempDir::new("sqlite-update-outcomes");
    let (_, db) = with_tables(&dir).await;
    outcomes_in_order(&db).await;
}

#[tokio::test]
async fn the_same_key_with_different_data_is_refused_and_nothing_written() {
    let dir = TempDir::new("sqlite-update-refused");
    let (_, db) = with_tables(&dir).await;
    same_key_different_data_is_refused(&db).await;
}

#[tokio::test]
async fn a_refusal_in_a_callers_transaction_rolls_back_only_its_savepoint() {
    let dir = TempDir::new("sqlite-update-refused-txn");
    let (_, db) = with_tables(&dir).await;
    a_refusal_leaves_the_callers_transaction_usable(&db).await;
}
