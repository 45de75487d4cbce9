//! Probes of the single-call paths (the one statement, the locked path, a caller's
//! transaction) under timeouts the caller or the server sets, a writer that bypasses the lock,
//! and calls nested in `make_data`.
//!
//! - `make_data_past_idle_in_transaction_timeout_is_retryable`: a `make_data` that outlasts
//!   PostgreSQL's `idle_in_transaction_session_timeout` gets its session closed (FATAL 25P03):
//!   nothing is written, and a retry on the same pool succeeds. Before the fix the error was a
//!   non-retryable `Error::Database` (25P03 was not counted among lost sessions, as 57P01 is).
//! - `a_bounded_wait_behind_a_bypassing_writer_ends_in_time_*`: see the doc comment of
//!   `bounded_waits_behind_a_bypassing_writer` (failed on PostgreSQL before the insert's and
//!   the update's waits were bounded there, `src/backend/postgres/entity_waits.rs`).
//! - `wait_no_on_a_free_key_behind_another_keys_auto_inc_lock_is_lock_busy` (MariaDB, passes):
//!   pins the documented answer (`Error::LockBusy`: "or a lock the row's insert needs on the
//!   entity table") for a free key whose insert meets the table's AUTO-INC lock.
//!
//! The sleeps here are what is tested (outlasting a server's timeout, a bound that must end a
//! wait), never coordination.

// Each backend feature alone builds only its part of this file.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use std::time::{Duration, Instant};

    use super::common::{Server, new_pr, on_each_server, rows_for};
    use entity::PullRequest;
    use sea_orm::{ActiveModelTrait, DatabaseConnection, TransactionTrait};
    use sea_orm_idempotent::{Error, IdempotentCreate, Wait};

    /// How long a bounded call may take here: far above the bounds asked for (1 s, or none),
    /// far below a writer that never ends.
    const PATIENCE: Duration = Duration::from_secs(10);

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

    /// Which path a call takes.
    #[derive(Debug, Clone, Copy)]
    enum Path {
        /// Data in hand on a pool: PostgreSQL's one statement (MariaDB: its own transaction).
        OneStatement,
        /// `make_data` on a pool: the crate's own transaction.
        Locked,
        /// Data in hand in a caller's READ COMMITTED transaction: a savepoint.
        CallersTransaction,
    }

    /// A writer that bypasses the lock has inserted key `k` and not committed. A call for `k`
    /// with `Wait::No` must answer `LockBusy` at once and one with `Wait::Timeout(1 s)`
    /// `LockTimeout` after about a second: the writer is another transaction holding the key
    /// (DESIGN 5: "every lock wait is bounded when the caller asks for it"; DESIGN 11: the
    /// same promise on every backend). MariaDB does (`src/backend/mysql/entity_waits.rs`
    /// bounds the insert's wait with `SET STATEMENT innodb_lock_wait_timeout`).
    ///
    /// Failed on PostgreSQL, on every path, before the fix: the call waited for as long as the
    /// writer's transaction lasted, whatever its `Wait` ("still waiting after 10s, its wait is
    /// not bounded"). Only the advisory-lock wait was bounded there; the insert that follows
    /// (the one statement's `INSERT ... ON CONFLICT (k) DO NOTHING`, the guarded insert's `ON
    /// CONFLICT DO NOTHING`) waited on the unique index for the writer's transaction. A caller
    /// that gave up (its own timeout dropping the future) left the one statement running on the
    /// server, holding the key's advisory lock until the writer ended. Now the insert's and the
    /// update's waits are bounded by what is left of the call's wait (`lock_timeout`, set in the
    /// one statement's lock CTE, or around the statement in a transaction) and a 55P03 from them
    /// is the lock's error (`src/backend/postgres/entity_waits.rs`).
    async fn bounded_waits_behind_a_bypassing_writer(server: Server, path: Path) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let writer = test_db.connect(1).await;
        let written = writer.begin().await.unwrap();
        for key in [100, 101] {
            PullRequest::new_active_model(&key, new_pr(key))
                .insert(&written)
                .await
                .unwrap();
        }
        let db = test_db.connect(3).await;
        let cases = [
            (100, Wait::No),
            (101, Wait::Timeout(Duration::from_secs(1))),
        ];
        for (key, wait) in cases {
            let started = Instant::now();
            let answer = tokio::time::timeout(PATIENCE, call(&db, path, key, wait)).await;
            let took = started.elapsed();
            let answer = answer.unwrap_or_else(|_| {
                panic!(
                    "{path:?}, {wait:?}, key {key} behind the writer's uncommitted row: still \
                     waiting after {PATIENCE:?}, its wait is not bounded"
                )
            });
            match (wait, &answer) {
                (Wait::No, Err(Error::LockBusy { .. })) => {}
                (Wait::Timeout(_), Err(Error::LockTimeout { .. })) => {
                    assert!(took < Duration::from_secs(4), "{path:?}: took {took:?}");
                }
                _ => panic!("{path:?}, {wait:?}, key {key}: {answer:?}"),
            }
        }
        written.rollback().await.unwrap();
    }

    async fn call(
        db: &DatabaseConnection,
        path: Path,
        key: i64,
        wait: Wait,
    ) -> Result<sea_orm_idempotent::Outcome<entity::pull_requests::Model>, Error> {
        match path {
            Path::OneStatement => {
                PullRequest::once(key, new_pr(key))
                    .wait(wait)
                    .exec(db)
                    .await
            }
            Path::Locked => {
                PullRequest::once_with(key, || async { Ok::<_, std::io::Error>(new_pr(key)) })
                    .wait(wait)
                    .exec(db)
                    .await
            }
            Path::CallersTransaction => {
                let txn = db
                    .begin_with_config(Some(sea_orm::IsolationLevel::ReadCommitted), None)
                    .await
                    .unwrap();
                let answer = PullRequest::once(key, new_pr(key))
                    .wait(wait)
                    .exec(&txn)
                    .await;
                txn.rollback().await.unwrap();
                answer
            }
        }
    }

    /// PostgreSQL: a bounded call in a caller's transaction sets `lock_timeout` for its insert
    /// and puts the caller's own value back after it: the caller's transaction goes on with
    /// its own setting.
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_call_gives_the_callers_lock_timeout_back() {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};

        let test_db = test_support::TestDb::new().await;
        let db = test_db.connect(2).await;
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("SET LOCAL lock_timeout = '7s'")
            .await
            .unwrap();
        for (key, wait) in [(1, Wait::No), (2, Wait::Timeout(Duration::from_secs(3)))] {
            let created = PullRequest::once(key, new_pr(key))
                .wait(wait)
                .exec(&txn)
                .await
                .unwrap();
            assert!(created.is_created());
            let setting: String = txn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT current_setting('lock_timeout') AS value",
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get("", "value")
                .unwrap();
            assert_eq!(setting, "7s", "{wait:?}");
        }
        txn.commit().await.unwrap();
    }

    on_each_server! {
        /// [`bounded_waits_behind_a_bypassing_writer`] on the one-statement path.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bounded_wait_behind_a_bypassing_writer_ends_in_time_one_statement(
            server: Server,
        ) {
            bounded_waits_behind_a_bypassing_writer(server, Path::OneStatement).await;
        }

        /// [`bounded_waits_behind_a_bypassing_writer`] on the locked path (`make_data`).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bounded_wait_behind_a_bypassing_writer_ends_in_time_locked(server: Server) {
            bounded_waits_behind_a_bypassing_writer(server, Path::Locked).await;
        }

        /// [`bounded_waits_behind_a_bypassing_writer`] in a caller's transaction.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bounded_wait_behind_a_bypassing_writer_ends_in_time_in_a_transaction(
            server: Server,
        ) {
            bounded_waits_behind_a_bypassing_writer(server, Path::CallersTransaction).await;
        }
    }
}

