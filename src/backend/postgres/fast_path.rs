//! A new key in three round trips on PostgreSQL: the crate's own transaction on a connection
//! taken from SeaORM's pool, outside SeaORM's `DatabaseTransaction`.
//!
//! Its statements go through sqlx directly, not SeaORM's `ConnectionTrait`: sqlx's statement
//! log (target `sqlx::query`) sees them, SeaORM's metric callback
//! (`DatabaseConnection::set_metric_callback`) and SeaORM's statement spans do not. The call's
//! `create_once` span covers it.
//!
//! SeaORM sends `BEGIN` alone, so its transaction costs a round trip before the lock is even
//! tried. Here the transaction's start and the try travel in one simple-protocol message:
//!
//! 1. `BEGIN ISOLATION LEVEL READ COMMITTED; <the try statement>` (the try statement of
//!    `src/backend/postgres/lock.rs`, with the lock key's two integers written out; its answer is read by the
//!    same [`lock::read_attempt`]);
//! 2. the statement the caller runs under the lock (the guarded insert), prepared and bound as
//!    SeaORM binds it;
//! 3. `COMMIT`.
//!
//! Contended, the session is rolled back and handed back, and the call takes the usual path,
//! which waits ([`Try::Busy`]): two round trips more than waiting at once (this try and its
//! `ROLLBACK`). A refusal (a server whose locks are not real) or a database error in the first
//! round trip is returned as it is, after `ROLLBACK`: the usual path would meet the same one a
//! round trip later. [`Wait::No`](crate::Wait::No) on a held key is [`Error::LockBusy`] at once.
//!
//! # Cancel safety
//!
//! The transaction lives on a [`Session`], which owns the pooled connection. A session that is
//! dropped before its `COMMIT` or `ROLLBACK` completed (a dropped future at any await point, a
//! panic) closes its connection instead of returning it to the pool: the server then rolls the
//! transaction back and releases the lock, and the pool opens a new connection when it needs
//! one. (Returned to the pool as it is, the connection would keep the open transaction and the
//! lock for whoever takes it next: sqlx's pool only pings a returned connection.)

use std::sync::Arc;

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, AssertSqlSafe, PgPool, Postgres};
use sea_orm::{
    ConnAcquireErr, DatabaseConnection, DatabaseConnectionType, DbErr, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_sqlx::SqlxValues;

use crate::backend::postgres::engine;
use crate::backend::postgres::lock::{self, Attempt};
use crate::backend::postgres::lock_statements;
use crate::wait::Deadline;
use crate::{Error, LockKey};

/// The pool behind `db`, when it is a PostgreSQL pool of SeaORM's sqlx driver (not a mock,
/// not a proxy).
pub(crate) fn pool_of(db: &DatabaseConnection) -> Option<&PgPool> {
    match &db.inner {
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            Some(db.get_postgres_connection_pool())
        }
        _ => None,
    }
}

/// What the first round trip found.
pub(crate) enum Try {
    /// The key is locked in the session's transaction.
    Acquired(Session),
    /// Another transaction holds the key; the session was rolled back and handed back.
    Busy,
}

