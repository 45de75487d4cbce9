//! MariaDB: a caller dropped while it waits (pool of one), a killed lock holder, hostile keys
//! and composite keys.
//!
//! What would make these fail: a session-scoped lock (`GET_LOCK`) left on the pooled connection
//! by the dropped caller (the next caller on the pool of one would find the key held by its own
//! connection's leftover, and another connection could not take it); a server-side wait with no
//! bound (the pool's only connection stays busy and the next call times out acquiring it); a
//! lock that outlives a killed connection; a key formatted into SQL.

#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::composite::{self, MYSQL_TABLES};
use common::mysql::connection_id;
use common::{key_of, lock_is_free, new_pr, rows_for, small_pool, until_someone_waits};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::{IdempotentCreate, Wait, acquire_advisory_lock};
use test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_leaves_no_lock_and_no_stuck_connection() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let observer = test_db.connect(1).await;
    let holder = test_db.connect(1).await;
    let db = small_pool(&test_db.url, 1).await;

    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(1), Wait::Forever)
        .await
        .unwrap();
    tokio::select! {
        result = PullRequest::create_once(&db, 1, new_pr(1)) => {
            panic!("create_once finished while the key was held: {result:?}")
        }
        () = until_someone_waits(&observer, key_of(1)) => {}
    }

    // The pool's only connection comes back (its abandoned wait ends within one slice): another
    // key completes while key 1 is still held.
    assert!(
        PullRequest::create_once(&db, 2, new_pr(2))
            .await
            .unwrap()
            .is_created()
    );
    held.commit().await.unwrap();
    // Nobody holds key 1 now: not the departed caller's connection (the one `db` uses).
    assert!(lock_is_free(&observer, key_of(1)).await);
    assert!(lock_is_free(&db, key_of(1)).await);
    assert_eq!(
        rows_for(&db, 1).await,
        0,
        "nothing written for the departed caller"
    );
    assert!(
        PullRequest::create_once(&db, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
}

/// The holder's connection is killed (`KILL CONNECTION`) while a caller waits for its key:
/// InnoDB rolls the holder back, which frees the key; the waiter creates the row once, and the
/// holder's next statement fails with a retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_lock_holder_gets_a_retryable_error_and_the_waiter_creates_the_row() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder = test_db.connect(1).await;
    let admin = test_db.connect(1).await;
    let db = test_db.connect(1).await;
    let held = holder.begin().await.unwrap();
    acquire_advisory_lock(&held, key_of(7), Wait::Forever)
        .await
        .unwrap();
    let holder_id = connection_id(&held).await;

    let waiter = tokio::spawn(async move { PullRequest::create_once(&db, 7, new_pr(7)).await });
    until_someone_waits(&admin, key_of(7)).await;
    admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "KILL CONNECTION ?",
            [holder_id.into()],
        ))
        .await
        .unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter goes on once the holder is killed")
        .unwrap()
        .unwrap();
    assert!(outcome.is_created());
    let err = PullRequest::create_once(&held, 8, new_pr(8))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(rows_for(&admin, 7).await, 1);
    assert_eq!(rows_for(&admin, 8).await, 0);
}

/// Keys no lock name could hold (MySQL's `GET_LOCK` names stop at 64 characters), quotes,
/// backslashes, backticks, comment and statement separators, non-ASCII: each is bound, creates
/// one row, and is found again; the table is intact.
#[tokio::test]
async fn hostile_keys_are_bound_and_each_creates_one_row() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    db.execute_unprepared(MYSQL_TABLES).await.unwrap();
    let keys = [
        String::new(),
        "'".to_owned(),
        "\\' OR 1=1 -- ".to_owned(),
        "`members`; DROP TABLE members; --".to_owned(),
        "\"\\\\\0\n".to_owned(),
        "Ünïcødé 🦀 ключ".to_owned(),
        "x".repeat(65),
        "y".repeat(191),
    ];
    for login in &keys {
        for expect_created in [true, false] {
            let outcome = composite::members::Entity::create_once(
                &db,
                (1, login.clone()),
                composite::member_row(&(1, login.clone())),
            )
            .await
            .unwrap_or_else(|e| panic!("{login:?}: {e:?}"));
            assert_eq!(outcome.is_created(), expect_created, "{login:?}");
            assert_eq!(&outcome.model().login, login);
        }
    }
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        composite::members::Entity::find().count(&db).await.unwrap(),
        keys.len() as u64
    );
}

/// Two- and three-column keys raced by 32 tasks over two pools (half of them with
/// `make_data`): one row per key, `Created` once, `make_data` run only for rows it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_create_each_composite_key_once() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let setup = test_db.connect(1).await;
    setup.execute_unprepared(MYSQL_TABLES).await.unwrap();
    let pools = [test_db.connect(8).await, test_db.connect(8).await];
    let race = composite::race_both(&pools).await;
    race.assert_exactly_once(2 * composite::KEYS, 1);
    composite::assert_one_row_per_key(&setup).await;
}
