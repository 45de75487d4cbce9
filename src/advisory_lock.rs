//! The advisory-lock API: a transaction-scoped lock on any [`LockKey`], for callers' own
//! critical sections. On PostgreSQL an advisory lock
//! ([`postgres::lock`](crate::backend::postgres::lock)), on MySQL/MariaDB a row lock of the
//! crate's lock table ([`mysql::lock`](crate::backend::mysql::lock)); SQLite has none.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};

use crate::backend::Backend;
pub(crate) use crate::backend::mode::Mode;
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// Why a backend has no advisory lock to offer: the text of the error.
const NO_ADVISORY_LOCKS: &str = "take an advisory lock: advisory locks need PostgreSQL, or \
     MySQL with the crate's `mysql` feature";

/// Takes an exclusive transaction-scoped advisory lock on `key`
/// (`pg_advisory_xact_lock`), waiting as `wait` says. On MySQL/MariaDB the same lock is a row
/// lock on the key's slot in the crate's lock table ([`mysql_lock_slots`](crate::mysql_lock_slots),
/// see `docs/backends.md` in the repository), also released only at the end of `txn`; which
/// table the database uses is asked of the catalog on every call (one more statement).
///
/// The lock is **transaction-scoped**: it is released only when `txn` commits or rolls back,
/// and cannot be released earlier. Every other transaction that asks for the same key (through
/// this function, [`IdempotentCreate`](crate::IdempotentCreate), or plain SQL on the same
/// numbers) waits until then; nothing else is blocked: advisory locks do not lock rows or
/// tables.
///
/// It takes a [`DatabaseTransaction`] by type, so calling it outside a transaction (where the
/// lock would end with the statement) does not compile.
///
/// ```no_run
/// use sea_orm::{DatabaseConnection, TransactionTrait};
/// use sea_orm_idempotent::{LockKey, Wait, acquire_advisory_lock};
///
/// # async fn f(db: &DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
/// let txn = db.begin().await?;
/// // Only one worker at a time updates this account's balance.
/// acquire_advisory_lock(&txn, LockKey::crc32("balance:42"), Wait::Forever).await?;
/// // ... read, compute, write ...
/// txn.commit().await?; // releases the lock
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::LockTimeout`] or [`Error::LockBusy`] when the wait runs out (or a cancel request
/// ends it), [`Error::Deadlock`] when PostgreSQL breaks a deadlock by cancelling this wait,
/// [`Error::UnsafeIsolation`] (before waiting) when `txn` is REPEATABLE READ or SERIALIZABLE,
/// whose snapshot would hide what the previous holder wrote, [`Error::UnsupportedBackend`]
/// on SQLite (no advisory locks) or a backend whose feature is off,
/// [`Error::MissingLockTable`] on MySQL/MariaDB without the lock table,
/// [`Error::UnsupportedServer`] (before waiting) when the server
/// speaks PostgreSQL's protocol but its advisory locks are known not to lock or cannot be
/// waited for safely (CockroachDB, old YugabyteDB; see [`ServerRefusal`](crate::ServerRefusal)),
/// or it is older than PostgreSQL 9.6 (the try that asked may have taken the key where locks
/// are real: roll `txn` back), and [`Error::Database`] for anything else. On PostgreSQL a
/// failed wait never aborts `txn`: the server rolls back only the wait, so `txn` is usable
/// and still holds every lock it took before; after a deadlock roll it back to let the other
/// side go on. On MySQL/MariaDB a deadlock has already rolled `txn` back, and so has a
/// timeout on a server with `innodb_rollback_on_timeout`.
///
/// # Cancel Safety
///
/// Dropping the future leaves no lock behind once `txn` is dropped (which rolls it back). A
/// wait still running on the server ends within one slice of [`Wait::Forever`] (2 s with the
/// default `deadlock_timeout`) or the caller's [`Wait::Timeout`]: unanswered if the key is
/// still held, and if it was granted meanwhile, released by the rollback queued behind it.
/// Until then that one connection stays busy; then it returns to its pool.
pub async fn acquire_advisory_lock(
    txn: &DatabaseTransaction,
    key: LockKey,
    wait: Wait,
) -> Result<(), Error> {
    acquire(txn, key, Mode::Exclusive, Deadline::starting_now(wait)).await
}

/// Takes a shared transaction-scoped advisory lock on `key`
/// (`pg_advisory_xact_lock_shared`): shared holders do not exclude each other, only an
/// exclusive holder of the same key (see [`acquire_advisory_lock`]). Released only at the end
/// of `txn`.
///
/// # Errors
///
/// As [`acquire_advisory_lock`].
///
/// # Cancel Safety
///
/// As [`acquire_advisory_lock`].
pub async fn acquire_shared_advisory_lock(
    txn: &DatabaseTransaction,
    key: LockKey,
    wait: Wait,
) -> Result<(), Error> {
    acquire(txn, key, Mode::Shared, Deadline::starting_now(wait)).await
}

/// Takes the lock on `txn`'s backend, waiting as `deadline` says.
pub(crate) async fn acquire(
    txn: &DatabaseTransaction,
    key: LockKey,
    mode: Mode,
    deadline: Deadline,
) -> Result<(), Error> {
    let backend = txn.get_database_backend();
    match Backend::of(backend) {
        Ok(served) => served.advisory_lock(txn, key, mode, deadline).await,
        // SQLite has none whether its feature is on or not: say so, and point to what it has.
        Err(_) => Err(Error::UnsupportedBackend {
            backend,
            what: match backend {
                DbBackend::Sqlite => crate::backend::sqlite::NO_ADVISORY_LOCKS,
                _ => NO_ADVISORY_LOCKS,
            },
        }),
    }
}
