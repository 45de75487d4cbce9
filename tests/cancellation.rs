//! Dropping a `create_once` that is waiting for a lock (a request timeout, a client gone), and
//! a bounded wait that times out inside a caller's transaction, on PostgreSQL and MariaDB
//! (`name::postgres`, `name::mariadb`: `common::on_each_server!`).
//!
//! Without bounded server-side waits the dropped-waiter test fails: sqlx pings a connection
//! before returning it to the pool, the ping waits behind the abandoned lock statement, and that
//! statement waits for as long as the holder holds the key. With a pool of one the next call
//! then cannot get a connection: it fails with a pool timeout (set to 10 s here) instead of
//! completing. On MariaDB it also fails with a session-scoped lock (`GET_LOCK`) left on the
//! pooled connection by the dropped caller: another connection could not take the key after
//! the holder commits.
//!
//! `on_mariadb_a_call_dropped_at_any_await_point_leaves_its_connection_usable` drops calls at
//! each of their await points in turn over a pool of one (PostgreSQL's counterpart is in
//! `drop_sweep.rs`). It failed while the statements of the crate's own MySQL transaction ran
//! on the caller's future (before `src/backend/mysql/shielded.rs`): a call dropped while its guarded insert
//! was on the wire left the pool's one connection waiting for an answer that never came, and
//! the next call's acquire timed out (`ConnectionAcquire(Timeout)` after await point 7 of key
//! 0's new key).

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::time::Duration;

use common::{
    Server, key_of, lock_is_free, lock_pids, new_pr, on_each_server, rows_for, small_pool,
    until_someone_waits,
};
use entity::PullRequest;
use sea_orm::TransactionTrait;
use sea_orm_idempotent::{IdempotentCreate, Wait, acquire_advisory_lock};

on_each_server! {
    /// A caller on a pool of ONE connection is dropped while it waits for a held key.
    /// Afterwards no lock is held by anyone: not the departed caller's connection (the one the
    /// pool hands out next), not a leftover wait; the pool's connection is back at once, and
    /// nothing was written for the departed caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_waiter_leaves_no_lock_and_no_stuck_connection(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let observer = test_db.connect(1).await;
        let holder = test_db.connect(1).await;
        // The caller's pool has ONE connection; its acquire timeout turns "stuck" into an error.
        let db = small_pool(&test_db.url, 1).await;

        let key = key_of(1);
        let held = holder.begin().await.unwrap();
        acquire_advisory_lock(&held, key, Wait::Forever)
            .await
            .unwrap();
        let holder_id = server.connection_id(&held).await;

        // The caller goes away while the server has it waiting for the key.
        tokio::select! {
            result = PullRequest::create_once(&db, 1, new_pr(1)) => {
                panic!("create_once finished while the key was held: {result:?}")
            }
            () = until_someone_waits(&observer, key) => {}
        }

        // The pool's only connection comes back: another key completes while the holder still
        // holds key 1 (it would wait for the holder, i.e. forever here, if the abandoned wait
        // were not bounded).
        let other = PullRequest::create_once(&db, 2, new_pr(2)).await.unwrap();
        assert!(other.is_created());

        // The abandoned wait is over and was never granted: only the holder has the key, and
        // nobody waits for it.
        if let Some(holders) = server.lock_holders(&observer, key).await {
            assert_eq!(holders, [holder_id]);
        }
        assert!(lock_pids(&observer, key, false).await.is_empty());
        assert!(!lock_is_free(&observer, key).await, "the holder still has it");
        held.commit().await.unwrap();
        // Nobody holds key 1 now: not the departed caller's connection (the one `db` uses).
        if let Some(holders) = server.lock_holders(&observer, key).await {
            assert!(holders.is_empty(), "{holders:?}");
        }
        assert!(lock_pids(&observer, key, false).await.is_empty());
        assert!(lock_is_free(&observer, key).await);
        assert!(lock_is_free(&db, key).await);

        // Nothing was written for the departed caller; a new delivery creates the row once.
        assert_eq!(rows_for(&db, 1).await, 0);
        assert!(
            PullRequest::create_once(&db, 1, new_pr(1))
                .await
                .unwrap()
                .is_created()
        );
    }

    /// Inside a caller's transaction, a call whose `Wait::Timeout` runs out (the key is held by
    /// another connection) returns `Error::LockTimeout` and rolls back only its own savepoint:
    /// the caller's transaction stays usable, and the row it created earlier in the same
    /// transaction commits with it, while nothing is written for the timed-out key. (Nothing
    /// is dropped here: the call returns its error.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_wait_leaves_the_callers_transaction_usable(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let holder = test_db.connect(1).await;
        let db = test_db.connect(1).await;
        let key = key_of(3);
        let held = holder.begin().await.unwrap();
        acquire_advisory_lock(&held, key, Wait::Forever)
            .await
            .unwrap();

        let txn = db.begin().await.unwrap();
        assert!(
            PullRequest::create_once(&txn, 4, new_pr(4))
                .await
                .unwrap()
                .is_created()
        );
        let err = PullRequest::once(3, new_pr(3))
            .wait(Wait::Timeout(Duration::from_millis(50)))
            .exec(&txn)
            .await
            .unwrap_err();
        assert!(
            matches!(err, sea_orm_idempotent::Error::LockTimeout { .. }),
            "{err:?}"
        );
        // The timeout rolled back only its own savepoint: the earlier row commits with the
        // caller.
        txn.commit().await.unwrap();
        held.commit().await.unwrap();
        assert_eq!(rows_for(&db, 4).await, 1);
        assert_eq!(rows_for(&db, 3).await, 0);
    }
}

