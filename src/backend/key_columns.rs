//! What a backend's catalog says about an entity's key columns: the seam's answer for every
//! backend ([`Backend::key_columns`](super::Backend::key_columns)).

/// The key columns of a table, as its catalog has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumns {
    /// Each key column's type as the database names it, in the key's order; `None` where the
    /// table has no such column.
    pub(crate) types: Vec<Option<String>>,
    /// Whether a unique index (or the primary key) has only key columns, so that no two rows
    /// share a key.
    pub(crate) covered: bool,
}
