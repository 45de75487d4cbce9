//! MySQL/MariaDB: the lock-table rows of a batch's chunk (see
//! [`crate::IdempotentCreate::many`]), locked in one statement, in primary-key order.
//!
//! 1. Before `BEGIN` (autocommit), one `INSERT IGNORE` makes every key's row exist, told not to
//!    wait; if a row is held by another transaction (error 1205 at once) each key's row is made
//!    by a statement of its own, as a single call does ([`ensure_lock_row`]).
//! 2. Inside the READ COMMITTED transaction, one locking read takes them all:
//!    `SET STATEMENT innodb_lock_wait_timeout = n FOR SELECT ... WHERE (space = ? AND k1 = ?
//!    AND k2 IN (?, ...)) ... ORDER BY space, k1, k2 FOR UPDATE`. InnoDB reads the primary
//!    key's ranges in order, so the rows are locked in one sorted order in every transaction
//!    (record locks only: every row exists). [`Wait::Forever`] waits in slices: when one runs
//!    out the transaction is rolled back and begun again ([`LockedMany::Again`]).
//! 3. A key whose row is still missing (its first inserter rolled back while we waited) is
//!    locked as a single call locks it ([`lock_in`](super::lock_in)).
//! 4. One `UPDATE` counts this holder in every row's `generation`, as a single call does, so
//!    a caller's REPEATABLE READ transaction that read before us is refused by its own call.
//!
//! In a caller's transaction the keys are locked one by one in sorted order, each as a single
//! call locks it: InnoDB keeps every row lock to the end of the transaction
//! (`ROLLBACK TO SAVEPOINT` releases none), so a wait that runs out must not leave locks taken
//! out of order behind.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, Statement, TransactionOptions,
    Value,
};

use super::lock_table::{
    FOREVER_SLICE_SECS, MYSQL_LOCK_TABLE, ensure_lock_row, key_values, lock_table_error,
};
use super::shielded::Shielded;
use crate::backend::locked_many::LockedMany;
use crate::classify::{MySqlError, mysql_error};
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// The crate's own transaction for a chunk: step 1, then READ COMMITTED, run to its end as a
/// single call's is ([`Shielded`]).
pub(crate) async fn begin(db: &DatabaseConnection, keys: &[LockKey]) -> Result<Own, Error> {
    ensure_lock_rows(db, keys).await?;
    let options = TransactionOptions {
        isolation_level: Some(IsolationLevel::ReadCommitted),
        access_mode: None,
        sqlite_transaction_mode: None,
    };
    Ok(Own::Shielded(Shielded::begin(db, options).await?))
}

/// Step 1: makes every key's lock row exist, before `BEGIN`.
///
/// # Cancel Safety
///
/// Dropped, some rows may have been made (committed at once); nothing is held.
pub(crate) async fn ensure_lock_rows(
    db: &DatabaseConnection,
    keys: &[LockKey],
) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?, ?)"; keys.len()].join(", ");
    let sql = format!(
        "SET STATEMENT innodb_lock_wait_timeout = 0 FOR \
         INSERT IGNORE INTO `{MYSQL_LOCK_TABLE}` (`space`, `k1`, `k2`) VALUES {rows}"
    );
    let values: Vec<Value> = keys.iter().flat_map(|key| key_values(*key)).collect();
    match db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            sql,
            values,
        ))
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => match mysql_error(&err) {
            Some(MySqlError::LockWaitTimeout) => {
                for key in keys {
                    ensure_lock_row(db, *key).await?;
                }
                Ok(())
            }
            _ => Err(lock_table_error(err)),
        },
    }
}

