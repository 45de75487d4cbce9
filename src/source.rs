//! The handles `create_once` runs on: a connection (the crate's own transaction) or a caller's
//! transaction (a savepoint inside it), whichever SeaORM type holds it, and the identities the
//! crate keys turns by.

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use sea_orm::DatabaseConnectionType;
use sea_orm::{DatabaseConnection, DatabaseExecutor, DatabaseTransaction};

/// A handle [`create_once`](crate::IdempotentCreate::create_once) can run on.
///
/// - [`DatabaseConnection`]: the crate begins its own transaction (READ COMMITTED on
///   PostgreSQL and MySQL/MariaDB, IMMEDIATE on SQLite), commits it, and the lock ends with
///   it.
/// - [`DatabaseTransaction`]: the work runs in a savepoint the crate names inside the caller's
///   transaction; the row and the lock last until the caller commits or rolls back, so the
///   caller's commit decides whether the row exists. The caller's transaction must be READ
///   COMMITTED on PostgreSQL, and on MySQL/MariaDB its snapshot no older than the key's last
///   holder (see [`crate::Error::UnsafeIsolation`]).
///   Calls on one transaction, and on the transactions nested in it, take turns (see
///   [`IdempotentCreate`](crate::IdempotentCreate#on-a-callers-transaction)).
/// - [`DatabaseExecutor`]: what a migration's `SchemaManager::get_connection()` hands out, to
///   seed data in a migration. Its `Connection` is a connection, its `Transaction` and
///   `OwnedTransaction` are a caller's transaction (the migration's: the row is committed with
///   the migration).
///
/// Sealed: the crate must know which of the two it has.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handle `create_once` can run on",
    label = "not a SeaORM connection or transaction",
    note = "pass a `&DatabaseConnection`, a `&DatabaseTransaction` or a `&DatabaseExecutor` (in a migration: `manager.get_connection()`)"
)]
pub trait TransactionSource: sealed::Sealed + Send + Sync {}

impl TransactionSource for DatabaseConnection {}
impl TransactionSource for DatabaseTransaction {}
impl TransactionSource for DatabaseExecutor<'_> {}

pub(crate) mod sealed {
    use super::Handle;

    /// The private side of [`TransactionSource`](super::TransactionSource): users can name
    /// neither this trait nor its method.
    pub trait Sealed {
        /// Which kind of handle this is.
        fn handle(&self) -> Handle<'_>;
    }

    impl Sealed for sea_orm::DatabaseConnection {
        fn handle(&self) -> Handle<'_> {
            Handle::Connection(self)
        }
    }

    impl Sealed for sea_orm::DatabaseTransaction {
        fn handle(&self) -> Handle<'_> {
            Handle::Transaction(self)
        }
    }

    impl Sealed for sea_orm::DatabaseExecutor<'_> {
        fn handle(&self) -> Handle<'_> {
            match self {
                sea_orm::DatabaseExecutor::Connection(conn) => Handle::Connection(conn),
                sea_orm::DatabaseExecutor::Transaction(txn) => Handle::Transaction(txn),
                sea_orm::DatabaseExecutor::OwnedTransaction(txn) => Handle::Transaction(txn),
            }
        }
    }
}

