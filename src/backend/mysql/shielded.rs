//! The crate's own MySQL/MariaDB transaction, shielded from a dropped call.
//!
//! sqlx-mysql 0.9 cannot abandon a statement. A statement whose future is dropped while it is
//! on the wire can leave the connection waiting for an answer that never comes (the pool
//! loses it), and a `BEGIN` dropped before its answer is not counted as a transaction, so
//! nothing rolls it back and the pool hands the connection to its next user inside it.
//! PostgreSQL's driver can abandon a statement, but sqlx-postgres 0.9.0 has the second problem
//! (a `BEGIN` dropped before its answer): there the crate's `BEGIN` alone runs to its end
//! ([`postgres::begin`](crate::backend::postgres::begin)). SQLite's driver has neither
//! (`tests/drop_sweep.rs`).
//!
//! So on MySQL the crate's own transaction is a [`Shielded`]: its `BEGIN`, every statement,
//! and its `COMMIT` or `ROLLBACK` each run in a task of their own, which runs to its end
//! whatever happens to the call that awaits it. A call dropped midway leaves that statement to
//! finish; then the last holder of the transaction drops it, and SeaORM rolls it back. (The
//! statements of a caller's transaction are the caller's to run: inside one, the crate sends
//! its statements as they are, see `docs/backends.md`, "MySQL and MariaDB".)
//!

use std::future::Future;
use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionOptions, TransactionTrait,
};

use crate::source::{DbId, PoolId};
use crate::to_the_end::to_the_end;

/// A transaction of the crate's own whose statements run to their end (see the
/// [module docs](self)), the pool it was begun on, and the database that pool's options name.
pub(crate) struct Shielded(Arc<DatabaseTransaction>, Option<PoolId>, Option<DbId>);

impl Shielded {
    /// Begins a transaction on `db` with `options`.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future leaves the begin to finish; the transaction is then dropped, which
    /// rolls it back.
    pub(crate) async fn begin(
        db: &DatabaseConnection,
        options: TransactionOptions,
    ) -> Result<Shielded, DbErr> {
        let pool = PoolId::of(db);
        let target = pool.and_then(|_| pool_database(db));
        let db = db.clone();
        let txn = to_the_end(async move { db.begin_with_options(options).await }).await?;
        Ok(Shielded(Arc::new(txn), pool, target))
    }

    /// `COMMIT`.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future leaves the `COMMIT` to finish.
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        let txn = self.sole()?;
        to_the_end(async move { txn.commit().await }).await
    }

    /// `ROLLBACK`.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future leaves the `ROLLBACK` to finish.
    pub(crate) async fn rollback(self) -> Result<(), DbErr> {
        let txn = self.sole()?;
        to_the_end(async move { txn.rollback().await }).await
    }

    /// The transaction, once no statement holds it: each statement's task lets go of it
    /// before its answer is handed back, so after the statements were awaited this is the only
    /// holder.
    fn sole(self) -> Result<DatabaseTransaction, DbErr> {
        Arc::try_unwrap(self.0).map_err(|_| {
            DbErr::Custom("a statement of the transaction is still running".to_owned())
        })
    }

    /// The pool the transaction was begun on (`None`: not a pool).
    pub(crate) fn pool(&self) -> Option<PoolId> {
        self.1
    }

    /// The database the pool's options name (host, port, socket, database; `None`: not a
    /// MySQL pool). A [`PoolId`] is an address, reused by a pool made after its pool is
    /// gone, possibly on another database: what is kept for a pool is kept for both.
    pub(crate) fn target(&self) -> Option<DbId> {
        self.2
    }

    /// The SeaORM transaction itself, for statements that need its type.
    pub(crate) fn transaction(&self) -> &DatabaseTransaction {
        &self.0
    }

    /// Runs `statement` on the transaction in a task of its own.
    async fn run<T, Fut>(
        &self,
        statement: impl FnOnce(Arc<DatabaseTransaction>) -> Fut + Send + 'static,
    ) -> T
    where
        Fut: Future<Output = T> + Send,
        T: Send + 'static,
    {
        let txn = self.0.clone();
        to_the_end(async move { statement(txn).await }).await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Shielded {
    fn get_database_backend(&self) -> DbBackend {
        self.0.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.run(|txn| async move {
            let result = txn.execute_raw(stmt).await;
            drop(txn);
            result
        })
        .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let sql = sql.to_owned();
        self.run(|txn| async move {
            let result = txn.execute_unprepared(&sql).await;
            drop(txn);
            result
        })
        .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.run(|txn| async move {
            let result = txn.query_one_raw(stmt).await;
            drop(txn);
            result
        })
        .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run(|txn| async move {
            let result = txn.query_all_raw(stmt).await;
            drop(txn);
            result
        })
        .await
    }
}

/// The database a MySQL pool connects to, as its options name it (see [`Shielded::target`]).
#[cfg(feature = "mysql")]
pub(crate) fn pool_database(db: &DatabaseConnection) -> Option<DbId> {
    if !matches!(
        &db.inner,
        sea_orm::DatabaseConnectionType::SqlxMySqlPoolConnection(_)
    ) {
        return None;
    }
    let options = db.get_mysql_connection_pool().connect_options();
    let port = options.get_port().to_string();
    let socket = options
        .get_socket()
        .map(|socket| socket.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(DbId::of(&[
        "mysql pool",
        options.get_host(),
        &port,
        &socket,
        options.get_database().unwrap_or(""),
    ]))
}

/// Without the `mysql` feature no transaction is shielded.
#[cfg(not(feature = "mysql"))]
pub(crate) fn pool_database(_: &DatabaseConnection) -> Option<DbId> {
    None
}
