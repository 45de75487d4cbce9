//! MariaDB's one-statement path: where a unique index covers the key's columns, a new key is
//! one statement in autocommit that takes the key's lock and inserts under it:
//!
//! ```sql
//! INSERT INTO `t` (cols) SELECT ?, ... FROM `sea_orm_idempotent_lock_slots`
//!   WHERE @@tx_isolation = 'READ-COMMITTED' AND @@autocommit = 1 AND `slot` = ?
//!     AND NOT EXISTS (SELECT 1 FROM `t` WHERE key)
//!   FOR UPDATE NOWAIT RETURNING cols
//! ```
//!
//! A new key then costs what `INSERT IGNORE` costs: one statement, one flushed commit
//! (`tests/mysql_statements.rs`).
//!
//! - **The lock.** The `SELECT` reads the key's slot `FOR UPDATE`: the record lock every other
//!   taker of the key takes ([`lock`](super::lock)), held until the statement commits.
//! - **Never a wait: `NOWAIT`.** Anything the statement would wait for fails it at once with
//!   error 1205, and the call takes the locked path, which waits as the caller asked
//!   ([`defers`]): the slot held by another transaction (a call on the locked path, the
//!   update form, a raw lock-taker, another key of the slot), the key's row inserted and not
//!   yet committed by a writer that bypasses the lock, the table's AUTO-INC lock.
//! - **The row.** The guard (`NOT EXISTS`) inserts nothing when the key's row exists; the call
//!   then looks, as the other backends' one statement does. The unique index is the backstop:
//!   a row the guard did not see fails the insert (1062), and the locked path decides. (The
//!   guard does see the slot's previous holder's row: InnoDB opens a READ COMMITTED
//!   statement's read view at its first consistent read, the guard, after the slot's locking
//!   read. That is InnoDB's behaviour, not a documented promise, so keep the index. A dropped
//!   index fails no call and stores no second row, `tests/one_statement.rs`; the catalog is
//!   not asked again, as MariaDB's statement names no index.) A slot the migration did not
//!   make selects no row and inserts nothing: the look misses, and the locked path makes it.
//!   Only on a database that locks the slots ([`lock_tables`]): the per-key table of earlier
//!   versions has no row for a key never locked.
//! - **Not `INSERT IGNORE`.** It would also turn data errors into warnings (a string cut to
//!   the column's length, a value clamped to its range) and commit the altered row.
//! - **What it does not count.** The statement does not increment the slot's `generation`
//!   (one statement cannot write two tables), by which a caller's REPEATABLE READ transaction
//!   detects a snapshot older than the key's last holder (step 3 in [`lock`](super::lock)).
//!   Such a transaction still never stores a second row (its guard is a locking read there,
//!   which finds the row), and its call is refused with
//!   [`Error::UnsafeIsolation`](crate::Error::UnsafeIsolation) when its guarded insert finds a
//!   row its snapshot cannot see ([`snapshot_misses_row`]).
//! - **Only integer keys**, each in an integer column that holds every value of its type
//!   ([`stores_exactly`]): the statement commits before the call can compare the row it
//!   returns with the key, so the key must be stored as given. Other keys take the locked path.
//!   For the same reason a returned row the entity cannot decode (an entity out of step with
//!   its table) fails the call with the row stored, where the locked path would roll it back;
//!   PostgreSQL's one statement is the same.
//! - **Only in autocommit**: on a session with `autocommit = 0` the statement would open a
//!   transaction that nobody commits ([`SESSION_READ_COMMITTED`]).
//!
//! # Only in READ COMMITTED sessions
//!
//! An autocommit statement runs at its session's isolation level, which is the server's
//! default unless the application sets it (MariaDB's default is REPEATABLE READ, and `SET
//! STATEMENT` cannot set it: error 1971). Under REPEATABLE READ the reads of `INSERT ...
//! SELECT` are locking reads: the guard's look for a missing key takes a gap lock on the
//! unique index, which the inserts of neighbouring keys must wait for, while `INSERT ...
//! SELECT` holds the table's AUTO-INC lock (`innodb_autoinc_lock_mode` 1, MariaDB's default).
//! A transaction of the locked path that waits for such a gap lock while it holds the AUTO-INC
//! lock closes a cycle with the statement that asks for it; `NOWAIT` does not keep InnoDB from
//! choosing that *other* transaction as the deadlock's victim. With the index dropped (the
//! guard then scans the table), 3 of 12 runs of `tests/one_statement.rs`'s drop test ended in
//! `Error::Deadlock` on REPEATABLE READ sessions, 0 of 12 on READ COMMITTED ones. So the path
//! is taken only on a pool whose sessions are READ COMMITTED (asked once per pool,
//! [`applies`]; the statement's `WHERE` checks the session too), the level the crate's own
//! transactions use for the same reason. Elsewhere every call takes the locked path, as
//! before. To have the path on a server whose default is REPEATABLE READ, set the server's
//! `transaction_isolation`, or the pool's sessions as each connection opens (sqlx's
//! `after_connect` through SeaORM's `ConnectOptions::map_sqlx_mysql_pool_opts`: SeaORM's own
//! `after_connect` runs once per pool), as `docs/backends.md` shows.