/// MariaDB: a slow `INSERT ... SELECT` of other keys into `pull_requests` holds the table's
/// AUTO-INC lock (`innodb_autoinc_lock_mode = 1`, bulk inserts hold it to the statement's end)
/// while it sleeps between its two rows. A call for a free key with `Wait::No` then gets
/// `Error::LockBusy` at once, though no transaction holds its key: its guarded insert (also an
/// `INSERT ... SELECT`) needs the AUTO-INC lock, and InnoDB makes every insert of the table
/// wait for it. That is the documented answer (`Error::LockBusy`, `docs/backends.md` "Waits on
/// the entity table"), and InnoDB's, not the crate's, to change: pinned here. The same key
/// with `Wait::Timeout(5 s)` waits for the bulk insert and creates its row.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_no_on_a_free_key_behind_another_keys_auto_inc_lock_is_lock_busy() {
    use std::time::{Duration, Instant};

    use common::new_pr;
    use entity::PullRequest;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use sea_orm_idempotent::{Error, IdempotentCreate, Wait};

    let Some(test_db) = test_support::TestDb::mysql().await else {
        return;
    };
    let bulk_db = test_db.connect(1).await;
    let pool = test_db.connect(2).await;
    let observer = test_db.connect(1).await;
    // Rows 901 and 902; the second is delayed by SLEEP(3) in its select list, after the first
    // was inserted (and the AUTO-INC lock taken). Constants only: a source reading the table
    // itself would be buffered whole before the first insert.
    let bulk = tokio::spawn(async move {
        bulk_db
            .execute_unprepared(
                "INSERT INTO pull_requests (pr_id, repository, number, title, author, state, \
                 head_sha, first_delivery_id, created_at) \
                 SELECT 900 + n + SLEEP(IF(n = 2, 3, 0)), 'r', n, 't', 'a', 'open', 'sha', 'd', \
                 NOW() FROM (SELECT 1 AS n UNION ALL SELECT 2) AS t",
            )
            .await
    });
    // Until the bulk insert sleeps (its PROCESSLIST state), i.e. holds the AUTO-INC lock.
    let sleeping = Statement::from_string(
        DbBackend::MySql,
        "SELECT 1 FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE 'INSERT INTO pull_requests%' AND STATE LIKE '%sleep%'",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer
        .query_one_raw(sleeping.clone())
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the bulk insert never slept");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = PullRequest::once(500, new_pr(500))
        .wait(Wait::No)
        .exec(&pool)
        .await;
    assert!(
        matches!(busy, Err(Error::LockBusy { .. })),
        "Wait::No, a free key behind the AUTO-INC lock: {busy:?}"
    );
    let created = PullRequest::once(500, new_pr(500))
        .wait(Wait::Timeout(Duration::from_secs(5)))
        .exec(&pool)
        .await;
    assert!(
        created.as_ref().is_ok_and(|o| o.is_created()),
        "Wait::Timeout(5 s): {created:?}"
    );
    bulk.await.unwrap().unwrap();
}
