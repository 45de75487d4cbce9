//! Sessions and databases: what a call on a caller's transaction shares with other calls, and
//! what a call inside `make_data` would really wait for.
//!
//! These failed before calls knew the server session and database they work in (issue 22):
//! - `a_dropped_wait_leaves_the_callers_statement_timeout`: a call dropped after the statement
//!   that prepared its wait left `statement_timeout` at `0` for the rest of the caller's
//!   transaction ("dropped at await point 3: statement_timeout changed", left "0").
//! - `a_bound_does_not_count_a_siblings_turn`: two calls joined on one transaction, both
//!   `Wait::No`: the second one got `LockBusy` though no transaction held its key (it waited
//!   for the first one's turn), and with `Wait::Timeout(1ms)` `LockTimeout`.
//! - `a_nested_transaction_keeps_its_created_row`: a call on `txn` whose `make_data` failed
//!   rolled back to its savepoint, which undid the `Created` row of a call interleaved on
//!   `txn.begin()` (the same session); key 2 had no row after both commits;
//! - `a_call_on_a_nested_transaction_inside_make_data_runs_nested`: got `Reentrant`;
//! - `calls_inside_make_data_on_another_database_run`, `..._on_another_server_run`,
//!   `..._on_another_sqlite_file_run`: got `Reentrant` for the same key in another database;
//! - `a_sqlite_call_inside_make_data_on_another_connection_of_the_file_is_refused`: waited out
//!   the connection's `busy_timeout` and got `LockTimeout` instead of `Reentrant`.

// Each backend feature alone builds only its part of this file; the shared helpers, imports
// and entities of the other parts are then unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::time::Duration;

use common::{Server, drop_at_await_point, key_of, lock_pids, new_pr, on_each_server};
use entity::{NewPullRequest, PullRequest, pull_requests};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tokio::sync::oneshot;

#[cfg(feature = "postgres")]
async fn show(txn: &DatabaseTransaction, setting: &str) -> String {
    txn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("SHOW {setting}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<String>(0)
    .unwrap()
}

#[cfg(feature = "postgres")]
async fn execute(txn: &DatabaseTransaction, sql: &str) {
    txn.execute_unprepared(sql).await.unwrap();
}

#[cfg(feature = "postgres")]
/// When the session waiting for `key` began its current statement (`None`: nobody waits).
async fn waiting_since(
    db: &DatabaseConnection,
    key: sea_orm_idempotent::LockKey,
) -> Option<String> {
    let pid = *lock_pids(db, key, false).await.first()?;
    db.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT query_start::text AS since FROM pg_stat_activity WHERE pid = $1",
        [pid.into()],
    ))
    .await
    .unwrap()
    .map(|row| row.try_get::<String>("", "since").unwrap())
}

