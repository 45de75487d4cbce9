//! The crate's error type, and the one place database errors are classified (by SQLSTATE and
//! driver error kind, never by message text).

use std::time::Duration;

use sea_orm::{DbBackend, DbErr, RuntimeErr, sqlx};

use crate::{LockKey, Wait};

/// What can go wrong when taking a lock or creating a row once.
///
/// Lock timeouts, busy locks and deadlocks have their own variants so a caller can react to
/// them without matching on messages; [`Error::is_retryable`] says which failures a retry of
/// the whole call can fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock was not granted within [`Wait::Timeout`](crate::Wait::Timeout) (PostgreSQL:
    /// `lock_timeout`, or a cancel request that ended the wait; SQLite: the connection's
    /// `busy_timeout` ran out). Nothing was written.
    #[error("lock {key} not granted in time (bound: {timeout:?})")]
    LockTimeout {
        /// The key that was asked for.
        key: LockKey,
        /// The bound that ran out: the [`Wait::Timeout`](crate::Wait::Timeout) asked for, or
        /// `None` when it was not the caller's (SQLite's `busy_timeout`, a cancel request).
        timeout: Option<Duration>,
        /// The database's own report, when the wait failed with an error (SQLite). A
        /// PostgreSQL wait never fails: it records why it ended (see the lock module).
        #[source]
        source: Option<DbErr>,
    },

    /// [`Wait::No`](crate::Wait::No): another transaction holds the key. Nothing was written.
    #[error("advisory lock {key} is held by another transaction")]
    LockBusy {
        /// The key that was asked for.
        key: LockKey,
    },

    /// PostgreSQL detected a deadlock (SQLSTATE 40P01) and chose this caller's wait to cancel.
    /// Usually a caller's transaction took other locks in an order another transaction
    /// reverses. The wait is rolled back, but the transaction keeps the locks it took before:
    /// roll it back so the other side can go on (`create_once` does so on its own
    /// transactions).
    #[error("deadlock detected while waiting for lock {key}")]
    Deadlock {
        /// The key that was asked for.
        key: LockKey,
    },

    /// A call made inside the `make_data` of another call (the same call chain) asked for a
    /// lock that the enclosing call holds, on another connection or transaction: it would
    /// wait for its own caller forever, a deadlock the server cannot see. Refused at once,
    /// before anything is written. Make the inner call on the same caller's transaction, or
    /// after the outer call returns.
    #[error(
        "lock {key} is held by an enclosing call of the same call chain; waiting for it would never end"
    )]
    Reentrant {
        /// The key that was asked for.
        key: LockKey,
    },

    /// The caller's transaction was already aborted when the call began (PostgreSQL SQLSTATE
    /// 25P02): an earlier statement in it failed, and its COMMIT would only roll it back.
    /// Nothing was written; roll the transaction back and start again.
    #[error("the caller's transaction is aborted; roll it back (its COMMIT would roll back too)")]
    TransactionAborted(#[source] DbErr),

    /// The surrounding transaction runs at an isolation level under which lock-then-read is
    /// unsafe: REPEATABLE READ and SERIALIZABLE take their snapshot before the lock is granted,
    /// so the read after the lock would miss the row another caller just committed. Nothing was
    /// written; run the call in a READ COMMITTED transaction or pass the connection instead.
    #[error("transaction isolation level is {level}; advisory-lock-then-read needs READ COMMITTED")]
    UnsafeIsolation {
        /// The level PostgreSQL reported (`current_setting('transaction_isolation')`).
        level: String,
    },

    /// The connection's backend has neither advisory locks nor a write lock this crate knows
    /// how to take (only PostgreSQL and SQLite are supported).
    #[error("backend {backend:?} is not supported: only PostgreSQL and SQLite are")]
    UnsupportedBackend {
        /// The backend of the connection passed in.
        backend: DbBackend,
    },

    /// The caller's `make_data` failed; nothing was written and the lock was released.
    #[error("building the data for the new row failed")]
    MakeData(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Any other database error (constraint violations, a missing table, a lost connection).
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl Error {
    /// Whether repeating the whole call may succeed: lock timeouts, busy locks, deadlocks,
    /// serialization failures, and lost or unavailable connections. Data errors (constraint
    /// violations, a missing table), an unsafe isolation level, an unsupported backend and a
    /// failed `make_data` are not retryable: the same call would fail the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::LockTimeout { .. } | Error::LockBusy { .. } | Error::Deadlock { .. } => true,
            Error::Database(err) => is_transient(err),
            Error::UnsafeIsolation { .. }
            | Error::UnsupportedBackend { .. }
            | Error::Reentrant { .. }
            | Error::TransactionAborted(_)
            | Error::MakeData(_) => false,
        }
    }

    /// Turns SQLite's "busy" (its write lock was not granted within the connection's
    /// `busy_timeout`) into [`Error::LockTimeout`] for `key`; any other error is kept.
    pub(crate) fn sqlite_busy_as_timeout(self, key: LockKey) -> Error {
        match self {
            Error::Database(err) if classify(&err) == Kind::SqliteBusy => Error::LockTimeout {
                key,
                timeout: None,
                source: Some(err),
            },
            other => other,
        }
    }

    /// Reports a lock timeout against the bound the caller asked for, not against what was
    /// left of it after waiting for a turn.
    pub(crate) fn with_bound(self, asked: Wait) -> Error {
        match (self, asked) {
            (
                Error::LockTimeout {
                    key,
                    timeout: Some(_),
                    source,
                },
                Wait::Timeout(asked),
            ) => Error::LockTimeout {
                key,
                timeout: Some(asked),
                source,
            },
            (err, _) => err,
        }
    }

    /// Turns the error of a caller's transaction's first statement into
    /// [`Error::TransactionAborted`] when the transaction was aborted already.
    pub(crate) fn from_first_statement(err: DbErr) -> Error {
        match classify(&err) {
            Kind::InFailedTransaction => Error::TransactionAborted(err),
            _ => Error::Database(err),
        }
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes this crate reacts to.
mod code {
    /// PostgreSQL `lock_not_available`: `lock_timeout` ran out.
    pub(super) const PG_LOCK_NOT_AVAILABLE: &str = "55P03";
    /// PostgreSQL `deadlock_detected`.
    pub(super) const PG_DEADLOCK_DETECTED: &str = "40P01";
    /// PostgreSQL `serialization_failure`.
    pub(super) const PG_SERIALIZATION_FAILURE: &str = "40001";
    /// PostgreSQL `in_failed_sql_transaction`: a statement in an aborted transaction.
    pub(super) const PG_IN_FAILED_TRANSACTION: &str = "25P02";
    /// PostgreSQL class 08: connection exceptions.
    pub(super) const PG_CONNECTION_EXCEPTION_CLASS: &str = "08";
    /// PostgreSQL class 57P: operator intervention (`admin_shutdown`, `crash_shutdown`,
    /// `cannot_connect_now`, `pg_terminate_backend`).
    pub(super) const PG_OPERATOR_INTERVENTION_CLASS: &str = "57P";
    /// SQLite `SQLITE_BUSY` and its extended codes (`SQLITE_BUSY_SNAPSHOT` = 517, ...): the
    /// lowest byte of an extended code is the primary code.
    pub(super) const SQLITE_BUSY: i64 = 5;
    /// SQLite `SQLITE_LOCKED`.
    pub(super) const SQLITE_LOCKED: i64 = 6;
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    SqliteBusy,
    InFailedTransaction,
    Other,
}

fn classify(err: &DbErr) -> Kind {
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) if state == code::PG_IN_FAILED_TRANSACTION => {
            Kind::InFailedTransaction
        }
        Some(DatabaseCode::Sqlite(code)) if is_sqlite_busy(code) => Kind::SqliteBusy,
        _ => Kind::Other,
    }
}

