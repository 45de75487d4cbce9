//! The crate's error type and how its lock errors read; database errors are classified in
//! [`classify`](crate::classify) (by SQLSTATE, SQLite result code, MySQL error number and driver
//! error kind, never by message text).
//!
//! (Over 450 lines: one enum, each variant documented with when it comes and what to do,
//! and the methods every variant answers (`kind`, `is_retryable`); split, a variant's story
//! would be read in two places.)

use std::fmt;
use std::time::Duration;

use sea_orm::{DbBackend, DbErr};

use crate::classify::{ErrorClass, classify, is_transient, redacted};
use crate::{LockKey, ServerRefusal, Wait};

/// What can go wrong when taking a lock or creating a row once.
///
/// Lock timeouts, busy locks and deadlocks have their own variants so a caller can react to
/// them without matching on messages; [`Error::is_retryable`] says which failures a retry of
/// the whole call can fix.
///
/// The enum and the fields of its struct variants are non-exhaustive: match a variant's
/// fields with `..` (`Error::LockBusy { key, .. }`), so that a field added later never breaks
/// your match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock was not granted within [`Wait::Timeout`] (PostgreSQL:
    /// `lock_timeout`, or a cancel request that ended the wait; SQLite: its write lock, not
    /// granted within the bound, or within the connection's `busy_timeout` for
    /// [`Wait::Forever`]; MySQL/MariaDB: `innodb_lock_wait_timeout`,
    /// error 1205). Nothing was written. On SQLite `key` is the key PostgreSQL would lock:
    /// SQLite's lock is one per database file, and the message names that lock instead.
    ///
    /// On MySQL/MariaDB also when, with the key's lock held, the row's insert or update waited
    /// that long for a lock of another transaction on the entity table: a gap lock InnoDB
    /// took on a unique index (where a row of the key was deleted and not yet purged), or the
    /// table's AUTO-INC lock (error 1467). Without a [`Wait::Timeout`]
    /// that wait is bounded by the server's `innodb_lock_wait_timeout` (`timeout: None`).
    ///
    /// On PostgreSQL also when, with the key's lock held, the row's insert or update waited
    /// that long for a writer that bypasses the lock (its uncommitted row of the key, on the
    /// unique index), or a `lock_timeout` you set on the session ended that wait
    /// (`timeout: None`); `source` is then the server's 55P03.
    #[error("{} not granted {}", Lock(.key, .row), Within(.timeout, .row))]
    #[non_exhaustive]
    LockTimeout {
        /// The key that was asked for.
        key: LockKey,
        /// The row the lock was for, when a `create_once` call took it (boxed: it is rare, and
        /// `Error` stays small).
        row: Option<Box<LockedRow>>,
        /// The bound that ran out: the [`Wait::Timeout`] asked for, or
        /// `None` when it was not the caller's (the connection's `busy_timeout` on SQLite, a
        /// cancel request on PostgreSQL).
        timeout: Option<Duration>,
        /// The database's own report, when the wait failed with an error (SQLite, MySQL; on
        /// PostgreSQL the insert's or update's wait behind a writer that bypasses the lock).
        /// A PostgreSQL lock wait never fails: it records why it ended (see the lock module).
        #[source]
        source: Option<DbErr>,
    },

    /// [`Wait::No`]: another transaction holds the key (SQLite: its write
    /// lock; MySQL/MariaDB: or a lock the row's insert or update needs on the entity table;
    /// PostgreSQL: or a writer that bypasses the lock holds the key's row, uncommitted; see
    /// [`Error::LockTimeout`]). Nothing was written.
    #[error("{} is held by another transaction", Lock(.key, .row))]
    #[non_exhaustive]
    LockBusy {
        /// The key that was asked for.
        key: LockKey,
        /// The row the lock was for, when a `create_once` call took it (boxed: it is rare, and
        /// `Error` stays small).
        row: Option<Box<LockedRow>>,
    },

    /// The server detected a deadlock and chose this transaction as its victim: **retry the
    /// whole transaction, not just the call** ([`Error::needs_new_transaction`] is true).
    /// Usually a caller's transaction took other locks in an order another transaction
    /// reverses.
    ///
    /// - PostgreSQL (SQLSTATE 40P01) cancelled this wait: the wait is rolled back, but the
    ///   transaction keeps the locks it took before; roll it back so the other side can go on
    ///   (`create_once` does so on its own transactions).
    /// - MySQL/MariaDB (error 1213, or 1467 for a deadlock closed by a wait for a table's
    ///   AUTO-INC lock): InnoDB has already rolled back the whole transaction, a
    ///   caller's included, and its session goes on in autocommit. Every later call of the
    ///   crate on that transaction fails with [`Error::TransactionAborted`] and writes
    ///   nothing; your own statements on it would run in autocommit, so roll it back.
    #[error(
        "deadlock detected while waiting for {}: the transaction was chosen as the victim; roll back and retry the whole transaction",
        Lock(.key, .row)
    )]
    #[non_exhaustive]
    Deadlock {
        /// The key that was asked for.
        key: LockKey,
        /// The row the lock was for, when a `create_once` call took it (boxed: it is rare, and
        /// `Error` stays small).
        row: Option<Box<LockedRow>>,
    },

    /// A call made inside the `make_data` of another call (the same call chain) asked for a
    /// lock that the enclosing call holds, on another connection or transaction: it would
    /// wait for its own caller forever, a deadlock the server cannot see. Refused at once,
    /// before anything is written. Make the inner call on the same caller's transaction, or
    /// after the outer call returns.
    #[error(
        "lock {key} is held by an enclosing call of the same call chain; waiting for it would never end"
    )]
    #[non_exhaustive]
    Reentrant {
        /// The key that was asked for.
        key: LockKey,
    },

    /// The caller's transaction was already aborted when the call began (PostgreSQL SQLSTATE
    /// 25P02): an earlier statement in it failed, and its COMMIT would only roll it back.
    ///
    /// On MySQL/MariaDB: the server has rolled the transaction back, and its session runs in
    /// autocommit: an earlier deadlock (error 1213, [`Error::Deadlock`]), or a lock wait
    /// timeout under `innodb_rollback_on_timeout` (an earlier one, or this call's own wait: then
    /// the source is the server's error 1205). Your own statements on it would each commit on
    /// their own.
    ///
    /// Either way nothing was written by the call: roll the transaction back and retry the
    /// whole transaction ([`Error::needs_new_transaction`]); retrying only the call cannot
    /// help.
    #[error(
        "the caller's transaction is aborted or was rolled back by the server; roll it back and retry the whole transaction"
    )]
    TransactionAborted(#[source] DbErr),

    /// The surrounding transaction runs at an isolation level under which lock-then-read is
    /// unsafe: REPEATABLE READ and SERIALIZABLE take their snapshot before the lock is granted,
    /// so the read after the lock would miss the row another caller just committed. Nothing was
    /// written; run the call in a READ COMMITTED transaction or pass the connection instead.
    #[error(
        "the caller's transaction is {level}, whose snapshot can hide the row another caller just created; nothing was written. Run the call in a READ COMMITTED transaction (db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)) or pass the connection instead"
    )]
    #[non_exhaustive]
    UnsafeIsolation {
        /// The level PostgreSQL reported (`current_setting('transaction_isolation')`); on
        /// MySQL/MariaDB, which cannot report the current transaction's level, what the crate
        /// found instead (a snapshot older than the key's last holder).
        level: String,
    },

    /// The connection's backend cannot do what was asked: a backend this build does not
    /// serve (PostgreSQL needs the crate's `postgres` feature, SQLite its `sqlite` feature,
    /// MySQL its `mysql` feature, all on by default), or advisory locks on SQLite. `what` says
    /// which, and what to do instead.
    /// Returned before anything is written; not retryable.
    #[error("{backend:?} cannot do this: {what}")]
    #[non_exhaustive]
    UnsupportedBackend {
        /// The backend of the connection passed in.
        backend: DbBackend,
        /// What it cannot do, and what to do instead.
        what: &'static str,
    },

    /// The entity's [`key_columns`](crate::IdempotentCreate::key_columns) names another
    /// number of columns than its natural key has parts: a mistake in its `IdempotentCreate`
    /// impl. Returned before anything is sent; not retryable.
    #[error(
        "{table}: key_columns() names {columns} column(s) but the natural key has {parts} part(s); name one column per part, in the key's order"
    )]
    #[non_exhaustive]
    KeyColumns {
        /// The entity's table.
        table: &'static str,
        /// How many columns `key_columns()` named.
        columns: usize,
        /// How many parts the key has.
        parts: usize,
    },

    /// The natural key does not fit the entity's table: a key column the table does not have
    /// (`column_type: None`), or a part of the key whose type its column does not hold (`type
    /// Key = String` on a `BIGINT` column, where PostgreSQL would say "operator does not
    /// exist: bigint = text" and SeaORM "Value type mismatch", naming neither). Checked at the
    /// first call per pool and entity, and by [`verify`](crate::IdempotentCreate::verify);
    /// returned before anything is written. Not retryable: change `type Key` or the column.
    #[error(
        "{table}.{column}: {}, but the key's part is {key_type}; change `type Key` (or key_columns()) or the column",
        ColumnType(.column_type)
    )]
    #[non_exhaustive]
    KeyType {
        /// The entity's table.
        table: &'static str,
        /// The key column.
        column: String,
        /// The column's type as the database names it (`bigint`, `INTEGER`, `bigint(20)`), or
        /// as the entity declares it when the database was not asked (a caller's
        /// transaction); `None` when the table has no such column.
        column_type: Option<String>,
        /// The key's type (its part's, for a composite key), as Rust names it.
        key_type: String,
    },

    /// The server speaks PostgreSQL's protocol but its advisory locks cannot be relied on (an
    /// engine whose lock functions are known no-ops, one where a wait cannot be bounded
    /// safely, or a server too old for the crate's SQL), or it is a MySQL server without
    /// MariaDB's per-statement lock-wait bound; see [`ServerRefusal`] and the table of engines
    /// in the repository's `docs/backends.md`. Returned by the first lock of a call, before anything is
    /// written; the same call would fail the same way, so it is not retryable.
    #[error("server {} refused: {reason}", server.as_deref().unwrap_or("(version unknown)"))]
    #[non_exhaustive]
    UnsupportedServer {
        /// What the server calls itself (`version()`), when it said.
        server: Option<String>,
        /// Why it is refused.
        reason: ServerRefusal,
        /// The database's own report, when the refusal comes from one (a missing function).
        #[source]
        source: Option<DbErr>,
    },

    /// MySQL/MariaDB: the crate's lock table (named in `table`) does not exist (error 1146).
    /// Create it in a migration with [`mysql_lock_slots`](crate::mysql_lock_slots) and fill
    /// it with [`mysql_lock_slots_fill`](crate::mysql_lock_slots_fill). Returned by the first
    /// lock of a call, before anything is written; not retryable.
    #[error(
        "the lock table `{table}` does not exist: MySQL and MariaDB lock keys in it; create it in a migration with sea_orm_idempotent::mysql_lock_slots() and fill it with sea_orm_idempotent::mysql_lock_slots_fill()"
    )]
    #[non_exhaustive]
    MissingLockTable {
        /// The lock table's name.
        table: &'static str,
        /// The database's report.
        #[source]
        source: DbErr,
    },

    /// A writer that does not take the crate's lock (another service's plain `INSERT`, a
    /// backfill script, an admin) wrote this key's row while the call held the lock, in a way
    /// the call cannot absorb: the update form's insert met a row that writer committed
    /// meanwhile (the call's data was spent on the insert, so the update function cannot run
    /// on it), or the row was deleted between two of the call's statements. Nothing was
    /// written by the call. Retryable: a retry finds the row as that writer left it. (A
    /// create-only call absorbs such a row: it returns [`Outcome::Existing`](crate::Outcome).)
    #[error(
        "{row}: another writer, which does not take the lock, wrote the row during the call; retry the call"
    )]
    #[non_exhaustive]
    WrittenWithoutLock {
        /// The row the call was for.
        row: Box<LockedRow>,
    },

    /// A part of the natural key does not survive storage in its column, so the row could
    /// never be found by its key again: the column keeps less than the key's value has (a
    /// fraction of a second in `timestamp(0)` or MySQL's `DATETIME`, a third decimal in
    /// `numeric(10,2)`), or the value equals nothing (a float NaN). Every delivery of such a
    /// key would otherwise create another row, or fail. Nothing was written; not retryable
    /// (the same key fails the same way): give the key as the column stores it (round it), or
    /// widen the column.
    #[error(
        "{table}.{column}: the key's value {cause}; nothing was written (round the key to what the column stores, or widen the column)"
    )]
    #[non_exhaustive]
    KeyNotStorable {
        /// The entity's table.
        table: &'static str,
        /// The key column whose value does not survive (on MySQL/MariaDB, which cannot
        /// return the stored row, every key column, comma-separated, when the key has several).
        column: String,
        /// What happens to the value.
        cause: &'static str,
    },

    /// The database refused the write because it is read-only: a read-only transaction
    /// (`default_transaction_read_only`, PostgreSQL SQLSTATE 25006), a hot standby, a
    /// read-only MariaDB server (errors 1290, 1792) or a read-only SQLite file
    /// (`SQLITE_READONLY`). A create-only call whose row exists still returns
    /// [`Outcome::Existing`](crate::Outcome); this error means the row is not stored and could
    /// not be. Retryable: after a failover to a writable primary the call passes.
    #[error(
        "the database is read-only (a read-only transaction or server, or a hot standby): the row could not be written"
    )]
    ReadOnly(#[source] DbErr),

    /// PostgreSQL behind a connection pooler in transaction mode (PgBouncer) that does not
    /// keep the client's prepared statements: the server reports a prepared statement that
    /// already exists (SQLSTATE 42P05), one that does not (26000), or the pooler a bind
    /// message for another statement (08P01). A deployment mistake, not a transient failure,
    /// so not retryable: set `max_prepared_statements` in `pgbouncer.ini` (PgBouncer 1.21+),
    /// or connect to the server directly.
    #[error(
        "the connection pooler (PgBouncer in transaction mode?) does not keep prepared statements: set max_prepared_statements in pgbouncer.ini (1.21+) or connect to PostgreSQL directly"
    )]
    PreparedStatementsLost(#[source] DbErr),

    /// The caller's `make_data` failed; nothing was written and the lock was released.
    #[error("building the data for the new row failed: {0}")]
    MakeData(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The update function of [`Once::update`](crate::Once::update) refused the existing row
    /// with the caller's own error (the strict form: the same key arrived with different
    /// data). Nothing was written and the lock was released; the cause is the caller's error
    /// (`source()`, or `downcast_ref` on the box).
    #[error("the update of the existing row was refused: {0}")]
    UpdateRefused(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Any other database error (constraint violations, a missing table, a lost connection).
    #[error(transparent)]
    Database(#[from] DbErr),

    /// A chunk of a batch ([`Many`](crate::Many)) failed with `source`. The chunk wrote
    /// nothing (its transaction or savepoint was rolled back; a key it could not take, such as
    /// [`Error::KeyNotStorable`], fails it before it sends anything); the `done` items before
    /// it, in input order, were stored by the chunks before it (committed, or on a caller's
    /// transaction released into it). Running the whole batch again is safe: those items come
    /// back `Existing`. Retryable when `source` is.
    #[error(
        "chunk {}{} of the batch failed after {done} items were done (they are stored; running the batch again returns them as existing): {source}",
        .chunk + 1,
        of_chunks(*.chunks)
    )]
    #[non_exhaustive]
    Batch {
        /// The failed chunk, counted from 0.
        chunk: usize,
        /// How many chunks the batch has, when its input said how many items it holds (an
        /// iterator whose `size_hint` is exact, as a `Vec`'s is); `None` otherwise (the batch
        /// pulls its items one chunk at a time and does not count them ahead).
        chunks: Option<usize>,
        /// How many items, from the first in input order, were done before the failed chunk.
        done: usize,
        /// Why the chunk failed.
        #[source]
        source: Box<Error>,
    },
}

/// " of N" after a failed chunk's number, when the batch's number of chunks is known.
fn of_chunks(chunks: Option<usize>) -> String {
    chunks
        .map(|chunks| format!(" of {chunks}"))
        .unwrap_or_default()
}

/// For handlers that already return SeaORM's error: `?` on a call's result works there. A
/// [`Error::Database`] becomes its own [`DbErr`], unchanged; every other error becomes a
/// [`DbErr::Custom`] with its message (match on [`Error`] first where its kind matters, e.g. to
/// retry with [`Error::is_retryable`]).
impl From<Error> for DbErr {
    fn from(err: Error) -> DbErr {
        match err {
            Error::Database(err) => err,
            other => DbErr::Custom(other.to_string()),
        }
    }
}

impl Error {
    /// The variant's name in `snake_case` (`"lock_timeout"`, `"deadlock"`, `"database"`, ...):
    /// what the `create_once` span's `error_kind` field and the `metrics` feature's counters
    /// record, a label of fixed, few values to count and alert by.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::LockTimeout { .. } => "lock_timeout",
            Error::LockBusy { .. } => "lock_busy",
            Error::Deadlock { .. } => "deadlock",
            Error::Reentrant { .. } => "reentrant",
            Error::TransactionAborted(_) => "transaction_aborted",
            Error::UnsafeIsolation { .. } => "unsafe_isolation",
            Error::UnsupportedBackend { .. } => "unsupported_backend",
            Error::KeyColumns { .. } => "key_columns",
            Error::KeyType { .. } => "key_type",
            Error::UnsupportedServer { .. } => "unsupported_server",
            Error::MissingLockTable { .. } => "missing_lock_table",
            Error::WrittenWithoutLock { .. } => "written_without_lock",
            Error::KeyNotStorable { .. } => "key_not_storable",
            Error::ReadOnly(_) => "read_only",
            Error::PreparedStatementsLost(_) => "prepared_statements_lost",
            Error::MakeData(_) => "make_data",
            Error::UpdateRefused(_) => "update_refused",
            Error::Database(_) => "database",
            Error::Batch { .. } => "batch",
        }
    }
    /// Whether repeating the whole call may succeed: lock timeouts, busy locks, deadlocks,
    /// serialization failures, a statement the caller's `statement_timeout` cancelled, a
    /// read-only database (a failover cures it), a row written meanwhile by a writer that
    /// does not take the lock, and lost or unavailable connections. Data errors (constraint
    /// violations, a missing table), a key that does not survive storage, an unsafe isolation
    /// level, an unsupported backend or deployment, a failed `make_data` and a refused update
    /// are not retryable: the same call would fail the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::LockTimeout { .. }
            | Error::LockBusy { .. }
            | Error::Deadlock { .. }
            | Error::WrittenWithoutLock { .. }
            | Error::ReadOnly(_) => true,
            Error::Database(err) => is_transient(err),
            Error::Batch { source, .. } => source.is_retryable(),
            Error::UnsafeIsolation { .. }
            | Error::UnsupportedBackend { .. }
            | Error::KeyColumns { .. }
            | Error::KeyType { .. }
            | Error::Reentrant { .. }
            | Error::TransactionAborted(_)
            | Error::UnsupportedServer { .. }
            | Error::MissingLockTable { .. }
            | Error::MakeData(_)
            | Error::UpdateRefused(_)
            | Error::KeyNotStorable { .. }
            | Error::PreparedStatementsLost(_) => false,
        }
    }

    /// Whether the transaction the call ran in is lost to this error, so the remedy is to roll
    /// it back and retry the **whole transaction**, not just the call: a deadlock (on
    /// MySQL/MariaDB the server has rolled the whole transaction back already; on PostgreSQL
    /// the victim must roll back so the other side can go on) and
    /// [`Error::TransactionAborted`]. On a connection (the crate's own transaction) retrying
    /// the call is retrying the transaction.
    pub fn needs_new_transaction(&self) -> bool {
        match self {
            Error::Batch { source, .. } => source.needs_new_transaction(),
            other => matches!(other, Error::Deadlock { .. } | Error::TransactionAborted(_)),
        }
    }

    /// Turns SQLite's "busy" (its write lock was not granted in the `busy_timeout` the call
    /// gave it) into the lock error of `asked`, for `key`: [`Error::LockBusy`] for
    /// [`Wait::No`] (and a zero bound), [`Error::LockTimeout`] with the bound for
    /// [`Wait::Timeout`], and with `timeout: None` for [`Wait::Forever`] (the connection's
    /// `busy_timeout` ran out). Any other error is kept.
    pub(crate) fn sqlite_busy_as_lock_error(self, key: LockKey, asked: Wait) -> Error {
        match self {
            Error::Database(err) if classify(&err) == ErrorClass::SqliteBusy => match asked {
                Wait::Timeout(bound) if !bound.is_zero() => Error::LockTimeout {
                    key,
                    row: None,
                    timeout: Some(bound),
                    source: Some(err),
                },
                Wait::Forever => Error::LockTimeout {
                    key,
                    row: None,
                    timeout: None,
                    source: Some(err),
                },
                Wait::No | Wait::Timeout(_) => Error::LockBusy { key, row: None },
            },
            other => other,
        }
    }

    /// Marks a lock error of a call on SQLite as SQLite's write lock, so that its message
    /// names that lock and SQLite's cause, not a lock key that means nothing there. Call after
    /// [`about_row`](Self::about_row).
    pub(crate) fn at_sqlite_write_lock(mut self) -> Error {
        if let Error::LockTimeout { row: Some(row), .. } | Error::LockBusy { row: Some(row), .. } =
            &mut self
        {
            row.sqlite_write_lock = true;
        }
        self
    }

    /// Names the row a lock error's lock was for: `table`, and `natural_key` unless the
    /// entity keeps keys out of logs.
    pub(crate) fn about_row(mut self, table: &'static str, natural_key: Option<&str>) -> Error {
        if let Error::LockTimeout { row, .. }
        | Error::LockBusy { row, .. }
        | Error::Deadlock { row, .. } = &mut self
        {
            *row = Some(Box::new(LockedRow::new(
                table,
                natural_key.map(str::to_owned),
            )));
        }
        self
    }

    /// Gives the database errors the crate names their own variant: a read-only database
    /// ([`Error::ReadOnly`]), a pooler that loses prepared statements
    /// ([`Error::PreparedStatementsLost`]) and a deadlock; any other error is kept.
    /// A deadlock met by any statement of a call for `key` (the guarded insert's wait on the
    /// entity table too, not only the lock's) is [`Error::Deadlock`].
    pub(crate) fn named(self, key: LockKey) -> Error {
        match self {
            Error::Database(err) => match classify(&err) {
                ErrorClass::ReadOnly => Error::ReadOnly(err),
                ErrorClass::PreparedStatementLost => Error::PreparedStatementsLost(err),
                ErrorClass::Deadlock => Error::Deadlock { key, row: None },
                _ => Error::Database(err),
            },
            other => other,
        }
    }

    /// The error without the values a server writes into its messages (a unique violation's
    /// "Key (k)=(42) already exists"), for entities that keep keys out of logs
    /// ([`IdempotentCreate::log_key`](crate::IdempotentCreate::log_key)): the classification,
    /// the variant and the constraint's name stay.
    pub(crate) fn without_values(self) -> Error {
        match self {
            Error::Database(err) => Error::Database(redacted(err)),
            Error::ReadOnly(err) => Error::ReadOnly(redacted(err)),
            Error::TransactionAborted(err) => Error::TransactionAborted(redacted(err)),
            Error::PreparedStatementsLost(err) => Error::PreparedStatementsLost(redacted(err)),
            other => other,
        }
    }

    /// Turns the error of a caller's transaction's first statement into
    /// [`Error::TransactionAborted`] when the transaction was aborted already.
    pub(crate) fn from_first_statement(err: DbErr) -> Error {
        match classify(&err) {
            ErrorClass::InFailedTransaction => Error::TransactionAborted(err),
            _ => Error::Database(err),
        }
    }
}