/// An open READ COMMITTED transaction on a connection of the pool, which it owns. Ends with
/// [`Session::commit`] or [`Session::roll_back_after`]; dropped before either completed, it
/// closes the connection (see the [module docs](self)).
pub(crate) struct Session {
    /// `Some` until the transaction ended or the session was dropped.
    conn: Option<PoolConnection<Postgres>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Still here: the transaction may be open and hold the lock. Closing the session makes
        // the server roll it back; the connection never goes back to the pool.
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

impl Session {
    /// Takes a connection from `pool`, then begins a READ COMMITTED transaction and tries the
    /// exclusive lock on `key` in one message (one round trip).
    ///
    /// # Errors
    ///
    /// As the first statement of [`lock::acquire_in`]: [`Error::UnsupportedServer`] for a server
    /// whose locks are not real, [`Error::LockBusy`] when the key is held and the caller's wait
    /// is over, [`Error::Database`] (a lost connection, a pool timeout, ...). The transaction
    /// is rolled back before the error is returned.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future writes nothing and leaves no lock: a connection taken from the pool
    /// by then is closed (see [`Session`]).
    pub(crate) async fn begin_and_try(
        pool: &PgPool,
        key: LockKey,
        deadline: Deadline,
    ) -> Result<Try, Error> {
        let conn = pool.acquire().await.map_err(acquire_error)?;
        let mut session = Session { conn: Some(conn) };
        // Formatted: only the lock key's integers (see `try_sql_with_literal_key`), never
        // anything the user supplied. Nothing is bound in a simple-protocol message.
        let sql = format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; {}",
            lock_statements::try_sql_with_literal_key(key)
        );
        let answer = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(session.conn())
            .await
            .map_err(|err| engine::from_try_error(query_error(err)))
            .and_then(|rows| rows.into_iter().next().ok_or_else(|| lock::no_row("try")))
            .and_then(|row| lock::read_attempt(&QueryResult::from(row), deadline));
        match answer {
            Ok(Attempt::Acquired) => Ok(Try::Acquired(session)),
            Ok(Attempt::Busy) => {
                let waits = lock::bound_of_wait(key, deadline);
                match session.roll_back().await {
                    Ok(()) => waits.map(|_| Try::Busy),
                    Err(err) => Err(waits.err().unwrap_or(err)),
                }
            }
            Err(err) => Err(session.roll_back_after(err).await),
        }
    }

    /// Runs `statement` (prepared, its values bound as SeaORM binds them) and returns its
    /// first row, if any.
    ///
    /// # Errors
    ///
    /// The database's error, mapped as SeaORM maps a query's ([`DbErr::Query`]).
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future leaves the session open; dropping the session then closes the
    /// connection (see [`Session`]).
    pub(crate) async fn query_one(
        &mut self,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        let values = statement.values.unwrap_or(sea_orm::Values(Vec::new()));
        let row = sqlx::query_with(AssertSqlSafe(statement.sql), SqlxValues(values))
            .fetch_optional(self.conn())
            .await
            .map_err(query_error)?;
        Ok(row.map(QueryResult::from))
    }

    /// `COMMIT`, then the connection goes back to the pool.
    ///
    /// # Errors
    ///
    /// The database's error; the connection is then closed, and with it the transaction.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future closes the connection: the transaction commits or rolls back
    /// depending on whether the server got the `COMMIT`, and the lock is released either way.
    pub(crate) async fn commit(self) -> Result<(), Error> {
        Ok(self.end("COMMIT").await?)
    }

    /// Rolls back now after `err`, and returns `err`: the lock is free when the caller sees
    /// the error. If the rollback fails, the connection is closed instead (and with its
    /// session, the lock is gone).
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future closes the connection, which rolls the transaction back.
    pub(crate) async fn roll_back_after(self, err: Error) -> Error {
        if let Err(rollback) = self.roll_back().await {
            tracing::debug!(%rollback, "rollback after a failed create_once failed");
        }
        err
    }

    async fn roll_back(self) -> Result<(), Error> {
        Ok(self.end("ROLLBACK").await?)
    }

    /// Sends `COMMIT` or `ROLLBACK`; once it succeeded the connection goes back to the pool.
    /// Until then (and after an error) the session still owns it, and closes it when dropped.
    async fn end(mut self, statement: &'static str) -> Result<(), DbErr> {
        sqlx::raw_sql(statement)
            .execute(self.conn())
            .await
            .map_err(query_error)?;
        // Ended: back to the pool (dropped without `close_on_drop`).
        drop(self.conn.take());
        Ok(())
    }

    fn conn(&mut self) -> &mut sqlx::PgConnection {
        self.conn
            .as_mut()
            .expect("a session owns its connection until it ends")
    }
}

/// A statement's sqlx error as SeaORM reports it (`sqlx_error_to_query_err`), so that
/// `src/classify.rs` reads it as it reads the same error from SeaORM.
pub(super) fn query_error(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

/// A pool's sqlx error as SeaORM reports it (`sqlx_conn_acquire_err`).
pub(super) fn acquire_error(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(other))),
    }
}
