//! Probes of the single-call paths (the one statement, the locked path, a caller's
//! transaction) under timeouts the caller or the server sets, a writer that bypasses the lock,
//! and calls nested in `make_data`.
//!
//! - `make_data_past_idle_in_transaction_timeout_is_retryable`: a `make_data` that outlasts
//!   PostgreSQL's `idle_in_transaction_session_timeout` gets its session closed (FATAL 25P03):
//!   nothing is written, and a retry on the same pool succeeds. Before the fix the error was a
//!   non-retryable `Error::Database` (25P03 was not counted among lost sessions, as 57P01 is).
//!
//! The sleeps here are what is tested (outlasting a server's timeout, a bound that must end a
//! wait), never coordination.

mod common;

#[cfg(feature = "postgres")]
mod on_servers {
    use std::time::Duration;

    use super::common::{new_pr, rows_for};
    use entity::PullRequest;
    use sea_orm::TransactionTrait;
    use sea_orm_idempotent::IdempotentCreate;

    /// A PostgreSQL `make_data` that outlasts the server's `idle_in_transaction_session_timeout`:
    /// the server closes the session (FATAL 25P03) and rolls its transaction back. The call
    /// fails retryably (it is a lost session, as after `pg_terminate_backend`), nothing is
    /// written, and the pool of one serves the retry. Before the fix: `Error::Database` with
    /// 25P03, `is_retryable() == false`.
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_data_past_idle_in_transaction_timeout_is_retryable() {
        use sea_orm::ConnectionTrait;

        let test_db = test_support::TestDb::new().await;
        let admin = test_db.connect(1).await;
        // The name comes from the test support, never from data.
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{}\" SET idle_in_transaction_session_timeout = '200ms'",
                test_db.name
            ))
            .await
            .unwrap();
        let db = test_db.connect(1).await;
        let slow = PullRequest::create_once_with(&db, 1, || async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Ok::<_, std::io::Error>(new_pr(1))
        })
        .await;
        let err = slow.expect_err("the server closed the idle transaction's session");
        assert!(err.is_retryable(), "a lost session is retryable: {err:?}");
        assert_eq!(rows_for(&admin, 1).await, 0, "nothing was written");
        let retried = PullRequest::create_once(&db, 1, new_pr(1))
            .await
            .expect("the pool of one serves the retry");
        assert!(retried.is_created());

        // In a caller's transaction the same error, and the pool recovers once it is dropped.
        let txn = db.begin().await.unwrap();
        let slow = PullRequest::create_once_with(&txn, 2, || async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Ok::<_, std::io::Error>(new_pr(2))
        })
        .await;
        let err = slow.expect_err("the server closed the caller's session");
        assert!(err.is_retryable(), "in a caller's transaction: {err:?}");
        drop(txn);
        assert_eq!(rows_for(&db, 2).await, 0);
    }
}
