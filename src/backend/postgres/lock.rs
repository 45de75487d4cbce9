//! PostgreSQL transaction-scoped advisory locks: the one place their SQL is written (the
//! public API over them, for every backend, is [`advisory_lock`](crate::advisory_lock)).
//!
//! Every lock taken here is released by PostgreSQL at the end of the transaction that took it
//! (COMMIT or ROLLBACK, including the rollback of a dropped transaction or a lost connection),
//! and no earlier: there is no unlock call. That is what makes the lock safe to forget and what
//! makes it work through PgBouncer in transaction-pooling mode, where a session-scoped lock
//! would stay behind on a server connection another client gets next.
//!
//! (Over 450 lines: every statement that takes, tries or waits for an advisory lock, and the
//! reading of its answer, kept in one file so that no lock SQL is written anywhere else.)

use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, QueryResult, Statement, Value,
};

use super::engine::{self, DETECTION_COLUMNS, Server};
use super::{SESSION_COLUMNS, codes, session_of_row};
use crate::advisory_lock::Mode;
use crate::source::SessionId;
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// Takes the lock in `txn`, waiting as `deadline` says.
///
/// 1. One statement checks the isolation level (refusing, before any wait, a level whose
///    snapshot predates the lock), tries the lock without waiting, and reads which server
///    answers (refusing one whose locks are fake, see `src/engine.rs`). Uncontended, that is
///    the only round trip.
/// 2. Contended, one statement prepares the wait: it saves `lock_timeout` and
///    `statement_timeout`, and stores the key and the bound in settings of this transaction.
/// 3. Each wait is one message: a statement that turns `statement_timeout` off (a timeout
///    meant for the application's queries must not cut a lock wait short), then one `DO`
///    block ([`WAIT_BLOCK`]) that sets `lock_timeout` to the bound, waits, catches a timeout,
///    deadlock or cancel in its own exception block (a subtransaction PostgreSQL rolls back
///    by itself), records which one it was, and restores both settings. It never fails: a
///    wait abandoned by a dropped caller can never leave the transaction aborted, which
///    matters inside a caller's transaction; and the server runs the whole message once it
///    has it, so a dropped caller never leaves either setting changed. (Before PostgreSQL 13
///    a message's statements share one `statement_timeout`: there step 2 turns it off, as
///    step 4 does before another slice, see [`Timeouts`].)
/// 4. A statement reads what the wait recorded.
///
/// [`Wait::Forever`] waits in slices of twice the server's `deadlock_timeout` (at least one
/// second, at most PostgreSQL's largest `lock_timeout`): every server-side wait is bounded, so
/// a caller that goes away mid-wait leaves its connection busy for at most one slice, and
/// deadlock detection (which needs a wait longer than `deadlock_timeout`) still runs.
///
/// It also names the session the lock is taken in (from the statement that tries it: no extra
/// round trip) and, when the try finds the key held, asks `on_busy` about that session before
/// waiting: its error is returned instead of a wait.
pub(crate) async fn acquire_in(
    txn: &DatabaseTransaction,
    key: LockKey,
    mode: Mode,
    deadline: Deadline,
    on_busy: impl FnOnce(SessionId) -> Result<(), Error>,
) -> Result<SessionId, Error> {
    let attempt = txn
        .query_one_raw(try_statement(key, mode))
        .await
        .map_err(engine::from_try_error)?
        .ok_or_else(|| no_row("try"))?;
    let busy = read_attempt(&attempt, deadline)?;
    let session = session_of_row(&attempt)?;
    if let Attempt::Acquired = busy {
        return Ok(session);
    }
    on_busy(session)?;
    wait(txn, key, mode, deadline, Timeouts::of(&attempt)).await?;
    Ok(session)
}