#[cfg(feature = "postgres")]
/// Holds `key` in a transaction of its own until the session waiting for it has begun a
/// second slice of its wait (a new statement while still waiting), or `stop` fires; then
/// commits, and the waiter is let in. So a call under test finds the key busy, prepares its
/// wait, waits a slice, turns to the next one, and gets the key.
async fn hold_for_two_slices(
    db: DatabaseConnection,
    key: sea_orm_idempotent::LockKey,
    held: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<()>,
) -> bool {
    let holder = db.begin().await.unwrap();
    acquire_advisory_lock(&holder, key, Wait::No).await.unwrap();
    held.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut first_slice = None;
    while stop.try_recv().is_err() {
        if let Some(since) = waiting_since(&db, key).await {
            match &first_slice {
                None => first_slice = Some(since),
                Some(first) if *first != since => break,
                Some(_) => {}
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody waited for {key}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    holder.commit().await.unwrap();
    first_slice.is_some()
}

#[cfg(feature = "postgres")]
/// Item 7: a call on a caller's transaction (with `SET LOCAL statement_timeout = '4s'`) that
/// waits for a held key, dropped at each of its await points in turn: afterwards the caller's
/// transaction still has its `statement_timeout` and its `lock_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_wait_leaves_the_callers_statement_timeout() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(4).await;
    let (mut dropped, mut dropped_waiting) = (0, 0);
    for point in 0.. {
        let pr_id = 1;
        let (held_tx, held_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let holder = tokio::spawn(hold_for_two_slices(
            db.clone(),
            key_of(pr_id),
            held_tx,
            stop_rx,
        ));
        held_rx.await.unwrap();
        let txn = db.begin().await.unwrap();
        execute(&txn, "SET LOCAL statement_timeout = '4s'").await;
        execute(&txn, "SET LOCAL lock_timeout = '3s'").await;
        // The shortest slice of `Wait::Forever`: one second.
        execute(&txn, "SET LOCAL deadlock_timeout = '100ms'").await;
        let call = PullRequest::once(pr_id, new_pr(pr_id))
            .wait(Wait::Forever)
            .exec(&txn);
        let done = drop_at_await_point(call, point).await;
        let _ = stop_tx.send(());
        let waited = holder.await.unwrap();
        assert_eq!(
            show(&txn, "statement_timeout").await,
            "4s",
            "dropped at await point {point}: statement_timeout changed"
        );
        assert_eq!(
            show(&txn, "lock_timeout").await,
            "3s",
            "dropped at await point {point}: lock_timeout changed"
        );
        txn.rollback().await.unwrap();
        match done {
            Some(outcome) => {
                assert!(outcome.unwrap().is_created());
                break;
            }
            None => {
                dropped += 1;
                dropped_waiting += usize::from(waited);
            }
        }
    }
    assert!(
        dropped_waiting >= 1 && dropped > dropped_waiting,
        "{dropped} calls dropped, {dropped_waiting} of them while waiting: the sweep must drop \
         calls before and during the wait"
    );
}

on_each_server! {
    /// Item 5: calls joined on one caller's transaction, each with a bound that leaves no
    /// room to wait, all get their (free) keys: waiting for a sibling's turn is not waiting
    /// for another transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bound_does_not_count_a_siblings_turn(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        for (first, wait) in [(1, Wait::No), (3, Wait::Timeout(Duration::from_millis(1)))] {
            let txn = db.begin().await.unwrap();
            let slow = || async {
                // Holds the turn past the 1 ms bound (the bug shows without it for Wait::No).
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::convert::Infallible>(new_pr(first))
            };
            let (one, two) = tokio::join!(
                PullRequest::once_with(first, slow).wait(wait).exec(&txn),
                PullRequest::once(first + 1, new_pr(first + 1)).wait(wait).exec(&txn),
            );
            assert!(one.unwrap().is_created(), "{wait:?}");
            let two = two.unwrap_or_else(|err| panic!("{wait:?}: the second call got {err:?}"));
            assert!(two.is_created(), "{wait:?}");
            txn.commit().await.unwrap();
        }
    }
}

/// The rows of pull request `pr_id` in `db`.
async fn rows(db: &impl ConnectionTrait, pr_id: i64) -> usize {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .all(db)
        .await
        .unwrap()
        .len()
}

/// Item 6: on one transaction, a call on `txn` (pr 1) is inside its `make_data` when a call on
/// `nested = txn.begin()` (pr 2) starts; pr 1's `make_data` then fails. The nested call's row
/// survives: both calls run on one session, so they take turns as calls on one transaction do.
async fn a_nested_transaction_keeps_its_created_row_on(db: &DatabaseConnection) {
    let txn = db.begin().await.unwrap();
    let nested = txn.begin().await.unwrap();
    let (inside_tx, inside_rx) = oneshot::channel::<()>();
    let (two_done_tx, two_done_rx) = oneshot::channel::<()>();
    let one = PullRequest::create_once_with(&txn, 1, || async {
        inside_tx.send(()).unwrap();
        // Without turns the nested call runs to completion right here; with them it waits
        // for this call, so this bound lets it go on.
        let _ = tokio::time::timeout(Duration::from_millis(500), two_done_rx).await;
        Err::<NewPullRequest, _>("the API is down")
    });
    let two = async {
        inside_rx.await.unwrap();
        let outcome = PullRequest::create_once(&nested, 2, new_pr(2)).await;
        let _ = two_done_tx.send(());
        outcome
    };
    let (one, two) = tokio::join!(one, two);
    assert!(matches!(one, Err(Error::MakeData(_))), "{one:?}");
    assert!(two.unwrap().is_created(), "the nested call created pr 2");
    nested.commit().await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(rows(db, 2).await, 1, "pr 2 was reported Created");
    assert_eq!(rows(db, 1).await, 0);
}

/// Item 6: a call on `txn.begin()` inside the `make_data` of a call on `txn` for the same key
/// runs nested (the same session holds the key), and the row is created once.
async fn a_call_on_a_nested_transaction_inside_make_data_runs_nested_on(db: &DatabaseConnection) {
    let txn = db.begin().await.unwrap();
    let nested = txn.begin().await.unwrap();
    let inner = std::sync::Mutex::new(None);
    let outer = PullRequest::create_once_with(&txn, 7, || async {
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            PullRequest::create_once(&nested, 8, new_pr(8)),
        )
        .await
        .expect("the nested call does not wait for its own session");
        let same_key = tokio::time::timeout(
            Duration::from_secs(30),
            PullRequest::create_once(&nested, 7, new_pr(7)),
        )
        .await
        .expect("the nested call does not wait for its own session");
        *inner.lock().unwrap() = Some((
            result.map(|o| o.is_created()),
            same_key.map(|o| o.is_created()),
        ));
        Ok::<_, Error>(new_pr(7))
    })
    .await
    .unwrap();
    let (other_key, same_key) = inner.lock().unwrap().take().unwrap();
    assert!(other_key.unwrap(), "pr 8 created on the nested transaction");
    assert!(
        same_key.unwrap(),
        "pr 7 created on the nested transaction, not Reentrant"
    );
    assert!(!outer.is_created(), "the nested call created pr 7 first");
    nested.commit().await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!((rows(db, 7).await, rows(db, 8).await), (1, 1));
}

