//! What the guarded insert did: the seam's answer for every backend.

use sea_orm::QueryResult;

/// What the guarded insert did.
pub(crate) enum Inserted {
    /// It inserted this row.
    Row(QueryResult),
    /// It inserted nothing: the guard found the row (or, on PostgreSQL, a conflict was
    /// absorbed).
    Nothing,
}
