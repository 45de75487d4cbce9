//! Lock probes: who holds or waits for a key (PostgreSQL: `pg_locks`; MySQL: InnoDB's lock
//! waits on the key's row of the lock table), and whether another connection can take it.

use std::time::{Duration, Instant};

use entity::PullRequest;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock};

/// The key `create_once` locks for pull request `pr_id`: the entity's namespace, which is its
/// table's name.
pub(crate) fn key_of(pr_id: i64) -> LockKey {
    assert_eq!(PullRequest::lock_namespace(), "pull_requests");
    LockKey::for_entity("pull_requests", &pr_id)
}

/// Backends holding (`granted`) or waiting for (`!granted`) the advisory lock `key` in this
/// database, from `pg_locks`. A `BigInt(k)` key appears as `classid = k >> 32,
/// objid = k & 0xFFFFFFFF, objsubid = 1`; a `Pair(a, b)` as `classid = a, objid = b,
/// objsubid = 2` (as unsigned 32-bit `oid`s).
///
/// On MySQL, from `information_schema.INNODB_LOCK_WAITS`: InnoDB lists only locks someone
/// waits for, so a holder appears (`granted`) only while a session waits for it.
pub(crate) async fn lock_pids(db: &DatabaseConnection, key: LockKey, granted: bool) -> Vec<i32> {
    if db.get_database_backend() == DbBackend::MySql {
        return super::mysql::lock_threads(db, key, granted).await;
    }
    let (classid, objid, objsubid) = match key {
        LockKey::BigInt(k) => ((k >> 32) as u32, k as u32, 1),
        LockKey::Pair(a, b) => (a as u32, b as u32, 2),
    };
    db.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pid FROM pg_locks \
         WHERE locktype = 'advisory' \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = $3 AND granted = $4 \
         ORDER BY pid",
        [
            i64::from(classid).into(),
            i64::from(objid).into(),
            objsubid.into(),
            granted.into(),
        ],
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i32>("", "pid").unwrap())
    .collect()
}

/// Backends holding and waiting for `key`, from `pg_locks`: (granted, waiting).
pub(crate) async fn lock_rows(observer: &DatabaseConnection, key: LockKey) -> (usize, usize) {
    (
        lock_pids(observer, key, true).await.len(),
        lock_pids(observer, key, false).await.len(),
    )
}

/// Resolves once a session waits for `key` (polling `pg_locks`, not sleeping blindly); panics
/// if nobody does within 30 s, so a regression fails instead of hanging.
pub(crate) async fn until_someone_waits(observer: &DatabaseConnection, key: LockKey) {
    poll_locks_until(
        observer,
        key,
        false,
        Duration::from_secs(30),
        &format!("a session waits for {key}"),
        |waiters| !waiters.is_empty(),
    )
    .await;
}

/// Resolves once some statement of this database waits for a table lock (`pg_locks`, polled
/// as [`poll_locks_until`] polls it); panics if none does within 30 s.
pub(crate) async fn until_a_statement_waits_for_a_table(observer: &DatabaseConnection) {
    let waiting = Statement::from_string(
        DbBackend::Postgres,
        "SELECT 1 FROM pg_locks WHERE locktype = 'relation' AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer
        .query_one_raw(waiting.clone())
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until a statement waits for a table lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `pg_locks` until `condition` holds for [`lock_pids`], for at most `within` (a test
/// that waits forever proves nothing). The interval only paces the polling; the database
/// decides when we go on.
pub(crate) async fn poll_locks_until(
    db: &DatabaseConnection,
    key: LockKey,
    granted: bool,
    within: Duration,
    what: &str,
    condition: impl Fn(&[i32]) -> bool,
) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let pids = lock_pids(db, key, granted).await;
        if condition(&pids) {
            return pids;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `txn` (another connection's open transaction) can take `key` right now
/// ([`Wait::No`]).
pub(crate) async fn try_lock(txn: &DatabaseTransaction, key: LockKey) -> bool {
    match acquire_advisory_lock(txn, key, Wait::No).await {
        Ok(()) => true,
        Err(Error::LockBusy { .. }) => false,
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Whether another connection (`db`) can take `key` right now ([`Wait::No`]).
pub(crate) async fn lock_is_free(db: &DatabaseConnection, key: LockKey) -> bool {
    let txn = db.begin().await.unwrap();
    let free = try_lock(&txn, key).await;
    txn.rollback().await.unwrap();
    free
}

/// Runs `create`, which must fail, and probes `key` from `other` the moment it returns: the
/// probe's transaction is opened first, so on the single-threaded test runtime its one
/// statement is on the wire before any background task of the failed call's pool runs (such
/// as sqlx's return-to-pool ping, which flushes the ROLLBACK a dropped transaction queued).
/// Returns the error and whether the lock was free.
pub(crate) async fn fail_then_probe<T: std::fmt::Debug>(
    other: &DatabaseConnection,
    key: LockKey,
    create: impl std::future::Future<Output = Result<T, Error>>,
) -> (Error, bool) {
    let probe = other.begin().await.unwrap();
    let err = create.await.expect_err("the create fails");
    let free = try_lock(&probe, key).await;
    probe.rollback().await.unwrap();
    (err, free)
}