/// After a try that found the key held: steps 2 to 4 of [`acquire_in`].
async fn wait(
    txn: &DatabaseTransaction,
    key: LockKey,
    mode: Mode,
    deadline: Deadline,
    timeouts: Timeouts,
) -> Result<(), Error> {
    let bound = bound_of_wait(key, deadline)?;
    txn.execute_raw(prepare_statement(key, bound, timeouts))
        .await?;
    let wait = wait_message(key, mode, timeouts);
    loop {
        txn.execute_unprepared(&wait).await?;
        let another_slice = bound.is_none();
        let missed: String = txn
            .query_one_raw(outcome_statement(
                another_slice && timeouts == Timeouts::PerMessage,
            ))
            .await?
            .ok_or_else(|| no_row("outcome"))?
            .try_get("", "missed")?;
        match missed.as_str() {
            "" => return Ok(()),
            // Only this slice of `Wait::Forever` ran out: wait again.
            codes::LOCK_NOT_AVAILABLE if another_slice => continue,
            codes::LOCK_NOT_AVAILABLE | codes::QUERY_CANCELED => {
                return Err(Error::LockTimeout {
                    key,
                    row: None,
                    timeout: deadline.reported_bound(),
                    source: None,
                });
            }
            codes::DEADLOCK_DETECTED => return Err(Error::Deadlock { key, row: None }),
            other => {
                // Unreachable: the wait block records only the three codes above.
                return Err(Error::Database(DbErr::RecordNotFound(format!(
                    "the advisory-lock wait recorded SQLSTATE {other}, which it never records"
                ))));
            }
        }
    }
}

/// What the statement that tries the lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The lock is ours until the transaction ends.
    Acquired,
    /// Another transaction holds the key.
    Busy,
}

/// Reads the answer of the statement that tries the lock ([`try_statement`], or
/// [`try_sql_with_literal_key`]): first whether the server's locks are real (src/engine.rs),
/// before the answer is believed, then the isolation check, then the try.
///
/// # Errors
///
/// [`Error::UnsupportedServer`] for a server refused for this wait, [`Error::UnsafeIsolation`]
/// under REPEATABLE READ or SERIALIZABLE (the try was not made), [`Error::Database`] when a
/// column cannot be read.
pub(crate) fn read_attempt(attempt: &QueryResult, deadline: Deadline) -> Result<Attempt, Error> {
    Server::from_row(attempt)?.check(normalize(deadline.asked()))?;
    match attempt.try_get::<Option<bool>>("", "acquired")? {
        Some(true) => Ok(Attempt::Acquired),
        Some(false) => Ok(Attempt::Busy),
        None => Err(Error::UnsafeIsolation {
            level: attempt.try_get("", "isolation")?,
        }),
    }
}

/// After a busy try: how long the wait may last (`None`: forever, in slices), or
/// [`Error::LockBusy`] when the caller's wait is over ([`Wait::No`], or a bound already spent).
pub(crate) fn bound_of_wait(key: LockKey, deadline: Deadline) -> Result<Option<Duration>, Error> {
    match normalize(deadline.left()) {
        Wait::No => Err(Error::LockBusy { key, row: None }),
        Wait::Timeout(timeout) => Ok(Some(timeout)),
        Wait::Forever => Ok(None),
    }
}

pub(crate) fn no_row(statement: &str) -> Error {
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
/// lock is not touched under an unsafe level). Its answer is read by [`read_attempt`].
fn try_statement(key: LockKey, mode: Mode) -> Statement {
    let (values, placeholders) = key_parameters(key);
    Statement::from_sql_and_values(DbBackend::Postgres, try_sql(mode, &placeholders), values)
}

/// [`try_statement`]'s text with the key written as integer literals, for a simple-protocol
/// message, which binds nothing (src/fast_path.rs sends it after `BEGIN` in one message).
///
/// The only values ever formatted into SQL by this crate: a [`LockKey`] is one or two
/// integers (`i32`, `i64`), computed by the crate from crc32 for entity keys, and an integer's
/// decimal text can hold nothing but digits and a minus sign. Nothing the user supplies (key,
/// data) reaches this text.
#[cfg(feature = "postgres")]
pub(crate) fn try_sql_with_literal_key(key: LockKey) -> String {
    let literals = match key {
        LockKey::Pair(namespace, key) => format!("{namespace}, {key}"),
        LockKey::BigInt(key) => key.to_string(),
    };
    try_sql(Mode::Exclusive, &literals)
}

/// The text of step 1 with `arguments` (placeholders, or the key's integers) for the try.
fn try_sql(mode: Mode, arguments: &str) -> String {
    let try_lock = function(mode, false);
    format!(
        "SELECT CASE \
         WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL \
         ELSE {try_lock}({arguments}) END AS acquired, \
         current_setting('transaction_isolation') AS isolation, {DETECTION_COLUMNS}, \
         {SESSION_COLUMNS}"
    )
}

/// How the server applies `statement_timeout` to a message of several statements, which
/// decides where the wait turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeouts {
    /// PostgreSQL 13 and later: to each statement of the message on its own, with the value
    /// in force when that statement starts. The wait's message turns `statement_timeout` off
    /// in its first statement and the `DO` block that follows restores it: the setting is off
    /// only while the server runs that one message, which it runs to the end even if its
    /// caller goes away, so a dropped call never leaves it off.
    PerStatement,
    /// Older servers: to the whole message, from its start. `statement_timeout` is turned off
    /// by a statement of its own before the wait ([`prepare_statement`], and
    /// [`outcome_statement`] before another slice); a call dropped between that statement and
    /// the wait leaves it off for the rest of the transaction.
    PerMessage,
}

