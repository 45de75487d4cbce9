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
//!    transaction is then rolled back and begun again ([`LockedMany::Again`]), because what
//!    the undone statement keeps is not a prefix of the sorted keys (see [`lock_many`]); the
//!    new transaction holds nothing and waits in key order, with one locking read of every
//!    key's row: one point lookup per key by the whole primary key, joined by `UNION ALL`:
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
//!    the table. A `FOR UPDATE` wait on a row whose inserter rolls back leaves no gap lock
//!    under READ COMMITTED. [`Wait::Forever`] waits in slices: when one runs out the
//!    transaction is rolled back and begun again.
//! 3. Then step 1's insert again, which finds every existing row held by this transaction
//!    (counts them) and makes the rows still missing (new keys). It still never waits: a
//!    missing row another transaction made meanwhile fails it with 1205, and the chunk's
//!    transaction is rolled back and begun again (the next attempt's locking read waits for
//!    that row in order). So every wait is taken in key order, by a transaction that holds
//!    only lower keys.
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

use super::lock::{self, Whose};
use super::lock_table::{LockRow, LockTable, lock_table_error, wait_seconds};
use super::lock_tables;
use super::shielded::Shielded;
use crate::backend::locked_many::LockedMany;
use crate::backend::mode::Mode;
use crate::call_chain::{Chain, Lock};
use crate::classify::{MySqlError, mysql_error};
use crate::source::SessionId;
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
async fn own_insert(txn: Txn<'_>, rows: &[LockRow]) -> Result<(), DbErr> {
    for piece in rows.chunks(KEYS_PER_STATEMENT) {
        txn.execute_raw(own_insert_statement(piece)).await?;
    }
    Ok(())
}

/// Steps 1 and 3: every key's row made (counted) or, committed and held by nobody, locked and
/// counted, in key order, without waiting (a held row: 1205 at once, the statement undone).
fn own_insert_statement(rows: &[LockRow]) -> Statement {
    let first = rows[0];
    let values = vec![format!("({}, 1)", first.placeholders()); rows.len()].join(", ");
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = 0, max_statement_time = 0 FOR \
             INSERT INTO `{}` ({}, `generation`) VALUES {values} \
             ON DUPLICATE KEY UPDATE `generation` = `generation` + 1",
            first.table(),
            first.columns(),
        ),
        rows.iter().flat_map(|row| row.values()).collect::<Vec<_>>(),
    )
}

/// Step 2's locking read of `keys` (sorted): one point lookup per key, by the whole primary
/// key, in key order, `UNION ALL`ed into one statement. A lookup of every primary-key column
/// by constants is a `const` read, whatever the table's size and statistics, so the statement
/// reads (and locks) these rows and no others, one after the other.
fn lock_statement(rows: &[LockRow], wait: Wait) -> Statement {
    let first = rows[0];
    let one = format!(
        "(SELECT {} FROM `{}` {} FOR UPDATE)",
        first.columns(),
        first.table(),
        first.where_key()
    );
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "SET STATEMENT innodb_lock_wait_timeout = {}, max_statement_time = 0 FOR {}",
            wait_seconds(wait),
            vec![one; rows.len()].join(" UNION ALL ")
        ),
        rows.iter().flat_map(|row| row.values()).collect::<Vec<_>>(),
    )
}

/// Steps 1 to 3 in `txn`, for `keys` sorted and distinct. `attempt` 0 begins with step 1;
/// every later attempt (a transaction begun again after [`LockedMany::Again`]) begins with
/// step 2, the wait.
///
/// Why a held row ends the transaction instead of waiting in it: step 1's undone statement
/// keeps the locks it took on committed rows, but not the rows it made for new keys (the undo
/// removes them). What it keeps is then not a prefix of the sorted keys: new keys below a kept
/// one are not held. Waiting in that transaction for such a key, which another chunk made and
/// holds meanwhile, while holding a later key that chunk waits for, closed a deadlock
/// (`tests/batch.rs` `batches_and_single_calls_race_to_one_row_and_one_created_per_key`
/// failed so about once in 30 runs: InnoDB's report showed each chunk in step 2, one holding a
/// key above the one it waited for). A transaction begun again holds nothing: its step 2
/// takes every lock in key order, and step 3 never waits.
///
/// The rows are those of the lock table the database uses ([`lock_tables`]; `session` is a
/// caller's transaction's): the keys' own rows, or their slots, sorted and each once (two keys
/// of one slot lock it once). A lock table found gone (the per-key table dropped) is asked for
/// again, and the chunk begun again ([`LockedMany::Again`]).
pub(crate) async fn lock_many(
    txn: Txn<'_>,
    keys: &[LockKey],
    deadline: Deadline,
    attempt: u32,
    session: Option<SessionId>,
) -> Result<LockedMany, Error> {
    if keys.is_empty() {
        return Ok(LockedMany::Locked);
    }
    let asked_for = super::asked_for(&txn, session);
    let table = lock_tables::lock_table(&txn, asked_for).await?;
    // On the slots, a key whose slot an enclosing call holds (another key of it: the batch
    // refused the keys themselves already) would wait for that call, which waits for this
    // batch. On a pool the batch's session is a new one; in a caller's transaction it may be
    // the enclosing call's, whose lock is the session's already.
    if table == LockTable::Slots {
        let chain = Chain::current();
        let held = keys.iter().copied().find(|&key| match (txn, session) {
            (Txn::Plain(_), Some(session)) => {
                chain.would_wait_for_itself(Lock::SlotOf(key), session)
            }
            _ => chain.holds(Lock::SlotOf(key)),
        });
        if let Some(key) = held {
            return Err(Error::Reentrant { key });
        }
    }
    if let Txn::Plain(_) = txn {
        // A caller's transaction: one row at a time, in row order, each locked as a single
        // call locks it (for the first of its keys).
        for (key, _) in rows_of(table, keys) {
            lock::acquire_in(
                &txn,
                key,
                table,
                Mode::Exclusive,
                deadline,
                Whose::Callers,
                asked_for,
            )
            .await?;
        }
        return Ok(LockedMany::Locked);
    }
    let rows: Vec<LockRow> = rows_of(table, keys)
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    match lock_rows(txn, keys, &rows, deadline, attempt).await {
        Err(Error::MissingLockTable { .. })
            if lock_tables::after_missing(&txn, asked_for, table)
                .await?
                .is_some() =>
        {
            Ok(LockedMany::Again)
        }
        locked => locked,
    }
}

