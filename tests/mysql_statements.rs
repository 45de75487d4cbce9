//! MariaDB only: what each path of a call costs, in statements the server counted for the
//! session (`Questions`) and in commits that write (each flushed at COMMIT with
//! `innodb_flush_log_at_trx_commit = 1`, InnoDB's default): the autocommit insert of a new
//! key's lock row, and the transaction's `COMMIT`. As `tests/round_trips.rs` counts
//! PostgreSQL's round trips. Over a pool of one connection, so that every statement of the
//! call is the session's.
#![cfg(feature = "mysql")]

mod common;

use common::new_pr;
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::IdempotentCreate;
use test_support::TestDb;

/// The session's counters: statements and `COMMIT`s; and, read on another connection, the lock
/// table's rows (a new one is an autocommit insert: a commit that writes).
async fn counters(db: &DatabaseConnection, observer: &DatabaseConnection) -> [i64; 3] {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SHOW SESSION STATUS WHERE Variable_name IN \
             ('Questions', 'Com_commit')",
        ))
        .await
        .unwrap();
    let value = |name: &str| -> i64 {
        rows.iter()
            .find(|row| row.try_get::<String>("", "Variable_name").unwrap() == name)
            .map(|row| row.try_get::<String>("", "Value").unwrap().parse().unwrap())
            .unwrap_or(0)
    };
    let lock_rows: i64 = observer
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COUNT(*) AS n FROM sea_orm_idempotent_locks",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    [value("Questions"), value("Com_commit"), lock_rows]
}

/// What one call cost: statements (without the `SHOW` that counts), `COMMIT`s, lock rows
/// inserted (each in a commit of its own).
async fn cost(db: &DatabaseConnection, observer: &DatabaseConnection, pr_id: i64) -> [i64; 3] {
    let before = counters(db, observer).await;
    PullRequest::create_once(db, pr_id, new_pr(pr_id))
        .await
        .unwrap();
    let after = counters(db, observer).await;
    [
        after[0] - before[0] - 1,
        after[1] - before[1],
        after[2] - before[2],
    ]
}

#[tokio::test]
async fn every_path_costs_its_statements_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    // Warm up: the entity's statements prepared on the connection.
    PullRequest::create_once(&db, 1, new_pr(1)).await.unwrap();
    PullRequest::create_once(&db, 2, new_pr(2)).await.unwrap();
    let new = cost(&db, &observer, 3).await;
    let existing = cost(&db, &observer, 3).await;
    println!("new {new:?} existing {existing:?}");
    // A redelivery: the look.
    assert_eq!(existing, [1, 0, 0], "a redelivery");
    // A new key: the look; the lock row's insert (autocommit: a commit that writes); SET
    // TRANSACTION and BEGIN; the lock's locking read; the holder counted (`generation`); the
    // guarded insert with MariaDB's RETURNING; COMMIT: 8 statements, 2 commits that write.
    // Was 10 (the snapshot check, needed only in a caller's transaction, and the read of the
    // inserted row, now MariaDB's RETURNING).
    assert_eq!(new, [8, 1, 1], "a new key");
}
