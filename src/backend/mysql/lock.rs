//! MySQL and MariaDB: the key's lock is a row lock of the crate's lock table
//! ([`lock_table`](super::lock_table): the key's slot, or on a database that still has the
//! per-key table of 0.1 and 0.2 the key's own row; [`lock_tables`](super::lock_tables) says
//! which), taken inside the transaction and released by InnoDB at COMMIT or ROLLBACK, never
//! earlier. The statements are the same on both tables; only the row differs.
//!
//! # How a key is locked
//!
//! 1. **The row exists**: a slot's, made by the migration. A per-key row (or a slot the
//!    migration did not fill) is made inside the transaction by the lock itself (step 2):
//!    rows are never deleted, so once the first holder of a key commits, every later lock is
//!    taken on a *committed* row, which can never vanish. (A batch's chunk makes its rows so
//!    too, in one insert in key order that does not wait: [`batch`](super::batch).)
//! 2. **Inside the transaction, the lock** is a record lock on the row, by its primary key.
//!    (The crate's own transaction takes it in its own way, see below: an insert that does
//!    not wait, then an `UPDATE` that waits.) It waits with a locking read:
//!    `SET STATEMENT innodb_lock_wait_timeout = n FOR SELECT ... FOR UPDATE` (shared: `LOCK IN
//!    SHARE MODE`). On an existing row InnoDB takes a *record* lock, never a gap lock, at any
//!    isolation level. A missing row is inserted inside the transaction (`INSERT ... ON
//!    DUPLICATE KEY UPDATE`, shared: `INSERT IGNORE`; the first insert does not wait), which
//!    holds it until the transaction ends, or locks it if another transaction made it
//!    meanwhile. In a caller's transaction, which may be REPEATABLE READ (where a locking read
//!    of a *missing* row takes next-key locks: it locks the gap, and waits for whoever holds
//!    the neighbouring key's row), the insert comes first, without waiting: it makes the row
//!    or locks the existing one (a record lock), and only a row held by another transaction
//!    (error 1205 at once) is then waited for with the locking read. (Under
//!    `innodb_rollback_on_timeout` that 1205 rolls back the caller's transaction: the call
//!    returns [`Error::TransactionAborted`].)
//!
//!    **Why not lock by inserting, always.** A row a transaction inserted and then rolls back
//!    vanishes, and InnoDB turns the locks others were *waiting* with on it into gap locks
//!    (`lock_rec_inherit_to_gap`), which they then hold until they end, blocking inserts of
//!    every other missing key in the gap: under READ COMMITTED it does so for the waits of
//!    `INSERT ... ON DUPLICATE KEY UPDATE`, `INSERT IGNORE` and `LOCK IN SHARE MODE`, and not
//!    for `SELECT ... FOR UPDATE`, which then finds nothing and keeps no lock. So a row not yet
//!    committed is waited for only with `FOR UPDATE` (`tests/mysql_gap_locks.rs`).
//!
//!    **What remains.** A gap lock can still come from (a) a caller's REPEATABLE READ
//!    transaction: at that level every wait on a vanished row becomes a gap lock, and the
//!    locking read that waited goes on to lock the gap (run such transactions at READ COMMITTED, see
//!    `docs/backends.md`); (b) a shared lock ([`acquire_shared_advisory_lock`](crate::acquire_shared_advisory_lock))
//!    that waited for a row another transaction inserted and then rolled back: it keeps a gap
//!    lock until its transaction ends. Both need a key whose row was never committed before,
//!    i.e. first locked inside a caller's transaction. The lock is held until COMMIT or
//!    ROLLBACK (`ROLLBACK TO SAVEPOINT` does not release it).
//! 3. **The snapshot is checked** (in a caller's transaction), in one statement on the row now held: its `generation` by a
//!    locking read (the latest committed) and by a plain subquery (a consistent read: a
//!    locking clause does not reach into subqueries). Every exclusive holder increments
//!    `generation` before it commits (step 4), so if the two differ this transaction's snapshot
//!    predates the commit of an earlier holder of the key, and a look for the row would miss
//!    what that holder created: a caller's REPEATABLE READ transaction that read before the
//!    call. It is refused with [`Error::UnsafeIsolation`] before anything is written. (MySQL
//!    cannot report the isolation level of the *current* transaction: `@@transaction_isolation`
//!    is the session's, and SeaORM sets a transaction's level with `SET TRANSACTION` before
//!    `BEGIN`, which does not change it; `information_schema.INNODB_TRX` is a cache refreshed
//!    only after 0.1 s without readers. So the check tests the hazard itself.)
//! 4. `UPDATE ... SET generation = generation + 1` (exclusive locks only), so that step 3 of
//!    later holders can see this one. It is needed in the crate's own transaction too: a
//!    caller's REPEATABLE READ transaction that read before the crate's own call committed
//!    sees that only by the count.
//!
//! The crate's own transaction is READ COMMITTED (`SET TRANSACTION ISOLATION LEVEL READ
//! COMMITTED` before `BEGIN`, as SeaORM sends it): every statement after the lock reads a fresh
//! snapshot, and InnoDB takes no gap locks for its reads; so step 3 is skipped there. Steps
//! 1, 2 and 4 are one statement when nobody else holds the key ([`acquire_own`]): an insert
//! that does not wait, makes the row with `generation` 1 or, on a committed row, locks it and
//! counts this holder (`ON DUPLICATE KEY UPDATE generation = generation + 1`); a row another
//! transaction holds or is inserting (1205 at once) is waited for by `UPDATE ... SET
//! generation = generation + 1` by primary key, which locks and counts in one statement. Under
//! READ COMMITTED InnoDB does not turn an `UPDATE`'s wait into a gap lock when the row
//! vanishes (as for `FOR UPDATE`, unlike the waits of `INSERT ... ON DUPLICATE KEY UPDATE`):
//! the `UPDATE` then changes nothing and the insert is tried again
//! (`tests/mysql_new_key_races.rs`). So a new key costs no commit of its own. The guarded insert is then `INSERT ... SELECT ... WHERE NOT EXISTS (...)` as on the other
//! backends, returning its row with MariaDB's `RETURNING`
//! ([`insert_returning`](super::insert_returning)).
//!
//! # Waits
//!
//! MariaDB bounds a lock wait per statement with `SET STATEMENT innodb_lock_wait_timeout = n
//! FOR ...` (and `WAIT n` / `NOWAIT` on locking reads): whole seconds (`WAIT 1.5` waits one
//! second and `WAIT 0.5` not at all), so a [`Wait::Timeout`] is rounded *up* to whole seconds
//! and never ends before the caller's bound; it may end up to a second after it. [`Wait::No`]
//! is 0: no wait. A timeout fails with error 1205, which rolls back only the statement unless the server runs with
//! `innodb_rollback_on_timeout` (then InnoDB rolls back the whole transaction, see below).
//! [`Wait::Forever`] waits in slices of [`FOREVER_SLICE_SECS`](super::lock_table::FOREVER_SLICE_SECS), so a caller that goes away
//! leaves its connection busy for at most one slice. InnoDB detects deadlocks when a wait
//! begins (error 1213) and then rolls back the whole transaction of its victim; its session
//! goes on in autocommit. A call on such a transaction writes nothing: the insert of step 2
//! runs only `WHERE @@in_transaction`, and the read of step 3 (before any write) checks
//! `@@in_transaction` and returns [`Error::TransactionAborted`]; so does a caller's
//! transaction that a lock wait timeout rolled back under `innodb_rollback_on_timeout`.
//!
//! Every lock statement also sets `max_statement_time = 0` for itself: a session's or the
//! server's `max_statement_time` is meant for the application's queries, and it would end a
//! lock wait the caller asked to last longer with error 1969, as PostgreSQL's
//! `statement_timeout` would (which the crate turns off for its waits there too); the wait is
//! bounded by `innodb_lock_wait_timeout` instead (`tests/mysql_statement_time.rs`).
//!
//! The number of seconds is the one value written into the SQL: `SET STATEMENT` takes no
//! parameters. It is an integer the crate computes from a [`Duration`](std::time::Duration); the key and
//! everything else are bound.
//!
//! # MySQL 8
//!
//! `SET STATEMENT` is MariaDB's (10.1.2+; `WAIT n` 10.3+; the guarded insert's `RETURNING` 10.5+). MySQL 8 bounds waits only with the
//! session's `innodb_lock_wait_timeout` (its `SET_VAR` hint does not take InnoDB variables),
//! which a dropped call would leave changed on a pooled connection. The crate does not guess: on a server that rejects the syntax
//! (error 1064) every call is refused with [`ServerRefusal::NotMariaDb`](crate::ServerRefusal::NotMariaDb) before anything is
//! written. Untested on MySQL 8.
//!
//! The statements' text is in [`lock_table`](super::lock_table), with the table.

