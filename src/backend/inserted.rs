//! What an insert did: the guarded insert's and the one statement's answers, the words the seam
//! shares with every backend.

use sea_orm::QueryResult;

/// What the guarded insert did.
pub(crate) enum Inserted {
    /// It inserted this row.
    Row(QueryResult),
    /// It inserted nothing: the guard found the row (or, on PostgreSQL, a conflict was
    /// absorbed).
    Nothing,
}

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

/// The answer of the statement that tries every key of a batch's chunk and inserts its rows
/// under their locks (PostgreSQL's only: without its feature, never answered).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum ChunkAnswer {
    /// Another transaction holds one of the keys: nothing was inserted (the chunk takes the
    /// locked path, which waits).
    KeysHeld,
    /// Every lock was granted, and these rows inserted (committed with the statement); a key
    /// without its row here exists already.
    Inserted(Vec<QueryResult>),
}
