//! Which lock table a database's keys lock rows of, the per-key table or the slots (see
//! [`lock_table`](super::lock_table#two-tables-slots-or-a-row-per-key), which says why the
//! database decides): the catalog is asked once per pool, and once per database for callers'
//! transactions, and asked again when a lock statement finds its table gone.

use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::lock_table::{LockTable, MYSQL_LOCK_TABLE};
use super::slots::MYSQL_LOCK_SLOTS_TABLE;
use crate::Error;
use crate::source::{DbId, PoolId, SessionId};

/// What the answer is kept for: a pool (the crate's own transactions) with the database its
/// options name, or the database of a caller's session.
///
/// A pool is known by its address ([`PoolId`]), which a pool made after it is gone may get
/// again, on another database: kept for the address alone, the answer for a database that has
/// only the slots would be used for one that still has the per-key table, whose keys older
/// versions lock by their own rows (`tests/mysql_slots_probe.rs`
/// `a_pools_choice_of_lock_table_does_not_outlive_the_pool`). So the pool's database is part
/// of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AskedFor {
    Pool(PoolId, Option<DbId>),
    Database(DbId),
}

impl AskedFor {
    /// For the crate's own transaction on `pool` (to the database `target`), or for a
    /// caller's on `session`; `None` when neither is known (the answer is then asked for
    /// every time).
    pub(crate) fn of(
        pool: Option<PoolId>,
        target: Option<DbId>,
        session: Option<SessionId>,
    ) -> Option<AskedFor> {
        match (pool, session) {
            (Some(pool), _) => Some(AskedFor::Pool(pool, target)),
            (None, Some(session)) => Some(AskedFor::Database(session.db)),
            (None, None) => None,
        }
    }
}

/// Answers kept per [`AskedFor`] (a pool, or a caller's database): what the catalog said here,
/// and whether a pool's sessions are READ COMMITTED
/// ([`one_statement`](super::one_statement::applies)). Nothing is kept for `None`.
pub(crate) struct Kept<V>(LazyLock<RwLock<HashMap<AskedFor, V>>>);

impl<V: Copy> Kept<V> {
    /// Nothing kept yet.
    pub(crate) const fn new() -> Kept<V> {
        Kept(LazyLock::new(|| RwLock::new(HashMap::new())))
    }

    /// The answer kept for `asked_for`.
    pub(crate) fn get(&self, asked_for: Option<AskedFor>) -> Option<V> {
        let asked_for = asked_for?;
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&asked_for)
            .copied()
    }

    /// Keeps `answer` for `asked_for`.
    pub(crate) fn keep(&self, asked_for: Option<AskedFor>, answer: V) {
        if let Some(asked_for) = asked_for {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(asked_for, answer);
        }
    }

    /// Forgets what was kept for `asked_for`.
    pub(crate) fn forget(&self, asked_for: Option<AskedFor>) {
        if let Some(asked_for) = asked_for {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&asked_for);
        }
    }
}

/// What the catalog said.
static KNOWN: Kept<LockTable> = Kept::new();

/// The table `db`'s keys lock rows of, as kept for `asked_for`, or asked (one statement).
///
/// # Errors
///
/// [`Error::MissingLockTable`] when the database has neither table.
pub(crate) async fn lock_table(
    db: &impl ConnectionTrait,
    asked_for: Option<AskedFor>,
) -> Result<LockTable, Error> {
    if let Some(known) = KNOWN.get(asked_for) {
        return Ok(known);
    }
    let table = ask(db).await?;
    KNOWN.keep(asked_for, table);
    Ok(table)
}

/// After a lock statement found `used` gone (error 1146): forgets what was kept and asks
/// again. `Some` with the table to lock in now, `None` when the answer is the same (the error
/// stands).
pub(crate) async fn after_missing(
    db: &impl ConnectionTrait,
    asked_for: Option<AskedFor>,
    used: LockTable,
) -> Result<Option<LockTable>, Error> {
    KNOWN.forget(asked_for);
    let now = lock_table(db, asked_for).await?;
    Ok((now != used).then_some(now))
}

/// The catalog's answer, or [`Error::MissingLockTable`] when the database has neither table.
async fn ask(db: &impl ConnectionTrait) -> Result<LockTable, Error> {
    present(db).await?.ok_or_else(|| Error::MissingLockTable {
        table: MYSQL_LOCK_SLOTS_TABLE,
        source: DbErr::Custom(format!(
            "neither `{MYSQL_LOCK_SLOTS_TABLE}` nor `{MYSQL_LOCK_TABLE}` is in the \
             connection's database"
        )),
    })
}

/// One statement on the catalog: the per-key table while it exists (every version locks its
/// rows), else the slots; `None` when neither is in the connection's database (also what
/// `verify` reports).
pub(crate) async fn present(db: &impl ConnectionTrait) -> Result<Option<LockTable>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT TABLE_NAME AS name FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?)",
            [
                Value::from(MYSQL_LOCK_TABLE),
                Value::from(MYSQL_LOCK_SLOTS_TABLE),
            ],
        ))
        .await?;
    let names = rows
        .iter()
        .map(|row| row.try_get::<String>("", "name"))
        .collect::<Result<Vec<_>, DbErr>>()?;
    Ok(if names.iter().any(|name| name == MYSQL_LOCK_TABLE) {
        Some(LockTable::PerKey)
    } else if names.iter().any(|name| name == MYSQL_LOCK_SLOTS_TABLE) {
        Some(LockTable::Slots)
    } else {
        None
    })
}
