//! The lock tables: the rows whose InnoDB row locks are the keys' locks on MySQL and MariaDB,
//! which of the two tables a database uses, and the text of every statement on them
//! ([`lock`](super::lock) sends them in order).
//!
//! # Why a lock table, not `GET_LOCK`
//!
//! MySQL's named locks (`GET_LOCK`) belong to the *session*: COMMIT and ROLLBACK do not release
//! them. A call whose future is dropped while it holds one (a request timeout, a client gone)
//! returns its pooled connection with the lock still held, and every other process waits for
//! whoever is handed that connection next; and a lock taken in a caller's transaction cannot be
//! made to last exactly as long as that transaction. InnoDB's row locks have the scope the crate
//! needs: they belong to the transaction, so a dropped call (its transaction rolls back), a
//! killed connection and a caller's COMMIT all release them, and nothing else can.
//!
//! # Two tables: slots, or a row per key
//!
//! - **[`slots`](super::slots)** (from 0.3): a fixed number of rows made by the migration, and
//!   a key locks the row of its slot (a pinned mapping that never changes). The table never
//!   grows. Two keys that share a slot wait for each other, as two keys whose PostgreSQL
//!   lock keys collide do; they never share a row of the entity. In a caller's REPEATABLE READ
//!   transaction the snapshot check (step 3 in [`lock`](super::lock)) counts every key of the
//!   slot, so it may refuse a call because *another* key of the slot was committed after the
//!   snapshot: rarely (65536 slots), and never wrongly let one through.
//! - **[`mysql_lock_table`]** (0.1 and 0.2): one row per key ever locked, made by the first
//!   lock of the key, never deleted: it grows by 17 bytes of key for every key.
//!
//! **Which one a database uses is decided by the database, never by a setting**, so that every
//! process and every version agrees: while the per-key table exists, every version locks its
//! rows (older versions know no other), the slots unused; once it is dropped, the slots. Each
//! pool (and a caller's transaction, per database) asks the catalog once
//! ([`lock_tables`](super::lock_tables)), and asks again when a statement finds the per-key
//! table gone. Dropping it is the switch, and it is atomic for the lock: `DROP TABLE` waits
//! until every transaction that used the table has ended (its metadata lock), so no
//! transaction still holds a per-key row when the first one locks a slot; and a statement on
//! the dropped table fails (error 1146), so a process that still thinks it has per-key rows
//! finds out before it locks anything. Upgrading: create and fill the slots while older
//! versions run, drop the per-key table once none does (`docs/backends.md`). Never create the
//! per-key table again while a process of 0.3 runs: those that decided on slots would not
//! see it.

// Compiled in every build: the per-key table's DDL is public (a migration crate may build the crate
// without the feature); the rest is reached only through `Backend::MySql`, which needs it.
#![cfg_attr(not(feature = "mysql"), allow(dead_code))]

use sea_orm::sea_query::{ColumnDef, Index, Table, TableCreateStatement};
use sea_orm::{DbBackend, DbErr, Statement, Value};

use super::slots::{MYSQL_LOCK_SLOTS_TABLE, mysql_lock_slot};
use crate::backend::mode::Mode;
use crate::classify::{MySqlError, mysql_error};
use crate::{Error, LockKey, ServerRefusal, Wait};

/// The name of the per-key lock table ([`mysql_lock_table`]).
pub const MYSQL_LOCK_TABLE: &str = "sea_orm_idempotent_locks";

