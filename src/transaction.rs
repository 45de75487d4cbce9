//! The transaction the work under a key's lock runs in: the crate's own ([`Own`]) or a
//! caller's, seen through one [`ConnectionTrait`] ([`Txn`]) by the statements that do not care
//! which. The crate's own is SeaORM's as it is, except on MySQL, where every statement of it
//! runs to its end even when the call is dropped
//! ([`Shielded`], which says why).

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
};

use crate::backend::mysql::shielded::Shielded;

/// The transaction the work under the lock runs in: the crate's own or a caller's, shielded
/// (MySQL's own) or not.
#[derive(Clone, Copy)]
pub(crate) enum Txn<'a> {
    Plain(&'a DatabaseTransaction),
    Shielded(&'a Shielded),
}

impl Txn<'_> {
    /// The SeaORM transaction itself, for statements that need its type (PostgreSQL's lock:
    /// never shielded).
    pub(crate) fn plain(&self) -> &DatabaseTransaction {
        match self {
            Txn::Plain(txn) => txn,
            Txn::Shielded(shielded) => shielded.transaction(),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Txn<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.plain().get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Plain(txn) => txn.execute_raw(stmt).await,
            Txn::Shielded(shielded) => shielded.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Plain(txn) => txn.execute_unprepared(sql).await,
            Txn::Shielded(shielded) => shielded.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Txn::Plain(txn) => txn.query_one_raw(stmt).await,
            Txn::Shielded(shielded) => shielded.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Txn::Plain(txn) => txn.query_all_raw(stmt).await,
            Txn::Shielded(shielded) => shielded.query_all_raw(stmt).await,
        }
    }
}

/// The crate's own transaction: shielded on MySQL, SeaORM's as it is on the other backends.
pub(crate) enum Own {
    Plain(DatabaseTransaction),
    Shielded(Shielded),
}

impl Own {
    pub(crate) fn txn(&self) -> Txn<'_> {
        match self {
            Own::Plain(txn) => Txn::Plain(txn),
            Own::Shielded(shielded) => Txn::Shielded(shielded),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        match self {
            Own::Plain(txn) => txn.commit().await,
            Own::Shielded(shielded) => shielded.commit().await,
        }
    }

    pub(crate) async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Own::Plain(txn) => txn.rollback().await,
            Own::Shielded(shielded) => shielded.rollback().await,
        }
    }
}
