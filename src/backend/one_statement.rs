//! What the one-statement path's statement answered, on every backend that has the path.

use sea_orm::QueryResult;

/// The answer of the statement that tries the key's lock and inserts under it.
pub(crate) enum Answer {
    /// Another transaction holds the key: nothing was inserted (the call takes the locked path,
    /// which waits).
    KeyHeld,
    /// The lock was granted and this row inserted (committed with the statement).
    Inserted(QueryResult),
    /// The lock was granted and nothing inserted: the key's row exists.
    Nothing,
}
