//! SQLite's one-statement path: where a unique index covers exactly the key's columns
//! ([`catalog`](super::catalog) knows), a new key is `INSERT ... ON CONFLICT (key columns) DO
//! NOTHING RETURNING cols` in autocommit. The statement takes SQLite's write lock, which is the
//! key's lock there (every writer of the file waits for it), for as long as it runs.

use sea_orm::{DbErr, QueryResult};

use crate::backend::inserted::Answer;

/// The condition the insert's `SELECT` carries: none, but SQLite needs a `WHERE` to parse an
/// `INSERT ... SELECT ... ON CONFLICT` (its documented parsing ambiguity).
pub(crate) const NO_CONDITION: &str = "1";

/// What the statement returned: the row it inserted, or nothing.
pub(crate) fn read(row: Option<QueryResult>) -> Result<Answer, DbErr> {
    Ok(match row {
        Some(row) => Answer::Inserted(row),
        None => Answer::Nothing,
    })
}
