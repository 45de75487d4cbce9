//! The seam for a batch's chunk ([`call::batch`](crate::call)): its own transaction and its
//! keys' locks in one statement, in one sorted order.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, Value};

use super::inserted::ChunkAnswer;
use super::locked_many::LockedMany;
use super::{Backend, Table, mysql, postgres, sqlite};
use crate::source::SessionId;
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey, Wait};

impl Backend {
    /// Begins the crate's own transaction for a batch's chunk of `keys` (sorted, distinct):
    /// on PostgreSQL a plain `BEGIN` whose isolation the lock's try checks, or after it refused
    /// the server's default (`read_committed`) READ COMMITTED set explicitly; on SQLite
    /// IMMEDIATE (its write lock is the chunk's lock), on MySQL READ COMMITTED (the lock rows
    /// are made inside it, by the lock: [`mysql::batch`]).
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

    /// Takes the locks of a batch's chunk, `keys` sorted and distinct, in that order, inside
    /// `txn` (the crate's own transaction or a savepoint of a caller's): on PostgreSQL one
    /// statement tries them all (`attempt` 0), and after a contended try one statement waits
    /// for them in order ([`postgres::batch`]); on MySQL one locking read of their lock-table
    /// rows ([`mysql::batch`]); on SQLite nothing (the write lock is held already, or inside a
    /// caller's transaction taken by the chunk's first write).
    /// `session` is a caller's transaction's (`None` for the crate's own).
    pub(crate) async fn lock_many(
        self,
        txn: Txn<'_>,
        keys: &[LockKey],
        deadline: Deadline,
        attempt: u32,
        session: Option<SessionId>,
    ) -> Result<LockedMany, Error> {
        match self {
            Backend::Postgres => {
                postgres::batch::lock_many(txn.plain(), keys, deadline, attempt).await
            }
            Backend::MySql => mysql::batch::lock_many(txn, keys, deadline, attempt, session).await,
            Backend::Sqlite => Ok(LockedMany::Locked),
        }
    }

    /// Whether a batch's chunk of new keys can be one statement on `conn` for a batch that
    /// waits as `wait` says: PostgreSQL on a pool ([`postgres::chunk_statement`]); SQLite for
    /// [`Wait::Forever`] (its write lock is the lock, waited for as long as the connection's
    /// `busy_timeout`, as a single call's one statement: [`sqlite::one_statement`]). MySQL's
    /// chunks take the locked path.
    pub(crate) fn has_chunk_statement(self, conn: &DatabaseConnection, wait: Wait) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres => postgres::fast_path::pool_of(conn).is_some(),
            Backend::Sqlite => wait == Wait::Forever,
            _ => {
                let _ = conn;
                false
            }
        }
    }

    /// The chunk's one statement, from `one_row` (SeaORM's insert of the chunk's first row
    /// with its `ON CONFLICT` and `RETURNING`), for `rows` rows of `width` `values` each and
    /// the chunk's `keys` (sorted, distinct): PostgreSQL's tries every key's lock
    /// ([`postgres::chunk_statement::statement`]), SQLite's is the multi-row insert
    /// ([`sqlite::one_statement::chunk_statement`]). `None` when the row's values are not
    /// plain placeholders.
    pub(crate) fn chunk_statement(
        self,
        one_row: &Statement,
        width: usize,
        rows: usize,
        values: Vec<Value>,
        keys: &[LockKey],
        wait: Wait,
    ) -> Option<Statement> {
        match self {
            Backend::Postgres => postgres::chunk_statement::statement(
                one_row,
                width,
                rows,
                values,
                keys,
                postgres::entity_waits::bound(wait),
            ),
            Backend::Sqlite => sqlite::one_statement::chunk_statement(one_row, width, rows, values),
            Backend::MySql => None,
        }
    }

    /// Runs the chunk's one statement on a connection of `conn`'s pool, returning only once
    /// its transaction has ended, after an error too (PostgreSQL:
    /// [`postgres::one_statement::run_all`]; SQLite's statement is its own transaction).
    pub(crate) async fn run_chunk_statement(
        self,
        conn: &DatabaseConnection,
        statement: Statement,
    ) -> Result<ChunkAnswer, DbErr> {
        #[cfg(feature = "postgres")]
        if let (Backend::Postgres, Some(pool)) = (self, postgres::fast_path::pool_of(conn)) {
            let rows = postgres::one_statement::run_all(pool, statement).await?;
            return postgres::chunk_statement::read(rows);
        }
        match self {
            Backend::Sqlite => Ok(ChunkAnswer::Inserted(conn.query_all_raw(statement).await?)),
            Backend::Postgres | Backend::MySql => Err(DbErr::Custom(
                "a batch's chunk in one statement on a backend without that path".to_owned(),
            )),
        }
    }
}
