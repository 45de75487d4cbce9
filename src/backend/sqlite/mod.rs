//! SQLite: no advisory locks. SQLite has one write lock per database file, and an IMMEDIATE
//! transaction takes it before the look, which serialises every creator (of any key) across
//! connections and processes; one pool's writers take turns for it in the process, in arrival
//! order ([`turns`](crate::turns)).
//!
//! **The crate's own transaction** is `BEGIN IMMEDIATE` (SeaORM's [`TransactionOptions`] with
//! [`SqliteTransactionMode::Immediate`]): the write lock is granted before the look, so the look
//! and the insert see every creator that committed before us, and no other creator can commit
//! until we do.
//!
//! **Inside a caller's transaction** the work runs in a savepoint of the crate's own
//! ([`Savepoint`](crate::savepoint::Savepoint)), and the caller's transaction
//! mode decides when the write lock is taken. The insert is one statement,
//! `INSERT ... SELECT ... WHERE NOT EXISTS (...)`, and a statement that writes holds SQLite's
//! write lock from its first step. SQLite never lets a writer work from a stale view: in WAL
//! mode a transaction whose snapshot is older than the last commit cannot take the write lock
//! (`SQLITE_BUSY_SNAPSHOT`), and in rollback-journal mode no other writer can commit while our
//! transaction holds its read lock. So the `NOT EXISTS` sees every row committed before it, and
//! the outcome is either correct or an error: `SQLITE_BUSY` (retryable, see
//! [`Error::is_retryable`]) when the caller's DEFERRED transaction read first and another
//! writer committed meanwhile. Begin the transaction as IMMEDIATE to take the lock up front and
//! never see that error.
//!
//! **Waiting.** SQLite has no lock timeout of its own: a connection that finds the write lock
//! taken waits in its busy handler as long as its `busy_timeout` (set when connecting: sqlx's
//! default is 5 s; `ConnectOptions::map_sqlx_sqlite_opts(|o| o.busy_timeout(d))`), then fails
//! with `SQLITE_BUSY`. A call waits in two places: in the process, for its pool's writer turn
//! ([`turns`](crate::turns)), and at SQLite's lock, for other pools and other processes.
//!
//! - [`Wait::Forever`] waits up to [`WRITER_WAIT`](crate::turns::WRITER_WAIT) for the turn,
//!   then up to the connection's `busy_timeout` at the lock, then returns
//!   [`Error::LockTimeout`] with `timeout: None` (the connection's bound, not the caller's).
//! - [`Wait::Timeout`] bounds both: the turn is waited for at most the bound, and what is left
//!   of it is the connection's `busy_timeout` for the one statement that takes the lock
//!   ([`take_write_lock`]); then [`Error::LockTimeout`] with the bound asked for.
//! - [`Wait::No`] does not wait for the turn and takes the lock with a `busy_timeout` of 0:
//!   [`Error::LockBusy`] at once when another writer has it.
//!
//! A bounded wait takes the lock in a transaction begun DEFERRED (which locks nothing), with a
//! write that writes nothing (`DELETE FROM <the entity's table> WHERE 0`: a statement that
//! writes takes the write lock at its first step, like `BEGIN IMMEDIATE`, and its busy handler
//! is the connection's), between `PRAGMA busy_timeout = <what is left>` and `PRAGMA
//! busy_timeout = <what it was>`: `busy_timeout` is the connection's, so it is read first and
//! given back exactly, on success and on error alike. The whole begin runs in a task of its
//! own that runs to its end, so a dropped call never hands a pooled connection back with
//! another `busy_timeout`.
//!
//! **Inside a caller's transaction** nothing waits at SQLite's lock: the call's first
//! statement (the one that names the session) reads, and SQLite never lets a transaction that
//! holds a read lock wait for the write lock (it could deadlock), so the guarded insert finds
//! the lock taken at once: [`Error::LockTimeout`] with the bound, or [`Error::LockBusy`] for
//! [`Wait::No`], right away; the connection's `busy_timeout` is never touched. (The caller's
//! IMMEDIATE transaction holds the lock already, and never waits either.)
//!
//! [`Error::LockTimeout`]: crate::Error::LockTimeout
//! [`Error::LockBusy`]: crate::Error::LockBusy

