//! Where `create_once` gets its transaction from: a connection (its own transaction) or a
//! caller's transaction (a savepoint inside it).

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseConnectionType, DatabaseTransaction,
    TransactionTrait,
};

mod sealed {
    pub trait Sealed {}
    impl Sealed for sea_orm::DatabaseConnection {}
    impl Sealed for sea_orm::DatabaseTransaction {}
}

/// A handle [`create_once`](crate::IdempotentCreate::create_once) can run on.
///
/// - [`DatabaseConnection`]: the crate begins its own transaction (READ COMMITTED on
///   PostgreSQL, IMMEDIATE on SQLite), commits it, and the lock ends with it.
/// - [`DatabaseTransaction`]: the work runs in a savepoint inside the caller's transaction;
///   the row and the lock last until the caller commits or rolls back, so the caller's commit
///   decides whether the row exists. The caller's transaction must be READ COMMITTED on
///   PostgreSQL (see [`Error::UnsafeIsolation`](crate::Error::UnsafeIsolation)).
///
/// Sealed: the crate must know which of the two it has.
pub trait TransactionSource:
    ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction> + Send + Sync + sealed::Sealed
{
    /// Whether this is a caller's transaction (the crate then works in a savepoint).
    #[doc(hidden)]
    fn is_callers_transaction(&self) -> bool;

    /// The identity of the PostgreSQL pool this handle takes its connections from, for the
    /// waiting room of same-key callers (`local_queue`); `None` when there is no pool to
    /// protect: a caller's transaction (its connection is taken already), SQLite, a mock.
    #[doc(hidden)]
    fn pool_identity(&self) -> Option<usize>;
}

impl TransactionSource for DatabaseConnection {
    fn is_callers_transaction(&self) -> bool {
        false
    }

    fn pool_identity(&self) -> Option<usize> {
        match &self.inner {
            // The pool's options live in its one shared allocation: one address per pool,
            // the same for every clone of the connection, for as long as the pool lives.
            DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
                Some(std::ptr::from_ref(self.get_postgres_connection_pool().options()) as usize)
            }
            _ => None,
        }
    }
}

impl TransactionSource for DatabaseTransaction {
    fn is_callers_transaction(&self) -> bool {
        true
    }

    fn pool_identity(&self) -> Option<usize> {
        None
    }
}
