//! Where `create_once` gets its transaction from: a connection (its own transaction) or a
//! caller's transaction (a savepoint inside it).

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

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
}

impl TransactionSource for DatabaseConnection {
    fn is_callers_transaction(&self) -> bool {
        false
    }
}

impl TransactionSource for DatabaseTransaction {
    fn is_callers_transaction(&self) -> bool {
        true
    }
}
