//! The one place database errors are classified: by PostgreSQL SQLSTATE, SQLite result code
//! and MySQL error number (and sqlx's error kinds for lost connections), never by message text.

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
    /// PostgreSQL `unique_violation`.
    pub(super) const PG_UNIQUE_VIOLATION: &str = "23505";
    /// PostgreSQL `read_only_sql_transaction`: a write in a read-only transaction or on a hot
    /// standby.
    pub(super) const PG_READ_ONLY_TRANSACTION: &str = "25006";
    /// PostgreSQL `query_canceled`: a `statement_timeout` (the caller's) or a cancel request.
    pub(super) const PG_QUERY_CANCELED: &str = "57014";
    /// PostgreSQL `duplicate_prepared_statement` and `invalid_sql_statement_name`: prepared
    /// statements lost between a client and its server (a pooler in transaction mode).
    pub(super) const PG_DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    pub(super) const PG_INVALID_STATEMENT_NAME: &str = "26000";
    /// PostgreSQL `protocol_violation`, in class 08 but never cured by a retry (a pooler that
    /// sends one statement's bind message to another).
    pub(super) const PG_PROTOCOL_VIOLATION: &str = "08P01";
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
    /// SQLite `SQLITE_READONLY` (primary code; its extended codes share the lowest byte).
    pub(super) const SQLITE_READONLY: i64 = 8;
    /// SQLite `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY`.
    pub(super) const SQLITE_CONSTRAINT_UNIQUE: i64 = 2067;
    pub(super) const SQLITE_CONSTRAINT_PRIMARYKEY: i64 = 1555;
    /// MySQL `ER_DUP_ENTRY` and `ER_DUP_ENTRY_WITH_KEY_NAME`: a duplicate key.
    pub(super) const MYSQL_DUP_ENTRY: u16 = 1062;
    pub(super) const MYSQL_DUP_ENTRY_WITH_KEY_NAME: u16 = 1586;
    /// MySQL `ER_OPTION_PREVENTS_STATEMENT` (a write on a `read_only` server),
    /// `ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION` and `ER_READ_ONLY_MODE`.
    pub(super) const MYSQL_OPTION_PREVENTS_STATEMENT: u16 = 1290;
    pub(super) const MYSQL_READ_ONLY_TRANSACTION: u16 = 1792;
    pub(super) const MYSQL_READ_ONLY_MODE: u16 = 1836;
    /// MySQL `ER_LOCK_WAIT_TIMEOUT`: `innodb_lock_wait_timeout` (or MariaDB's `WAIT n`,
    /// `NOWAIT`) ran out.
    pub(super) const MYSQL_LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// MySQL `ER_LOCK_DEADLOCK`: InnoDB chose this transaction as a deadlock's victim and rolled
    /// it back.
    pub(super) const MYSQL_LOCK_DEADLOCK: u16 = 1213;
    /// MySQL 8 `ER_LOCK_NOWAIT`: `NOWAIT` found the row locked (MariaDB reports 1205).
    pub(super) const MYSQL_LOCK_NOWAIT: u16 = 3572;
    /// MySQL `ER_USER_LOCK_DEADLOCK`: a `GET_LOCK` deadlock (the crate takes no named locks,
    /// but a caller's transaction may).
    pub(super) const MYSQL_USER_LOCK_DEADLOCK: u16 = 3058;
    /// MySQL `ER_NO_SUCH_TABLE`.
    pub(super) const MYSQL_NO_SUCH_TABLE: u16 = 1146;
    /// MySQL `ER_PARSE_ERROR`: a server without the syntax a statement uses.
    pub(super) const MYSQL_PARSE_ERROR: u16 = 1064;
    /// MySQL `ER_SERVER_SHUTDOWN`: the server is shutting down.
    pub(super) const MYSQL_SERVER_SHUTDOWN: u16 = 1053;
    /// MariaDB `ER_CONNECTION_KILLED`: `KILL CONNECTION` ended this session.
    pub(super) const MARIADB_CONNECTION_KILLED: u16 = 1927;
    /// MySQL 8 `ER_CLIENT_INTERACTION_TIMEOUT`: the server closed an idle session.
    pub(super) const MYSQL_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
    /// `CR_SERVER_GONE_ERROR` and `CR_SERVER_LOST`: client-side codes of C clients for a lost
    /// server; sqlx reports these as I/O errors, but a proxy may send them.
    pub(super) const MYSQL_SERVER_GONE: u16 = 2006;
    pub(super) const MYSQL_SERVER_LOST: u16 = 2013;
    /// MariaDB `ER_CHECKREAD` ("record has changed since last read"): with
    /// `innodb_snapshot_isolation`, a REPEATABLE READ transaction's locking read of a row changed
    /// after its snapshot; the transaction must start again.
    pub(super) const MARIADB_CHECKREAD: u16 = 1020;
}

