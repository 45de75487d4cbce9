//! The one place database errors are classified: by PostgreSQL SQLSTATE, SQLite result code
//! and MySQL error number (and sqlx's error kinds for lost connections), never by message text.
//! Each backend's codes are named in its folder (`backend/*/codes.rs`); this module reads the
//! code out of the driver's error and says what it means to the crate.

use sea_orm::DbErr;

use crate::backend::mysql::codes as my;
use crate::backend::postgres::codes as pg;
use crate::backend::sqlite::codes as lite;

#[derive(Debug, PartialEq, Eq)]
/// What an error means to the crate (see [`classify`]).
pub(crate) enum ErrorClass {
    SqliteBusy,
    InFailedTransaction,
    /// A duplicate key (any unique index or primary key).
    UniqueViolation,
    /// A write refused because the transaction, server or file is read-only.
    ReadOnly,
    /// A prepared statement lost between client and server (a pooler in transaction mode).
    PreparedStatementLost,
    /// PostgreSQL: no unique index or constraint matches an `ON CONFLICT` target (42P10).
    NoArbiterIndex,
    /// PostgreSQL: a serialization failure (40001).
    SerializationFailure,
    /// SQLite's generic error (`SQLITE_ERROR`, 1): a statement SQLite refused, whatever why.
    SqliteError,
    /// The server chose this transaction as a deadlock's victim (PostgreSQL 40P01, MySQL
    /// 1213), whichever statement waited.
    Deadlock,
    /// PostgreSQL: a lock wait that `lock_timeout` ended (55P03).
    LockNotAvailable,
    Other,
}

pub(crate) fn classify(err: &DbErr) -> ErrorClass {
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) => match state.as_str() {
            pg::IN_FAILED_TRANSACTION => ErrorClass::InFailedTransaction,
            pg::UNIQUE_VIOLATION => ErrorClass::UniqueViolation,
            pg::DEADLOCK_DETECTED => ErrorClass::Deadlock,
            pg::READ_ONLY_TRANSACTION => ErrorClass::ReadOnly,
            pg::INVALID_COLUMN_REFERENCE => ErrorClass::NoArbiterIndex,
            pg::SERIALIZATION_FAILURE => ErrorClass::SerializationFailure,
            pg::LOCK_NOT_AVAILABLE => ErrorClass::LockNotAvailable,
            pg::DUPLICATE_PREPARED_STATEMENT
            | pg::INVALID_STATEMENT_NAME
            | pg::PROTOCOL_VIOLATION => ErrorClass::PreparedStatementLost,
            _ => ErrorClass::Other,
        },
        Some(DatabaseCode::Sqlite(code)) if lite::is_busy(code) => ErrorClass::SqliteBusy,
        Some(DatabaseCode::Sqlite(lite::ERROR)) => ErrorClass::SqliteError,
        Some(DatabaseCode::Sqlite(code)) if code & 0xff == lite::READONLY => ErrorClass::ReadOnly,
        Some(DatabaseCode::Sqlite(lite::CONSTRAINT_UNIQUE | lite::CONSTRAINT_PRIMARYKEY)) => {
            ErrorClass::UniqueViolation
        }
        Some(DatabaseCode::MySql(number)) => match number {
            my::DUP_ENTRY | my::DUP_ENTRY_WITH_KEY_NAME => ErrorClass::UniqueViolation,
            my::LOCK_DEADLOCK => ErrorClass::Deadlock,
            my::OPTION_PREVENTS_STATEMENT | my::READ_ONLY_TRANSACTION | my::READ_ONLY_MODE => {
                ErrorClass::ReadOnly
            }
            _ => ErrorClass::Other,
        },
        _ => ErrorClass::Other,
    }
}

/// MySQL errors the lock code reacts to (see [`mysql_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MySqlError {
    LockWaitTimeout,
    LockNowait,
    /// Error 1467: a wait for a table's AUTO-INC lock ran out or closed a deadlock.
    AutoIncLockWait,
    Deadlock,
    NoSuchTable,
    Syntax,
}

/// What a MySQL error means to the lock code, by error number.
pub(crate) fn mysql_error(err: &DbErr) -> Option<MySqlError> {
    match database_code(err)? {
        DatabaseCode::MySql(my::LOCK_WAIT_TIMEOUT) => Some(MySqlError::LockWaitTimeout),
        DatabaseCode::MySql(my::LOCK_NOWAIT) => Some(MySqlError::LockNowait),
        DatabaseCode::MySql(my::AUTOINC_READ_FAILED) => Some(MySqlError::AutoIncLockWait),
        DatabaseCode::MySql(my::LOCK_DEADLOCK) => Some(MySqlError::Deadlock),
        DatabaseCode::MySql(my::NO_SUCH_TABLE) => Some(MySqlError::NoSuchTable),
        DatabaseCode::MySql(my::PARSE_ERROR) => Some(MySqlError::Syntax),
        _ => None,
    }
}

/// Whether PostgreSQL could not find a function a statement calls (SQLSTATE 42883).
pub(crate) fn is_undefined_function(err: &DbErr) -> bool {
    matches!(
        database_code(err),
        Some(DatabaseCode::Postgres(state)) if state == pg::UNDEFINED_FUNCTION
    )
}