impl Timeouts {
    /// From the server's version, in the row of the statement that tried the lock.
    fn of(attempt: &QueryResult) -> Timeouts {
        let version = attempt
            .try_get::<String>("", "server_version_num")
            .ok()
            .and_then(|version| version.trim().parse::<i32>().ok());
        match version {
            Some(version) if version >= 130_000 => Timeouts::PerStatement,
            _ => Timeouts::PerMessage,
        }
    }
}

/// Step 2: save both timeouts, and store the key and the bound (a [`Wait::Timeout`] in whole
/// milliseconds, or one slice of [`Wait::Forever`]) where [`WAIT_BLOCK`] reads them; on an
/// older server ([`Timeouts::PerMessage`]) also turn `statement_timeout` off for the wait.
/// Every value is bound; the settings are local to the transaction (`set_config(..., true)`),
/// so they end with it.
fn prepare_statement(key: LockKey, bound: Option<Duration>, timeouts: Timeouts) -> Statement {
    let key_text = match key {
        LockKey::Pair(namespace, key) => format!("{namespace},{key}"),
        LockKey::BigInt(key) => key.to_string(),
    };
    let bound: Option<String> = bound.map(timeout_setting);
    let sql = "SELECT \
         set_config('sea_orm_idempotent.key', $1, true), \
         set_config('sea_orm_idempotent.bound', coalesce($2, \
             greatest(1000, least(2147483647, ceil(extract(epoch FROM \
             current_setting('deadlock_timeout')::interval) * 2000)))::bigint || 'ms'), true), \
         set_config('sea_orm_idempotent.lock_timeout', current_setting('lock_timeout'), true), \
         set_config('sea_orm_idempotent.statement_timeout', current_setting('statement_timeout'), true)";
    let sql = match timeouts {
        Timeouts::PerStatement => sql.to_owned(),
        Timeouts::PerMessage => format!("{sql}, set_config('statement_timeout', '0', true)"),
    };
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [Value::from(key_text), Value::from(bound)],
    )
}

/// Step 3, one wait: a `DO` block of fixed text (the key and the bound come from the settings
/// [`prepare_statement`] made). Its inner block runs in a subtransaction: when the wait fails
/// PostgreSQL rolls that back by itself and the handler records the SQLSTATE; when it succeeds
/// the lock passes to the transaction. Both timeouts are restored before it ends, whatever
/// happened, so even a wait whose caller went away leaves them as they were.
const WAIT_BLOCK: &str = "DO $wait$ BEGIN \
     PERFORM set_config('sea_orm_idempotent.missed', '', true); \
     PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.bound'), true); \
     BEGIN \
         PERFORM {function}({arguments}); \
     EXCEPTION WHEN lock_not_available OR deadlock_detected OR query_canceled THEN \
         PERFORM set_config('sea_orm_idempotent.missed', SQLSTATE, true); \
     END; \
     PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.lock_timeout'), true); \
     PERFORM set_config('statement_timeout', current_setting('sea_orm_idempotent.statement_timeout'), true); \
     END $wait$";

/// [`WAIT_BLOCK`] for a mode and a key space. Fixed text only.
fn wait_block(key: LockKey, mode: Mode) -> String {
    let arguments = match key {
        LockKey::Pair(..) => {
            "split_part(current_setting('sea_orm_idempotent.key'), ',', 1)::int4, \
             split_part(current_setting('sea_orm_idempotent.key'), ',', 2)::int4"
        }
        LockKey::BigInt(_) => "current_setting('sea_orm_idempotent.key')::int8",
    };
    WAIT_BLOCK
        .replace("{function}", function(mode, true))
        .replace("{arguments}", arguments)
}