// Compiled in every build: `mysql_lock_table` is public (a migration crate may build the crate
// without the feature); the lock code is reached only through `Backend::MySql`, which needs it.
#![cfg_attr(not(feature = "mysql"), allow(dead_code))]

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use super::lock_table::{
    LockRow, LockTable, count_statement, insert_statement, lock_statement, lock_table_error,
    own_insert_statement, read_statement, statement,
};
use super::lock_tables::{self, AskedFor};
use crate::backend::mode::Mode;
use crate::classify::{MySqlError, mysql_error};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

/// The statement [`acquire_in`] sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The locking read of the row ([`lock_statement`]).
    Read,
    /// The insert that makes the row or locks it ([`insert_statement`]).
    Insert,
}

/// Whose transaction a lock is taken in: that decides what a transaction the server rolled
/// back is reported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose {
    /// The crate's own: it is rolled back after any error anyway, so a lock error stays one.
    Own,
    /// A caller's: a transaction the server ended is [`Error::TransactionAborted`], so the
    /// caller retries the whole transaction instead of going on in autocommit.
    Callers,
}

/// Takes `key`'s row lock inside a caller's transaction `txn` (see [`acquire_in`]), the lock
/// table asked for each time.
pub(crate) async fn acquire(
    txn: &impl ConnectionTrait,
    key: LockKey,
    mode: Mode,
    deadline: Deadline,
) -> Result<(), Error> {
    let table = lock_tables::lock_table(txn, None).await?;
    acquire_in(txn, key, table, mode, deadline, Whose::Callers, None).await
}

