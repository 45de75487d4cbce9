//! MySQL's side of the lock probes: sessions waiting for a key's row of the lock table.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::{LockKey, mysql_lock_table};

/// Connection ids of this database's sessions running the crate's lock statement on a lock
/// table (the slots or the per-key table: both names start `sea_orm_idempotent_lock`) (`SET STATEMENT innodb_lock_wait_timeout = n FOR INSERT ...`), i.e. waiting for a key,
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
    let sql = String::from(
        "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
         WHERE DB = DATABASE() AND ID <> CONNECTION_ID() \
           AND INFO LIKE 'SET STATEMENT innodb_lock_wait_timeout%sea_orm_idempotent_lock%' \
         ORDER BY id",
    );
    db.query_all_raw(Statement::from_string(DbBackend::MySql, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "id").unwrap() as i32)
        .collect()
}

/// Gives the test's database the per-key lock table of 0.1 and 0.2 (`mysql_lock_table`; the
/// sample's migrations drop it for the slots): pools and transactions that first lock after
/// this lock the keys' own rows, as a database that has not dropped it yet does.
pub(crate) async fn with_the_per_key_table(test_db: &test_support::TestDb) {
    let db = test_db.connect(1).await;
    db.execute(&mysql_lock_table()).await.unwrap();
}
