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

mod common;

use std::time::Duration;

use common::{Server, drop_at_await_point, key_of, lock_pids, new_pr, on_each_server};
use entity::PullRequest;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{IdempotentCreate, Wait, acquire_advisory_lock};
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
async fn waiting_since(db: &DatabaseConnection, key: sea_orm_idempotent::LockKey) -> Option<String> {
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
) {
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
        assert!(std::time::Instant::now() < deadline, "nobody waited for {key}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    holder.commit().await.unwrap();
}

#[cfg(feature = "postgres")]
/// Item 7: a call on a caller's transaction (with `SET LOCAL statement_timeout = '4s'`) that
/// waits for a held key, dropped at each of its await points in turn: afterwards the caller's
/// transaction still has its `statement_timeout` and its `lock_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_wait_leaves_the_callers_statement_timeout() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(4).await;
    let mut dropped = 0;
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
        holder.await.unwrap();
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
            None => dropped += 1,
        }
    }
    assert!(dropped >= 8, "only {dropped} await points");
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
