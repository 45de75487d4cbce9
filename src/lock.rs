//! PostgreSQL transaction-scoped advisory locks: the one place their SQL is written.
//!
//! Every lock taken here is released by PostgreSQL at the end of the transaction that took it
//! (COMMIT or ROLLBACK, including the rollback of a dropped transaction or a lost connection),
//! and no earlier: there is no unlock call. That is what makes the lock safe to forget and what
//! makes it work through PgBouncer in transaction-pooling mode, where a session-scoped lock
//! would stay behind on a server connection another client gets next.

use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait, Value,
};

use crate::engine::{self, DETECTION_COLUMNS, Server};
use crate::{Error, LockKey};

/// How long to wait for a lock another transaction holds.
///
/// On SQLite (which has no advisory locks, see [`IdempotentCreate`](crate::IdempotentCreate))
/// only `Wait::Forever` is accepted: it waits as long as the connection's `busy_timeout`
/// (sqlx's default: 5 s; `ConnectOptions::map_sqlx_sqlite_opts(|o| o.busy_timeout(d))`), then
/// fails with [`Error::LockTimeout`] with `timeout: None`. `Timeout` and `No` are refused there
/// before anything is written, because SQLite cannot bound one call's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Wait until the holder commits or rolls back. On the server the wait runs in bounded
    /// slices (twice `deadlock_timeout`, at least a second), so a caller that goes away stops
    /// waiting within a slice; to the caller it is one wait with no end. What that costs:
    /// a server- or role-wide `lock_timeout` does not end it (it is restored afterwards);
    /// each new slice queues again behind the waiters that arrived meanwhile, so waiters are
    /// not served strictly first come, first served, and an exclusive waiter can be overtaken
    /// by a stream of overlapping shared holders; and each expired slice logs a "canceling
    /// statement due to lock timeout" line on the server.
    #[default]
    Forever,
    /// Wait at most this long, bounded by the server (`SET LOCAL lock_timeout` for the wait
    /// only, in a savepoint; the previous `lock_timeout` is restored), not by client polling;
    /// then fail with [`Error::LockTimeout`], leaving the transaction usable. Durations are
    /// rounded up to whole milliseconds; a zero duration is [`Wait::No`].
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
/// [`Error::UnsupportedServer`] (before waiting) when the server speaks PostgreSQL's protocol
/// but its advisory locks are known not to lock or cannot be waited for safely (CockroachDB,
/// old YugabyteDB; see [`ServerRefusal`](crate::ServerRefusal)), or it is older than
/// PostgreSQL 9.6 (the try that asked may have taken the key where locks are real: roll `txn`
/// back); [`Error::Database`] for anything else. After a timeout, a busy lock or a deadlock the
/// wait was rolled back to its savepoint: `txn` is usable and still holds every lock it took
/// before, so after a deadlock roll it back to let the other side go on. After a database
/// error PostgreSQL may have aborted `txn`.
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