pub(crate) mod catalog;
pub(crate) mod codes;
pub(crate) mod one_statement;

#[cfg(feature = "sqlite")]
use sea_orm::DatabaseConnectionType;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use super::Table;
use crate::source::{DbId, SessionId};
use crate::to_the_end::to_the_end;
use crate::transaction::Own;
use crate::{Error, Wait};

/// Why SQLite has no advisory lock to offer: the text of the error.
pub(crate) const NO_ADVISORY_LOCKS: &str = "take an advisory lock: advisory locks need \
     PostgreSQL (MySQL: the crate's lock table), and SQLite has none. To create a row once on \
     SQLite, use `IdempotentCreate::create_once`, which takes SQLite's write lock (an IMMEDIATE \
     transaction) instead";

/// The crate's own transaction. [`Wait::Forever`]: `BEGIN IMMEDIATE`, which takes SQLite's
/// write lock, waiting as long as the connection's `busy_timeout`. A bounded `wait` (what is
/// left of the caller's): `BEGIN DEFERRED`, then [`take_write_lock`] on `table`, the whole in a
/// task of its own.
///
/// # Errors
///
/// The database's error: `SQLITE_BUSY` when the write lock was not granted in time (the call
/// maps it to [`Error::LockTimeout`] or [`Error::LockBusy`]). After an error the transaction is
/// rolled back and the connection has its own `busy_timeout` again.
///
/// # Cancel Safety
///
/// A bounded begin runs to its end when its caller is dropped: the connection gets its
/// `busy_timeout` back, and the transaction is then dropped, which rolls it back. `BEGIN
/// IMMEDIATE` alone changes nothing on the connection (sqlx-sqlite rolls back a `BEGIN` whose
/// answer nobody took, `tests/drop_sweep.rs`).
pub(crate) async fn begin(db: &DatabaseConnection, wait: Wait, table: Table) -> Result<Own, Error> {
    let Some(busy) = busy_bound(wait) else {
        let immediate = options(SqliteTransactionMode::Immediate);
        return Ok(Own::Plain(db.begin_with_options(immediate).await?));
    };
    let db = db.clone();
    to_the_end(async move {
        let txn = db
            .begin_with_options(options(SqliteTransactionMode::Deferred))
            .await?;
        match take_write_lock(&txn, table, busy).await {
            Ok(()) => Ok(Own::Plain(txn)),
            Err(err) => {
                if let Err(rollback) = txn.rollback().await {
                    tracing::debug!(%rollback, "rollback after a bounded SQLite begin failed");
                }
                Err(err)
            }
        }
    })
    .await
}

fn options(mode: SqliteTransactionMode) -> TransactionOptions {
    TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(mode),
    }
}

/// The `busy_timeout` (ms) a bounded wait gives the statement that takes the write lock: what
/// is left of the bound, rounded up to whole milliseconds (SQLite's unit, at most its largest,
/// `i32::MAX`); 0 for [`Wait::No`]; `None` for [`Wait::Forever`] (the connection's own).
fn busy_bound(wait: Wait) -> Option<i64> {
    match wait {
        Wait::Forever => None,
        Wait::No => Some(0),
        Wait::Timeout(left) => Some(
            i64::try_from(left.as_nanos().div_ceil(1_000_000))
                .unwrap_or(i64::MAX)
                .min(i64::from(i32::MAX)),
        ),
    }
}

/// Takes SQLite's write lock in `txn` (a transaction that has not read yet), waiting at most
/// `busy` ms for other connections and processes: `PRAGMA busy_timeout = busy`, a write that
/// writes nothing to `table` ([`write_statement`]), then the connection's own `busy_timeout`
/// again, read before and given back after success and error alike. Run only in [`begin`]'s
/// task, which nothing can stop between the two pragmas.
async fn take_write_lock(txn: &DatabaseTransaction, table: Table, busy: i64) -> Result<(), Error> {
    let previous = busy_timeout(txn).await?;
    let taken = async {
        txn.execute_unprepared(&set_busy_timeout(busy)).await?;
        txn.execute_raw(write_statement(table)).await?;
        Ok::<_, DbErr>(())
    }
    .await;
    let restored = txn.execute_unprepared(&set_busy_timeout(previous)).await;
    taken?;
    restored?;
    Ok(())
}

