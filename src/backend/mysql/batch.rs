//! MySQL/MariaDB: the lock-table rows of a batch's chunk (see
//! [`crate::IdempotentCreate::many`]), made, locked and counted inside the crate's own READ
//! COMMITTED transaction, in primary-key order, as a single call's lock is
//! ([`acquire_own`](super::lock)): no commit of their own.
//!
//! 1. One insert that never waits, in key order: `SET STATEMENT innodb_lock_wait_timeout = 0
//!    FOR INSERT INTO ... (space, k1, k2, generation) VALUES (?, ?, ?, 1), ... ON DUPLICATE
//!    KEY UPDATE generation = generation + 1` ([`own_insert_statement`]). It makes every new
//!    key's row (counted: its creator is its first holder) and holds it, and locks every
//!    committed row nobody holds (a record lock: the duplicate only) and counts this holder,
//!    so a caller's REPEATABLE READ transaction that read before us is refused by its own
//!    call. Each row is a point write by its whole primary key, in order; it reads no other
//!    key's row. Uncontended, the chunk's locks are this one statement.
//! 2. A row another transaction holds or is inserting fails it at once with 1205 (no lock
//!    is queued: nothing waits, so nothing deadlocks and no wait becomes a gap lock). The
//!    statement is undone (InnoDB keeps the record locks it took on the committed rows before
//!    the held one, a prefix of the sorted keys), and the chunk waits in key order, with one
//!    locking read of every key's row: one point lookup per key by the whole primary key,
//!    joined by `UNION ALL`: `SET STATEMENT innodb_lock_wait_timeout = n FOR (SELECT ...
//!    WHERE space = ? AND k1 = ? AND k2 = ? FOR UPDATE) UNION ALL (...) ...`. Each lookup is
//!    a `const` read of one row (or of none: no lock), whatever the table's size and
//!    statistics, and MariaDB reads the parts in order, so the rows are locked in one sorted
//!    order in every transaction (record locks only), and no row of another key is read.
//!    InnoDB locks every row a locking read reads, before the `WHERE` is evaluated: a plan
//!    that reads more rows than the chunk's waits for other keys' holders. An `IN` list did:
//!    MariaDB 10.11 planned `space = ? AND k1 = ? AND k2 IN (...)` on a small table as a scan
//!    of the whole `(space, k1)` prefix, every key of the namespace (`EXPLAIN`: `ref`, key
//!    length 5); and it turns the row form `(space, k1, k2) IN (...)` of a 500-key chunk
//!    (over 1000 values) into a join that scans the table. A `FOR UPDATE` wait on a row whose
//!    inserter rolls back leaves no gap lock under READ COMMITTED. [`Wait::Forever`] waits in
//!    slices: when one runs out the transaction is rolled back and begun again
//!    ([`LockedMany::Again`]).
//! 3. Then step 1's insert again, which now finds every row it read held by this
//!    transaction, and makes the rows still missing (new keys, whose rows step 1's undone
//!    statement took back, or whose first inserter rolled back). It still never waits: a
//!    missing row another transaction made meanwhile fails it with 1205, and the chunk's
//!    transaction is rolled back and begun again ([`LockedMany::Again`]; the next attempt's
//!    locking read waits for that row in order). So every wait is taken in key order.
//!
//! A chunk of more keys than one statement can bind sends each step in pieces, in key order
//! ([`KEYS_PER_STATEMENT`]).
//!
//! In a caller's transaction the keys are locked one by one in sorted order, each as a single
//! call locks it: InnoDB keeps every row lock to the end of the transaction
//! (`ROLLBACK TO SAVEPOINT` releases none), so a wait that runs out must not leave locks taken
//! out of order behind.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, IsolationLevel, Statement,
    TransactionOptions,
};

use super::lock_table::{
    FOREVER_SLICE_SECS, MYSQL_LOCK_TABLE, WHERE_KEY, key_values, lock_table_error,
};
use super::shielded::Shielded;
use crate::backend::locked_many::LockedMany;
use crate::classify::{MySqlError, mysql_error};
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// The crate's own transaction for a chunk: READ COMMITTED, run to its end as a single call's
/// is ([`Shielded`]). The keys' lock rows are made inside it ([`lock_many`]).
pub(crate) async fn begin(db: &DatabaseConnection, _keys: &[LockKey]) -> Result<Own, Error> {
    let options = TransactionOptions {
        isolation_level: Some(IsolationLevel::ReadCommitted),
        access_mode: None,
        sqlite_transaction_mode: None,
    };
    Ok(Own::Shielded(Shielded::begin(db, options).await?))
}

/// At most this many keys in one lock statement: each binds 3 values, and MariaDB takes at
/// most 65535 in a prepared statement (error 1390 above it). A chunk of more keys sends each
/// step as several statements, one after the other in key order: the transaction still asks
/// for its locks in one ascending order, and a piece that fails leaves what a single
/// statement failing at the same key would (the locks before it held, the chunk then waits or
/// ends as below).
const KEYS_PER_STATEMENT: usize = 10_000;

