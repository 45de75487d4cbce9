//! The one seam where backends differ: how creators of the same key are serialised.
//!
//! - PostgreSQL ([`postgres`]): a READ COMMITTED transaction and a transaction-scoped advisory
//!   lock on the key. Only callers with the same key wait for each other.
//! - SQLite ([`sqlite`]): no advisory locks; SQLite has one write lock per database file, and
//!   an IMMEDIATE transaction takes it before the look, which serialises every creator (of any
//!   key) across connections and processes.
//! - MySQL/MariaDB ([`mysql`]): a READ COMMITTED transaction and a transaction-scoped InnoDB
//!   row lock on the key's row of the crate's lock table. Only callers with the same key wait
//!   for each other. The row is made to exist before `BEGIN`.
//! - Anything else, or a backend whose feature (`postgres`, `sqlite`, `mysql`) is off:
//!   [`Error::UnsupportedBackend`], never a wrong answer.
//!
//! Each backend's folder holds its SQL, its lock, its error codes and its own paths; the core
//! (one call's path in [`call`](crate::call), the waiting room, keys, outcomes, errors) reaches
//! them only through [`Backend`]. **A new backend** is one new folder here and one arm in each
//! method of [`Backend`] (and of [`Backend::of`], which the compiler then asks for everywhere
//! else: every `match` on it is exhaustive).

pub(crate) mod inserted;
pub(crate) mod key_columns;
pub(crate) mod mode;
pub(crate) mod mysql;
pub(crate) mod one_statement;
pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
mod tests;

use sea_orm::sea_query::TableRef;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    Statement,
};

use self::inserted::Inserted;
use self::key_columns::KeyColumns;
use self::mode::Mode;
use self::one_statement::Answer;
use crate::call_chain::{self, At, Chain, Held};
use crate::classify::{ErrorClass, classify};
use crate::source::{PoolId, SessionId};
use crate::transaction::{Own, Txn};
use crate::wait::{CallId, Deadline};
use crate::{Error, LockKey, Wait};

/// Why a backend is refused outright.
const NOT_SERVED: &str = "serve create_once in this build: PostgreSQL needs the crate's \
     `postgres` feature, SQLite its `sqlite` feature, MySQL and MariaDB its `mysql` feature \
     (all on by default)";

/// The table of the entity a call is for (SQLite takes its write lock with a write to it that
/// writes nothing: see [`sqlite`]). A function, so that backends that do not need it build
/// nothing.
pub(crate) type Table = fn() -> TableRef;

/// How creators of the same key are kept apart on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// PostgreSQL: `pg_advisory_xact_lock` on the key (the `postgres` feature).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
    /// SQLite: the write lock of an IMMEDIATE transaction (the `sqlite` feature).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
    /// MySQL/MariaDB: a row lock in the crate's lock table (the `mysql` feature).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    MySql,
}

impl Backend {
    pub(crate) fn of(backend: DbBackend) -> Result<Backend, Error> {
        match backend {
            #[cfg(feature = "postgres")]
            DbBackend::Postgres => Ok(Backend::Postgres),
            #[cfg(feature = "sqlite")]
            DbBackend::Sqlite => Ok(Backend::Sqlite),
            #[cfg(feature = "mysql")]
            DbBackend::MySql => Ok(Backend::MySql),
            other => Err(Error::UnsupportedBackend {
                backend: other,
                what: NOT_SERVED,
            }),
        }
    }

    /// What a call for `key` on a caller's transaction (`session`) holds while its
    /// `make_data` runs, when the crate knows.
    pub(crate) fn held_in(self, key: LockKey, session: SessionId) -> Option<Held> {
        match self {
            Backend::Postgres | Backend::MySql => Some(Held::Key {
                key,
                at: At::Session(session),
            }),
            // The caller's transaction mode decides when SQLite's write lock is taken.
            Backend::Sqlite => None,
        }
    }

