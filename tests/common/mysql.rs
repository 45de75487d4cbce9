//! MySQL's side of the lock probes: sessions waiting for a key's row of the lock table.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::{LockKey, MYSQL_LOCK_TABLE};

/// Connection ids of this database's sessions running the crate's lock statement on the lock
/// table (`SET STATEMENT innodb_lock_wait_timeout = n FOR INSERT ...`), i.e. waiting for a key,
/// from `information_schema.PROCESSLIST`. Not per key: the MySQL tests contend one key at a
/// time. (InnoDB's `INNODB_LOCK_WAITS` would name the key, but it is a cache that is refreshed
/// only after 0.1 s without readers, so a poller, or two tests polling at once, keep it stale.)
///
/// # Panics
///
/// For `granted == true`: InnoDB shows holders only in that cache; probe with
/// `lock_is_free` instead.
pub(crate) async fn lock_threads(db: &DatabaseConnection, key: LockKey, granted: bool) -> Vec<i32> {
    assert!(
        !granted,
        "MySQL shows no lock holders reliably; probe {key} with lock_is_free instead"
    );
    let sql = format!(
        "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
         WHERE DB = DATABASE() AND ID <> CONNECTION_ID() \
           AND INFO LIKE 'SET STATEMENT innodb_lock_wait_timeout%{MYSQL_LOCK_TABLE}%' \
         ORDER BY id"
    );
    db.query_all_raw(Statement::from_string(DbBackend::MySql, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "id").unwrap() as i32)
        .collect()
}