/// Takes `key`'s row lock inside `txn` in `table`, the lock table its database uses
/// ([`lock_tables`], the answer kept for `asked_for`), then as [`acquire_row`] says. A lock
/// table found gone (the per-key table dropped: the switch to the slots) is asked for again,
/// and the lock taken in the table there is now.
pub(crate) async fn acquire_in(
    txn: &impl ConnectionTrait,
    key: LockKey,
    mut table: LockTable,
    mode: Mode,
    deadline: Deadline,
    whose: Whose,
    asked_for: Option<AskedFor>,
) -> Result<(), Error> {
    loop {
        match acquire_row(txn, key, table.row(key), mode, deadline, whose).await {
            Err(err @ Error::MissingLockTable { .. }) => {
                match lock_tables::after_missing(txn, asked_for, table).await? {
                    Some(now) => table = now,
                    None => return Err(err),
                }
            }
            locked => return locked,
        }
    }
}

/// Takes `key`'s row lock (on `row`) inside `txn` (the crate's own transaction or a caller's), waiting as
/// `deadline` says, then checks the snapshot and, for an exclusive lock, counts this holder
/// (see the module docs, steps 2 to 4).
///
/// A transaction the server has rolled back already (a deadlock, error 1213, or a lock wait
/// timeout under `innodb_rollback_on_timeout`) leaves its session in autocommit, where every
/// statement would commit on its own: the lock statement then writes nothing, and the read
/// that follows it (before anything is written) finds `@@in_transaction = 0` and returns
/// [`Error::TransactionAborted`] (in a caller's transaction).
///
/// # Cancel Safety
///
/// Dropped while waiting, the wait goes on on the server for at most one slice of
/// [`Wait::Forever`] or the caller's [`Wait::Timeout`]; a lock granted meanwhile belongs to
/// `txn` and ends with it (the crate's own transaction is dropped, which rolls it back).
async fn acquire_row(
    txn: &impl ConnectionTrait,
    key: LockKey,
    row: LockRow,
    mode: Mode,
    deadline: Deadline,
    whose: Whose,
) -> Result<(), Error> {
    if whose == Whose::Own && mode == Mode::Exclusive {
        return acquire_own(txn, key, row, deadline).await;
    }
    // A caller's transaction may be REPEATABLE READ, where a locking read of a *missing* row
    // locks the gap around it (next-key locks, which also wait for the holder of a
    // neighbouring key's row): there the lock starts with the insert that finds or makes the
    // row, without waiting, and only a row found held is waited for with the locking read.
    let mut step = match whose {
        Whose::Own => Step::Read,
        Whose::Callers => Step::Insert,
    };
    // Inserts so far: only the first one does not wait (see `insert_statement`).
    let mut inserts = 0;
    loop {
        let wait = normalize(deadline.left());
        let (err, statement_wait) = match step {
            Step::Read => match txn.query_one_raw(lock_statement(row, mode, wait)).await {
                Ok(Some(_)) => break,
                // No row: a key first locked in a caller's transaction, or one whose first
                // inserter rolled back while this one waited.
                Ok(None) => {
                    step = Step::Insert;
                    continue;
                }
                Err(err) => (err, wait),
            },
            Step::Insert => {
                let insert_wait = if inserts == 0 { Wait::No } else { wait };
                inserts += 1;
                match txn
                    .execute_raw(insert_statement(row, mode, insert_wait))
                    .await
                {
                    // Inserted, or found and locked; in autocommit nothing (step 3 finds out).
                    Ok(_) => break,
                    // Another transaction holds the row, or is inserting it: the locking read
                    // waits for it (unless the caller would not wait).
                    Err(err) if insert_wait == Wait::No && wait != Wait::No && timed_out(&err) => {
                        if whose == Whose::Callers && !in_transaction(txn).await? {
                            return Err(Error::TransactionAborted(err));
                        }
                        step = Step::Read;
                        continue;
                    }
                    Err(err) => (err, insert_wait),
                }
            }
        };
        let timed_out = timed_out(&err);
        let another_slice = statement_wait == Wait::Forever && timed_out;
        // A timeout rolls back the whole transaction under `innodb_rollback_on_timeout`: a
        // caller must hear that its transaction is gone, and waiting on would run outside it.
        if timed_out && (another_slice || whose == Whose::Callers) && !in_transaction(txn).await? {
            return Err(match whose {
                Whose::Callers => Error::TransactionAborted(err),
                Whose::Own => wait_error(err, key, deadline),
            });
        }
        if !another_slice {
            return Err(wait_error(err, key, deadline));
        }
    }
    // Step 3, the snapshot check, only in a caller's transaction. The crate's own is READ
    // COMMITTED and begun by this call: its every statement reads a fresh snapshot, and a
    // server that rolled it back (a deadlock, a timeout under `innodb_rollback_on_timeout`)
    // answered the lock statement with that error already.
    if whose == Whose::Callers {
        let row = match txn.query_one_raw(read_statement(row, mode)).await? {
            Some(row) => row,
            // In autocommit the lock statement inserted nothing: the row may be missing.
            None if !in_transaction(txn).await? => return Err(rolled_back(whose, key)),
            None => {
                return Err(Error::Database(DbErr::RecordNotFound(format!(
                    "the lock row of {key} in {} is missing while it is locked",
                    row.table()
                ))));
            }
        };
        if row.try_get::<u64>("", "in_txn")? == 0 {
            return Err(rolled_back(whose, key));
        }
        let latest: i64 = row.try_get("", "latest")?;
        // A snapshot without the row is older than its creation; no holder has counted itself in
        // it either, so it stands for 0.
        let seen: i64 = row.try_get::<Option<i64>>("", "seen")?.unwrap_or(0);
        if seen != latest {
            return Err(Error::UnsafeIsolation {
                level: format!(
                    "REPEATABLE READ and read before this call: its snapshot is older than the \
                     last commit under lock {key} (it sees {seen} holders of the key, {latest} \
                     have committed)"
                ),
            });
        }
    }
    if mode == Mode::Exclusive {
        txn.execute_raw(statement(
            format!(
                "UPDATE `{}` SET `generation` = `generation` + 1 {}",
                row.table(),
                row.where_key()
            ),
            row,
        ))
        .await?;
    }
    Ok(())
}