/// Step 3's message: on a server that times each statement of a message on its own
/// ([`Timeouts::PerStatement`]), `statement_timeout` turned off by the message's first
/// statement, for the `DO` block, which restores it; fixed text only.
fn wait_message(key: LockKey, mode: Mode, timeouts: Timeouts) -> String {
    match timeouts {
        Timeouts::PerStatement => format!(
            "SELECT set_config('statement_timeout', '0', true); {}",
            wait_block(key, mode)
        ),
        Timeouts::PerMessage => wait_block(key, mode),
    }
}

/// Step 4: what the wait recorded (`''`: granted), and, on a server older than PostgreSQL 13
/// ([`Timeouts::PerMessage`]), `statement_timeout` off again when another slice follows.
fn outcome_statement(another_slice: bool) -> Statement {
    let sql = "SELECT current_setting('sea_orm_idempotent.missed') AS missed, \
         set_config('statement_timeout', CASE \
             WHEN $1 AND current_setting('sea_orm_idempotent.missed') = '55P03' THEN '0' \
             ELSE current_setting('sea_orm_idempotent.statement_timeout') END, true)";
    Statement::from_sql_and_values(DbBackend::Postgres, sql, [Value::from(another_slice)])
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
    fn keys_and_bounds_are_bound_not_formatted() {
        let statement = prepare_statement(
            LockKey::Pair(31337, -90210),
            Some(Duration::from_millis(4321)),
            Timeouts::PerStatement,
        );
        for number in ["31337", "90210", "4321"] {
            assert!(!statement.sql.contains(number), "{}", statement.sql);
        }
        let values = statement.values.expect("bound values").0;
        assert_eq!(
            values,
            vec![
                Value::from("31337,-90210"),
                Value::from(Some("4321ms".to_owned()))
            ]
        );
        let forever = prepare_statement(LockKey::BigInt(-3), None, Timeouts::PerMessage);
        assert!(forever.sql.contains("current_setting('deadlock_timeout')"));
        assert_eq!(
            forever.values.expect("bound values").0,
            vec![Value::from("-3"), Value::from(None::<String>)]
        );
    }

    #[test]
    fn the_wait_block_is_fixed_text() {
        for key in [LockKey::Pair(123, -456), LockKey::BigInt(987_654)] {
            for mode in [Mode::Exclusive, Mode::Shared] {
                let block = wait_block(key, mode);
                assert!(!block.contains('{'), "{block}");
                assert!(!block.contains("123") && !block.contains("987654"));
                assert!(block.contains(&format!("PERFORM {}(", function(mode, true))));
            }
        }
        assert!(wait_block(LockKey::BigInt(1), Mode::Shared).contains("::int8)"));
    }

    #[test]
    fn the_first_attempt_never_waits() {
        let sql = try_statement(LockKey::BigInt(1), Mode::Shared).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock_shared($1)"));
        let sql = try_statement(LockKey::Pair(1, 2), Mode::Exclusive).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock($1, $2)"));
        assert!(!sql.contains("set_config"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn the_literal_try_is_the_bound_try_with_the_key_written_out() {
        for (key, written) in [
            (LockKey::Pair(-7, 2_147_483_647), "-7, 2147483647"),
            (LockKey::BigInt(-9_000_000_000), "-9000000000"),
        ] {
            let bound = try_statement(key, Mode::Exclusive);
            let placeholders = key_parameters(key).1;
            assert_eq!(
                try_sql_with_literal_key(key),
                bound.sql.replace(&placeholders, written)
            );
        }
    }

    #[test]
    fn zero_timeout_means_do_not_wait() {
        assert_eq!(normalize(Wait::Timeout(Duration::ZERO)), Wait::No);
        assert_eq!(timeout_setting(Duration::from_micros(1)), "1ms");
        assert_eq!(timeout_setting(Duration::from_millis(1500)), "1500ms");
        assert_eq!(timeout_setting(Duration::MAX), "2147483647ms");
    }
}