    /// What a call for `key` on a connection of `db` holds while its `make_data` runs: the
    /// key (its session learnt when the lock is taken, see
    /// [`Learning`](crate::call_chain::Learning)), or on SQLite the write lock of the pool's
    /// file (`file`: whether to name it, a system call: only a call whose `make_data` may run
    /// needs it).
    pub(crate) fn held_on(
        self,
        key: LockKey,
        db: &DatabaseConnection,
        call: CallId,
        file: bool,
    ) -> Held {
        let pool = PoolId::of(db);
        match self {
            Backend::Postgres | Backend::MySql => Held::Key {
                key,
                at: At::Own { pool, call },
            },
            Backend::Sqlite => Held::SqliteWriteLock {
                pool,
                file: if file { sqlite::file_of_pool(db) } else { None },
            },
        }
    }

    /// Whether a call for `key` on a connection of `db` would wait for an enclosing call in
    /// `chain` before it reaches the database: for its turn among the pool's callers, or on
    /// SQLite for the write lock the enclosing call's own transaction holds on the same file.
    /// (Whether it would wait for an enclosing call's lock on the server is known once it
    /// asks for the lock: [`Backend::lock`].)
    pub(crate) fn waits_on_connection(
        self,
        chain: &Chain,
        key: LockKey,
        db: &DatabaseConnection,
    ) -> bool {
        match self {
            Backend::Postgres | Backend::MySql => chain.holds_turn_on(key, PoolId::of(db)),
            Backend::Sqlite => {
                chain.holds_a_sqlite_write_lock()
                    && chain.holds_sqlite_file(PoolId::of(db), sqlite::file_of_pool(db))
            }
        }
    }

    /// Whether a call for `key` on a caller's transaction on `session` would wait for an
    /// enclosing call in `chain`: one holds the key (on SQLite: the file's write lock, in
    /// its own transaction) in the same database on another session.
    pub(crate) fn waits_in(self, chain: &Chain, key: LockKey, session: SessionId) -> bool {
        match self {
            Backend::Postgres | Backend::MySql => chain.would_wait_for_itself(key, session),
            Backend::Sqlite => chain.holds_sqlite_file(None, Some(session.db)),
        }
    }

    /// Begins the crate's own transaction on `db` for a call on `key` of `table`: on
    /// PostgreSQL a plain `BEGIN` whose isolation the lock checks ([`postgres::begin`]), on
    /// SQLite one that takes the write lock here, waiting as `deadline` has left
    /// ([`sqlite::begin`]), on MySQL READ COMMITTED after making the key's lock row exist
    /// ([`mysql::begin`]).
    pub(crate) async fn begin(
        self,
        db: &DatabaseConnection,
        key: LockKey,
        deadline: Deadline,
        table: Table,
    ) -> Result<Own, Error> {
        match self {
            Backend::Postgres => postgres::begin(db).await,
            Backend::Sqlite => sqlite::begin(db, deadline.left(), table).await,
            Backend::MySql => mysql::begin(db, key).await,
        }
    }

    /// After [`Backend::lock`] refused the server's default isolation
    /// ([`Error::UnsafeIsolation`]): begins again with READ COMMITTED set explicitly, on the
    /// backends where the default can be stricter and the check is made after `BEGIN`
    /// (PostgreSQL). `None` elsewhere: the error stands.
    pub(crate) async fn begin_read_committed(
        self,
        db: &DatabaseConnection,
    ) -> Option<Result<Own, Error>> {
        match self {
            Backend::Postgres => Some(postgres::begin_read_committed(db).await),
            Backend::Sqlite | Backend::MySql => None,
        }
    }

    /// Takes the per-key lock inside `txn` (the crate's own transaction or a caller's).
    ///
    /// On SQLite the write lock was already taken by [`Backend::begin`] (or, inside a
    /// caller's transaction, is taken by the guarded insert itself, which reads and writes in
    /// one statement under SQLite's write lock).
    ///
    /// A key an enclosing call (one whose `make_data` this call runs in) holds in the same
    /// database on another session would be waited for forever: that is refused with
    /// [`Error::Reentrant`] before any wait. On PostgreSQL the statement that tries the lock
    /// names the session (no extra round trip); on MySQL/MariaDB one more statement asks,
    /// only when an enclosing call holds the key or this call's `make_data` may run.
    pub(crate) async fn lock(
        self,
        txn: Txn<'_>,
        key: LockKey,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let chain = Chain::current();
        let refuse = |session: SessionId| {
            if chain.would_wait_for_itself(key, session) {
                Err(Error::Reentrant { key })
            } else {
                Ok(())
            }
        };
        let session = match self {
            Backend::Postgres => Some(postgres::lock_in(txn, key, deadline, refuse).await?),
            Backend::Sqlite => None,
            Backend::MySql => {
                // MySQL's lock statements cannot name the session: one more statement asks,
                // only when an enclosing call holds the key or this call's `make_data` may run.
                let session = if chain.holds(key) || call_chain::is_learning(deadline.call()) {
                    let session = self.session_of(&txn).await?;
                    refuse(session)?;
                    Some(session)
                } else {
                    None
                };
                mysql::lock_in(txn, key, deadline).await?;
                session
            }
        };
        if let Some(session) = session {
            call_chain::learnt(deadline.call(), session);
        }
        Ok(())
    }