/// The per-key lock table, for databases that have it already (0.1 and 0.2 created it): new
/// databases take [`mysql_lock_slots`](crate::mysql_lock_slots), which never grows, and a
/// database switches to the slots when this table is dropped (see
/// [`mysql_lock_slots`](crate::mysql_lock_slots), "Upgrading").
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS `sea_orm_idempotent_locks` (
///   `space` tinyint NOT NULL,        -- 2: LockKey::Pair, 1: LockKey::BigInt
///   `k1` int NOT NULL,               -- Pair's first half; BigInt's high 32 bits
///   `k2` int NOT NULL,               -- Pair's second half; BigInt's low 32 bits
///   `generation` bigint NOT NULL DEFAULT 0, -- exclusive holders so far
///   PRIMARY KEY (`space`, `k1`, `k2`)
/// ) ENGINE=InnoDB
/// ```
///
/// One row per key ever locked (17 bytes of key), never deleted; the crate only inserts rows
/// and locks and updates them.
pub fn mysql_lock_table() -> TableCreateStatement {
    Table::create()
        .table(MYSQL_LOCK_TABLE)
        .if_not_exists()
        .col(ColumnDef::new("space").tiny_integer().not_null())
        .col(ColumnDef::new("k1").integer().not_null())
        .col(ColumnDef::new("k2").integer().not_null())
        .col(
            ColumnDef::new("generation")
                .big_integer()
                .not_null()
                .default(0),
        )
        .primary_key(Index::create().col("space").col("k1").col("k2"))
        .engine("InnoDB")
        .to_owned()
}

/// Which table a database's keys lock rows of (see the
/// [module docs](self#two-tables-slots-or-a-row-per-key)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockTable {
    /// [`mysql_lock_table`]: a row per key.
    PerKey,
    /// [`mysql_lock_slots`](crate::mysql_lock_slots): the row of the key's slot.
    Slots,
}

impl LockTable {
    /// The row `key` locks in this table.
    pub(crate) fn row(self, key: LockKey) -> LockRow {
        match self {
            LockTable::PerKey => {
                let (space, k1, k2): (i32, i32, i32) = match key {
                    LockKey::Pair(namespace, key) => (2, namespace, key),
                    // High and low 32 bits, each bit-cast: every i64 has its own pair.
                    LockKey::BigInt(key) => (1, (key >> 32) as i32, key as i32),
                };
                LockRow::Key(space, k1, k2)
            }
            LockTable::Slots => LockRow::Slot(mysql_lock_slot(key) as i32),
        }
    }
}

/// A row of a lock table, by its whole primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LockRow {
    /// `(space, k1, k2)` of [`MYSQL_LOCK_TABLE`].
    Key(i32, i32, i32),
    /// `slot` of [`MYSQL_LOCK_SLOTS_TABLE`].
    Slot(i32),
}

impl LockRow {
    /// The table the row is in.
    pub(crate) fn table(self) -> &'static str {
        match self {
            LockRow::Key(..) => MYSQL_LOCK_TABLE,
            LockRow::Slot(_) => MYSQL_LOCK_SLOTS_TABLE,
        }
    }

    /// The primary key's columns, as an insert names them.
    pub(super) fn columns(self) -> &'static str {
        match self {
            LockRow::Key(..) => "`space`, `k1`, `k2`",
            LockRow::Slot(_) => "`slot`",
        }
    }

    /// A placeholder for each of [`LockRow::columns`].
    pub(super) fn placeholders(self) -> &'static str {
        match self {
            LockRow::Key(..) => "?, ?, ?",
            LockRow::Slot(_) => "?",
        }
    }

    /// The `WHERE` clause that finds the row by its whole primary key, every part bound.
    pub(super) fn where_key(self) -> &'static str {
        match self {
            LockRow::Key(..) => "WHERE `space` = ? AND `k1` = ? AND `k2` = ?",
            LockRow::Slot(_) => "WHERE `slot` = ?",
        }
    }

    /// The primary key's values, in the order of [`LockRow::columns`].
    pub(super) fn values(self) -> Vec<Value> {
        match self {
            LockRow::Key(space, k1, k2) => vec![space.into(), k1.into(), k2.into()],
            LockRow::Slot(slot) => vec![slot.into()],
        }
    }
}

/// `sql` (naming the row's table and its `WHERE` clause) with the row's key bound.
pub(super) fn statement(sql: String, row: LockRow) -> Statement {
    Statement::from_sql_and_values(DbBackend::MySql, sql, row.values())
}

