//! Two natural keys whose lock keys collide. A lock key is 64 bits, half of them a crc32 of the
//! key's text, so different keys can share one: `219756200243` and `235370421790` do for
//! `pull_requests` (and anyone can search for more, a service's keys may come from outside).
//! A collision may only make the two keys wait for each other, in the database and in the
//! crate's waiting room, which share the lock key; each call must still get its own row.
//!
//! `a_caller_never_gets_a_colliding_keys_row` failed before the waiting room compared natural
//! keys (PostgreSQL, MariaDB and SQLite alike: `left: 235370421790, right: 219756200243`): a
//! caller that waited in the room behind a caller of the colliding key was handed that
//! caller's row, as `Existing`. When the row handed over was an existing one, the caller's own
//! row was never created: a delivery lost, reported as a duplicate.

mod common;

#[cfg(any(feature = "postgres", feature = "mysql"))]
use common::{Server, on_each_server};
use common::{key_of, new_pr, rows_for};
use entity::PullRequest;
use sea_orm::DatabaseConnection;
use sea_orm_idempotent::IdempotentCreate;
use tokio::sync::oneshot;

/// Pairs of keys of `pull_requests` whose lock keys collide (found by searching crc32s).
const PAIRS: [(i64, i64); 2] = [
    (219_756_200_243, 235_370_421_790),
    (304_451_600_149, 619_112_783_899),
];

#[test]
fn the_keys_of_a_pair_share_a_lock_key() {
    for (key, colliding) in PAIRS {
        assert_ne!(key, colliding);
        assert_eq!(key_of(key), key_of(colliding));
    }
}

/// Lets every other task of a current-thread runtime run until it blocks.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// A caller of `key` holds its turn (inside its `make_data`, so under the lock); a caller of
/// `colliding` and another of `key` arrive and wait in the waiting room behind it, in the order
/// `colliding_first` says (no statement comes before the room, so on a current-thread runtime
/// they are there once they stop running). The holder creates `key`'s row; the next waiter
/// finds or creates its own row and passes it on to the last, which must not take a row of
/// another key. With the caller of `key` next, the row passed on is `key`'s, and the caller
/// of `colliding` that took it would never create its own.
async fn colliding_waiters_each_get_their_own_row(
    db: &DatabaseConnection,
    (key, colliding): (i64, i64),
    colliding_first: bool,
) {
    let (holding_tx, holding_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let holder = tokio::spawn({
        let db = db.clone();
        async move {
            PullRequest::create_once_with(&db, key, || async move {
                holding_tx.send(()).unwrap();
                release_rx.await.unwrap();
                Ok::<_, std::io::Error>(new_pr(key))
            })
            .await
        }
    });
    holding_rx.await.unwrap();
    let call = |key: i64| {
        let db = db.clone();
        tokio::spawn(async move { PullRequest::create_once(&db, key, new_pr(key)).await })
    };
    let (colliding_call, same) = if colliding_first {
        let colliding_call = call(colliding);
        settle().await;
        (colliding_call, call(key))
    } else {
        let same = call(key);
        settle().await;
        (call(colliding), same)
    };
    settle().await;
    release_tx.send(()).unwrap();

    let holder = holder.await.unwrap().unwrap();
    assert!(holder.is_created(), "{holder:?}");
    let colliding_call = colliding_call.await.unwrap().unwrap();
    assert_eq!(colliding_call.model().pr_id, colliding);
    assert!(colliding_call.is_created(), "{colliding_call:?}");
    let same = same.await.unwrap().unwrap();
    assert_eq!(same.model().pr_id, key);
    assert!(!same.is_created(), "{same:?}");
    assert_eq!(rows_for(db, key).await, 1);
    assert_eq!(rows_for(db, colliding).await, 1);
}

/// Both orders of the waiters, one pair of keys each.
async fn both_orders(db: &DatabaseConnection) {
    colliding_waiters_each_get_their_own_row(db, PAIRS[0], true).await;
    colliding_waiters_each_get_their_own_row(db, PAIRS[1], false).await;
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
on_each_server! {
    #[tokio::test]
    async fn a_caller_never_gets_a_colliding_keys_row(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(4).await;
        both_orders(&db).await;
    }
}

/// The same on a SQLite file, where the waiting room is in front of the writers' queue.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_caller_never_gets_a_colliding_keys_row_on_sqlite() {
    use migration::{Migrator, MigratorTrait};

    let dir = common::TempDir::new("colliding-keys");
    let db = test_support::connect(&dir.sqlite_url("colliding.db"), 4).await;
    Migrator::up(&db, None).await.expect("migrate");
    both_orders(&db).await;
}