    /// Takes an advisory lock for a caller ([`advisory_lock`](crate::advisory_lock)); SQLite has
    /// none.
    pub(crate) async fn advisory_lock(
        self,
        txn: &DatabaseTransaction,
        key: LockKey,
        mode: Mode,
        deadline: Deadline,
    ) -> Result<(), Error> {
        match self {
            Backend::Postgres => postgres::lock::acquire_in(txn, key, mode, deadline, |_| Ok(()))
                .await
                .map(drop),
            Backend::MySql => mysql::lock::acquire(txn, key, mode, deadline).await,
            Backend::Sqlite => Err(Error::UnsupportedBackend {
                backend: DbBackend::Sqlite,
                what: sqlite::NO_ADVISORY_LOCKS,
            }),
        }
    }
}

impl Backend {
    /// Asks the server which session and database `txn` runs in: one round trip (on SQLite a
    /// pragma, in process).
    ///
    /// # Errors
    ///
    /// [`Error::TransactionAborted`] when `txn` was aborted already, [`Error::Database`] for
    /// anything else.
    ///
    /// # Cancel Safety
    ///
    /// A read: dropped, it leaves nothing behind.
    pub(crate) async fn session_of<C: ConnectionTrait>(self, txn: &C) -> Result<SessionId, Error> {
        let row = txn
            .query_one_raw(self.session_statement())
            .await
            .map_err(Error::from_first_statement)?
            .ok_or_else(|| {
                Error::Database(DbErr::RecordNotFound(
                    "the statement that names the session returned no row".to_owned(),
                ))
            })?;
        Ok(self.session_of_row(&row)?)
    }

    /// The statement that asks the server which session (and database) a caller's
    /// transaction runs on.
    fn session_statement(self) -> Statement {
        let (backend, sql) = match self {
            Backend::Postgres => (
                DbBackend::Postgres,
                format!("SELECT {}", postgres::SESSION_COLUMNS),
            ),
            Backend::Sqlite => (DbBackend::Sqlite, sqlite::SESSION_SQL.to_owned()),
            Backend::MySql => (DbBackend::MySql, mysql::SESSION_SQL.to_owned()),
        };
        Statement::from_string(backend, sql)
    }

    /// The session named by the row of [`session_statement`](Backend::session_statement).
    fn session_of_row(self, row: &QueryResult) -> Result<SessionId, DbErr> {
        match self {
            Backend::Postgres => postgres::session_of_row(row),
            Backend::Sqlite => sqlite::session_of_row(row),
            Backend::MySql => mysql::session_of_row(row),
        }
    }
}

/// The one-statement path ([`call::one_statement`](crate::call)): a new key in one statement
/// where a unique index covers exactly the key's columns.
impl Backend {
    /// SeaORM's name of this backend.
    pub(crate) fn db_backend(self) -> DbBackend {
        match self {
            Backend::Postgres => DbBackend::Postgres,
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::MySql => DbBackend::MySql,
        }
    }