/// Slices of [`Wait::Forever`], in seconds: a dropped call's wait ends within one.
pub(crate) const FOREVER_SLICE_SECS: u64 = 2;

/// Step 2: the lock, bounded by the statement itself: a locking read of the key's row by
/// its primary key (`FOR UPDATE`, shared: `LOCK IN SHARE MODE`). On an existing row that is a
/// record lock, never a gap lock, at any isolation level; a row another transaction has
/// inserted and not committed yet is waited for (and if that one rolls back, the read finds
/// nothing, and under READ COMMITTED keeps no lock: InnoDB turns a waiting `FOR UPDATE` of a
/// vanished row into no lock at all, unlike the waiting locks of `INSERT ... ON DUPLICATE KEY
/// UPDATE`, `INSERT IGNORE` or `LOCK IN SHARE MODE`, which it turns into gap locks). No row:
/// [`insert_statement`].
pub(super) fn lock_statement(row: LockRow, mode: Mode, wait: Wait) -> Statement {
    let lock = match mode {
        Mode::Exclusive => "FOR UPDATE",
        Mode::Shared => "LOCK IN SHARE MODE",
    };
    statement(
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {}, max_statement_time = 0 FOR \
             SELECT 1 AS locked FROM `{}` {} {lock}",
            wait_seconds(wait),
            row.table(),
            row.where_key(),
        ),
        row,
    )
}

/// The key's row is missing: an insert that makes it (and holds it: a row a transaction
/// inserts is locked exclusively until it ends) or, when another transaction made it
/// meanwhile, locks it (exclusive: `INSERT ... ON DUPLICATE KEY UPDATE`, shared:
/// `INSERT IGNORE`). The first one does not wait: a row just made by another transaction is
/// waited for by the locking read instead, whose wait leaves no gap lock behind. It inserts
/// only inside a transaction (`WHERE @@in_transaction`), so in a session the server has put
/// back in autocommit it writes nothing.
pub(super) fn insert_statement(row: LockRow, mode: Mode, wait: Wait) -> Statement {
    let (ignore, on_duplicate) = match mode {
        Mode::Exclusive => ("", " ON DUPLICATE KEY UPDATE `generation` = `generation`"),
        Mode::Shared => (" IGNORE", ""),
    };
    statement(
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {}, max_statement_time = 0 FOR \
             INSERT{ignore} INTO `{}` ({}) \
             SELECT {} FROM DUAL WHERE @@in_transaction = 1{on_duplicate}",
            wait_seconds(wait),
            row.table(),
            row.columns(),
            row.placeholders(),
        ),
        row,
    )
}

/// The crate's own transaction's first lock statement (READ COMMITTED, exclusive): makes the
/// key's row, counted (`generation` 1: its creator is its first holder), and holds it; or, on
/// a committed row nobody holds, locks it (a record lock: `ON DUPLICATE KEY UPDATE` locks the
/// duplicate only) and counts this holder. It never waits: a row another transaction holds, or
/// is inserting, fails it at once with 1205 (no lock is queued), and the locking
/// [`count_statement`] waits instead, whose wait never becomes a gap lock. It writes only
/// inside a transaction (`WHERE @@in_transaction`): in a session the server has put back in
/// autocommit it affects no row, which tells the caller so.
pub(super) fn own_insert_statement(row: LockRow) -> Statement {
    statement(
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR \
             INSERT INTO `{}` ({}, `generation`) \
             SELECT {}, 1 FROM DUAL WHERE @@in_transaction = 1 \
             ON DUPLICATE KEY UPDATE `generation` = `generation` + 1",
            row.table(),
            row.columns(),
            row.placeholders(),
        ),
        row,
    )
}