/// The row a lock was taken for, named in lock errors of `create_once` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockedRow {
    /// The entity's table.
    pub table: &'static str,
    /// The natural key as displayed, or `None` when the entity keeps keys out of logs
    /// ([`IdempotentCreate::log_key`](crate::IdempotentCreate::log_key)).
    pub natural_key: Option<String>,
    /// Whether the lock was SQLite's write lock (one per database file), not a lock of the key.
    sqlite_write_lock: bool,
}

impl LockedRow {
    pub(crate) fn new(table: &'static str, natural_key: Option<String>) -> LockedRow {
        LockedRow {
            table,
            natural_key,
            sqlite_write_lock: false,
        }
    }
}

impl fmt::Display for LockedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.natural_key {
            Some(key) => write!(f, "{} key {key}", self.table),
            None => write!(f, "{} (key not logged)", self.table),
        }
    }
}

/// A lock in an error message: the row it was for when known, then the raw key; on SQLite its
/// write lock and the row it was wanted for.
struct Lock<'a>(&'a LockKey, &'a Option<Box<LockedRow>>);

impl fmt::Display for Lock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(row) if row.sqlite_write_lock => write!(f, "SQLite's write lock (for {row})"),
            Some(row) => write!(f, "the lock of {row} (lock key {})", self.0),
            None => write!(f, "lock {}", self.0),
        }
    }
}