/// What a [`TransactionSource`] is.
#[derive(Debug, Clone, Copy)]
pub enum Handle<'a> {
    /// A connection (a pool): the crate begins its own transaction.
    Connection(&'a DatabaseConnection),
    /// A caller's transaction: the crate works in a savepoint inside it.
    Transaction(&'a DatabaseTransaction),
}

/// One connection pool (PostgreSQL, MySQL or SQLite), the same for every clone of its
/// `DatabaseConnection`, for as long as the pool lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolId(usize);

impl PoolId {
    /// The pool behind `db`; `None` for anything else (a mock, a proxy connection), which has
    /// no pool the waiting room protects.
    pub(crate) fn of(db: &DatabaseConnection) -> Option<PoolId> {
        #[cfg(feature = "postgres")]
        if let DatabaseConnectionType::SqlxPostgresPoolConnection(_) = &db.inner {
            // The pool's options live in its one shared allocation: one address per pool.
            return Some(PoolId(
                std::ptr::from_ref(db.get_postgres_connection_pool().options()) as usize,
            ));
        }
        #[cfg(feature = "mysql")]
        if let DatabaseConnectionType::SqlxMySqlPoolConnection(_) = &db.inner {
            return Some(PoolId(
                std::ptr::from_ref(db.get_mysql_connection_pool().options()) as usize,
            ));
        }
        #[cfg(feature = "sqlite")]
        if let DatabaseConnectionType::SqlxSqlitePoolConnection(_) = &db.inner {
            return Some(PoolId(
                std::ptr::from_ref(db.get_sqlite_connection_pool().options()) as usize,
            ));
        }
        let _ = db; // a mock, a proxy, or a build without the backend's feature
        None
    }

    /// Any number stands for a pool in tests that need no real one.
    #[cfg(test)]
    pub(crate) fn for_tests(n: usize) -> PoolId {
        PoolId(n)
    }
}

/// A database as its server names it: on PostgreSQL a database of one server (advisory locks
/// are per database), on MySQL/MariaDB a schema of one server (the crate's lock table is per
/// schema), on SQLite a file. Two handles with different `DbId`s never wait for each other's
/// locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DbId(u64);

impl DbId {
    /// The database named by `parts`, each one delimited.
    pub(crate) fn of(parts: &[&str]) -> DbId {
        DbId(hash(parts))
    }
}

/// A session of a server (a connection) and the database it works in: what a caller's
/// transaction, and every transaction nested in it (`txn.begin()`), runs on. Calls on one
/// session take turns; a lock one session holds is granted again to the same session at
/// once, and makes every other session of the same database wait.
///
/// SeaORM keeps a transaction's connection private, so the server names it
/// ([`Backend::session_of`](crate::backend::Backend::session_of)): PostgreSQL's `pg_backend_pid()` and MySQL/MariaDB's
/// `CONNECTION_ID()` (unique among a server's live sessions), with the database. SQLite has no
/// session id: there a session is its file. Only one connection writes a SQLite file at a
/// time, so the transactions of two connections of one file taking turns costs them nothing
/// they would not wait for anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId {
    pub(crate) db: DbId,
    id: u64,
}

impl SessionId {
    /// Session `id` of database `db`, as a backend's server names it.
    pub(crate) fn new(db: DbId, id: u64) -> SessionId {
        SessionId { db, id }
    }

    /// Any number stands for a session in tests that need no real one.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> SessionId {
        SessionId {
            db: DbId::of(&["tests"]),
            id: n,
        }
    }

    /// A session of another database, for tests.
    #[cfg(test)]
    pub(crate) fn in_other_db_for_tests(n: u64) -> SessionId {
        SessionId {
            db: DbId::of(&["tests", "other"]),
            id: n,
        }
    }
}

/// A process-stable hash of `parts`, each one delimited (so `["ab", "c"]` and `["a", "bc"]`
/// differ).
fn hash(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for part in parts {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    use sea_orm::{ConnectOptions, Database};

    async fn lazy_pool(port: u16) -> DatabaseConnection {
        let mut options = ConnectOptions::new(format!("postgres://nobody@127.0.0.1:{port}/none"));
        options.connect_lazy(true);
        Database::connect(options).await.expect("a lazy pool")
    }

    #[tokio::test]
    async fn clones_of_one_pool_share_its_id_and_two_pools_differ() {
        let first = lazy_pool(1).await;
        let second = lazy_pool(1).await;
        let id = PoolId::of(&first).expect("a PostgreSQL pool");
        assert_eq!(PoolId::of(&first.clone()), Some(id));
        assert_ne!(PoolId::of(&second), Some(id));
    }
}