/// Step 1 or 3 for every key, in pieces of [`KEYS_PER_STATEMENT`], in key order; the first
/// piece that fails ends it.
async fn own_insert(txn: Txn<'_>, keys: &[LockKey]) -> Result<(), DbErr> {
    for piece in keys.chunks(KEYS_PER_STATEMENT) {
        txn.execute_raw(own_insert_statement(piece)).await?;
    }
    Ok(())
}

/// Steps 1 and 3: every key's row made (counted) or, committed and held by nobody, locked and
/// counted, in key order, without waiting (a held row: 1205 at once, the statement undone).
fn own_insert_statement(keys: &[LockKey]) -> Statement {
    let rows = vec!["(?, ?, ?, 1)"; keys.len()].join(", ");
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR \
             INSERT INTO `{MYSQL_LOCK_TABLE}` (`space`, `k1`, `k2`, `generation`) VALUES {rows} \
             ON DUPLICATE KEY UPDATE `generation` = `generation` + 1"
        ),
        keys.iter()
            .flat_map(|key| key_values(*key))
            .collect::<Vec<_>>(),
    )
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
            "SET STATEMENT innodb_lock_wait_timeout = {}, max_statement_time = 0 FOR {}",
            seconds(wait),
            vec![one; keys.len()].join(" UNION ALL ")
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

/// Steps 1 to 3 in `txn`, for `keys` sorted and distinct.
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
    // Step 1: the first statement of a transaction just begun (so it runs inside it).
    match own_insert(txn, keys).await {
        Ok(_) => return Ok(LockedMany::Locked),
        Err(err) if held(&err) && super::lock::normalize(deadline.left()) != Wait::No => {}
        Err(err) => return Err(lock_error(err, keys, deadline)),
    }
    // Step 2: a row is held, or being inserted, by another transaction: wait in key order.
    let mut rows = 0;
    for piece in keys.chunks(KEYS_PER_STATEMENT) {
        let wait = super::lock::normalize(deadline.left());
        match txn.query_all_raw(lock_statement(piece, wait)).await {
            Ok(locked) => rows += locked.len(),
            Err(err) if wait == Wait::Forever && held(&err) => return Ok(LockedMany::Again),
            Err(err) => return Err(lock_error(err, keys, deadline)),
        }
    }
    // Rows missing: new keys whose rows step 1's undone statement took back (or whose first
    // inserter rolled back). Making them now would ask for locks out of key order while this
    // transaction holds later keys (a transaction that made one of them meanwhile and waits
    // for a later key would close a cycle): begin again, where step 1 makes them in order.
    if rows < keys.len() {
        return Ok(LockedMany::Again);
    }
    // Step 3: every row is held by this transaction, so it counts them without waiting for
    // anyone. (Under `innodb_rollback_on_timeout` step 1's 1205 rolled the transaction back
    // and the session runs in autocommit, where nothing stays locked: begin again.)
    own_insert(txn, keys)
        .await
        .map_err(|err| lock_error(err, keys, deadline))?;
    if !super::lock::in_transaction(&txn).await? {
        return Ok(LockedMany::Again);
    }
    Ok(LockedMany::Locked)
}

/// Whether a lock statement failed because a row it needed is held (its wait ran out, or it
/// was told not to wait).
fn held(err: &DbErr) -> bool {
    matches!(
        mysql_error(err),
        Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait)
    )
}

/// A chunk's lock statement's error, typed by MySQL error number.
fn lock_error(err: DbErr, keys: &[LockKey], deadline: Deadline) -> Error {
    match mysql_error(&err) {
        Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait) => {
            match super::lock::normalize(deadline.asked()) {
                Wait::No => Error::LockBusy {
                    key: keys[0],
                    row: None,
                },
                _ => Error::LockTimeout {
                    key: keys[0],
                    row: None,
                    timeout: deadline.reported_bound(),
                    source: Some(err),
                },
            }
        }
        Some(MySqlError::Deadlock) => Error::Deadlock {
            key: keys[0],
            row: None,
        },
        _ => lock_table_error(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sea_orm::Value;

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
                "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR (SELECT `space`, `k1`, `k2` \
                 FROM `sea_orm_idempotent_locks` WHERE `space` = ? AND `k1` = ? AND `k2` = ? \
                 FOR UPDATE) UNION ALL (SELECT"
            ),
            "{}",
            lock.sql
        );
        assert_eq!(lock.sql.matches(" UNION ALL ").count(), 2, "{}", lock.sql);
        let bound: Vec<Value> = keys.iter().flat_map(|key| key_values(*key)).collect();
        assert_eq!(lock.values.expect("bound values").0, bound);
        let own = own_insert_statement(&keys);
        assert!(
            own.sql.starts_with(
                "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR INSERT INTO"
            ) && own.sql.contains(
                "VALUES (?, ?, ?, 1), (?, ?, ?, 1), (?, ?, ?, 1) ON DUPLICATE KEY UPDATE \
                     `generation` = `generation` + 1"
            ),
            "{}",
            own.sql
        );
        assert_eq!(own.values.expect("bound values").0, bound);
    }
}
