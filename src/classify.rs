//! The one place database errors are classified: by PostgreSQL SQLSTATE and SQLite result
//! code (and sqlx's error kinds for lost connections), never by message text.

use sea_orm::DbErr;

/// PostgreSQL SQLSTATEs and SQLite result codes this crate reacts to.
mod code {
    /// PostgreSQL `lock_not_available`: `lock_timeout` ran out.
    pub(super) const PG_LOCK_NOT_AVAILABLE: &str = "55P03";
    /// PostgreSQL `deadlock_detected`.
    pub(super) const PG_DEADLOCK_DETECTED: &str = "40P01";
    /// PostgreSQL `undefined_function`: a server too old for a statement (see
    /// [`ServerRefusal::TooOld`](crate::ServerRefusal::TooOld)).
    pub(super) const PG_UNDEFINED_FUNCTION: &str = "42883";
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
/// What an error means to the crate (see [`classify`]).
pub(crate) enum ErrorClass {
    SqliteBusy,
    InFailedTransaction,
    Other,
}

pub(crate) fn classify(err: &DbErr) -> ErrorClass {
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) if state == code::PG_IN_FAILED_TRANSACTION => {
            ErrorClass::InFailedTransaction
        }
        Some(DatabaseCode::Sqlite(code)) if is_sqlite_busy(code) => ErrorClass::SqliteBusy,
        _ => ErrorClass::Other,
    }
}

/// Whether PostgreSQL could not find a function a statement calls (SQLSTATE 42883).
pub(crate) fn is_undefined_function(err: &DbErr) -> bool {
    matches!(
        database_code(err),
        Some(DatabaseCode::Postgres(state)) if state == code::PG_UNDEFINED_FUNCTION
    )
}

fn is_sqlite_busy(code: i64) -> bool {
    matches!(code & 0xff, code::SQLITE_BUSY | code::SQLITE_LOCKED)
}

/// Whether a plain database error is one a retry can get past.
pub(crate) fn is_transient(err: &DbErr) -> bool {
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
        None => driver::is_lost_connection(err),
    }
}

/// A database error's code, by driver. A driver's arm is compiled with its feature only; the
/// variants stay, so the classification reads the same in every build.
enum DatabaseCode {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres(String),
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite(i64),
}

/// What sqlx tells about an error. Without a backend feature there is no driver, no sqlx,
/// and nothing to classify (every backend is refused before a statement is sent).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod driver {
    use sea_orm::{DbErr, RuntimeErr, sqlx};

    use super::DatabaseCode;

    /// A lost or unavailable connection, without a server's code.
    pub(super) fn is_lost_connection(err: &DbErr) -> bool {
        sqlx_error(err).is_some_and(|e| {
            matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        })
    }

    fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
        match err {
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
            _ => None,
        }
    }

    pub(super) fn database_code(err: &DbErr) -> Option<DatabaseCode> {
        let db_err = sqlx_error(err)?.as_database_error()?;
        #[cfg(feature = "postgres")]
        if db_err
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            return db_err
                .code()
                .map(|state| DatabaseCode::Postgres(state.into_owned()));
        }
        #[cfg(feature = "sqlite")]
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
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
mod driver {
    use sea_orm::DbErr;

    use super::DatabaseCode;

    pub(super) fn is_lost_connection(_: &DbErr) -> bool {
        false
    }

    pub(super) fn database_code(_: &DbErr) -> Option<DatabaseCode> {
        None
    }
}

use driver::database_code;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_extended_busy_codes_count_as_busy() {
        assert!(is_sqlite_busy(5));
        assert!(is_sqlite_busy(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(is_sqlite_busy(6));
        assert!(!is_sqlite_busy(19)); // SQLITE_CONSTRAINT
    }
}