/// The rows `keys` lock in `table`, sorted, each once, with the first key that locks it.
fn rows_of(table: LockTable, keys: &[LockKey]) -> Vec<(LockKey, LockRow)> {
    let mut rows: Vec<(LockKey, LockRow)> =
        keys.iter().map(|key| (*key, table.row(*key))).collect();
    rows.sort_by_key(|(_, row)| *row);
    rows.dedup_by_key(|(_, row)| *row);
    rows
}

/// Steps 1 to 3 (see [`lock_many`]) on `rows`, the rows of `keys`.
async fn lock_rows(
    txn: Txn<'_>,
    keys: &[LockKey],
    rows: &[LockRow],
    deadline: Deadline,
    attempt: u32,
) -> Result<LockedMany, Error> {
    // Step 1: the first statement of a transaction just begun (so it runs inside it).
    if attempt == 0 {
        match own_insert(txn, rows).await {
            Ok(_) => return Ok(LockedMany::Locked),
            // Wait in a transaction begun again, which holds nothing (see above).
            Err(err) if held(&err) && lock::normalize(deadline.left()) != Wait::No => {
                return Ok(LockedMany::Again);
            }
            Err(err) => return Err(lock_error(err, keys, deadline)),
        }
    }
    // Step 2: a row is held, or being inserted, by another transaction: wait in key order.
    for piece in rows.chunks(KEYS_PER_STATEMENT) {
        let wait = lock::normalize(deadline.left());
        match txn.query_all_raw(lock_statement(piece, wait)).await {
            Ok(_) => {}
            Err(err) if wait == Wait::Forever && held(&err) => return Ok(LockedMany::Again),
            Err(err) => return Err(lock_error(err, keys, deadline)),
        }
    }
    // Step 3: every existing row is held by this transaction, so it counts them without
    // waiting for anyone, and makes the missing ones (new keys). It never waits: a missing row
    // another transaction made meanwhile fails it with 1205 at once, and the transaction is
    // begun again (so no lock is ever waited for out of key order).
    match own_insert(txn, rows).await {
        Ok(()) => {}
        Err(err) if held(&err) => return Ok(LockedMany::Again),
        Err(err) => return Err(lock_error(err, keys, deadline)),
    }
    if !lock::in_transaction(&txn).await? {
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
            match lock::normalize(deadline.asked()) {
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
    fn each_row_is_looked_up_by_its_whole_primary_key_in_row_order() {
        let keys = [
            LockKey::Pair(5, 1),
            LockKey::Pair(5, 2),
            LockKey::Pair(6, 0),
        ];
        let rows: Vec<LockRow> = rows_of(LockTable::PerKey, &keys)
            .into_iter()
            .map(|(_, row)| row)
            .collect();
        let lock = lock_statement(&rows, Wait::No);
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
        let bound: Vec<Value> = [(2, 5, 1), (2, 5, 2), (2, 6, 0)]
            .into_iter()
            .flat_map(|(space, k1, k2): (i32, i32, i32)| [space.into(), k1.into(), k2.into()])
            .collect();
        assert_eq!(lock.values.expect("bound values").0, bound);
        let own = own_insert_statement(&rows);
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

    #[test]
    fn keys_of_one_slot_lock_it_once_and_slots_in_ascending_order() {
        // `slot` is pinned by golden vectors in `lock_table`; these keys share none.
        let keys = [LockKey::BigInt(0), LockKey::BigInt(1), LockKey::BigInt(2)];
        let mut with_twin = keys.to_vec();
        with_twin.push(LockKey::BigInt(0));
        let rows = rows_of(LockTable::Slots, &with_twin);
        let slots: Vec<LockRow> = rows.iter().map(|(_, row)| *row).collect();
        // 57888, 37130, 38744 (see the golden vectors).
        assert_eq!(
            slots,
            vec![
                LockRow::Slot(37130),
                LockRow::Slot(38744),
                LockRow::Slot(57888)
            ]
        );
        let lock = lock_statement(&slots, Wait::Forever);
        assert!(
            lock.sql.contains(
                "(SELECT `slot` FROM `sea_orm_idempotent_lock_slots` WHERE `slot` = ? FOR UPDATE) UNION ALL"
            ),
            "{}",
            lock.sql
        );
        assert_eq!(
            lock.values.expect("bound values").0,
            vec![Value::from(37130), Value::from(38744), Value::from(57888)]
        );
        let own = own_insert_statement(&slots);
        assert!(
            own.sql.contains(
                "INSERT INTO `sea_orm_idempotent_lock_slots` (`slot`, `generation`) VALUES (?, 1), (?, 1), (?, 1) ON DUPLICATE KEY UPDATE"
            ),
            "{}",
            own.sql
        );
    }
}
