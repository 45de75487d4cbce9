//! PostgreSQL transaction-scoped advisory locks: the one place their SQL is written.
//!
//! Every lock taken here is released by PostgreSQL at the end of the transaction that took it
//! (COMMIT or ROLLBACK, including the rollback of a dropped transaction or a lost connection),
//! and no earlier: there is no unlock call. That is what makes the lock safe to forget and what
//! makes it work through PgBouncer in transaction-pooling mode, where a session-scoped lock
//! would stay behind on a server connection another client gets next.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use crate::{Error, LockKey};

/// How long to wait for a lock another transaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Wait until the holder commits or rolls back (PostgreSQL's default behaviour).
    #[default]
    Forever,
    /// Wait at most this long, bounded by the server (`SET LOCAL lock_timeout`), not by client
    /// polling; then fail with [`Error::LockTimeout`]. The bound stays in force for the rest of
    /// the transaction, as `SET LOCAL` does, so later lock waits in the same transaction are
    /// bounded by it too. Durations are rounded up to whole milliseconds; a zero duration is
    /// [`Wait::No`].
    Timeout(Duration),
    /// Try once; fail with [`Error::LockBusy`] if another transaction holds the key.
    No,
}

/// Exclusive or shared, as PostgreSQL's advisory locks come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
}

/// Takes an exclusive transaction-scoped advisory lock on `key`
/// (`pg_advisory_xact_lock`), waiting as `wait` says.
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
/// [`Error::LockTimeout`] or [`Error::LockBusy`] when the wait runs out, [`Error::Deadlock`]
/// when PostgreSQL breaks a deadlock by aborting this transaction, [`Error::UnsafeIsolation`]
/// (before waiting) when `txn` is REPEATABLE READ or SERIALIZABLE, whose snapshot would hide
/// what the previous holder wrote, [`Error::UnsupportedBackend`] when `txn` is not PostgreSQL,
/// and [`Error::Database`] for anything else. After an error PostgreSQL has aborted the
/// transaction (or, with [`Wait::No`] and an unsafe level, left it as it was); roll it back.
///
/// # Cancel Safety
///
/// Dropping the future does not leave the lock taken on the caller's behalf once `txn` is
/// rolled back (dropping `txn` rolls it back). While the statement waits on the server, the
/// connection stays busy until the wait ends: bound it with [`Wait::Timeout`] where callers
/// may go away.
pub async fn acquire_advisory_lock(
    txn: &DatabaseTransaction,
    key: LockKey,
    wait: Wait,
) -> Result<(), Error> {
    acquire(txn, key, Mode::Exclusive, wait).await.map(|_| ())
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
    acquire(txn, key, Mode::Shared, wait).await.map(|_| ())
}

/// Takes the lock in one statement and returns how long the server made us wait.
///
/// The statement first checks the isolation level (and refuses before waiting under a
/// snapshot-per-transaction level), then sets `lock_timeout` if asked, then takes the lock.
/// `CASE` guarantees that order: PostgreSQL evaluates its branches only when reached.
pub(crate) async fn acquire(
    txn: &DatabaseTransaction,
    key: LockKey,
    mode: Mode,
    wait: Wait,
) -> Result<Duration, Error> {
    let backend = txn.get_database_backend();
    if backend != DbBackend::Postgres {
        return Err(Error::UnsupportedBackend { backend });
    }
    let wait = normalize(wait);
    let statement = lock_statement(key, mode, wait);
    let started = Instant::now();
    let row = txn
        .query_one_raw(statement)
        .await
        .map_err(|err| Error::from_lock_wait(err, key, wait))?;
    let waited = started.elapsed();
    let row = row.ok_or_else(|| {
        Error::Database(sea_orm::DbErr::RecordNotFound(
            "the advisory-lock statement returned no row".into(),
        ))
    })?;
    let acquired: Option<bool> = row.try_get("", "acquired")?;
    match acquired {
        Some(true) => Ok(waited),
        Some(false) => Err(Error::LockBusy { key }),
        None => Err(Error::UnsafeIsolation {
            level: row.try_get("", "isolation")?,
        }),
    }
}

/// `Timeout(0)` would mean "no timeout" to PostgreSQL; it means "do not wait" to a caller.
fn normalize(wait: Wait) -> Wait {
    match wait {
        Wait::Timeout(timeout) if timeout.is_zero() => Wait::No,
        other => other,
    }
}

/// Builds the lock statement. Only fixed text is formatted into the SQL (function names and
/// placeholder numbers); the key and the timeout are bound parameters.
fn lock_statement(key: LockKey, mode: Mode, wait: Wait) -> Statement {
    let function = match (mode, wait) {
        (Mode::Exclusive, Wait::No) => "pg_try_advisory_xact_lock",
        (Mode::Exclusive, _) => "pg_advisory_xact_lock",
        (Mode::Shared, Wait::No) => "pg_try_advisory_xact_lock_shared",
        (Mode::Shared, _) => "pg_advisory_xact_lock_shared",
    };
    let mut values: Vec<Value> = match key {
        LockKey::Pair(namespace, key) => vec![namespace.into(), key.into()],
        LockKey::BigInt(key) => vec![key.into()],
    };
    let arguments = (1..=values.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let take = match wait {
        // pg_try_* returns whether it got the lock.
        Wait::No => format!("{function}({arguments})"),
        // The waiting functions return void; selecting from them yields one row once granted.
        Wait::Forever | Wait::Timeout(_) => format!("(SELECT true FROM {function}({arguments}))"),
    };
    let set_timeout = match wait {
        Wait::Timeout(timeout) => {
            values.push(timeout_setting(timeout).into());
            format!(
                "WHEN set_config('lock_timeout', ${}, true) IS NULL THEN NULL ",
                values.len()
            )
        }
        Wait::Forever | Wait::No => String::new(),
    };
    let sql = format!(
        "SELECT CASE \
         WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL \
         {set_timeout}\
         ELSE {take} END AS acquired, \
         current_setting('transaction_isolation') AS isolation"
    );
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `lock_timeout` in whole milliseconds, rounded up so a sub-millisecond bound still bounds.
fn timeout_setting(timeout: Duration) -> String {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_timeouts_are_bound_not_formatted() {
        let statement = lock_statement(
            LockKey::Pair(7, -9),
            Mode::Exclusive,
            Wait::Timeout(Duration::from_millis(250)),
        );
        assert!(!statement.sql.contains('7') && !statement.sql.contains("250"));
        assert!(statement.sql.contains("pg_advisory_xact_lock($1, $2)"));
        assert!(
            statement
                .sql
                .contains("set_config('lock_timeout', $3, true)")
        );
        let values = statement.values.expect("bound values").0;
        assert_eq!(
            values,
            vec![Value::from(7), Value::from(-9), Value::from("250ms")]
        );
    }

    #[test]
    fn try_and_shared_pick_their_functions() {
        let sql = lock_statement(LockKey::BigInt(1), Mode::Shared, Wait::No).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock_shared($1)"));
        let sql = lock_statement(LockKey::BigInt(1), Mode::Exclusive, Wait::Forever).sql;
        assert!(sql.contains("(SELECT true FROM pg_advisory_xact_lock($1))"));
        assert!(!sql.contains("lock_timeout"));
    }

    #[test]
    fn zero_timeout_means_do_not_wait() {
        assert_eq!(normalize(Wait::Timeout(Duration::ZERO)), Wait::No);
        assert_eq!(timeout_setting(Duration::from_micros(1)), "1ms");
        assert_eq!(timeout_setting(Duration::from_millis(1500)), "1500ms");
    }
}