/// Item 4: `outer` creates pr `key` on `outer_db` with a `make_data` that creates the same pr
/// with `inner`; returns what the inner call returned.
async fn inner_call<Fut>(
    outer_db: &impl sea_orm_idempotent::TransactionSource,
    key: i64,
    inner: impl FnOnce() -> Fut + Send,
) -> Result<Outcome<pull_requests::Model>, Error>
where
    Fut: std::future::Future<Output = Result<Outcome<pull_requests::Model>, Error>> + Send,
{
    let (tx, rx) = oneshot::channel();
    let outer = tokio::time::timeout(
        Duration::from_secs(30),
        PullRequest::create_once_with(outer_db, key, || async move {
            tx.send(inner().await).unwrap();
            Ok::<_, Error>(new_pr(key))
        }),
    )
    .await
    .expect("the inner call must not wait for its enclosing call")
    .unwrap();
    assert!(outer.is_created(), "the outer call goes on");
    rx.await.unwrap()
}

/// Item 4: inside `make_data` of a call on `first`, calls for the same key on `second`
/// (another database) run: from a connection and from a caller's transaction, into a
/// connection and a caller's transaction.
async fn calls_inside_make_data_on_another_database_run_on(
    first: &DatabaseConnection,
    second: &DatabaseConnection,
) {
    let created = |result: Result<Outcome<pull_requests::Model>, Error>| {
        result.unwrap_or_else(|err| panic!("{err:?}")).is_created()
    };
    // Connection, then connection.
    assert!(created(
        inner_call(first, 1, || PullRequest::create_once(second, 1, new_pr(1))).await
    ));
    // Connection, then a caller's transaction.
    let txn2 = second.begin().await.unwrap();
    assert!(created(
        inner_call(first, 2, || PullRequest::create_once(&txn2, 2, new_pr(2))).await
    ));
    txn2.commit().await.unwrap();
    // A caller's transaction, then a connection.
    let txn1 = first.begin().await.unwrap();
    assert!(created(
        inner_call(&txn1, 3, || PullRequest::create_once(second, 3, new_pr(3))).await
    ));
    // A caller's transaction, then a caller's transaction.
    let txn2 = second.begin().await.unwrap();
    assert!(created(
        inner_call(&txn1, 4, || PullRequest::create_once(&txn2, 4, new_pr(4))).await
    ));
    txn2.commit().await.unwrap();
    txn1.commit().await.unwrap();
    for pr_id in 1..=4 {
        assert_eq!(
            (rows(first, pr_id).await, rows(second, pr_id).await),
            (1, 1),
            "pr {pr_id}"
        );
    }
}