/// Takes the lock and returns how long it took.
///
/// 1. One statement checks the isolation level (refusing, before any wait, a level whose
///    snapshot predates the lock), tries the lock without waiting, and reads `lock_timeout` so
///    it can be restored, and which server answers (refusing one whose locks are fake, see
///    `src/engine.rs`). Uncontended, that is the only round trip.
/// 2. Contended, each wait runs in a savepoint with `lock_timeout` set for it: a timeout rolls
///    back to the savepoint (the caller's transaction stays usable) and the previous
///    `lock_timeout` is restored once the lock is granted. [`Wait::Forever`] waits in slices
///    of twice the server's `deadlock_timeout` (at least a second): every server-side wait is
///    bounded, so a caller that goes away mid-wait leaves its connection busy for at most one
///    slice, and deadlock detection (which needs a wait longer than `deadlock_timeout`) still
///    runs.
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
    let started = Instant::now();
    let attempt = txn
        .query_one_raw(try_statement(key, mode))
        .await
        .map_err(engine::from_try_error)?
        .ok_or_else(|| no_row("try"))?;
    // Before the answer is believed: is this a server whose locks are real? (src/engine.rs)
    Server::from_row(&attempt)?.check(normalize(wait))?;
    match attempt.try_get::<Option<bool>>("", "acquired")? {
        Some(true) => return Ok(started.elapsed()),
        Some(false) => {}
        None => {
            return Err(Error::UnsafeIsolation {
                level: attempt.try_get("", "isolation")?,
            });
        }
    }
    let previous_lock_timeout: String = attempt.try_get("", "lock_timeout")?;
    match normalize(wait) {
        Wait::No => return Err(Error::LockBusy { key }),
        Wait::Timeout(timeout) => {
            let bound = Bound::Fixed(timeout);
            wait_in_savepoint(txn, key, mode, bound, &previous_lock_timeout)
                .await
                .map_err(|err| Error::from_lock_wait(err, key, wait))?;
        }
        Wait::Forever => loop {
            let slice = Bound::DeadlockSlice;
            match wait_in_savepoint(txn, key, mode, slice, &previous_lock_timeout).await {
                Ok(()) => break,
                // Only this slice ran out: wait again.
                Err(err) => match Error::from_lock_wait(err, key, wait) {
                    Error::LockTimeout { .. } => continue,
                    other => return Err(other),
                },
            }
        },
    }
    Ok(started.elapsed())
}

/// One bounded wait inside a savepoint. Granted: the savepoint is released and the lock
/// belongs to `txn`. Not granted: rolled back to the savepoint, `txn` as it was.
async fn wait_in_savepoint(
    txn: &DatabaseTransaction,
    key: LockKey,
    mode: Mode,
    bound: Bound,
    previous_lock_timeout: &str,
) -> Result<(), DbErr> {
    let savepoint = txn.begin().await?;
    match savepoint
        .execute_raw(wait_statement(key, mode, bound, previous_lock_timeout))
        .await
    {
        Ok(_) => savepoint.commit().await,
        Err(err) => {
            savepoint.rollback().await?;
            Err(err)
        }
    }
}

fn no_row(statement: &str) -> Error {
    Error::Database(DbErr::RecordNotFound(format!(
        "the advisory-lock {statement} statement returned no row"
    )))
}

/// `Timeout(0)` would mean "no timeout" to PostgreSQL; it means "do not wait" to a caller.
fn normalize(wait: Wait) -> Wait {
    match wait {
        Wait::Timeout(timeout) if timeout.is_zero() => Wait::No,
        other => other,
    }
}

/// How long one server-side wait may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// The caller's [`Wait::Timeout`].
    Fixed(Duration),
    /// One slice of [`Wait::Forever`]: twice the server's `deadlock_timeout`, at least 1 s.
    DeadlockSlice,
}

/// The PostgreSQL function for a mode, waiting or not. Fixed text, never user input.
fn function(mode: Mode, waiting: bool) -> &'static str {
    match (mode, waiting) {
        (Mode::Exclusive, false) => "pg_try_advisory_xact_lock",
        (Mode::Exclusive, true) => "pg_advisory_xact_lock",
        (Mode::Shared, false) => "pg_try_advisory_xact_lock_shared",
        (Mode::Shared, true) => "pg_advisory_xact_lock_shared",
    }
}

