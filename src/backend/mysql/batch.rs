//! MySQL/MariaDB: the lock-table rows of a batch's chunk (see
//! [`crate::IdempotentCreate::many`]), locked in one statement, in primary-key order.
//!
//! 1. Before `BEGIN` (autocommit), one `INSERT IGNORE` makes every key's row exist, told not to
//!    wait; if a row is held by another transaction (error 1205 at once) each key's row is made
//!    by a statement of its own, as a single call does ([`ensure_lock_row`]).
//! 2. Inside the READ COMMITTED transaction, one locking read takes them all: one point
//!    lookup per key by the whole primary key, in key order, joined by `UNION ALL`:
//!    `SET STATEMENT innodb_lock_wait_timeout = n FOR (SELECT ... WHERE space = ? AND k1 = ?
//!    AND k2 = ? FOR UPDATE) UNION ALL (...) ...`. Each lookup is a `const` read of one row
//!    (or of none: no lock), whatever the table's size and statistics, and MariaDB reads the
//!    parts in order, so the rows are locked in one sorted order in every transaction (record
//!    locks only), and no row of another key is read. InnoDB locks every row a locking read
//!    reads, before the `WHERE` is evaluated: a plan that reads more rows than the chunk's
//!    waits for other keys' holders. An `IN` list did: MariaDB 10.11 planned `space = ? AND
//!    k1 = ? AND k2 IN (...)` on a small table as a scan of the whole `(space, k1)` prefix,
//!    every key of the namespace (`EXPLAIN`: `ref`, key length 5); and it turns the row form
//!    `(space, k1, k2) IN (...)` of a 500-key chunk (over 1000 values) into a join that scans
//!    the table. [`Wait::Forever`] waits in slices: when one runs out the transaction is rolled
//!    back and begun again ([`LockedMany::Again`]).
//! 3. A key whose row is still missing (its first inserter rolled back while we waited) is
//!    locked as a single call locks it ([`lock_in`](super::lock_in)).
//! 4. One `INSERT ... VALUES (?, ?, ?), ... ON DUPLICATE KEY UPDATE generation =
//!    generation + 1` counts this holder in every row's `generation`, as a single call does, so a
//!    caller's REPEATABLE READ transaction that read before us is refused by its own call.
//!    Every row exists and is ours by now; each is written by its primary key, whatever the
//!    plan (an `UPDATE ... WHERE ... IN` may be planned as a scan).
//!
//! Step 1's multi-row insert is a point write per row too; it reads no other key's row.
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
    FOREVER_SLICE_SECS, MYSQL_LOCK_TABLE, WHERE_KEY, ensure_lock_row, key_values, lock_table_error,
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

/// Step 2's locking read of `keys` (sorted): one point lookup per key, by the whole primary
/// key, in key order, `UNION ALL`ed into one statement. A lookup of every primary-key column
/// by constants is a `const` read, whatever the table's size and statistics, so the statement
/// reads (and locks) these rows and no others, one after the other.
fn lock_statement(keys: &[LockKey], wait: Wait) -> Statement {
    let one =
        format!("(SELECT `space`, `k1`, `k2` FROM `{MYSQL_LOCK_TABLE}` {WHERE_KEY} FOR UPDATE)");
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {} FOR {}",
            seconds(wait),
            vec![one; keys.len()].join(" UNION ALL ")
        ),
        keys.iter()
            .flat_map(|key| key_values(*key))
            .collect::<Vec<_>>(),
    )
}

/// Step 4, on rows this transaction holds: every key's `generation` counted, row by row by
/// primary key (`ON DUPLICATE KEY UPDATE`: each row a point write whatever the plan; every
/// row exists, so nothing is inserted).
fn count_statement(keys: &[LockKey]) -> Statement {
    let rows = vec!["(?, ?, ?)"; keys.len()].join(", ");
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "INSERT INTO `{MYSQL_LOCK_TABLE}` (`space`, `k1`, `k2`) VALUES {rows} \
             ON DUPLICATE KEY UPDATE `generation` = `generation` + 1"
        ),
        keys.iter()
            .flat_map(|key| key_values(*key))
            .collect::<Vec<_>>(),
    )
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
    let lock = lock_statement(keys, wait);
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
    txn.execute_raw(count_statement(keys)).await?;
    Ok(LockedMany::Locked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_looked_up_by_its_whole_primary_key_in_key_order() {
        let keys = [
            LockKey::Pair(5, 1),
            LockKey::Pair(5, 2),
            LockKey::Pair(6, 0),
        ];
        let lock = lock_statement(&keys, Wait::No);
        assert!(
            lock.sql.starts_with(
                "SET STATEMENT innodb_lock_wait_timeout = 0 FOR (SELECT `space`, `k1`, `k2` \
                 FROM `sea_orm_idempotent_locks` WHERE `space` = ? AND `k1` = ? AND `k2` = ? \
                 FOR UPDATE) UNION ALL (SELECT"
            ),
            "{}",
            lock.sql
        );
        assert_eq!(lock.sql.matches(" UNION ALL ").count(), 2, "{}", lock.sql);
        let bound: Vec<Value> = keys.iter().flat_map(|key| key_values(*key)).collect();
        assert_eq!(lock.values.expect("bound values").0, bound);
        let count = count_statement(&keys);
        assert!(
            count
                .sql
                .contains("VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?) ON DUPLICATE KEY UPDATE"),
            "{}",
            count.sql
        );
        assert_eq!(count.values.expect("bound values").0, bound);
    }
}
