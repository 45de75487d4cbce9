//! The seam for the one-statement path ([`call::one_statement`](crate::call)): a new key in
//! one statement where a unique index covers exactly the key's columns.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, Statement};

use super::inserted::Answer;
use super::{Backend, mysql, postgres, sqlite};
use crate::classify::{ErrorClass, classify};
use crate::source::PoolId;
use crate::{LockKey, Wait};

/// How a backend's one statement is built ([`Backend::one_statement_shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `INSERT ... SELECT vals WHERE condition ON CONFLICT (key columns) DO NOTHING RETURNING
    /// cols` (PostgreSQL: the condition that the key's lock was granted, the statement wrapped
    /// by [`Backend::one_statement`]; SQLite: no condition).
    OnConflict(&'static str),
    /// MariaDB: the guarded insert whose `SELECT` locks the key's slot `FOR UPDATE NOWAIT`
    /// ([`mysql::one_statement`]).
    OnTheSlot,
}

/// The one-statement path ([`call::one_statement`](crate::call)): a new key in one statement
/// where a unique index covers exactly the key's columns.
impl Backend {
    /// How this backend builds the one statement for a call that waits as `wait` says, if it
    /// has the path: PostgreSQL's insert carries the condition that the lock was granted (its
    /// try never waits). SQLite's carries none, its write lock is the lock, waited for as long
    /// as the connection's `busy_timeout`, so only for [`Wait::Forever`] (a bounded wait takes
    /// the locked path, which bounds it). MySQL's locks the key's slot without waiting
    /// ([`mysql::one_statement`]), for any wait: the locked path waits as asked.
    pub(crate) fn one_statement_shape(self, wait: Wait) -> Option<Shape> {
        match self {
            Backend::Postgres => Some(Shape::OnConflict(postgres::one_statement::LOCK_GRANTED)),
            Backend::Sqlite if wait == Wait::Forever => {
                Some(Shape::OnConflict(sqlite::one_statement::NO_CONDITION))
            }
            Backend::Sqlite => None,
            Backend::MySql => Some(Shape::OnTheSlot),
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
            Backend::MySql => {
                mysql::one_statement::key_is_unique_indexed(db, schema, table, columns, values)
                    .await
            }
        }
    }

    /// The one statement of [`Shape::OnConflict`]: `insert` with the try for `key`'s lock
    /// around it where the backend takes one.
    /// PostgreSQL, for a call that waits `wait`: also the bound of the insert's own waits
    /// ([`postgres::entity_waits`]).
    pub(crate) fn one_statement(self, insert: Statement, key: LockKey, wait: Wait) -> Statement {
        match self {
            Backend::Postgres => {
                postgres::one_statement::wrap(insert, key, postgres::entity_waits::bound(wait))
            }
            Backend::Sqlite | Backend::MySql => insert,
        }
    }

    /// The values the one statement binds after the insert's ([`one_statement`]): the lock
    /// key's, where the backend takes one, and PostgreSQL's bound for a bounded `wait`.
    ///
    /// [`one_statement`]: Backend::one_statement
    pub(crate) fn one_statement_values(self, key: LockKey, wait: Wait) -> Vec<sea_orm::Value> {
        match self {
            Backend::Postgres => {
                postgres::one_statement::lock_values(key, postgres::entity_waits::bound(wait))
            }
            Backend::Sqlite | Backend::MySql => Vec::new(),
        }
    }

    /// Whether the one statement for a call that waits `wait` binds a bound for its insert's
    /// waits (PostgreSQL, a bounded wait): its text differs.
    pub(crate) fn one_statement_is_bounded(self, wait: Wait) -> bool {
        self == Backend::Postgres && postgres::entity_waits::bound(wait).is_some()
    }

    /// Runs the one statement on a connection of `conn`'s pool. PostgreSQL: through sqlx, so
    /// that after an error the call returns only once the statement's transaction has ended
    /// and released the lock ([`postgres::one_statement::run`]); MySQL: to its end even when
    /// the call is dropped ([`mysql::one_statement::run`]).
    pub(crate) async fn run_one_statement(
        self,
        conn: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        #[cfg(feature = "postgres")]
        if let (Backend::Postgres, Some(pool)) = (self, postgres::fast_path::pool_of(conn)) {
            return postgres::one_statement::run(pool, statement).await;
        }
        if self == Backend::MySql {
            return mysql::one_statement::run(conn, statement).await;
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

    /// Whether the path applies on `conn`'s database (kept per `pool`): on MySQL only where the
    /// keys lock the slots and the sessions are READ COMMITTED ([`mysql::one_statement::applies`]).
    pub(crate) async fn one_statement_applies(
        self,
        conn: &DatabaseConnection,
        pool: PoolId,
    ) -> bool {
        match self {
            Backend::MySql => mysql::one_statement::applies(conn, pool).await,
            Backend::Postgres | Backend::Sqlite => true,
        }
    }

    /// Whether the one statement's error leaves the call to the locked path (the index still
    /// known): MySQL's [`defers`](mysql::one_statement::defers).
    pub(crate) fn one_statement_defers(self, err: &DbErr) -> bool {
        self == Backend::MySql && mysql::one_statement::defers(err)
    }
}