/// MySQL errors the crate reacts to (see [`mysql_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MySqlError {
    LockWaitTimeout,
    LockNowait,
    Deadlock,
    NoSuchTable,
    Syntax,
}

/// What a MySQL error means to the lock code, by error number.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn mysql_error(err: &DbErr) -> Option<MySqlError> {
    match database_code(err)? {
        DatabaseCode::MySql(code::MYSQL_LOCK_WAIT_TIMEOUT) => Some(MySqlError::LockWaitTimeout),
        DatabaseCode::MySql(code::MYSQL_LOCK_NOWAIT) => Some(MySqlError::LockNowait),
        DatabaseCode::MySql(code::MYSQL_LOCK_DEADLOCK) => Some(MySqlError::Deadlock),
        DatabaseCode::MySql(code::MYSQL_NO_SUCH_TABLE) => Some(MySqlError::NoSuchTable),
        DatabaseCode::MySql(code::MYSQL_PARSE_ERROR) => Some(MySqlError::Syntax),
        _ => None,
    }
}

/// Whether a MySQL error number is one a retry can get past.
fn is_mysql_transient(number: u16) -> bool {
    matches!(
        number,
        code::MYSQL_LOCK_WAIT_TIMEOUT
            | code::MYSQL_LOCK_DEADLOCK
            | code::MYSQL_LOCK_NOWAIT
            | code::MYSQL_USER_LOCK_DEADLOCK
            | code::MYSQL_SERVER_SHUTDOWN
            | code::MARIADB_CONNECTION_KILLED
            | code::MYSQL_CLIENT_INTERACTION_TIMEOUT
            | code::MYSQL_SERVER_GONE
            | code::MYSQL_SERVER_LOST
            | code::MARIADB_CHECKREAD
    )
}

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
    /// The server chose this transaction as a deadlock's victim (PostgreSQL 40P01, MySQL
    /// 1213), whichever statement waited.
    Deadlock,
    Other,
}

pub(crate) fn classify(err: &DbErr) -> ErrorClass {
    match database_code(err) {
        Some(DatabaseCode::Postgres(state)) => match state.as_str() {
            code::PG_IN_FAILED_TRANSACTION => ErrorClass::InFailedTransaction,
            code::PG_UNIQUE_VIOLATION => ErrorClass::UniqueViolation,
            code::PG_DEADLOCK_DETECTED => ErrorClass::Deadlock,
            code::PG_READ_ONLY_TRANSACTION => ErrorClass::ReadOnly,
            code::PG_DUPLICATE_PREPARED_STATEMENT
            | code::PG_INVALID_STATEMENT_NAME
            | code::PG_PROTOCOL_VIOLATION => ErrorClass::PreparedStatementLost,
            _ => ErrorClass::Other,
        },
        Some(DatabaseCode::Sqlite(code)) if is_sqlite_busy(code) => ErrorClass::SqliteBusy,
        Some(DatabaseCode::Sqlite(code)) if code & 0xff == code::SQLITE_READONLY => {
            ErrorClass::ReadOnly
        }
        Some(DatabaseCode::Sqlite(
            code::SQLITE_CONSTRAINT_UNIQUE | code::SQLITE_CONSTRAINT_PRIMARYKEY,
        )) => ErrorClass::UniqueViolation,
        Some(DatabaseCode::MySql(code::MYSQL_DUP_ENTRY | code::MYSQL_DUP_ENTRY_WITH_KEY_NAME)) => {
            ErrorClass::UniqueViolation
        }
        Some(DatabaseCode::MySql(code::MYSQL_LOCK_DEADLOCK)) => ErrorClass::Deadlock,
        Some(DatabaseCode::MySql(
            code::MYSQL_OPTION_PREVENTS_STATEMENT
            | code::MYSQL_READ_ONLY_TRANSACTION
            | code::MYSQL_READ_ONLY_MODE,
        )) => ErrorClass::ReadOnly,
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
                || state == code::PG_QUERY_CANCELED
                || state == code::PG_READ_ONLY_TRANSACTION
                || (state.starts_with(code::PG_CONNECTION_EXCEPTION_CLASS)
                    && state != code::PG_PROTOCOL_VIOLATION)
                || state.starts_with(code::PG_OPERATOR_INTERVENTION_CLASS)
        }
        Some(DatabaseCode::Sqlite(code)) => is_sqlite_busy(code),
        Some(DatabaseCode::MySql(number)) => is_mysql_transient(number),
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

    #[test]
    fn mysql_lock_and_connection_errors_are_transient_and_data_errors_are_not() {
        for number in [1205, 1213, 3572, 3058, 1053, 1927, 4031, 2006, 2013, 1020] {
            assert!(is_mysql_transient(number), "{number}");
        }
        // Duplicate key, no such table, syntax, data too long, check constraint.
        for number in [1062, 1146, 1064, 1406, 4025] {
            assert!(!is_mysql_transient(number), "{number}");
        }
    }
}
