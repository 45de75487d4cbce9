//! The general advisory-lock API against a real PostgreSQL server.

#![cfg(feature = "postgres")]

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::{
    Error, LockKey, Wait, acquire_advisory_lock, acquire_shared_advisory_lock,
};
use test_support::TestDb;

/// Python's `zlib.crc32(b"PR-123")`, as the Django recipe passes it to PostgreSQL.
const PR_123_CRC32: i64 = 3_670_997_212;

async fn raw_try_lock(db: &DatabaseConnection, key: i64) -> bool {
    // In autocommit the xact lock would end with the statement, so ask inside a transaction.
    let txn = db.begin().await.unwrap();
    let got = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1) AS got",
            [key.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<bool>("", "got")
        .unwrap();
    txn.rollback().await.unwrap();
    got
}

#[tokio::test]
async fn crc32_keys_exclude_the_python_recipe_both_ways() {
    let test_db = TestDb::new().await;
    let rust = test_db.connect(1).await;
    let python = test_db.connect(1).await;

    // Rust holds it: the recipe's number is taken.
    let txn = rust.begin().await.unwrap();
    acquire_advisory_lock(&txn, LockKey::crc32("PR-123"), Wait::Forever)
        .await
        .unwrap();
    assert!(!raw_try_lock(&python, PR_123_CRC32).await);
    txn.commit().await.unwrap();
    assert!(raw_try_lock(&python, PR_123_CRC32).await);

    // The recipe holds it (plain SQL, as Django runs it): Rust's key is taken.
    let recipe = python.begin().await.unwrap();
    recipe
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [PR_123_CRC32.into()],
        ))
        .await
        .unwrap();
    let txn = rust.begin().await.unwrap();
    let err = acquire_advisory_lock(&txn, LockKey::crc32("PR-123"), Wait::No)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    txn.rollback().await.unwrap();
    recipe.rollback().await.unwrap();
}

#[tokio::test]
async fn shared_holders_coexist_and_exclude_an_exclusive_one() {
    let test_db = TestDb::new().await;
    let a = test_db.connect(1).await;
    let b = test_db.connect(1).await;
    let key = LockKey::Pair(1, 2);

    let reader_a = a.begin().await.unwrap();
    acquire_shared_advisory_lock(&reader_a, key, Wait::No)
        .await
        .unwrap();
    let reader_b = b.begin().await.unwrap();
    acquire_shared_advisory_lock(&reader_b, key, Wait::No)
        .await
        .unwrap();
    reader_b.rollback().await.unwrap();

    let writer = b.begin().await.unwrap();
    let err = acquire_advisory_lock(&writer, key, Wait::No)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    writer.rollback().await.unwrap();

    reader_a.commit().await.unwrap();
    let writer = b.begin().await.unwrap();
    acquire_advisory_lock(&writer, key, Wait::No).await.unwrap();
    writer.commit().await.unwrap();
}

#[tokio::test]
async fn pair_and_bigint_keys_are_separate_key_spaces() {
    let test_db = TestDb::new().await;
    let a = test_db.connect(1).await;
    let b = test_db.connect(1).await;
    let holder = a.begin().await.unwrap();
    acquire_advisory_lock(&holder, LockKey::Pair(0, 7), Wait::No)
        .await
        .unwrap();
    let other = b.begin().await.unwrap();
    acquire_advisory_lock(&other, LockKey::BigInt(7), Wait::No)
        .await
        .unwrap();
    other.rollback().await.unwrap();
    holder.rollback().await.unwrap();
}

#[tokio::test]
async fn the_lock_refuses_a_snapshot_taken_before_it() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let txn = db
        .begin_with_config(Some(sea_orm::IsolationLevel::RepeatableRead), None)
        .await
        .unwrap();
    let err = acquire_advisory_lock(&txn, LockKey::BigInt(1), Wait::Forever)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsafeIsolation { ref level, .. } if level == "repeatable read"),
        "{err:?}"
    );
    txn.rollback().await.unwrap();
}

/// SQLite has no advisory locks: `acquire_advisory_lock` says so, and points to
/// `create_once`. (MySQL is served, by its lock table: the `::mariadb` tests of
/// `tests/create_once.rs`.)
#[tokio::test]
async fn sqlite_is_refused_advisory_locks() {
    let db = sea_orm::MockDatabase::new(DbBackend::Sqlite).into_connection();
    let txn = db.begin().await.unwrap();
    let err = acquire_advisory_lock(&txn, LockKey::BigInt(1), Wait::Forever)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedBackend {
                backend: DbBackend::Sqlite,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("create_once"), "{err}");
}

/// `Wait::Forever` waits in bounded slices on the server; the slices are longer than
/// `deadlock_timeout` so PostgreSQL still detects a deadlock: with slices shorter than that,
/// both sides would retry forever and this test would hang instead of seeing one `Deadlock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_are_detected_and_typed() {
    let test_db = TestDb::new().await;
    let a = test_db.connect(1).await;
    let b = test_db.connect(1).await;
    let (first, second) = (LockKey::BigInt(1), LockKey::BigInt(2));
    let txn_a = a.begin().await.unwrap();
    acquire_advisory_lock(&txn_a, first, Wait::Forever)
        .await
        .unwrap();
    let txn_b = b.begin().await.unwrap();
    acquire_advisory_lock(&txn_b, second, Wait::Forever)
        .await
        .unwrap();

    let cross = |txn: sea_orm::DatabaseTransaction, key| async move {
        let result = acquire_advisory_lock(&txn, key, Wait::Forever).await;
        match result {
            Ok(()) => txn.commit().await.unwrap(),
            Err(_) => txn.rollback().await.unwrap(),
        }
        result
    };
    let (result_a, result_b) = tokio::join!(cross(txn_a, second), cross(txn_b, first));
    let results = [result_a, result_b];
    let deadlocks = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Deadlock { .. })))
        .count();
    assert_eq!(deadlocks, 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(Error::is_retryable))
    );
}