fn is_sqlite_busy(code: i64) -> bool {
    matches!(code & 0xff, code::SQLITE_BUSY | code::SQLITE_LOCKED)
}

/// Whether a plain database error is one a retry can get past.
fn is_transient(err: &DbErr) -> bool {
    if matches!(err, DbErr::ConnectionAcquire(_)) {
        return true;
    }
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) => {
            state == code::PG_LOCK_NOT_AVAILABLE
                || state == code::PG_DEADLOCK_DETECTED
                || state == code::PG_SERIALIZATION_FAILURE
                || state.starts_with(code::PG_CONNECTION_EXCEPTION_CLASS)
                || state.starts_with(code::PG_OPERATOR_INTERVENTION_CLASS)
        }
        Some(DatabaseCode::Sqlite(code)) => is_sqlite_busy(code),
        None => sqlx_error(err).is_some_and(|e| {
            matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        }),
    }
}

enum DatabaseCode {
    Postgres(String),
    Sqlite(i64),
}

fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

fn database_code(err: &DbErr) -> Option<DatabaseCode> {
    let db_err = sqlx_error(err)?.as_database_error()?;
    if db_err
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return db_err
            .code()
            .map(|state| DatabaseCode::Postgres(state.into_owned()));
    }
    if db_err
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        return db_err
            .code()
            .and_then(|code| code.parse().ok())
            .map(DatabaseCode::Sqlite);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_database_errors_are_not_lock_errors() {
        let err =
            Error::Database(DbErr::Custom("x".into())).sqlite_busy_as_timeout(LockKey::BigInt(1));
        assert!(matches!(err, Error::Database(_)));
        assert!(!err.is_retryable());
        let err = Error::from_first_statement(DbErr::Custom("x".into()));
        assert!(matches!(err, Error::Database(_)));
    }

    #[test]
    fn lock_variants_are_retryable_and_setup_errors_are_not() {
        assert!(
            Error::LockBusy {
                key: LockKey::BigInt(1)
            }
            .is_retryable()
        );
        assert!(
            !Error::UnsafeIsolation {
                level: "repeatable read".into()
            }
            .is_retryable()
        );
        assert!(
            !Error::UnsupportedBackend {
                backend: DbBackend::MySql
            }
            .is_retryable()
        );
        assert!(
            !Error::Reentrant {
                key: LockKey::BigInt(1)
            }
            .is_retryable()
        );
        assert!(
            Error::Deadlock {
                key: LockKey::BigInt(1)
            }
            .is_retryable()
        );
    }

    /// What a killed backend or a restarting server looks like without a server message: the
    /// socket closes (the fault tests in tests/faults.rs see these besides SQLSTATE 57P01).
    #[test]
    fn lost_connections_are_retryable() {
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let io = || sqlx::Error::Io(std::io::Error::new(kind, "lost"));
            for err in [
                DbErr::Query(RuntimeErr::SqlxError(io().into())),
                DbErr::Exec(RuntimeErr::SqlxError(io().into())),
                DbErr::Conn(RuntimeErr::SqlxError(io().into())),
            ] {
                assert!(Error::Database(err).is_retryable(), "{kind:?}");
            }
        }
        assert!(
            Error::Database(DbErr::ConnectionAcquire(
                sea_orm::error::ConnAcquireErr::Timeout
            ))
            .is_retryable()
        );
    }

    #[test]
    fn sqlite_extended_busy_codes_count_as_busy() {
        assert!(is_sqlite_busy(5));
        assert!(is_sqlite_busy(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(is_sqlite_busy(6));
        assert!(!is_sqlite_busy(19)); // SQLITE_CONSTRAINT
    }
}