on_each_server! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nested_transaction_keeps_its_created_row(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        a_nested_transaction_keeps_its_created_row_on(&test_db.connect(2).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_on_a_nested_transaction_inside_make_data_runs_nested(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        a_call_on_a_nested_transaction_inside_make_data_runs_nested_on(
            &test_db.connect(2).await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_inside_make_data_on_another_database_run(server: Server) {
        let (Some(first), Some(second)) =
            (server.database().await, server.database_part("second").await)
        else {
            return;
        };
        calls_inside_make_data_on_another_database_run_on(
            &first.connect(2).await,
            &second.connect(2).await,
        )
        .await;
    }

    /// The same database through another pool is still the same lock: refused, from a
    /// connection and from a caller's transaction, into a pool and a caller's transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_inside_make_data_on_another_pool_of_the_database_is_refused(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let (first, second) = (test_db.connect(2).await, test_db.connect(2).await);
        let reentrant = |result: Result<Outcome<pull_requests::Model>, Error>| {
            matches!(result, Err(Error::Reentrant { .. }))
        };
        assert!(reentrant(inner_call(&first, 1, || PullRequest::create_once(&second, 1, new_pr(1))).await));
        let txn2 = second.begin().await.unwrap();
        assert!(reentrant(inner_call(&first, 2, || PullRequest::create_once(&txn2, 2, new_pr(2))).await));
        txn2.rollback().await.unwrap();
        let txn1 = first.begin().await.unwrap();
        assert!(reentrant(inner_call(&txn1, 3, || PullRequest::create_once(&second, 3, new_pr(3))).await));
        let txn2 = second.begin().await.unwrap();
        assert!(reentrant(inner_call(&txn1, 4, || PullRequest::create_once(&txn2, 4, new_pr(4))).await));
        txn2.rollback().await.unwrap();
        txn1.commit().await.unwrap();
    }
}

/// Item 4: PostgreSQL, then MariaDB, and back: the same key on two servers is two locks.
#[cfg(all(feature = "postgres", feature = "mysql"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_inside_make_data_on_another_server_run() {
    let Some(mariadb) = TestDb::mysql().await else {
        return;
    };
    let postgres = TestDb::new().await;
    let (postgres, mariadb) = (postgres.connect(2).await, mariadb.connect(2).await);
    calls_inside_make_data_on_another_database_run_on(&postgres, &mariadb).await;
    for db in [&postgres, &mariadb] {
        <PullRequest as sea_orm::EntityTrait>::delete_many()
            .exec(db)
            .await
            .unwrap();
    }
    calls_inside_make_data_on_another_database_run_on(&mariadb, &postgres).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    use migration::{Migrator, MigratorTrait};
    use sea_orm::sqlx::sqlite::SqliteJournalMode;
    use test_support::TempDir;

    /// A migrated SQLite file of `dir`, over a pool of `size`.
    async fn file(
        dir: &TempDir,
        name: &str,
        size: u32,
        busy_timeout: Duration,
    ) -> DatabaseConnection {
        let mut options = test_support::pool_options(&dir.sqlite_url(name), size);
        options.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(busy_timeout)
        });
        let db = test_support::connect_with(options).await;
        Migrator::up(&db, None).await.expect("migrate");
        db
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nested_transaction_keeps_its_created_row() {
        let dir = TempDir::new("sessions-nested");
        let db = file(&dir, "app.db", 2, Duration::from_secs(30)).await;
        a_nested_transaction_keeps_its_created_row_on(&db).await;
    }

    /// Item 4: two SQLite files are two write locks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_inside_make_data_on_another_sqlite_file_run() {
        let dir = TempDir::new("sessions-files");
        let first = file(&dir, "first.db", 2, Duration::from_secs(30)).await;
        let second = file(&dir, "second.db", 2, Duration::from_secs(30)).await;
        let created = inner_call(&first, 1, || {
            PullRequest::create_once(&second, 1, new_pr(1))
        })
        .await
        .unwrap_or_else(|err| panic!("{err:?}"));
        assert!(created.is_created());
        let txn2 = second.begin().await.unwrap();
        let created = inner_call(&first, 2, || PullRequest::create_once(&txn2, 2, new_pr(2)))
            .await
            .unwrap_or_else(|err| panic!("{err:?}"));
        assert!(created.is_created());
        txn2.commit().await.unwrap();
        assert_eq!((rows(&second, 1).await, rows(&second, 2).await), (1, 1));
    }

    /// Item 4: the crate's own transaction holds the file's write lock, so a call inside its
    /// `make_data` on another connection of the same file (another pool, or a caller's
    /// transaction) is refused at once, not after the connection's `busy_timeout`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_call_inside_make_data_on_another_connection_of_the_file_is_refused() {
        let dir = TempDir::new("sessions-one-file");
        let first = file(&dir, "app.db", 2, Duration::from_secs(3)).await;
        let second = file(&dir, "app.db", 2, Duration::from_secs(3)).await;
        let started = std::time::Instant::now();
        let result = inner_call(&first, 1, || {
            PullRequest::create_once(&second, 1, new_pr(1))
        })
        .await;
        assert!(matches!(result, Err(Error::Reentrant { .. })), "{result:?}");
        let txn2 = second.begin().await.unwrap();
        let result = inner_call(&first, 2, || PullRequest::create_once(&txn2, 2, new_pr(2))).await;
        assert!(matches!(result, Err(Error::Reentrant { .. })), "{result:?}");
        txn2.rollback().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused at once, not after busy_timeout: {:?}",
            started.elapsed()
        );
    }
}
