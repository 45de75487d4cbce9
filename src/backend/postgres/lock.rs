//! PostgreSQL transaction-scoped advisory locks: the one place their SQL is written (the
//! public API over them, for every backend, is [`advisory_lock`](crate::advisory_lock)).
//!
//! Every lock taken here is released by PostgreSQL at the end of the transaction that took it
//! (COMMIT or ROLLBACK, including the rollback of a dropped transaction or a lost connection),
//! and no earlier: there is no unlock call. That is what makes the lock safe to forget and what
//! makes it work through PgBouncer in transaction-pooling mode, where a session-scoped lock
//! would stay behind on a server connection another client gets next.
//!
//! The statements' text is in [`lock_statements`](super::lock_statements), the only place
//! PostgreSQL's lock SQL is written.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, QueryResult};

use super::engine::{self, Server};
use super::lock_statements::{
    Timeouts, outcome_statement, prepare_statement, try_statement, wait_message,
};
use super::{codes, session_of_row};
use crate::backend::mode::Mode;
use crate::source::SessionId;
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// Takes the lock in `txn`, waiting as `deadline` says.
///
/// 1. One statement checks the isolation level (refusing, before any wait, a level whose
///    snapshot predates the lock), tries the lock without waiting, and reads which server
///    answers (refusing one whose locks are fake, see `src/backend/postgres/engine.rs`). Uncontended, that is
///    the only round trip.
/// 2. Contended, one statement prepares the wait: it saves `lock_timeout` and
///    `statement_timeout`, and stores the key and the bound in settings of this transaction.
/// 3. Each wait is one message: a statement that turns `statement_timeout` off (a timeout
///    meant for the application's queries must not cut a lock wait short), then one `DO`
///    block ([`WAIT_BLOCK`](super::lock_statements::WAIT_BLOCK)) that sets `lock_timeout` to the bound, waits, catches a timeout,
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
/// [`try_sql_with_literal_key`](super::lock_statements::try_sql_with_literal_key)): first whether the server's locks are real (src/backend/postgres/engine.rs),
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
pub(super) fn normalize(wait: Wait) -> Wait {
    match wait {
        Wait::Timeout(timeout) if timeout.is_zero() => Wait::No,
        other => other,
    }
}
