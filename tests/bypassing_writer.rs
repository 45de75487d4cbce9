//! A writer that bypasses the lock: another service's plain `INSERT`, a backfill script, an
//! admin. It inserts the key in its own transaction and has not committed when a call for the
//! same key takes the lock; the call's look cannot see that row, so its insert waits on the
//! unique index for the writer, which then commits.
//!
//! Before the fix every such call failed with the unique violation (PostgreSQL 23505, MariaDB
//! 1062), marked not retryable, though the row existed: 19 of 19 calls in the probe, on a pool
//! and on a caller's transaction, create-only and the update form (on a caller's transaction
//! on PostgreSQL the violation also aborted the caller's transaction). Now a create-only call
//! returns `Existing` with the writer's row (on a caller's transaction, inside its own
//! savepoint, so the transaction goes on), and the update form, whose data went into the
//! insert, returns the typed, retryable `WrittenWithoutLock`; its retry updates the row.
//!
//! Each case waits (polling the server's lock waits, no sleeps) until the call's insert is
//! blocked on the writer's row before the writer commits, so the race is forced every run.

mod common;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use super::common::{Server, new_pr, on_each_server, rows_for};
    use entity::PullRequest;
    use sea_orm::{
        ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel,
        Statement, TransactionTrait,
    };
    use sea_orm_idempotent::{Change, Error, IdempotentCreate};
    use std::time::{Duration, Instant};

    /// What the racing call is.
    #[derive(Debug, Clone, Copy)]
    enum Form {
        /// `create_once`, data in hand (PostgreSQL: the three-round-trip path).
        CreateOnly,
        /// `create_once_with` (SeaORM's transaction).
        MakeData,
        /// `.update(..)`, keeping the row.
        Update,
    }

    /// Where it runs.
    #[derive(Debug, Clone, Copy)]
    enum On {
        Pool,
        CallersTransaction,
    }

    /// The call's answer: its outcome's name and row id, or its error.
    type Answer = Result<(&'static str, i64), Error>;

    async fn call(db: &impl sea_orm_idempotent::TransactionSource, form: Form, key: i64) -> Answer {
        match form {
            Form::CreateOnly => PullRequest::create_once(db, key, new_pr(key))
                .await
                .map(|o| (o.as_str(), o.model().id)),
            Form::MakeData => PullRequest::create_once_with(db, key, || async move {
                Ok::<_, std::io::Error>(new_pr(key))
            })
            .await
            .map(|o| (o.as_str(), o.model().id)),
            Form::Update => PullRequest::once(key, new_pr(key))
                .update(|_, _| Change::Keep)
                .exec(db)
                .await
                .map(|o| (o.as_str(), o.model().id)),
        }
    }

    /// Resolves once the call's insert waits behind the writer's uncommitted row; panics after
    /// 30 s.
    async fn until_a_statement_waits_for_a_row(server: Server, observer: &DatabaseConnection) {
        let (backend, sql) = match server {
            Server::Postgres => (
                DbBackend::Postgres,
                "SELECT 1 AS waiting FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted",
            ),
            // Not INNODB_LOCK_WAITS: a cache that a poller keeps stale (tests/common/mysql.rs).
            // The call's insert is running while the writer's row is uncommitted: it waits.
            Server::MariaDb => (
                DbBackend::MySql,
                "SELECT 1 AS waiting FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND INFO LIKE 'INSERT INTO `pull_requests`%'",
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while observer
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the call never waited for the writer's row"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn the_writer_commits_while_the_call_waits(
        server: Server,
        db: &DatabaseConnection,
        form: Form,
        on: On,
        key: i64,
    ) {
        let writer = db.begin().await.unwrap();
        let written = PullRequest::new_active_model(&key, new_pr(key))
            .insert(&writer)
            .await
            .unwrap();
        let racing = tokio::spawn({
            let db = db.clone();
            async move {
                match on {
                    On::Pool => (call(&db, form, key).await, None),
                    On::CallersTransaction => {
                        let txn = db
                            .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                            .await
                            .unwrap();
                        let first = call(&txn, form, key).await;
                        // The transaction goes on: the retry an error asks for, in it.
                        let again = call(&txn, form, key).await;
                        txn.commit().await.unwrap();
                        (first, Some(again))
                    }
                }
            }
        });
        until_a_statement_waits_for_a_row(server, db).await;
        writer.commit().await.unwrap();
        let (first, again) = racing.await.unwrap();
        let case = format!("{server:?} {form:?} on {on:?}");
        let found_again = match form {
            Form::CreateOnly | Form::MakeData => {
                let (outcome, id) = first.unwrap_or_else(|e| panic!("{case}: {e:?}"));
                assert_eq!((outcome, id), ("existing", written.id), "{case}");
                "existing"
            }
            Form::Update => {
                let err = first.expect_err(&case);
                assert!(
                    matches!(err, Error::WrittenWithoutLock { .. }) && err.is_retryable(),
                    "{case}: {err:?}"
                );
                "unchanged"
            }
        };
        // The second call (the retry the update form's error asks for; on a caller's
        // transaction, in the same transaction, which must still be usable) finds the row.
        let again = match again {
            Some(again) => again,
            None => call(db, form, key).await,
        };
        let (outcome, id) = again.unwrap_or_else(|e| panic!("{case}, again: {e:?}"));
        assert_eq!((outcome, id), (found_again, written.id), "{case}, again");
        assert_eq!(rows_for(db, key).await, 1, "{case}");
    }

    on_each_server! {
        #[tokio::test]
        async fn a_row_a_writer_commits_during_the_call_is_found_not_a_unique_violation(
            server: Server,
        ) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let db = test_db.connect(4).await;
            let mut key = 7_000;
            for form in [Form::CreateOnly, Form::MakeData, Form::Update] {
                for on in [On::Pool, On::CallersTransaction] {
                    key += 1;
                    the_writer_commits_while_the_call_waits(server, &db, form, on, key).await;
                }
            }
        }
    }
}
