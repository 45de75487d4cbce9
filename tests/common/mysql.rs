//! MySQL's side of the lock probes: sessions waiting for a key's row of the lock table.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::{LockKey, mysql_lock_slot, mysql_lock_table};

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

/// `n` ids from `from` on whose lock keys (`key_of(id)`) share one slot, and that slot.
pub(crate) fn ids_sharing_a_slot(
    key_of: impl Fn(i64) -> LockKey,
    from: i64,
    n: usize,
) -> (Vec<i64>, u32) {
    let mut seen: std::collections::HashMap<u32, Vec<i64>> = std::collections::HashMap::new();
    for id in from.. {
        let slot = mysql_lock_slot(key_of(id));
        let ids = seen.entry(slot).or_default();
        ids.push(id);
        if ids.len() == n {
            return (ids.clone(), slot);
        }
    }
    unreachable!()
}

/// `n` pull-request ids from `from` on whose keys share one slot, and that slot.
pub(crate) fn ids_of_one_slot(from: i64, n: usize) -> (Vec<i64>, u32) {
    ids_sharing_a_slot(super::key_of, from, n)
}

/// The ids of `unguarded` `k` whose keys share one slot, `n` of them, from `from` on.
pub(crate) fn unguarded_ids_of_one_slot(from: i64, n: usize) -> Vec<i64> {
    ids_sharing_a_slot(|id| LockKey::for_entity("unguarded", &id), from, n).0
}

/// A pool of `max_connections` to `test_db` whose sessions are READ COMMITTED, where MariaDB's
/// one statement applies ([`test_support::connect_read_committed`]).
pub(crate) async fn read_committed_pool(
    test_db: &test_support::TestDb,
    max_connections: u32,
) -> DatabaseConnection {
    test_support::connect_read_committed(&test_db.url, max_connections).await
}

pub(crate) fn read_committed() -> Option<sea_orm::IsolationLevel> {
    Some(sea_orm::IsolationLevel::ReadCommitted)
}

/// One number from `sql`.
pub(crate) async fn number(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::MySql, sql.to_owned()))
        .await
        .unwrap()
        .expect("a row");
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Events keyed by `k` with no unique index: the key's lock is all that keeps one row per key,
/// so a call that runs alongside another holder of its key stores a second row.
#[allow(unreachable_pub, dead_code)]
pub(crate) mod unguarded {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "unguarded")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub k: i64,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = i64;
        type Data = String;

        fn key_column() -> Column {
            Column::K
        }

        fn new_active_model(_: &i64, v: String) -> ActiveModel {
            ActiveModel {
                v: Set(v),
                ..Default::default()
            }
        }
    }
}

/// The `unguarded` table, in `db`'s database.
pub(crate) async fn create_unguarded(db: &DatabaseConnection) {
    db.execute_unprepared(
        "CREATE TABLE unguarded (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         k bigint NOT NULL, v text NOT NULL) ENGINE=InnoDB",
    )
    .await
    .unwrap();
}