/// Whether a plain database error is one a retry can get past.
pub(crate) fn is_transient(err: &DbErr) -> bool {
    if matches!(err, DbErr::ConnectionAcquire(_)) {
        return true;
    }
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) => pg::is_transient(&state),
        Some(DatabaseCode::Sqlite(code)) => lite::is_busy(code),
        Some(DatabaseCode::MySql(number)) => my::is_transient(number),
        None => driver::is_lost_connection(err),
    }
}

/// A database error's code, by driver. A driver's arm is compiled with its feature only; the
/// variants stay, so the classification reads the same in every build.
#[derive(Debug, Clone)]
enum DatabaseCode {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres(String),
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite(i64),
    /// The error number (`ER_...`), not the SQLSTATE: MySQL gives many errors one SQLSTATE.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    MySql(u16),
}

/// What sqlx tells about an error. Without a backend feature there is no driver, no sqlx,
/// and nothing to classify (every backend is refused before a statement is sent).
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
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
        if let Some(redacted) = db_err.try_downcast_ref::<Redacted>() {
            return Some(redacted.code.clone());
        }
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
        #[cfg(feature = "mysql")]
        if let Some(mysql) = db_err.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
            return Some(DatabaseCode::MySql(mysql.number()));
        }
        None
    }

    /// A database error with the values taken out ([`redacted`]): what classifies it (its
    /// code, kind, constraint and table), and none of the server's text.
    #[derive(Debug)]
    pub(super) struct Redacted {
        code: DatabaseCode,
        sqlstate: Option<String>,
        kind: sqlx::error::ErrorKind,
        constraint: Option<String>,
        table: Option<String>,
        text: String,
    }

    impl std::fmt::Display for Redacted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl std::error::Error for Redacted {}

    impl sqlx::error::DatabaseError for Redacted {
        fn message(&self) -> &str {
            &self.text
        }

        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            self.sqlstate.as_deref().map(std::borrow::Cow::Borrowed)
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn constraint(&self) -> Option<&str> {
            self.constraint.as_deref()
        }

        fn table(&self) -> Option<&str> {
            self.table.as_deref()
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            match self.kind {
                sqlx::error::ErrorKind::UniqueViolation => sqlx::error::ErrorKind::UniqueViolation,
                sqlx::error::ErrorKind::ForeignKeyViolation => {
                    sqlx::error::ErrorKind::ForeignKeyViolation
                }
                sqlx::error::ErrorKind::NotNullViolation => {
                    sqlx::error::ErrorKind::NotNullViolation
                }
                sqlx::error::ErrorKind::CheckViolation => sqlx::error::ErrorKind::CheckViolation,
                sqlx::error::ErrorKind::ExclusionViolation => {
                    sqlx::error::ErrorKind::ExclusionViolation
                }
                _ => sqlx::error::ErrorKind::Other,
            }
        }
    }

    /// `err` without the values a server writes into its text (PostgreSQL's DETAIL "Key
    /// (k)=(42) already exists", "Failing row contains (...)"; MySQL's "Duplicate entry '42'"):
    /// the same classification, the constraint's and table's names, and no message. Any
    /// other error is kept as it is (it carries no value of the caller's).
    pub(crate) fn redacted(err: DbErr) -> DbErr {
        let Some(code) = database_code(&err) else {
            return err;
        };
        let Some(db_err) = sqlx_error(&err).and_then(sqlx::Error::as_database_error) else {
            return err;
        };
        if db_err.try_downcast_ref::<Redacted>().is_some() {
            return err;
        }
        let shown = match &code {
            DatabaseCode::Postgres(state) => format!("PostgreSQL error {state}"),
            DatabaseCode::Sqlite(code) => format!("SQLite error {code}"),
            DatabaseCode::MySql(number) => format!("MySQL error {number}"),
        };
        let on = match (db_err.constraint(), db_err.table()) {
            (Some(constraint), Some(table)) => format!(" (constraint {constraint} of {table})"),
            (Some(constraint), None) => format!(" (constraint {constraint})"),
            (None, Some(table)) => format!(" (table {table})"),
            (None, None) => String::new(),
        };
        let redacted = Redacted {
            sqlstate: db_err.code().map(std::borrow::Cow::into_owned),
            kind: db_err.kind(),
            constraint: db_err.constraint().map(str::to_owned),
            table: db_err.table().map(str::to_owned),
            text: format!(
                "{shown}{on}; the server's message is not shown: it may hold values of a key the entity keeps out of logs"
            ),
            code,
        };
        let sqlx_err = sqlx::Error::Database(Box::new(redacted));
        match err {
            DbErr::Conn(_) => DbErr::Conn(RuntimeErr::SqlxError(sqlx_err.into())),
            DbErr::Exec(_) => DbErr::Exec(RuntimeErr::SqlxError(sqlx_err.into())),
            _ => DbErr::Query(RuntimeErr::SqlxError(sqlx_err.into())),
        }
    }
}

#[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
mod driver {
    use sea_orm::DbErr;

    use super::DatabaseCode;

    pub(super) fn is_lost_connection(_: &DbErr) -> bool {
        false
    }

    pub(super) fn database_code(_: &DbErr) -> Option<DatabaseCode> {
        None
    }

    pub(crate) fn redacted(err: DbErr) -> DbErr {
        err
    }
}

use driver::database_code;
pub(crate) use driver::redacted;
