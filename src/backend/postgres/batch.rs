//! PostgreSQL: the advisory locks of a batch's chunk (see [`crate::IdempotentCreate::many`]),
//! all taken in one statement, in one sorted order.
//!
//! 1. **The try** (`try_many`): one statement checks the isolation level (refusing a level
//!    whose snapshot predates the locks, before touching them), tries every key without
//!    waiting (`pg_try_advisory_xact_lock`, in sorted order), and reads which server answers
//!    (refusing one whose locks are fake). Uncontended, that is the only round trip.
//! 2. **Contended**, the scope is rolled back (which releases what the try took: nothing is
//!    held while waiting for a key out of order) and begun again, and **the wait**
//!    (`wait_many`) takes every key with `pg_advisory_xact_lock` in sorted order, in one
//!    statement, bounded by `SET LOCAL lock_timeout`: the caller's [`Wait::Timeout`], or one
//!    slice of [`Wait::Forever`] (after which the scope is rolled back and the wait begins
//!    again, so a dropped caller's connection stays busy for at most one slice). The caller's
//!    `statement_timeout` is turned off for the wait (`SET LOCAL`), as single calls do: it is
//!    meant for the application's queries, not for a lock wait.
//!
//! Taking the keys in one sorted order in every transaction (a batch's chunk holds the lower
//! keys while it waits for a higher one, never the other way round, and a single call holds
//! one key) is what keeps overlapping batches and single calls from deadlocking one another.
//!
//! The keys are bound as two texts of comma-separated integers, parsed by the server
//! (`string_to_array(..)::int4[]`): no array type is needed, and nothing is formatted into the
//! SQL. They are the crate's own lock keys, the same as the single calls of the same natural
//! keys take (`LockKey::Pair`).

use std::time::Duration;

#[cfg(feature = "postgres")]
use sea_orm::RuntimeErr;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::codes;
use super::engine::{DETECTION_COLUMNS, Server};
use super::lock::{no_row, normalize};
use crate::backend::locked_many::LockedMany;
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// One slice of a [`Wait::Forever`] batch wait.
const FOREVER_SLICE: Duration = Duration::from_secs(2);

/// The sorted keys as the statements bind them: the two halves of each pair, as texts. A
/// [`LockKey::BigInt`] (never an entity's key) is refused by the caller before this.
pub(super) fn key_texts(keys: &[LockKey]) -> (Value, Value) {
    let mut namespaces = String::new();
    let mut rest = String::new();
    for key in keys {
        let LockKey::Pair(namespace, key) = key else {
            continue;
        };
        if !namespaces.is_empty() {
            namespaces.push(',');
            rest.push(',');
        }
        namespaces.push_str(&namespace.to_string());
        rest.push_str(&key.to_string());
    }
    (Value::from(namespaces), Value::from(rest))
}

/// The keys, one row each, in sorted order, as a subquery (`OFFSET 0` keeps the planner from
/// pulling it up, so the function of the outer query runs row by row in this order); their
/// two texts ([`key_texts`]) bound as `$first` and the parameter after it.
pub(super) fn sorted_keys(first: usize) -> String {
    let second = first + 1;
    format!(
        "(SELECT n, k FROM unnest(string_to_array(${first}, ',')::int4[], \
         string_to_array(${second}, ',')::int4[]) AS keys(n, k) ORDER BY n, k OFFSET 0) AS sorted"
    )
}

/// Step 1: the isolation check, the try of every key and the server's identity, one statement.
fn try_statement(keys: &[LockKey]) -> Statement {
    let (namespaces, rest) = key_texts(keys);
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "SELECT CASE \
             WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL \
             ELSE (SELECT bool_and(pg_try_advisory_xact_lock(n, k)) FROM {sorted}) END AS acquired, \
             current_setting('transaction_isolation') AS isolation, \
             current_setting('lock_timeout') AS saved_lock_timeout, {DETECTION_COLUMNS}",
            sorted = sorted_keys(1)
        ),
        [namespaces, rest],
    )
}

/// Step 2: every key, waited for in sorted order, one statement.
fn wait_statement(keys: &[LockKey]) -> Statement {
    let (namespaces, rest) = key_texts(keys);
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "SELECT count(pg_advisory_xact_lock(n, k)) AS locked FROM {}",
            sorted_keys(1)
        ),
        [namespaces, rest],
    )
}

