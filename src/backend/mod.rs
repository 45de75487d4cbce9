//! The one seam where backends differ: how creators of the same key are serialised.
//!
//! - PostgreSQL ([`postgres`]): a READ COMMITTED transaction and a transaction-scoped advisory
//!   lock on the key. Only callers with the same key wait for each other.
//! - SQLite ([`sqlite`]): no advisory locks; SQLite has one write lock per database file, and
//!   an IMMEDIATE transaction takes it before the look, which serialises every creator (of any
//!   key) across connections and processes.
//! - MySQL/MariaDB ([`mysql`]): a READ COMMITTED transaction and a transaction-scoped InnoDB
//!   row lock on the key's row of the crate's lock table. Only callers with the same key wait
//!   for each other. The lock makes the key's row inside the transaction (a batch's chunk:
//!   all its rows, in one statement in key order).
//! - Anything else, or a backend whose feature (`postgres`, `sqlite`, `mysql`) is off:
//!   [`Error::UnsupportedBackend`], never a wrong answer.
//!
//! Each backend's folder holds its SQL, its lock, its error codes and its own paths; the core
//! (one call's path in [`call`](crate::call), the waiting room, keys, outcomes, errors) reaches
//! them only through [`Backend`]. **A new backend** is one new folder here and one arm in each
//! method of [`Backend`] (and of [`Backend::of`], which the compiler then asks for everywhere
//! else: every `match` on it is exhaustive).

pub(crate) mod batch;
pub(crate) mod inserted;
pub(crate) mod key_columns;
pub(crate) mod key_schema;
pub(crate) mod locked_many;
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
use self::mode::Mode;
use crate::call_chain::{self, At, Chain, Held};
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
    /// SeaORM's name of this backend.
    pub(crate) fn db_backend(self) -> DbBackend {
        match self {
            Backend::Postgres => DbBackend::Postgres,
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::MySql => DbBackend::MySql,
        }
    }

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

    /// Begins the crate's own transaction on `db` for a call on `table`: on
    /// PostgreSQL a plain `BEGIN` whose isolation the lock checks ([`postgres::begin`]), on
    /// SQLite one that takes the write lock here, waiting as `deadline` has left
    /// ([`sqlite::begin`]), on MySQL READ COMMITTED ([`mysql::begin`]; the lock makes the
    /// key's lock row).
    pub(crate) async fn begin(
        self,
        db: &DatabaseConnection,
        deadline: Deadline,
        table: Table,
    ) -> Result<Own, Error> {
        match self {
            Backend::Postgres => postgres::begin(db).await,
            Backend::Sqlite => sqlite::begin(db, deadline.left(), table).await,
            Backend::MySql => mysql::begin(db).await,
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
    ///
    /// `session` is the caller's transaction's, when `txn` is one (MySQL keeps which lock table
    /// the database uses per database: [`mysql::lock_tables`]).
    pub(crate) async fn lock(
        self,
        txn: Txn<'_>,
        key: LockKey,
        deadline: Deadline,
        session: Option<SessionId>,
    ) -> Result<(), Error> {
        let chain = Chain::current();
        let refuse = |session: SessionId| {
            if chain.would_wait_for_itself(key, session) {
                Err(Error::Reentrant { key })
            } else {
                Ok(())
            }
        };
        let learnt = match self {
            Backend::Postgres => Some(postgres::lock_in(txn, key, deadline, refuse).await?),
            Backend::Sqlite => None,
            Backend::MySql => {
                // The lock is the key's slot on a database that locks slots: an enclosing call
                // that holds another key of the slot holds it too.
                let table = mysql::lock_table_of(&txn, session).await?;
                let lock = mysql::chain_lock(table, key);
                // MySQL's lock statements cannot name the session: one more statement asks,
                // only when an enclosing call holds the lock or this call's `make_data` may run.
                let learnt = if chain.holds(lock) || call_chain::is_learning(deadline.call()) {
                    let learnt = match session {
                        Some(session) => session,
                        None => self.session_of(&txn).await?,
                    };
                    if chain.would_wait_for_itself(lock, learnt) {
                        return Err(Error::Reentrant { key });
                    }
                    Some(learnt)
                } else {
                    None
                };
                mysql::lock_in(txn, key, table, deadline, session.or(learnt)).await?;
                learnt
            }
        };
        if let Some(session) = learnt {
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

/// The waits of the call's own statements on the entity table (the guarded insert, the update)
/// under the key's lock: on MySQL/MariaDB InnoDB's gap locks and the table's AUTO-INC lock can
/// still make them wait ([`mysql::entity_waits`]); on PostgreSQL a writer that bypasses the
/// lock ([`postgres::entity_waits`]). SQLite's write lock keeps every writer away.
impl Backend {
    /// `statement`, its lock waits bounded by `wait` where the backend needs it (MySQL).
    pub(crate) fn bound_entity_wait(self, statement: Statement, wait: Wait) -> Statement {
        match self {
            Backend::MySql => mysql::entity_waits::bounded(statement, wait),
            Backend::Postgres | Backend::Sqlite => statement,
        }
    }

    /// Runs `statement` (on the entity table, in `db`) with its lock waits bounded by `wait`
    /// where the backend bounds them around it (PostgreSQL: [`postgres::entity_waits::bounded`]);
    /// as it is otherwise.
    pub(crate) async fn entity_waits_bounded<C, R, F>(
        self,
        db: &C,
        wait: Wait,
        statement: F,
    ) -> Result<R, DbErr>
    where
        C: ConnectionTrait,
        F: Future<Output = Result<R, DbErr>>,
    {
        match self {
            Backend::Postgres => postgres::entity_waits::bounded(db, wait, statement).await,
            Backend::Sqlite | Backend::MySql => statement.await,
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
            Backend::Postgres | Backend::Sqlite => self.statement_wait_error(err, key, deadline),
        }
    }

    /// [`entity_wait_error`](Backend::entity_wait_error) for a statement that needs no
    /// transaction to tell (PostgreSQL: by SQLSTATE alone); SQLite's and MySQL's errors as
    /// they are.
    pub(crate) fn statement_wait_error(
        self,
        err: Error,
        key: LockKey,
        deadline: Deadline,
    ) -> Error {
        match self {
            Backend::Postgres => postgres::entity_waits::entity_wait_error(err, key, deadline),
            Backend::Sqlite | Backend::MySql => err,
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
        DbBackend::Postgres => {
            let row = Backend::Postgres
                .entity_waits_bounded(db, wait, db.query_one_raw(insert))
                .await?;
            Ok(match row {
                Some(row) => Inserted::Row(row),
                None => Inserted::Nothing,
            })
        }
        _ => Ok(match db.query_one_raw(insert).await? {
            Some(row) => Inserted::Row(row),
            None => Inserted::Nothing,
        }),
    }
}
