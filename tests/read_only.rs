//! A read-only database: a read-only transaction (PostgreSQL `default_transaction_read_only`, as
//! on a hot standby; MariaDB `SET SESSION TRANSACTION READ ONLY`) or a read-only SQLite file.
//!
//! Before the fix, once 6 new keys had switched the adaptive look off, 3 of 3 redeliveries of
//! stored rows failed with a raw, non-retryable 25006 on PostgreSQL (the call went straight to
//! the lock and the insert, which the database refuses even when its guard would find the
//! row), and new keys got untyped errors. Now a stored row is `Existing` whatever the look's
//! state, on a pool and in a caller's transaction, and a new key gets the typed, retryable
//! `Error::ReadOnly`.

mod common;

use common::new_pr;
use entity::PullRequest;
use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, MISSES_BEFORE_SKIPPING};

/// On `read_only` (a pool of one read-only connection, or a read-only file), where keys
/// `stored` exist: new keys are refused, typed; stored keys are found.
async fn stored_rows_are_found_and_new_keys_refused(
    read_only: &DatabaseConnection,
    stored: &[i64],
) {
    // More new keys than the look tolerates: afterwards calls go straight to the lock.
    for key in 0..i64::from(MISSES_BEFORE_SKIPPING) + 2 {
        let err = PullRequest::create_once(read_only, 50_000 + key, new_pr(50_000 + key))
            .await
            .expect_err("a new key cannot be written");
        assert!(matches!(err, Error::ReadOnly(_)), "{err:?}");
        assert!(err.is_retryable(), "a failover makes it pass");
    }
    for &key in stored {
        let found = PullRequest::create_once(read_only, key, new_pr(key))
            .await
            .unwrap_or_else(|e| panic!("stored key {key}: {e:?}"));
        assert!(!found.is_created(), "{found:?}");
        assert_eq!(found.model().pr_id, key);
    }
    let txn = read_only.begin().await.unwrap();
    let found = PullRequest::create_once(&txn, stored[0], new_pr(stored[0]))
        .await
        .unwrap_or_else(|e| panic!("in a transaction: {e:?}"));
    assert!(!found.is_created(), "{found:?}");
    let err = PullRequest::create_once(&txn, 60_000, new_pr(60_000))
        .await
        .expect_err("a new key in a transaction");
    assert!(matches!(err, Error::ReadOnly(_)), "{err:?}");
    // The caller's transaction goes on.
    let again = PullRequest::create_once(&txn, stored[1], new_pr(stored[1]))
        .await
        .unwrap_or_else(|e| panic!("after the refusal, in the transaction: {e:?}"));
    assert!(!again.is_created());
    txn.rollback().await.unwrap();
}

const STORED: [i64; 3] = [1, 2, 3];

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use super::common::{Server, on_each_server};
    use super::*;
    use sea_orm::ConnectionTrait;

    on_each_server! {
        #[tokio::test]
        async fn on_a_read_only_session_stored_rows_are_existing_and_new_keys_read_only(
            server: Server,
        ) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let writable = test_db.connect(2).await;
            for key in STORED {
                PullRequest::create_once(&writable, key, new_pr(key)).await.unwrap();
            }
            // One connection, made read-only for its session.
            let read_only = test_db.connect(1).await;
            read_only
                .execute_unprepared(server.sql(
                    "SET default_transaction_read_only = on",
                    "SET SESSION TRANSACTION READ ONLY",
                ))
                .await
                .unwrap();
            stored_rows_are_found_and_new_keys_refused(&read_only, &STORED).await;
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn on_a_read_only_sqlite_file_stored_rows_are_existing_and_new_keys_read_only() {
    use migration::{Migrator, MigratorTrait};

    let dir = common::TempDir::new("read-only");
    let url = dir.sqlite_url("ro.db");
    let writable = test_support::connect(&url, 1).await;
    Migrator::up(&writable, None).await.expect("migrate");
    for key in STORED {
        PullRequest::create_once(&writable, key, new_pr(key))
            .await
            .unwrap();
    }
    writable.close().await.unwrap();
    let read_only = test_support::connect(&url.replace("mode=rwc", "mode=ro"), 1).await;
    stored_rows_are_found_and_new_keys_refused(&read_only, &STORED).await;
}
