//! The one seam where backends differ: how creators of the same key are serialised.
//!
//! - PostgreSQL: a READ COMMITTED transaction and a transaction-scoped advisory lock on the
//!   key. Only callers with the same key wait for each other.
//! - SQLite: no advisory locks; an IMMEDIATE transaction takes the database's write lock
//!   before the read, which serialises every creator across connections and processes.
//!   `busy_timeout` (on the connection) bounds the wait.
//! - Anything else: [`Error::UnsupportedBackend`], never a wrong answer.

use std::time::{Duration, Instant};

use sea_orm::{
    DatabaseTransaction, DbBackend, IsolationLevel, SqliteTransactionMode, TransactionOptions,
};

use crate::lock::{self, Mode};
use crate::{Error, LockKey, TransactionSource, Wait};

/// How creators are serialised on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serialization {
    /// PostgreSQL: `pg_advisory_xact_lock` on the key.
    AdvisoryLock,
    /// SQLite: the write lock of an IMMEDIATE transaction.
    WriteLock,
}

impl Serialization {
    pub(crate) fn of(backend: DbBackend) -> Result<Serialization, Error> {
        match backend {
            DbBackend::Postgres => Ok(Serialization::AdvisoryLock),
            DbBackend::Sqlite => Ok(Serialization::WriteLock),
            other => Err(Error::UnsupportedBackend { backend: other }),
        }
    }

    /// Begins the creator's transaction, or a savepoint in the caller's. Returns the
    /// transaction and how long beginning it waited for a lock (SQLite's write lock is taken
    /// here; PostgreSQL's lock is taken by [`Serialization::lock`]).
    pub(crate) async fn begin<C: TransactionSource>(
        self,
        db: &C,
        key: LockKey,
        wait: Wait,
    ) -> Result<(DatabaseTransaction, Duration), Error> {
        if db.is_callers_transaction() {
            // A savepoint: the isolation level and the SQLite mode are the caller's.
            return Ok((db.begin().await?, Duration::ZERO));
        }
        let options = match self {
            Serialization::AdvisoryLock => TransactionOptions {
                isolation_level: Some(IsolationLevel::ReadCommitted),
                access_mode: None,
                sqlite_transaction_mode: None,
            },
            Serialization::WriteLock => TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            },
        };
        let started = Instant::now();
        let txn = db
            .begin_with_options(options)
            .await
            .map_err(|err| Error::from_lock_wait(err, key, wait))?;
        Ok((txn, started.elapsed()))
    }

    /// Takes the per-key lock inside `txn` and returns how long it waited.
    ///
    /// On SQLite the write lock was already taken by [`Serialization::begin`] (or, inside a
    /// caller's transaction, is taken by the guarded insert itself, which reads and writes in
    /// one statement under SQLite's write lock).
    pub(crate) async fn lock(
        self,
        txn: &DatabaseTransaction,
        key: LockKey,
        wait: Wait,
    ) -> Result<Duration, Error> {
        match self {
            Serialization::AdvisoryLock => lock::acquire(txn, key, Mode::Exclusive, wait).await,
            Serialization::WriteLock => Ok(Duration::ZERO),
        }
    }
}