use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, IntoIden, LockBehavior, LockType, SelectStatement, SubQueryStatement,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};

use super::catalog;
use super::lock_table::LockTable;
use super::lock_tables::{self, AskedFor, Kept};
use super::shielded::pool_database;
use super::slots::{MYSQL_LOCK_SLOTS_TABLE, mysql_lock_slot};
use crate::LockKey;
use crate::classify::{ErrorClass, MySqlError, classify, mysql_error};
use crate::source::PoolId;
use crate::to_the_end::to_the_end;

/// The condition that the statement's session is READ COMMITTED and in autocommit: otherwise
/// it inserts nothing (MariaDB finds the `WHERE` impossible before it reads anything), the
/// look misses, and the call takes the locked path. (A pool is asked once, [`applies`]; this
/// covers a session changed since.) `tx_isolation`: MariaDB 10.11 knows no
/// `transaction_isolation`. Without autocommit the statement would open a transaction that
/// nobody commits: a `Created` answer for a row never committed, and the key's slot held on an
/// idle pooled connection (`tests/mysql_one_statement_probe.rs`
/// `a_session_with_autocommit_off`).
const SESSION_READ_COMMITTED: &str = "@@tx_isolation = 'READ-COMMITTED' AND @@autocommit = 1";

/// Makes `source` (the insert's `SELECT` of the row's values, before its guard) read `key`'s
/// slot `FOR UPDATE NOWAIT`, in a READ COMMITTED session only. The slot is bound after the
/// `SELECT`'s values and before the guard's.
pub(crate) fn on_the_slot(source: &mut SelectStatement, key: LockKey) {
    source
        .from(Alias::new(MYSQL_LOCK_SLOTS_TABLE).into_iden())
        .and_where(Expr::cust(SESSION_READ_COMMITTED))
        .and_where(Expr::col(Alias::new("slot")).eq(slot_value(key)))
        .lock_with_behavior(LockType::Update, LockBehavior::Nowait);
}

/// The value [`on_the_slot`] binds for `key`.
pub(crate) fn slot_value(key: LockKey) -> Value {
    Value::from(mysql_lock_slot(key) as i32)
}

/// Whether the statement's error leaves the call to the locked path, which waits as the
/// caller asked and meets any lasting cause again with its own handling. Nothing was written:
/// the statement failed whole.
///
/// - The key is not free now: its slot held by another transaction (1205 at once, `NOWAIT`;
///   MySQL 8 says 3572), the insert's wait behind a writer that bypasses the lock or for the
///   table's AUTO-INC lock (1205, 1467), a deadlock's victim, or a row of the key the guard
///   did not see (1062).
/// - The server: read-only (the locked path answers with the row if it exists), a table
///   missing, or syntax it does not take (MySQL 8 has no `RETURNING`: the locked path refuses
///   it with [`ServerRefusal::NotMariaDb`](crate::ServerRefusal::NotMariaDb)).
pub(crate) fn defers(err: &DbErr) -> bool {
    matches!(
        classify(err),
        ErrorClass::UniqueViolation | ErrorClass::Deadlock | ErrorClass::ReadOnly
    ) || matches!(
        mysql_error(err),
        Some(
            MySqlError::LockWaitTimeout
                | MySqlError::LockNowait
                | MySqlError::AutoIncLockWait
                | MySqlError::NoSuchTable
                | MySqlError::Syntax
        )
    )
}

/// Whether the path applies on `pool` (to `conn`'s database): its keys lock the slots
/// ([`lock_tables`]), and its sessions are READ COMMITTED (see the
/// [module docs](self#only-in-read-committed-sessions)). Each asked once per pool.
pub(crate) async fn applies(conn: &DatabaseConnection, pool: PoolId) -> bool {
    let asked_for = AskedFor::of(Some(pool), pool_database(conn), None);
    matches!(
        lock_tables::lock_table(conn, asked_for).await,
        Ok(LockTable::Slots)
    ) && sessions_read_committed(conn, asked_for).await
}

/// Whether `conn`'s sessions are READ COMMITTED (`@@tx_isolation`, the session's default for
/// its statements and transactions) and in autocommit ([`SESSION_READ_COMMITTED`]), kept for
/// `asked_for`; `false` when it cannot be asked.
async fn sessions_read_committed(conn: &DatabaseConnection, asked_for: Option<AskedFor>) -> bool {
    static KNOWN: Kept<bool> = Kept::new();
    if let Some(known) = KNOWN.get(asked_for) {
        return known;
    }
    let asked = conn
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT @@tx_isolation AS level, CAST(@@autocommit AS SIGNED) AS autocommit",
        ))
        .await;
    let Ok(Some(row)) = asked else {
        return false;
    };
    let read_committed = row
        .try_get::<String>("", "level")
        .is_ok_and(|level| level == "READ-COMMITTED")
        && row
            .try_get::<i64>("", "autocommit")
            .is_ok_and(|autocommit| autocommit == 1);
    KNOWN.keep(asked_for, read_committed);
    read_committed
}