/// The crate's own transaction, the key's row held by another transaction (or being inserted
/// by one): the lock and step 4 in one statement, an `UPDATE` of the row by its primary key
/// that waits for it, bounded by `wait`, and counts this holder. Under READ COMMITTED an
/// `UPDATE`'s wait, like `FOR UPDATE`'s, is an exclusive lock that InnoDB does not turn into a
/// gap lock when the row vanishes (its inserter rolled back): the `UPDATE` then affects no row,
/// and [`own_insert_statement`] makes the row. It affects no row in autocommit either
/// (`AND @@in_transaction = 1`).
pub(super) fn count_statement(row: LockRow, wait: Wait) -> Statement {
    statement(
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {}, max_statement_time = 0 FOR \
             UPDATE `{}` SET `generation` = `generation` + 1 \
             {} AND @@in_transaction = 1",
            wait_seconds(wait),
            row.table(),
            row.where_key(),
        ),
        row,
    )
}

/// Step 3, one statement on the row this transaction now holds (no wait): the latest committed
/// `generation` (a locking read) and the one this transaction's snapshot sees (the subquery: a
/// locking clause does not reach into subqueries, which stay consistent reads).
pub(super) fn read_statement(row: LockRow, mode: Mode) -> Statement {
    let lock = match mode {
        Mode::Exclusive => "FOR UPDATE",
        Mode::Shared => "LOCK IN SHARE MODE",
    };
    let mut values = row.values();
    values.extend(row.values());
    let (table, where_key) = (row.table(), row.where_key());
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SELECT @@in_transaction AS in_txn, `generation` AS latest, \
             (SELECT `generation` FROM `{table}` {where_key}) AS seen \
             FROM `{table}` {where_key} {lock}"
        ),
        values,
    )
}

/// The whole seconds a wait is given on the server: 0 for [`Wait::No`], a [`Wait::Timeout`]
/// rounded up (so the wait never ends before the caller's bound) and at most MariaDB's largest
/// `innodb_lock_wait_timeout` (10^8 s), one slice for [`Wait::Forever`].
pub(super) fn wait_seconds(wait: Wait) -> u64 {
    match wait {
        Wait::No => 0,
        Wait::Timeout(timeout) => {
            timeout.as_nanos().div_ceil(1_000_000_000).min(100_000_000) as u64
        }
        Wait::Forever => FOREVER_SLICE_SECS,
    }
}

