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
//! **Waiting.** SQLite has no per-statement lock timeout: a connection waits for the write lock
//! as long as its `busy_timeout` (set when connecting: sqlx's default is 5 s;
//! `ConnectOptions::map_sqlx_sqlite_opts(|o| o.busy_timeout(d))`), then fails with
//! `SQLITE_BUSY`. Hence:
//!
//! - [`Wait::Forever`] waits up to the connection's `busy_timeout`, then returns
//!   [`Error::LockTimeout`] with `timeout: None` (the connection's bound, not the caller's);
//! - [`Wait::Timeout`] and [`Wait::No`] cannot be honoured per call (changing `busy_timeout` on
//!   a pooled connection would leak into whoever uses it next, e.g. after a cancelled call), so
//!   they are refused with [`Error::UnsupportedBackend`] before anything is locked or
//!   written, instead of silently waiting longer or shorter than asked.

pub(crate) mod catalog;
pub(crate) mod codes;
pub(crate) mod one_statement;

#[cfg(feature = "sqlite")]
use sea_orm::DatabaseConnectionType;
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, QueryResult, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use crate::source::{DbId, SessionId};
use crate::transaction::Own;
use crate::{Error, Wait};

/// Why SQLite refuses [`Wait::Timeout`] and [`Wait::No`]: the text of the error.
const WAITS: &str = "bound one call's wait (Wait::Timeout, Wait::No): SQLite waits for \
     its write lock as long as the connection's busy_timeout. Pass Wait::Forever, and set \
     busy_timeout when connecting (ConnectOptions::map_sqlx_sqlite_opts)";

/// Why SQLite has no advisory lock to offer: the text of the error.
pub(crate) const NO_ADVISORY_LOCKS: &str = "take an advisory lock: advisory locks need \
     PostgreSQL (MySQL: the crate's lock table), and SQLite has none. To create a row once on \
     SQLite, use `IdempotentCreate::create_once`, which takes SQLite's write lock (an IMMEDIATE \
     transaction) instead";

/// Refuses [`Wait::Timeout`] and [`Wait::No`] (see the module docs), before anything is
/// locked or written.
pub(crate) fn check_wait(wait: Wait) -> Result<(), Error> {
    match wait {
        Wait::Forever => Ok(()),
        Wait::Timeout(_) | Wait::No => Err(Error::UnsupportedBackend {
            backend: DbBackend::Sqlite,
            what: WAITS,
        }),
    }
}

/// The crate's own transaction: `BEGIN IMMEDIATE`, which takes SQLite's write lock.
pub(crate) async fn begin(db: &DatabaseConnection) -> Result<Own, Error> {
    let options = TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    };
    Ok(Own::Plain(db.begin_with_options(options).await?))
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

    #[test]
    fn only_waiting_for_the_busy_timeout_is_accepted() {
        assert!(check_wait(Wait::Forever).is_ok());
        for wait in [Wait::No, Wait::Timeout(Duration::from_millis(10))] {
            let err = check_wait(wait).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnsupportedBackend {
                        backend: DbBackend::Sqlite,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(!err.is_retryable());
        }
    }
}