/// Runs the statement in autocommit, to its end even when the call is dropped (sqlx-mysql
/// cannot abandon a statement: [`shielded`](super::shielded)).
pub(crate) async fn run(
    conn: &DatabaseConnection,
    statement: Statement,
) -> Result<Option<sea_orm::QueryResult>, DbErr> {
    let conn = conn.clone();
    to_the_end(async move { conn.query_one_raw(statement).await }).await
}

/// Whether a unique index (or the primary key) of `table` (in `schema`) has only key columns
/// (`columns`), each of a type that stores its part of the key (`values`) exactly
/// ([`stores_exactly`]): the catalog's answer ([`catalog::key_columns`]), two statements.
pub(crate) async fn key_is_unique_indexed<C: ConnectionTrait>(
    db: &C,
    schema: Option<&str>,
    table: &str,
    columns: &[&str],
    values: &[Value],
) -> Result<bool, DbErr> {
    let Some(key_columns) = catalog::key_columns(db, schema, table, columns).await? else {
        return Ok(false);
    };
    Ok(key_columns.covered
        && key_columns
            .types
            .iter()
            .zip(values)
            .all(|(column_type, value)| {
                column_type
                    .as_deref()
                    .is_some_and(|column_type| stores_exactly(value, column_type))
            }))
}

/// Whether a key part bound as `value` is stored exactly as given in a column of
/// `column_type` (`COLUMN_TYPE`): an integer in an integer column that holds every value of
/// the part's type (signed, and at least as wide). Anything else takes the locked path.
pub(crate) fn stores_exactly(value: &Value, column_type: &str) -> bool {
    let column_type = column_type.to_ascii_lowercase();
    if column_type.contains("unsigned") || column_type.contains("zerofill") {
        return false;
    }
    let width = match column_type.split(['(', ' ']).next().unwrap_or("") {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        "bigint" => 64,
        _ => return false,
    };
    let needed = match value {
        Value::TinyInt(_) => 8,
        Value::SmallInt(_) | Value::TinyUnsigned(_) => 16,
        Value::Int(_) => 32,
        Value::SmallUnsigned(_) => 24,
        Value::BigInt(_) | Value::Unsigned(_) => 64,
        _ => return false,
    };
    needed <= width
}

/// In a caller's transaction, after the guarded insert inserted nothing and the look found
/// nothing: whether the key's row exists but this transaction's snapshot cannot see it (a
/// REPEATABLE READ snapshot older than the row's commit, by a call of the one-statement path
/// or a writer that bypasses the lock). One statement: the latest committed count by a
/// locking read, and the snapshot's by a plain subquery (a locking clause does not reach into
/// subqueries). `existing`: the entity's rows with the key (`SELECT ... FROM t WHERE key`).
pub(crate) async fn snapshot_misses_row<C: ConnectionTrait>(
    txn: &C,
    existing: SelectStatement,
) -> Result<bool, DbErr> {
    let mut seen = existing.clone();
    seen.clear_selects().expr(Expr::cust("COUNT(*)"));
    let mut latest = existing;
    latest
        .clear_selects()
        .expr_as(Expr::cust("COUNT(*)"), Alias::new("latest"))
        .expr_as(
            Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(seen))),
            Alias::new("seen"),
        )
        .lock_shared();
    let row = txn
        .query_one(&latest)
        .await?
        .ok_or_else(|| DbErr::Custom("a count returned no row".to_owned()))?;
    let latest: i64 = row.try_get("", "latest")?;
    let seen: i64 = row.try_get("", "seen")?;
    Ok(latest > seen)
}

#[cfg(test)]
mod tests {
    use super::stores_exactly;
    use sea_orm::Value;

    #[test]
    fn only_integers_in_integer_columns_that_hold_their_type_are_stored_exactly() {
        assert!(stores_exactly(&Value::from(7_i64), "bigint(20)"));
        assert!(stores_exactly(&Value::from(7_i32), "bigint(20)"));
        assert!(stores_exactly(&Value::from(7_i32), "int(11)"));
        assert!(!stores_exactly(&Value::from(7_i64), "int(11)"));
        assert!(!stores_exactly(&Value::from(7_i64), "bigint(20) unsigned"));
        assert!(!stores_exactly(&Value::from(7_u32), "int(10)"));
        assert!(!stores_exactly(&Value::from(7_u64), "bigint(20)"));
        assert!(!stores_exactly(&Value::from("7"), "varchar(40)"));
        assert!(!stores_exactly(&Value::from(7_i64), "decimal(20,0)"));
    }
}