/// A missing lock table and a server without MariaDB's syntax get their own errors.
pub(super) fn lock_table_error(err: DbErr) -> Error {
    match mysql_error(&err) {
        Some(MySqlError::NoSuchTable) => Error::MissingLockTable {
            table: MYSQL_LOCK_SLOTS_TABLE,
            source: err,
        },
        Some(MySqlError::Syntax) => Error::UnsupportedServer {
            server: None,
            reason: ServerRefusal::NotMariaDb,
            source: Some(err),
        },
        _ => Error::Database(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use super::super::lock::normalize;
    use crate::Wait;
    use crate::backend::mode::Mode;

    #[test]
    fn big_int_keys_keep_all_64_bits() {
        let row = |key| LockTable::PerKey.row(key);
        assert_ne!(row(LockKey::BigInt(1)), row(LockKey::BigInt(1 << 32)));
        assert_eq!(row(LockKey::BigInt(i64::MIN)), LockRow::Key(1, i32::MIN, 0));
        assert_eq!(row(LockKey::Pair(7, -8)), LockRow::Key(2, 7, -8));
    }

    #[test]
    fn the_lock_table_ddl_is_innodb_with_the_key_as_primary_key() {
        use sea_orm::sea_query::MysqlQueryBuilder;
        let sql = mysql_lock_table().to_string(MysqlQueryBuilder);
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS `sea_orm_idempotent_locks`"),
            "{sql}"
        );
        assert!(sql.contains("PRIMARY KEY (`space`, `k1`, `k2`)"), "{sql}");
        assert!(sql.contains("ENGINE=InnoDB"), "{sql}");
    }

    #[test]
    fn keys_are_bound_and_only_whole_seconds_are_written() {
        let per_key = |key| LockTable::PerKey.row(key);
        let statement = insert_statement(
            per_key(LockKey::Pair(31337, -90210)),
            Mode::Exclusive,
            Wait::Timeout(Duration::from_millis(1500)),
        );
        assert!(!statement.sql.contains("31337") && !statement.sql.contains("90210"));
        assert!(
            statement.sql.starts_with(
                "SET STATEMENT innodb_lock_wait_timeout = 2, max_statement_time = 0 FOR INSERT INTO"
            ),
            "{}",
            statement.sql
        );
        assert!(statement.sql.contains("ON DUPLICATE KEY UPDATE"));
        assert_eq!(
            statement.values.expect("bound values").0,
            vec![Value::from(2), Value::from(31337), Value::from(-90210)]
        );
        let shared = insert_statement(per_key(LockKey::BigInt(-3)), Mode::Shared, Wait::No);
        assert!(
            shared.sql.contains("= 0 FOR INSERT IGNORE INTO"),
            "{}",
            shared.sql
        );
        assert_eq!(
            shared.values.expect("bound values").0,
            vec![Value::from(1), Value::from(-1), Value::from(-3)]
        );
        let lock = lock_statement(
            per_key(LockKey::Pair(31337, -90210)),
            Mode::Exclusive,
            Wait::Forever,
        );
        assert!(
            lock.sql.starts_with(&format!(
                "SET STATEMENT innodb_lock_wait_timeout = {FOREVER_SLICE_SECS}, max_statement_time = 0 FOR SELECT"
            )) && lock.sql.ends_with("FOR UPDATE"),
            "{}",
            lock.sql
        );
        assert!(!lock.sql.contains("31337"));
        let own = own_insert_statement(per_key(LockKey::Pair(31337, -90210)));
        assert!(!own.sql.contains("31337") && !own.sql.contains("90210"));
        assert!(
            own.sql.starts_with(
                "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR INSERT INTO"
            ) && own.sql.contains("WHERE @@in_transaction = 1"),
            "{}",
            own.sql
        );
        let count = count_statement(per_key(LockKey::Pair(31337, -90210)), Wait::Forever);
        assert!(!count.sql.contains("31337") && !count.sql.contains("90210"));
        assert!(
            count.sql.starts_with(&format!(
                "SET STATEMENT innodb_lock_wait_timeout = {FOREVER_SLICE_SECS}, max_statement_time = 0 FOR UPDATE"
            )) && count.sql.ends_with("AND @@in_transaction = 1"),
            "{}",
            count.sql
        );
        assert_eq!(count.values.expect("bound values").0.len(), 3);
        let read = read_statement(per_key(LockKey::BigInt(-3)), Mode::Shared);
        let slot_read = read_statement(LockTable::Slots.row(LockKey::BigInt(-3)), Mode::Exclusive);
        assert!(
            slot_read
                .sql
                .contains("FROM `sea_orm_idempotent_lock_slots` WHERE `slot` = ? FOR UPDATE"),
            "{}",
            slot_read.sql
        );
        assert_eq!(slot_read.values.expect("bound values").0.len(), 2);
        assert!(read.sql.ends_with("LOCK IN SHARE MODE"), "{}", read.sql);
        assert_eq!(read.values.expect("bound values").0.len(), 6);
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(wait_seconds(Wait::No), 0);
        assert_eq!(wait_seconds(Wait::Timeout(ms(1))), 1);
        assert_eq!(wait_seconds(Wait::Timeout(ms(1000))), 1);
        assert_eq!(wait_seconds(Wait::Timeout(ms(1001))), 2);
        assert_eq!(wait_seconds(Wait::Timeout(Duration::MAX)), 100_000_000);
        assert_eq!(wait_seconds(Wait::Forever), FOREVER_SLICE_SECS);
        assert_eq!(normalize(Wait::Timeout(Duration::ZERO)), Wait::No);
    }
}