/// Steps 1, 2 and 4 in the crate's own transaction (READ COMMITTED, begun by this call; its
/// locks are exclusive): the insert that makes the key's row or locks the committed one, and
/// counts this holder, without waiting ([`own_insert_statement`]); a row another transaction
/// holds or is inserting is waited for by an `UPDATE` that locks and counts
/// ([`count_statement`]), whose wait leaves no gap lock behind; a row that vanished meanwhile
/// (its inserter rolled back) is inserted again. Uncontended, one statement, new key or not,
/// and no commit of its own. No snapshot check: every statement of a READ COMMITTED
/// transaction reads a fresh snapshot.
///
/// Both statements affect no row in autocommit: a transaction the server rolled back (a
/// deadlock, or a lock wait timeout under `innodb_rollback_on_timeout`, which the insert's
/// 1205 is too) ends the call with [`Error::LockTimeout`] before anything is written.
async fn acquire_own(
    txn: &impl ConnectionTrait,
    key: LockKey,
    row: LockRow,
    deadline: Deadline,
) -> Result<(), Error> {
    loop {
        match txn.execute_raw(own_insert_statement(row)).await {
            Ok(done) if done.rows_affected() > 0 => return Ok(()),
            Ok(_) => return Err(rolled_back(Whose::Own, key)),
            // Held, or being inserted, by another transaction: wait for it, unless the caller
            // would not wait.
            Err(err) if timed_out(&err) && normalize(deadline.left()) != Wait::No => {}
            Err(err) => return Err(wait_error(err, key, deadline)),
        }
        loop {
            let wait = normalize(deadline.left());
            match txn.execute_raw(count_statement(row, wait)).await {
                Ok(done) if done.rows_affected() > 0 => return Ok(()),
                // The row vanished (its inserter rolled back): insert it. (In autocommit the
                // insert affects no row either, and says so.)
                Ok(_) => break,
                // Another slice of a wait without a bound (in autocommit the next `UPDATE`
                // affects no row).
                Err(err) if wait == Wait::Forever && timed_out(&err) => {}
                Err(err) => return Err(wait_error(err, key, deadline)),
            }
        }
    }
}