/// `(space = ? AND k1 = ? AND k2 IN (?, ...)) OR ...`, grouped by `(space, k1)`, and its values.
fn keys_condition(keys: &[LockKey]) -> (String, Vec<Value>) {
    let mut groups: Vec<(Value, Value, Vec<Value>)> = Vec::new();
    for key in keys {
        let [space, k1, k2] = key_values(*key);
        match groups.last_mut() {
            Some((s, k, rest)) if *s == space && *k == k1 => rest.push(k2),
            _ => groups.push((space, k1, vec![k2])),
        }
    }
    let mut sql = Vec::new();
    let mut values = Vec::new();
    for (space, k1, rest) in groups {
        sql.push(format!(
            "(`space` = ? AND `k1` = ? AND `k2` IN ({}))",
            vec!["?"; rest.len()].join(", ")
        ));
        values.push(space);
        values.push(k1);
        values.extend(rest);
    }
    (sql.join(" OR "), values)
}

/// The whole seconds a wait is given (see the lock table's `wait_seconds`).
fn seconds(wait: Wait) -> u64 {
    match wait {
        Wait::No => 0,
        Wait::Timeout(timeout) => {
            timeout.as_nanos().div_ceil(1_000_000_000).min(100_000_000) as u64
        }
        Wait::Forever => FOREVER_SLICE_SECS,
    }
}

/// Steps 2 to 4 in `txn`, for `keys` sorted and distinct.
pub(crate) async fn lock_many(
    txn: Txn<'_>,
    keys: &[LockKey],
    deadline: Deadline,
) -> Result<LockedMany, Error> {
    if keys.is_empty() {
        return Ok(LockedMany::Locked);
    }
    if let Txn::Plain(_) = txn {
        // A caller's transaction: one key at a time, in sorted order.
        for key in keys {
            super::lock_in(txn, *key, deadline).await?;
        }
        return Ok(LockedMany::Locked);
    }
    let wait = super::lock::normalize(deadline.left());
    let (condition, values) = keys_condition(keys);
    let lock = Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {} FOR \
             SELECT `space`, `k1`, `k2` FROM `{MYSQL_LOCK_TABLE}` WHERE {condition} \
             ORDER BY `space`, `k1`, `k2` FOR UPDATE",
            seconds(wait)
        ),
        values.clone(),
    );
    let rows = match txn.query_all_raw(lock).await {
        Ok(rows) => rows,
        Err(err) => {
            return match mysql_error(&err) {
                Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait) => match wait {
                    Wait::Forever => Ok(LockedMany::Again),
                    Wait::No => Err(Error::LockBusy {
                        key: keys[0],
                        row: None,
                    }),
                    Wait::Timeout(_) => Err(Error::LockTimeout {
                        key: keys[0],
                        row: None,
                        timeout: deadline.reported_bound(),
                        source: Some(err),
                    }),
                },
                Some(MySqlError::Deadlock) => Err(Error::Deadlock {
                    key: keys[0],
                    row: None,
                }),
                _ => Err(lock_table_error(err)),
            };
        }
    };
    if rows.len() < keys.len() {
        // Rows whose first inserter rolled back while we waited: each as a single call.
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let space: i32 = row.try_get("", "space")?;
            let k1: i32 = row.try_get("", "k1")?;
            let k2: i32 = row.try_get("", "k2")?;
            found.push([Value::from(space), Value::from(k1), Value::from(k2)]);
        }
        for key in keys {
            if !found.contains(&key_values(*key)) {
                super::lock_in(txn, *key, deadline).await?;
            }
        }
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "UPDATE `{MYSQL_LOCK_TABLE}` SET `generation` = `generation` + 1 WHERE {condition}"
        ),
        values,
    ))
    .await?;
    Ok(LockedMany::Locked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_namespace_are_one_range_list() {
        let keys = [
            LockKey::Pair(5, 1),
            LockKey::Pair(5, 2),
            LockKey::Pair(6, 0),
        ];
        let (sql, values) = keys_condition(&keys);
        assert_eq!(
            sql,
            "(`space` = ? AND `k1` = ? AND `k2` IN (?, ?)) OR (`space` = ? AND `k1` = ? AND `k2` IN (?))"
        );
        assert_eq!(values.len(), 7);
    }
}