    /// The condition the one statement's insert carries, on a backend that has the path for a
    /// call that waits as `wait` says (PostgreSQL: the lock was granted; its try never waits).
    /// SQLite: none, its write lock is the lock, waited for as long as the connection's
    /// `busy_timeout`, so only for [`Wait::Forever`] (a bounded wait takes the locked path,
    /// which bounds it). MySQL has no such path yet: `None`.
    pub(crate) fn one_statement_condition(self, wait: Wait) -> Option<&'static str> {
        match self {
            Backend::Postgres => Some(postgres::one_statement::LOCK_GRANTED),
            Backend::Sqlite if wait == Wait::Forever => Some(sqlite::one_statement::NO_CONDITION),
            Backend::Sqlite | Backend::MySql => None,
        }
    }

    /// Whether `table` (in `schema`) has a unique index over exactly `columns`, each of a type
    /// that stores its part of the key (`values`) exactly, on a server whose locks are real:
    /// the catalog's answer, one or two round trips.
    pub(crate) async fn key_is_unique_indexed<C: ConnectionTrait>(
        self,
        db: &C,
        schema: Option<&str>,
        table: &str,
        columns: &[&str],
        values: &[sea_orm::Value],
    ) -> Result<bool, DbErr> {
        match self {
            Backend::Postgres => {
                let statement = postgres::catalog::statement(schema, table, columns);
                match db.query_one_raw(statement).await? {
                    Some(row) => postgres::catalog::read(&row, |part, column_type| {
                        postgres::catalog::stores_exactly(&values[part], column_type)
                    }),
                    None => Ok(false),
                }
            }
            // An attached database's tables are not looked up.
            Backend::Sqlite if schema.is_some() => Ok(false),
            Backend::Sqlite => {
                sqlite::catalog::unique_index_covers(db, table, columns, |part, declared| {
                    sqlite::catalog::stores_exactly(&values[part], declared)
                })
                .await
            }
            Backend::MySql => Ok(false),
        }
    }

    /// The one statement: `insert` (built with [`one_statement_condition`]) with the try for
    /// `key`'s lock around it where the backend takes one.
    ///
    /// [`one_statement_condition`]: Backend::one_statement_condition
    pub(crate) fn one_statement(self, insert: Statement, key: LockKey) -> Statement {
        match self {
            Backend::Postgres => postgres::one_statement::wrap(insert, key),
            Backend::Sqlite | Backend::MySql => insert,
        }
    }

    /// The values the one statement binds after the insert's ([`one_statement`]): the lock
    /// key's, where the backend takes one.
    ///
    /// [`one_statement`]: Backend::one_statement
    pub(crate) fn one_statement_values(self, key: LockKey) -> Vec<sea_orm::Value> {
        match self {
            Backend::Postgres => postgres::one_statement::lock_values(key),
            Backend::Sqlite | Backend::MySql => Vec::new(),
        }
    }

    /// Runs the one statement on a connection of `conn`'s pool. PostgreSQL: through sqlx, so
    /// that after an error the call returns only once the statement's transaction has ended
    /// and released the lock ([`postgres::one_statement::run`]).
    pub(crate) async fn run_one_statement(
        self,
        conn: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        #[cfg(feature = "postgres")]
        if let (Backend::Postgres, Some(pool)) = (self, postgres::fast_path::pool_of(conn)) {
            return postgres::one_statement::run(pool, statement).await;
        }
        conn.query_one_raw(statement).await
    }

    /// What the one statement answered.
    pub(crate) fn read_one_statement(self, row: Option<QueryResult>) -> Result<Answer, DbErr> {
        match self {
            Backend::Postgres => postgres::one_statement::read(row),
            Backend::Sqlite | Backend::MySql => sqlite::one_statement::read(row),
        }
    }

    /// Whether the one statement's error means the path does not apply any more, and the call
    /// takes the locked path: PostgreSQL found no unique index for its `ON CONFLICT` (42P10,
    /// the index was dropped) or a serialization failure (40001: a server whose default
    /// isolation is REPEATABLE READ); SQLite's generic error (it has no code of its own for
    /// an `ON CONFLICT` that matches no index; the locked path meets any other cause again).
    pub(crate) fn one_statement_fell_through(self, err: &DbErr) -> bool {
        matches!(
            classify(err),
            ErrorClass::NoArbiterIndex | ErrorClass::SerializationFailure | ErrorClass::SqliteError
        )
    }
}

