//! MySQL and MariaDB: a READ COMMITTED transaction and a transaction-scoped InnoDB row lock on
//! the key's row of the crate's lock table. Only callers with the same key wait for each other.
//!
//! - [`lock_table`]: the tables (their DDL is public: [`mysql_lock_slots`](crate::mysql_lock_slots),
//!   and the per-key [`mysql_lock_table`](crate::mysql_lock_table) of earlier versions), why a
//!   table and not `GET_LOCK`, and the text of every statement on them;
//! - [`slots`]: the fixed rows keys lock from 0.3, their DDL and the pinned mapping;
//! - [`lock_tables`]: which of the two tables a database uses, asked once per pool;
//! - [`lock`]: taking the row lock inside a transaction, its waits, and the snapshot check;
//! - [`shielded`]: the crate's own transaction, whose statements run to their end when a call
//!   is dropped (sqlx-mysql cannot abandon a statement);
//! - [`entity_waits`]: the call's statements on the entity table, their waits bounded and
//!   typed as the lock's;
//! - [`batch`]: the lock rows of a batch's chunk, locked in one statement, in key order;
//! - [`one_statement`]: a new key in one statement where a unique index covers the key;
//! - [`codes`]: the error numbers the crate reacts to.
//!
//! sea-query renders no `RETURNING` for MySQL: MariaDB's (10.5 and later) is written here
//! ([`returning`]), for the guarded insert ([`insert_returning`]) and a batch chunk's
//! multi-row insert.

pub(crate) mod batch;
pub(crate) mod catalog;
pub(crate) mod codes;
pub(crate) mod entity_waits;
pub(crate) mod lock;
pub(crate) mod lock_table;
pub(crate) mod lock_tables;
pub(crate) mod one_statement;
pub(crate) mod shielded;
pub(crate) mod slots;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, IsolationLevel, QueryResult, Statement,
    TransactionOptions,
};

use self::lock::Whose;
use self::lock_table::LockTable;
use self::lock_tables::AskedFor;
use self::shielded::Shielded;
use crate::backend::inserted::Inserted;
use crate::backend::mode::Mode;
use crate::call_chain::Lock;
use crate::source::{DbId, SessionId};
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// The crate's own transaction: READ COMMITTED, shielded from a dropped call ([`Shielded`]:
/// sqlx-mysql cannot abandon a statement, nor count a `BEGIN` dropped before its answer). The
/// key's lock row is made inside it, by the lock itself ([`lock::acquire_in`]): no commit of
/// its own.
///
/// Two round trips, `SET TRANSACTION ISOLATION LEVEL READ COMMITTED` and `BEGIN`: SeaORM 2
/// sends them so (`DatabaseTransaction::begin`, whose MySQL arm awaits its `SET TRANSACTION`,
/// then sqlx's plain `BEGIN`), and a `DatabaseTransaction` has no other constructor. sqlx
/// would take a `BEGIN` of the crate's own text, SeaORM passes none. MariaDB 10.11 has no
/// one-statement form: `SET TRANSACTION` after `BEGIN` fails with 1568, `SET STATEMENT
/// tx_isolation = ..` with 1971, `START TRANSACTION ISOLATION LEVEL ..` with 1064; and a
/// session default would outlive the call on a pooled connection.
pub(crate) async fn begin(db: &DatabaseConnection) -> Result<Own, Error> {
    let options = TransactionOptions {
        isolation_level: Some(IsolationLevel::ReadCommitted),
        access_mode: None,
        sqlite_transaction_mode: None,
    };
    Ok(Own::Shielded(Shielded::begin(db, options).await?))
}

/// Takes `key`'s row lock in `table` ([`lock_table_of`]) in `txn`, the crate's own
/// transaction or a caller's on `session`.
pub(crate) async fn lock_in(
    txn: Txn<'_>,
    key: LockKey,
    table: LockTable,
    deadline: Deadline,
    session: Option<SessionId>,
) -> Result<(), Error> {
    let whose = whose(&txn);
    let asked_for = asked_for(&txn, session);
    lock::acquire_in(
        &txn,
        key,
        table,
        Mode::Exclusive,
        deadline,
        whose,
        asked_for,
    )
    .await
}

