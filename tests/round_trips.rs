//! The statements `create_once` sends, read from SeaORM's `MockDatabase` transaction log. This
//! is the hot path of every webhook: each statement is a round trip to the server.
//!
//! (Mock results only script the answers; concurrency is proven against a real server in
//! `create_once.rs`.)

#![cfg(feature = "postgres")]

mod common;

use std::collections::BTreeMap;

use common::new_pr;
use entity::{PullRequest, pull_requests};
use sea_orm::{DatabaseBackend, MockDatabase, Transaction, Value};
use sea_orm_idempotent::IdempotentCreate;

fn stored(pr_id: i64) -> pull_requests::Model {
    let data = new_pr(pr_id);
    pull_requests::Model {
        id: 1,
        pr_id,
        repository: data.repository,
        number: data.number,
        title: data.title,
        author: data.author,
        state: data.state,
        head_sha: data.head_sha,
        first_delivery_id: data.delivery_id,
        created_at: "2026-11-26T00:00:00Z".parse().unwrap(),
        updated_at: None,
    }
}

fn lock_granted() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("acquired", Value::from(true)),
        ("isolation", Value::from("read committed")),
        // Which server answered (src/engine.rs): PostgreSQL.
        ("server_version", Value::from("PostgreSQL 15.14")),
        ("server_version_num", Value::from("150014")),
        ("crdb_version", Value::String(None)),
        ("yb_silence", Value::String(None)),
    ])
}

fn statements(log: &[Transaction]) -> Vec<String> {
    log.iter()
        .flat_map(|t| t.statements())
        .map(|s| s.sql.clone())
        .collect()
}

/// A redelivery of a stored row costs one statement: no transaction, no lock.
#[tokio::test]
async fn an_existing_row_costs_one_statement() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let outcome = PullRequest::create_once(&db, 7, new_pr(7)).await.unwrap();
    assert!(!outcome.is_created());
    let sql = statements(&db.into_transaction_log());
    assert_eq!(sql.len(), 1, "{sql:#?}");
    assert!(sql[0].starts_with("SELECT"), "{sql:#?}");
}

/// A new row: look (miss), then in one transaction lock (uncontended: one try-lock, no wait)
/// and insert-unless-exists: three statements plus BEGIN and COMMIT (and, on a real server, `SET TRANSACTION ISOLATION LEVEL
/// READ COMMITTED`, which the mock does not log). The look after the lock and the insert are
/// one statement, not two.
#[tokio::test]
async fn a_new_row_costs_look_lock_insert() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([Vec::<pull_requests::Model>::new()])
        .append_query_results([vec![lock_granted()]])
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let outcome = PullRequest::create_once(&db, 7, new_pr(7)).await.unwrap();
    assert!(outcome.is_created());
    let log = db.into_transaction_log();
    let sql = statements(&log);
    assert_eq!(sql.len(), 5, "{sql:#?}");
    assert!(
        sql[0].starts_with("SELECT \"pull_requests\".\"id\""),
        "{sql:#?}"
    );
    assert_eq!(sql[1], "BEGIN");
    assert!(
        sql[2].contains("pg_try_advisory_xact_lock($1, $2)"),
        "{sql:#?}"
    );
    assert!(
        sql[3].starts_with("INSERT INTO \"pull_requests\"")
            && sql[3].contains("WHERE NOT EXISTS")
            && sql[3].contains("RETURNING"),
        "{sql:#?}"
    );
    assert_eq!(sql[4], "COMMIT");
    // The look runs outside the transaction; lock and insert inside one.
    assert_eq!(log.len(), 2, "{log:#?}");
}

/// Values are bound, never formatted: a key full of SQL does not appear in the SQL text.
#[tokio::test]
async fn data_is_bound_not_formatted() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([Vec::<pull_requests::Model>::new()])
        .append_query_results([vec![lock_granted()]])
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let mut data = new_pr(7);
    data.title = "'; DROP TABLE pull_requests; --".into();
    PullRequest::create_once(&db, 7, data).await.unwrap();
    for sql in statements(&db.into_transaction_log()) {
        assert!(!sql.contains("DROP TABLE"), "{sql}");
    }
}