/// What the schema says about an entity's key ([`key_schema`](crate::key_schema)): read from
/// each backend's catalog, every name bound.
impl Backend {
    /// The key columns of `table` (in `schema`) as the catalog has them: each one's type as
    /// the database writes it (`None`: the table has no such column), in the order of
    /// `columns`, and whether a unique index (or the primary key) has only key columns, so
    /// that no two rows share a key. `None` when the table is not found (on SQLite, in an
    /// attached database: not looked up). One or two round trips (SQLite: pragmas).
    pub(crate) async fn key_columns<C: ConnectionTrait>(
        self,
        db: &C,
        schema: Option<&str>,
        table: &str,
        columns: &[&str],
    ) -> Result<Option<KeyColumns>, DbErr> {
        match self {
            Backend::Postgres => {
                let statement = postgres::catalog::key_columns_statement(schema, table, columns);
                postgres::catalog::read_key_columns(&db.query_all_raw(statement).await?)
            }
            Backend::Sqlite if schema.is_some() => Ok(None),
            Backend::Sqlite => sqlite::catalog::key_columns(db, table, columns).await,
            Backend::MySql => mysql::catalog::key_columns(db, schema, table, columns).await,
        }
    }

    /// Whether a column of `column_type` (as [`key_columns`](Backend::key_columns) wrote it)
    /// holds a key part bound as `value`: `false` only for pairs the backend is known to
    /// refuse or to compare as another type (text and integers); a type it does not know
    /// fits.
    pub(crate) fn key_part_fits(self, value: &sea_orm::Value, column_type: &str) -> bool {
        match self {
            Backend::Postgres => postgres::catalog::fits(value, column_type),
            Backend::Sqlite => sqlite::catalog::fits(value, column_type),
            Backend::MySql => mysql::catalog::fits(value, column_type),
        }
    }

    /// MySQL/MariaDB: whether the crate's lock table exists (`None` on backends without one).
    pub(crate) async fn lock_table_exists<C: ConnectionTrait>(
        self,
        db: &C,
    ) -> Result<Option<bool>, DbErr> {
        match self {
            Backend::MySql => mysql::catalog::lock_table_exists(db).await.map(Some),
            Backend::Postgres | Backend::Sqlite => Ok(None),
        }
    }
}

/// What [`Backend::lock_many`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockedMany {
    /// Every key is held until the scope ends.
    Locked,
    /// Not yet, and nothing is held that the scope's rollback does not release: roll the scope
    /// back, begin it again, and call again with the next attempt (a contended try on
    /// PostgreSQL, a slice of [`Wait::Forever`] that ran out).
    Again,
}

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

/// The waits of the call's own statements on the entity table (the guarded insert, the update)
/// under the key's lock: on MySQL/MariaDB InnoDB's gap locks and the table's AUTO-INC lock can
/// still make them wait ([`mysql::entity_waits`]); PostgreSQL's and SQLite's lock keeps every
/// creator of the key away, and their statements are left as they are.
impl Backend {
    /// `statement`, its lock waits bounded by `wait` where the backend needs it (MySQL).
    pub(crate) fn bound_entity_wait(self, statement: Statement, wait: Wait) -> Statement {
        match self {
            Backend::MySql => mysql::entity_waits::bounded(statement, wait),
            Backend::Postgres | Backend::Sqlite => statement,
        }
    }

    /// The error of a statement on the entity table, typed as a lock wait's where it was one
    /// (MySQL: [`mysql::entity_waits::entity_wait_error`]); any other error as it is.
    pub(crate) async fn entity_wait_error(
        self,
        txn: &Txn<'_>,
        err: Error,
        key: LockKey,
        deadline: Deadline,
    ) -> Error {
        match self {
            Backend::MySql => {
                let whose = mysql::whose(txn);
                mysql::entity_waits::entity_wait_error(txn, err, key, deadline, whose).await
            }
            Backend::Postgres | Backend::Sqlite => err,
        }
    }
}

/// Runs the guarded insert (`INSERT ... SELECT ... WHERE NOT EXISTS ... RETURNING`), which
/// returns the row it inserted (MySQL: MariaDB's `RETURNING`, naming `columns`, which
/// sea-query does not render for MySQL; its lock waits bounded by `wait`, what is left of the
/// call's: [`mysql::entity_waits::bounded`]).
pub(crate) async fn insert_returning<C: ConnectionTrait>(
    db: &C,
    insert: Statement,
    columns: &[&str],
    wait: Wait,
) -> Result<Inserted, DbErr> {
    match db.get_database_backend() {
        DbBackend::MySql => mysql::insert_returning(db, insert, columns, wait).await,
        _ => Ok(match db.query_one_raw(insert).await? {
            Some(row) => Inserted::Row(row),
            None => Inserted::Nothing,
        }),
    }
}