/// The lock table `txn`'s database uses (the caller's `session`, or the crate's own
/// transaction's pool): kept, or asked ([`lock_tables`]).
pub(crate) async fn lock_table_of(
    txn: &Txn<'_>,
    session: Option<SessionId>,
) -> Result<LockTable, Error> {
    lock_tables::lock_table(txn, asked_for(txn, session)).await
}

/// `key`'s lock in `table` as the call chain compares it ([`Lock`]): on the slots, the key's
/// slot (every key of the slot's lock); on the per-key table the key.
pub(crate) fn chain_lock(table: LockTable, key: LockKey) -> Lock {
    match table {
        LockTable::Slots => Lock::SlotOf(key),
        LockTable::PerKey => Lock::Key(key),
    }
}

/// What the lock table's choice is kept for ([`lock_tables`]): the pool of the crate's own
/// transaction, or the database of the caller's `session`.
pub(crate) fn asked_for(txn: &Txn<'_>, session: Option<SessionId>) -> Option<AskedFor> {
    match txn {
        Txn::Shielded(shielded) => AskedFor::of(shielded.pool(), shielded.target(), None),
        Txn::Plain(_) => AskedFor::of(None, None, session),
    }
}

/// Whose transaction `txn` is: the crate's own (shielded) or a caller's.
pub(crate) fn whose(txn: &Txn<'_>) -> Whose {
    match txn {
        Txn::Shielded(_) => Whose::Own,
        Txn::Plain(_) => Whose::Callers,
    }
}

/// The statement that names the session a caller's transaction runs on.
pub(crate) const SESSION_SQL: &str = "SELECT CAST(CONNECTION_ID() AS UNSIGNED) AS session_id, \
     DATABASE() AS session_database, @@hostname AS session_host, \
     CAST(@@port AS CHAR) AS session_port";

/// The session named by [`SESSION_SQL`]'s row: the connection id in the schema of one server.
pub(crate) fn session_of_row(row: &QueryResult) -> Result<SessionId, DbErr> {
    let database: Option<String> = row.try_get("", "session_database")?;
    let host: String = row.try_get("", "session_host")?;
    let port: String = row.try_get("", "session_port")?;
    let db = DbId::of(&["mysql", &host, &port, database.as_deref().unwrap_or("")]);
    Ok(SessionId::new(db, row.try_get::<u64>("", "session_id")?))
}

/// The guarded insert, its lock waits bounded by `wait` ([`entity_waits::bounded`]), returning
/// the row it inserted: sea-query renders no `RETURNING` for MySQL, so MariaDB's (10.5+) is
/// written here, naming `columns` (the entity's, never user input), each quoted.
pub(crate) async fn insert_returning<C: ConnectionTrait>(
    db: &C,
    insert: Statement,
    columns: &[&str],
    wait: Wait,
) -> Result<Inserted, DbErr> {
    Ok(
        match db
            .query_one_raw(entity_waits::bounded(returning(insert, columns), wait))
            .await?
        {
            Some(row) => Inserted::Row(row),
            None => Inserted::Nothing,
        },
    )
}

/// `insert` (one row or many) with MariaDB's (10.5+) `RETURNING` of `columns` (the entity's,
/// never user input), each quoted: sea-query renders none for MySQL.
pub(crate) fn returning(insert: Statement, columns: &[&str]) -> Statement {
    let returning = columns
        .iter()
        .map(|column| format!("`{}`", column.replace('`', "``")))
        .collect::<Vec<_>>()
        .join(", ");
    Statement {
        sql: format!("{} RETURNING {returning}", insert.sql),
        ..insert
    }
}