/// Over a pool of ONE connection, for a new key and then its redelivery, calls are dropped
/// after their 1st, 2nd, 3rd, ... wait until one completes: on the one-statement path
/// (`pull_requests`, a unique index over the key: the look, the statement that locks the slot
/// and inserts, and every socket wait inside them) and on the locked path (`unguarded`, no
/// unique index: the look, `SET TRANSACTION`, `BEGIN`, the lock, the guarded insert,
/// `COMMIT`). After every dropped call the pool's connection (the one a dropped call had) is
/// back, usable and outside any transaction, and in the end every key has one row.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_a_call_dropped_at_any_await_point_leaves_its_connection_usable() {
    use common::mysql::{create_unguarded, number, read_committed_pool, unguarded};

    let Some(test_db) = test_support::TestDb::mysql().await else {
        return;
    };
    // READ COMMITTED sessions, where the one statement applies.
    let db = read_committed_pool(&test_db, 1).await;
    create_unguarded(&db).await;
    let pool = &db;
    let deepest = drop_sweep(pool, |k| async move {
        PullRequest::create_once(pool, k, new_pr(k)).await.map(drop)
    })
    .await;
    assert!(
        deepest >= 3,
        "one-statement calls completed after {deepest} waits at most"
    );
    let deepest = drop_sweep(pool, |k| async move {
        unguarded::Entity::create_once(pool, k, format!("v{k}"))
            .await
            .map(drop)
    })
    .await;
    assert!(
        deepest >= 4,
        "locked-path calls completed after {deepest} waits at most"
    );
    for k in 0..MARIADB_SWEPT_KEYS {
        assert_eq!(rows_for(&db, k).await, 1, "pull_requests key {k}");
        let sql = format!("SELECT COUNT(*) FROM unguarded WHERE k = {k}");
        assert_eq!(number(&db, &sql).await, 1, "unguarded key {k}");
    }
}

#[cfg(feature = "mysql")]
const MARIADB_SWEPT_KEYS: i64 = 4;

/// Drops `call(k)` (for a new key, then its redelivery, for each swept key) at each of its
/// await points in turn until one completes; after each drop, `db`'s one connection must be
/// outside any transaction. The most waits a call completed after.
#[cfg(feature = "mysql")]
async fn drop_sweep<F, Fut>(db: &sea_orm::DatabaseConnection, call: F) -> usize
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(), sea_orm_idempotent::Error>>,
{
    use common::drop_at_await_point;
    use common::mysql::number;

    let mut deepest = 0;
    for k in 0..MARIADB_SWEPT_KEYS {
        for path in ["new key", "redelivery"] {
            let mut point = 0;
            loop {
                if let Some(result) = drop_at_await_point(call(k), point).await {
                    result.unwrap();
                    break;
                }
                assert_eq!(
                    number(db, "SELECT CAST(@@in_transaction AS SIGNED)").await,
                    0,
                    "after a call dropped at await point {point} for key {k} ({path}), the \
                     pool's connection is in a transaction"
                );
                point += 1;
            }
            deepest = deepest.max(point);
        }
    }
    deepest
}
