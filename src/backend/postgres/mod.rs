//! PostgreSQL: a READ COMMITTED transaction and a transaction-scoped advisory lock on the key.

pub(crate) mod engine;
#[cfg(feature = "postgres")]
pub(crate) mod fast_path;
pub(crate) mod holders;
pub(crate) mod lock;
pub(crate) mod probe;