/// The error for a transaction found no longer open (`@@in_transaction = 0`) before the call
/// wrote anything.
fn rolled_back(whose: Whose, key: LockKey) -> Error {
    let why = "the transaction is no longer open on the server (@@in_transaction = 0): the \
               server rolled it back (a deadlock, error 1213, or a lock wait timeout under \
               innodb_rollback_on_timeout) and the session runs in autocommit";
    match whose {
        Whose::Callers => Error::TransactionAborted(DbErr::Custom(why.to_owned())),
        // The crate's own transaction is begun by the call itself: only a timeout of this
        // call can have ended it.
        Whose::Own => Error::LockTimeout {
            key,
            row: None,
            timeout: None,
            source: Some(DbErr::Custom(why.to_owned())),
        },
    }
}

/// Whether a lock statement failed because its wait ran out (or it was told not to wait).
fn timed_out(err: &DbErr) -> bool {
    matches!(
        mysql_error(err),
        Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait)
    )
}

/// `Timeout(0)` means "do not wait", as on PostgreSQL.
pub(super) fn normalize(wait: Wait) -> Wait {
    match wait {
        Wait::Timeout(timeout) if timeout.is_zero() => Wait::No,
        other => other,
    }
}

/// A lock statement's error, typed by MySQL error number.
fn wait_error(err: DbErr, key: LockKey, deadline: Deadline) -> Error {
    match mysql_error(&err) {
        Some(MySqlError::LockWaitTimeout | MySqlError::LockNowait) => {
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
        Some(MySqlError::Deadlock) => Error::Deadlock { key, row: None },
        _ => lock_table_error(err),
    }
}

/// Whether `txn`'s session is in a transaction: after a deadlock, or a lock wait timeout
/// under `innodb_rollback_on_timeout`, the server has rolled the transaction back and the
/// session runs in autocommit.
pub(super) async fn in_transaction(txn: &impl ConnectionTrait) -> Result<bool, Error> {
    let row = txn
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT @@in_transaction AS in_txn",
        ))
        .await?;
    Ok(row
        .map(|row| row.try_get::<u64>("", "in_txn"))
        .transpose()?
        .is_some_and(|on| on != 0))
}