/// The key as bound parameters, and their placeholders (`$1, $2` or `$1`).
fn key_parameters(key: LockKey) -> (Vec<Value>, String) {
    let values: Vec<Value> = match key {
        LockKey::Pair(namespace, key) => vec![namespace.into(), key.into()],
        LockKey::BigInt(key) => vec![key.into()],
    };
    let placeholders = (1..=values.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (values, placeholders)
}

/// Step 1: isolation check, then a try-lock (`CASE` evaluates its branches in order, so the
/// lock is not touched under an unsafe level), and the `lock_timeout` to restore later.
fn try_statement(key: LockKey, mode: Mode) -> Statement {
    let (values, placeholders) = key_parameters(key);
    let try_lock = function(mode, false);
    let sql = format!(
        "SELECT CASE \
         WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL \
         ELSE {try_lock}({placeholders}) END AS acquired, \
         current_setting('transaction_isolation') AS isolation, \
         current_setting('lock_timeout') AS lock_timeout, {DETECTION_COLUMNS}"
    );
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Step 2: set `lock_timeout` for this wait, wait, and once granted restore the previous
/// value. Order is guaranteed by SQL itself: `CASE` evaluates `WHEN` before `ELSE`, and a
/// `SELECT` evaluates its `FROM` (the lock) before its target list (the restore).
fn wait_statement(
    key: LockKey,
    mode: Mode,
    bound: Bound,
    previous_lock_timeout: &str,
) -> Statement {
    let (mut values, placeholders) = key_parameters(key);
    let lock = function(mode, true);
    let bound_sql = match bound {
        Bound::Fixed(timeout) => {
            values.push(timeout_setting(timeout).into());
            format!("${}", values.len())
        }
        Bound::DeadlockSlice => "greatest(1000, ceil(extract(epoch FROM \
             current_setting('deadlock_timeout')::interval) * 2000))::bigint || 'ms'"
            .to_owned(),
    };
    values.push(previous_lock_timeout.into());
    let previous = format!("${}", values.len());
    let sql = format!(
        "SELECT CASE \
         WHEN set_config('lock_timeout', {bound_sql}, true) IS NULL THEN NULL \
         ELSE (SELECT set_config('lock_timeout', {previous}, true) FROM {lock}({placeholders})) \
         END AS restored"
    );
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `lock_timeout` in whole milliseconds, rounded up so a sub-millisecond bound still bounds,
/// and at most PostgreSQL's largest (`i32::MAX` ms, about 24.8 days), which it would otherwise
/// refuse as an invalid setting.
fn timeout_setting(timeout: Duration) -> String {
    let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_timeouts_are_bound_not_formatted() {
        let statement = wait_statement(
            LockKey::Pair(7, -9),
            Mode::Exclusive,
            Bound::Fixed(Duration::from_millis(250)),
            "0",
        );
        assert!(!statement.sql.contains('7') && !statement.sql.contains("250"));
        assert!(statement.sql.contains("FROM pg_advisory_xact_lock($1, $2)"));
        assert!(
            statement
                .sql
                .contains("set_config('lock_timeout', $3, true)")
        );
        assert!(
            statement
                .sql
                .contains("set_config('lock_timeout', $4, true)")
        );
        let values = statement.values.expect("bound values").0;
        assert_eq!(
            values,
            vec![
                Value::from(7),
                Value::from(-9),
                Value::from("250ms"),
                Value::from("0")
            ]
        );
    }

    #[test]
    fn the_first_attempt_never_waits() {
        let sql = try_statement(LockKey::BigInt(1), Mode::Shared).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock_shared($1)"));
        let sql = try_statement(LockKey::Pair(1, 2), Mode::Exclusive).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock($1, $2)"));
        assert!(!sql.contains("set_config"));
    }

    #[test]
    fn forever_waits_in_deadlock_detectable_slices() {
        let statement =
            wait_statement(LockKey::BigInt(1), Mode::Shared, Bound::DeadlockSlice, "5s");
        assert!(
            statement
                .sql
                .contains("current_setting('deadlock_timeout')")
        );
        assert!(
            statement
                .sql
                .contains("FROM pg_advisory_xact_lock_shared($1)")
        );
        assert_eq!(statement.values.expect("bound").0.len(), 2);
    }

    #[test]
    fn zero_timeout_means_do_not_wait() {
        assert_eq!(normalize(Wait::Timeout(Duration::ZERO)), Wait::No);
        assert_eq!(timeout_setting(Duration::from_micros(1)), "1ms");
        assert_eq!(timeout_setting(Duration::from_millis(1500)), "1500ms");
        assert_eq!(timeout_setting(Duration::MAX), "2147483647ms");
    }
}