/// `SET LOCAL lock_timeout` and `SET LOCAL statement_timeout`, bound.
fn set_timeouts(lock_timeout: String, statement_timeout: String) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
        [Value::from(lock_timeout), Value::from(statement_timeout)],
    )
}

/// Takes `keys` (sorted, distinct) in `txn`. `attempt` 0 tries them all without waiting;
/// later attempts wait for them in sorted order. [`LockedMany::Again`]: nothing is held for
/// the caller but what the scope holds; roll it back and call again with the next attempt.
pub(crate) async fn lock_many<C: ConnectionTrait>(
    txn: &C,
    keys: &[LockKey],
    deadline: Deadline,
    attempt: u32,
) -> Result<LockedMany, Error> {
    if keys.is_empty() {
        return Ok(LockedMany::Locked);
    }
    if attempt == 0 {
        let row = txn
            .query_one_raw(try_statement(keys))
            .await
            .map_err(Error::from_first_statement)?
            .ok_or_else(|| no_row("batch try"))?;
        Server::from_row(&row)?.check(normalize(deadline.asked()))?;
        return match row.try_get::<Option<bool>>("", "acquired")? {
            Some(true) => Ok(LockedMany::Locked),
            Some(false) => match normalize(deadline.left()) {
                Wait::No => Err(Error::LockBusy {
                    key: keys[0],
                    row: None,
                }),
                _ => Ok(LockedMany::Again),
            },
            None => Err(Error::UnsafeIsolation {
                level: row.try_get("", "isolation")?,
            }),
        };
    }
    let settings = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('lock_timeout') AS saved, \
             current_setting('statement_timeout') AS saved_statement",
        ))
        .await?
        .ok_or_else(|| no_row("batch setting"))?;
    let saved: String = settings.try_get("", "saved")?;
    let saved_statement: String = settings.try_get("", "saved_statement")?;
    let (bound, slice) = match normalize(deadline.left()) {
        Wait::No => {
            return Err(Error::LockTimeout {
                key: keys[0],
                row: None,
                timeout: deadline.reported_bound(),
                source: None,
            });
        }
        Wait::Timeout(bound) => (bound, false),
        Wait::Forever => (FOREVER_SLICE, true),
    };
    // Whole milliseconds, at least one (0 would mean no timeout).
    let millis = bound.as_millis().clamp(1, i32::MAX as u128);
    // The caller's `statement_timeout` is meant for the application's queries, not for a
    // lock wait (as for single calls): off for the wait, which `lock_timeout` bounds. Both are
    // local to the scope, and its rollback restores them when the wait fails or is dropped.
    txn.execute_raw(set_timeouts(format!("{millis}ms"), "0".to_owned()))
        .await?;
    match txn.query_one_raw(wait_statement(keys)).await {
        Ok(_) => {}
        Err(err) => {
            return match sqlstate(&err).as_deref() {
                Some(codes::LOCK_NOT_AVAILABLE) if slice => Ok(LockedMany::Again),
                Some(codes::LOCK_NOT_AVAILABLE | codes::QUERY_CANCELED) => {
                    Err(Error::LockTimeout {
                        key: keys[0],
                        row: None,
                        timeout: deadline.reported_bound(),
                        source: Some(err),
                    })
                }
                Some(codes::DEADLOCK_DETECTED) => Err(Error::Deadlock {
                    key: keys[0],
                    row: None,
                }),
                _ => Err(err.into()),
            };
        }
    }
    txn.execute_raw(set_timeouts(saved, saved_statement))
        .await?;
    Ok(LockedMany::Locked)
}

/// The SQLSTATE of a PostgreSQL error, if it is one.
fn sqlstate(err: &DbErr) -> Option<String> {
    #[cfg(feature = "postgres")]
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = err {
        return e
            .as_database_error()
            .and_then(|e| e.code())
            .map(|code| code.into_owned());
    }
    let _ = err;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bound_never_formatted() {
        let keys = [LockKey::Pair(-3, 7), LockKey::Pair(-3, 9)];
        let statement = try_statement(&keys);
        assert!(!statement.sql.contains("-3"));
        assert_eq!(
            statement.values.unwrap().0,
            vec![
                Value::from("-3,-3".to_owned()),
                Value::from("7,9".to_owned())
            ]
        );
        assert!(wait_statement(&keys).sql.contains("ORDER BY n, k OFFSET 0"));
    }
}
