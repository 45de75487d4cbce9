//! PostgreSQL: the waits of the call's own statements on the *entity* table (the guarded
//! insert, the one statement's insert, the update form's `UPDATE`). The key's advisory lock
//! keeps every caller of the crate away, but not a writer that bypasses the lock: a row it
//! inserted (or changed) and has not committed makes the insert wait on the unique index, or
//! the update on the row, for as long as that writer's transaction lasts. A call that asked for
//! a bounded wait ([`Wait::No`], [`Wait::Timeout`]) bounds that wait too, with `lock_timeout`
//! (what is left of the call's wait; [`Wait::No`]: 1 ms, the least it takes), and reports it
//! as the lock's: [`Error::LockBusy`] or [`Error::LockTimeout`] ([`entity_wait_error`]). A
//! call that waits [`Wait::Forever`] waits for the writer, as it waits for the key.
//!
//! In the crate's own transaction and in a caller's (inside the call's savepoint) the bound is
//! set with `set_config(.., true)` before the statement and put back after it; a statement that
//! fails leaves it to the rollback (of the transaction, or to the savepoint, which undoes the
//! setting). The one statement, in autocommit, sets it in its lock's CTE
//! ([`one_statement`](super::one_statement)): its transaction ends with it.

use std::future::Future;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use crate::classify::{ErrorClass, classify};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// The `lock_timeout` that bounds a statement's waits for a call that waits `wait` (what is
/// left of it): whole milliseconds, at least 1 (0 would mean no bound); `None` for
/// [`Wait::Forever`].
pub(crate) fn bound(wait: Wait) -> Option<String> {
    let millis = match wait {
        Wait::Forever => return None,
        Wait::No => 1,
        Wait::Timeout(left) => left.as_millis().clamp(1, i32::MAX as u128),
    };
    Some(format!("{millis}ms"))
}

/// Runs `statement` on `db` with its lock waits bounded by `wait` (see the module docs): for
/// a bounded wait, one round trip before it (the bound, the previous value saved) and one
/// after it (the previous value back); none for [`Wait::Forever`].
pub(crate) async fn bounded<C, R, F>(db: &C, wait: Wait, statement: F) -> Result<R, DbErr>
where
    C: ConnectionTrait,
    F: Future<Output = Result<R, DbErr>>,
{
    let Some(bound) = bound(wait) else {
        return statement.await;
    };
    let saved: String = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT current_setting('lock_timeout') AS saved, \
             set_config('lock_timeout', $1, true) AS bound",
            [Value::from(bound)],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the lock_timeout setting".to_owned()))?
        .try_get("", "saved")?;
    let result = statement.await?;
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('lock_timeout', $1, true)",
        [Value::from(saved)],
    ))
    .await?;
    Ok(result)
}

/// A statement on the entity table that failed: a lock wait that `lock_timeout` ended
/// (55P03: the call's bound, or for [`Wait::Forever`] a `lock_timeout` the caller set on the
/// session) is the lock's error, [`Error::LockBusy`] for [`Wait::No`] and
/// [`Error::LockTimeout`] otherwise; any other error is kept.
pub(crate) fn entity_wait_error(err: Error, key: LockKey, deadline: Deadline) -> Error {
    let Error::Database(db_err) = err else {
        return err;
    };
    if classify(&db_err) != ErrorClass::LockNotAvailable {
        return Error::Database(db_err);
    }
    match deadline.asked() {
        Wait::No => Error::LockBusy { key, row: None },
        Wait::Timeout(bound) if bound.is_zero() => Error::LockBusy { key, row: None },
        _ => Error::LockTimeout {
            key,
            row: None,
            timeout: deadline.reported_bound(),
            source: Some(db_err),
        },
    }
}