/// A key column's type in [`Error::KeyType`]'s message, or that it is missing.
struct ColumnType<'a>(&'a Option<String>);

impl fmt::Display for ColumnType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(column_type) => write!(f, "the column is {column_type}"),
            None => f.write_str("no such column (or no such table)"),
        }
    }
}

/// The bound of a lock timeout in an error message.
struct Within<'a>(&'a Option<Duration>, &'a Option<Box<LockedRow>>);

impl fmt::Display for Within<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sqlite = self.1.as_ref().is_some_and(|row| row.sqlite_write_lock);
        match self.0 {
            Some(bound) => write!(f, "within {}", HumanDuration(*bound)),
            None if sqlite => f.write_str("within the connection's busy_timeout"),
            None => f.write_str("before the wait was ended for it (PostgreSQL: a cancel request)"),
        }
    }
}

/// A duration as people write it: `300 ms`, `2 s`, `1.5 s`, `250 µs`.
pub(crate) struct HumanDuration(pub(crate) Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(1) {
            let secs = d.as_secs_f64();
            let text = format!("{secs:.3}");
            write!(f, "{} s", text.trim_end_matches('0').trim_end_matches('.'))
        } else if d >= Duration::from_millis(1) || d.is_zero() {
            let ms = d.as_secs_f64() * 1000.0;
            let text = format!("{ms:.3}");
            write!(f, "{} ms", text.trim_end_matches('0').trim_end_matches('.'))
        } else {
            write!(f, "{} µs", d.as_micros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_converts_back_unchanged_and_others_keep_their_message() {
        let db: DbErr = Error::Database(DbErr::RecordNotFound("row".into())).into();
        assert!(
            matches!(db, DbErr::RecordNotFound(ref text) if text == "row"),
            "{db:?}"
        );
        let busy: DbErr = Error::LockBusy {
            key: LockKey::BigInt(1),
            row: None,
        }
        .into();
        assert!(
            matches!(busy, DbErr::Custom(ref text) if text.contains("held")),
            "{busy:?}"
        );
        fn handler() -> Result<(), DbErr> {
            Err(Error::UnsafeIsolation {
                level: "repeatable read".into(),
            })?;
            Ok(())
        }
        let err = handler().unwrap_err().to_string();
        assert!(err.contains("READ COMMITTED"), "{err}");
    }

    #[test]
    fn non_database_errors_are_not_lock_errors() {
        let err = Error::Database(DbErr::Custom("x".into()))
            .sqlite_busy_as_lock_error(LockKey::BigInt(1), Wait::Forever);
        assert!(matches!(err, Error::Database(_)));
        assert!(!err.is_retryable());
        let err = Error::from_first_statement(DbErr::Custom("x".into()));
        assert!(matches!(err, Error::Database(_)));
    }

    #[test]
    fn lock_variants_are_retryable_and_setup_errors_are_not() {
        assert!(
            Error::LockBusy {
                key: LockKey::BigInt(1),
                row: None
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
                backend: DbBackend::MySql,
                what: "x"
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
                key: LockKey::BigInt(1),
                row: None
            }
            .is_retryable()
        );
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    /// What a killed backend or a restarting server looks like without a server message: the
    /// socket closes (the fault tests in tests/faults.rs see these besides SQLSTATE 57P01).
    #[test]
    fn lost_connections_are_retryable() {
        use sea_orm::{RuntimeErr, sqlx};

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
    fn durations_read_as_people_write_them() {
        let shown = |d: Duration| HumanDuration(d).to_string();
        assert_eq!(shown(Duration::from_millis(300)), "300 ms");
        assert_eq!(shown(Duration::from_secs(2)), "2 s");
        assert_eq!(shown(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(shown(Duration::from_micros(1250)), "1.25 ms");
        assert_eq!(shown(Duration::from_micros(250)), "250 µs");
        assert_eq!(shown(Duration::ZERO), "0 ms");
    }

    #[test]
    fn lock_errors_name_the_row_when_known_and_keep_redacted_keys_out() {
        let timeout = || Error::LockTimeout {
            key: LockKey::Pair(1, 2),
            row: None,
            timeout: Some(Duration::from_millis(300)),
            source: None,
        };
        assert_eq!(
            timeout().to_string(),
            "lock (1, 2) not granted within 300 ms"
        );
        assert_eq!(
            timeout()
                .about_row("members", Some("(7, mona)"))
                .to_string(),
            "the lock of members key (7, mona) (lock key (1, 2)) not granted within 300 ms"
        );
        let redacted = timeout().about_row("members", None).to_string();
        assert_eq!(
            redacted,
            "the lock of members (key not logged) (lock key (1, 2)) not granted within 300 ms"
        );
    }

    #[test]
    fn make_data_errors_say_why() {
        let err = Error::MakeData("the API answered 503".into());
        assert_eq!(
            err.to_string(),
            "building the data for the new row failed: the API answered 503"
        );
    }
}
