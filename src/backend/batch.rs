//! The seam for a batch's chunk ([`call::batch`](crate::call)): its own transaction and its
//! keys' locks in one statement, in one sorted order.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::locked_many::LockedMany;
use super::{Backend, Table, mysql, postgres, sqlite};
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

impl Backend {
    /// Begins the crate's own transaction for a batch's chunk of `keys` (sorted, distinct):
    /// on PostgreSQL a plain `BEGIN` whose isolation the lock's try checks, or after it refused
    /// the server's default (`read_committed`) READ COMMITTED set explicitly; on SQLite IMMEDIATE (its write lock is the
    /// chunk's lock), on MySQL READ COMMITTED after making every key's lock row exist
    /// ([`mysql::batch::ensure_lock_rows`]).
    pub(crate) async fn begin_many(
        self,
        db: &DatabaseConnection,
        keys: &[LockKey],
        read_committed: bool,
        wait: Wait,
        table: Table,
    ) -> Result<Own, Error> {
        match self {
            Backend::Postgres if read_committed => postgres::begin_read_committed(db).await,
            Backend::Postgres => postgres::begin(db).await,
            Backend::Sqlite => sqlite::begin(db, wait, table).await,
            Backend::MySql => mysql::batch::begin(db, keys).await,
        }
    }

    /// Whether a verified unique index covers exactly `columns` of `table`, so that a batch's
    /// insert can be the one statement that finds which keys exist (`ON CONFLICT DO NOTHING
    /// RETURNING`, then a look for the rest only): asked of PostgreSQL's catalog, once per
    /// batch. Never assumed: `false` on the other backends, whose batches look first.
    pub(crate) async fn unique_index_covers<C: ConnectionTrait>(
        self,
        db: &C,
        schema: Option<&str>,
        table: &str,
        columns: &[&str],
    ) -> Result<bool, Error> {
        match self {
            Backend::Postgres => Ok(postgres::batch::unique_index_covers(
                db, schema, table, columns,
            )
            .await
            .map_err(Error::from_first_statement)?),
            Backend::Sqlite | Backend::MySql => Ok(false),
        }
    }

    /// Takes the locks of a batch's chunk, `keys` sorted and distinct, in that order, inside
    /// `txn` (the crate's own transaction or a savepoint of a caller's): on PostgreSQL one
    /// statement tries them all (`attempt` 0), and after a contended try one statement waits
    /// for them in order ([`postgres::batch`]); on MySQL one locking read of their lock-table
    /// rows ([`mysql::batch`]); on SQLite nothing (the write lock is held already, or inside a
    /// caller's transaction taken by the chunk's first write).
    pub(crate) async fn lock_many(
        self,
        txn: Txn<'_>,
        keys: &[LockKey],
        deadline: Deadline,
        attempt: u32,
    ) -> Result<LockedMany, Error> {
        match self {
            Backend::Postgres => {
                postgres::batch::lock_many(txn.plain(), keys, deadline, attempt).await
            }
            Backend::MySql => mysql::batch::lock_many(txn, keys, deadline).await,
            Backend::Sqlite => Ok(LockedMany::Locked),
        }
    }
}
