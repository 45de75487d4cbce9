//! The waits of the call's own statements on the *entity* table (the guarded insert, the
//! update form's `UPDATE`): the key's lock does not keep every wait there away, so they are
//! bounded as the lock's are, and their timeouts typed as the lock's are.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::lock::{Whose, normalize};
use super::lock_table::wait_seconds;
use crate::classify::{MySqlError, mysql_error};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// A statement of the call on the *entity* table (the guarded insert, the update form's
/// `UPDATE`), its lock waits bounded by what is left of the call's wait: `SET STATEMENT
/// innodb_lock_wait_timeout = n, lock_wait_timeout = n FOR ...` for [`Wait::Timeout`] (whole
/// seconds, rounded up) and [`Wait::No`] (0); [`Wait::Forever`] is left to the server's own
/// timeouts. `lock_wait_timeout` bounds the wait for the table's metadata lock (a `LOCK
/// TABLES`, a DDL statement), which is a year by default: both fail with error 1205
/// (`tests/mysql_one_statement_probe.rs`
/// `a_metadata_lock_on_the_table_bounds_no_wait_past_the_callers`).
///
/// The key's lock does not keep such waits away: under READ COMMITTED InnoDB's duplicate check
/// on a UNIQUE index that meets delete-marked records of the key (a deleted row not yet purged)
/// takes shared *next-key* locks on them and on the next record, so the transaction that
/// inserted the key holds the gap up to the next key until it ends, and an insert of another
/// key in that gap waits for it. While it waits, its `INSERT ... SELECT` holds the table's
/// AUTO-INC lock (`innodb_autoinc_lock_mode = 1`, MariaDB's default), so inserts of any key of
/// the table wait behind it (and time out with error 1467, not 1205). See
/// [`entity_wait_error`] for the errors.
pub(crate) fn bounded(statement: Statement, wait: Wait) -> Statement {
    match normalize(wait) {
        Wait::Forever => statement,
        wait => Statement {
            sql: format!(
                "SET STATEMENT innodb_lock_wait_timeout = {seconds}, lock_wait_timeout = {seconds}, \
                 max_statement_time = 0 FOR {}",
                statement.sql,
                seconds = wait_seconds(wait),
            ),
            ..statement
        },
    }
}

/// Types a lock wait of a statement on the entity table ([`bounded`]) that failed: error 1205
/// is [`Error::LockBusy`] for [`Wait::No`] and [`Error::LockTimeout`] otherwise (`timeout:
/// None` for [`Wait::Forever`]: the server's `innodb_lock_wait_timeout` ended it). Error 1467
/// is InnoDB's report of a failed wait for the table's AUTO-INC lock: a timeout as above, or a
/// deadlock InnoDB detected when the wait began (then it rolled the whole transaction back, as
/// for 1213): with the transaction gone and no `innodb_rollback_on_timeout`, it is
/// [`Error::Deadlock`]. A caller's transaction that a timeout rolled back whole
/// (`innodb_rollback_on_timeout`) is [`Error::TransactionAborted`]. Any other error is kept.
pub(crate) async fn entity_wait_error(
    txn: &impl ConnectionTrait,
    err: Error,
    key: LockKey,
    deadline: Deadline,
    whose: Whose,
) -> Error {
    let Error::Database(err) = err else {
        return err;
    };
    let auto_inc = match mysql_error(&err) {
        Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait) => false,
        Some(MySqlError::AutoIncLockWait) => true,
        _ => return Error::Database(err),
    };
    let state = txn
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT CAST(@@in_transaction AS SIGNED) AS in_txn, \
             CAST(@@innodb_rollback_on_timeout AS SIGNED) AS rollback_on_timeout",
        ))
        .await;
    let (open, rollback_on_timeout) = match state {
        Ok(Some(row)) => (
            row.try_get::<i64>("", "in_txn") != Ok(0),
            row.try_get::<i64>("", "rollback_on_timeout") != Ok(0),
        ),
        // Nothing to tell by: the wait's own error.
        _ => (true, true),
    };
    if !open && auto_inc && !rollback_on_timeout {
        return Error::Deadlock { key, row: None };
    }
    if !open && whose == Whose::Callers {
        return Error::TransactionAborted(err);
    }
    match normalize(deadline.asked()) {
        Wait::No => Error::LockBusy { key, row: None },
        _ => Error::LockTimeout {
            key,
            row: None,
            timeout: deadline.reported_bound(),
            source: Some(err),
        },
    }
}