/// `DELETE FROM <table> WHERE 0`: deletes nothing, but as a statement that writes it takes
/// SQLite's write lock at its first step (its program opens a write transaction whatever its
/// `WHERE`), waiting in the connection's busy handler as `BEGIN IMMEDIATE` does. No row, so no
/// trigger and no foreign key action runs. The table is the entity's, named by the crate's
/// code and quoted by sea-query: nothing user-supplied.
fn write_statement(table: Table) -> Statement {
    let delete = Query::delete()
        .from_table(table())
        .and_where(Expr::cust("0"))
        .to_owned();
    DbBackend::Sqlite.build(&delete)
}

/// The connection's `busy_timeout` (ms).
async fn busy_timeout(txn: &DatabaseTransaction) -> Result<i64, DbErr> {
    let sql = Statement::from_string(DbBackend::Sqlite, "PRAGMA busy_timeout");
    let row = txn
        .query_one_raw(sql)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("PRAGMA busy_timeout returned no row".to_owned()))?;
    row.try_get("", "timeout")
}

/// `PRAGMA busy_timeout = ms`: an integer the crate computed, never user input.
fn set_busy_timeout(ms: i64) -> String {
    format!("PRAGMA busy_timeout = {ms}")
}

/// The statement that names the session a caller's transaction runs on: its file (SQLite has
/// no session id; only one connection writes a file at a time).
pub(crate) const SESSION_SQL: &str = "SELECT file FROM pragma_database_list WHERE name = 'main'";

/// The session named by [`SESSION_SQL`]'s row: the file, canonical.
pub(crate) fn session_of_row(row: &QueryResult) -> Result<SessionId, DbErr> {
    let name: String = row.try_get("", "file")?;
    // An in-memory database (no file): its sessions are told apart by nothing.
    let db = file(&name).unwrap_or_else(|| DbId::of(&["sqlite", &name]));
    Ok(SessionId::new(db, 0))
}

/// The SQLite file a pool opens, as a path with every link resolved (as SQLite reports it);
/// `None` for an in-memory database (each pool's its own) or a file not there yet.
pub(crate) fn file_of_pool(db: &DatabaseConnection) -> Option<DbId> {
    #[cfg(feature = "sqlite")]
    if let DatabaseConnectionType::SqlxSqlitePoolConnection(_) = &db.inner {
        let options = db.get_sqlite_connection_pool().connect_options();
        return file(options.get_filename().as_os_str().to_str()?);
    }
    let _ = db;
    None
}

/// A SQLite file named as SQLite or a pool names it, resolved to one canonical path.
fn file(name: &str) -> Option<DbId> {
    let path = std::fs::canonicalize(name).ok()?;
    Some(DbId::of(&["sqlite", path.to_str()?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use sea_orm::sea_query::{Alias, IntoTableRef, TableRef};

    #[test]
    fn a_bounded_wait_is_a_busy_timeout_in_whole_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(busy_bound(Wait::Forever), None, "the connection's own");
        assert_eq!(busy_bound(Wait::No), Some(0));
        assert_eq!(busy_bound(Wait::Timeout(Duration::ZERO)), Some(0));
        assert_eq!(busy_bound(Wait::Timeout(ms(300))), Some(300));
        assert_eq!(
            busy_bound(Wait::Timeout(Duration::from_micros(1))),
            Some(1),
            "rounded up: never a wait shorter than asked"
        );
        assert_eq!(
            busy_bound(Wait::Timeout(Duration::from_secs(u64::MAX))),
            Some(i64::from(i32::MAX)),
            "SQLite's largest"
        );
    }

    #[test]
    fn the_write_that_takes_the_lock_writes_nothing() {
        fn table() -> TableRef {
            Alias::new("pull_requests").into_table_ref()
        }
        let statement = write_statement(table);
        assert_eq!(statement.sql, r#"DELETE FROM "pull_requests" WHERE 0"#);
        assert!(statement.values.is_none_or(|values| values.0.is_empty()));
        assert_eq!(set_busy_timeout(300), "PRAGMA busy_timeout = 300");
    }
}
