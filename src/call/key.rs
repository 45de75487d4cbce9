//! A call's natural key as its statements bind it: one value per key column.

use sea_orm::{ColumnTrait, Condition, IdenStatic, Value};

use crate::{Error, IdempotentCreate};

/// The text logged in place of a key whose entity keeps keys out of logs
/// ([`IdempotentCreate::log_key`]).
pub(super) const REDACTED: &str = "<redacted>";

/// Refuses a key with a part no database can find again: a float NaN equals nothing (SQLite
/// even stores it as NULL), so every delivery would create another row.
pub(super) fn refuse_unstorable_parts<T: IdempotentCreate>(
    columns: &[T::Column],
    values: &[Value],
) -> Result<(), Error> {
    let nan = |value: &Value| match value {
        Value::Float(Some(x)) => x.is_nan(),
        Value::Double(Some(x)) => x.is_nan(),
        _ => false,
    };
    match columns.iter().zip(values).find(|(_, value)| nan(value)) {
        Some((column, _)) => Err(Error::KeyNotStorable {
            table: T::default().table_name(),
            column: column.as_str().to_owned(),
            cause: "is NaN, which equals nothing (SQLite stores it as NULL)",
        }),
        None => Ok(()),
    }
}

/// A call's natural key: as given (for `new_active_model`), and the columns and values it
/// binds, one value per key column.
pub(super) struct CallKey<T: IdempotentCreate> {
    pub(super) key: T::Key,
    pub(super) columns: Vec<T::Column>,
    pub(super) values: Vec<Value>,
    /// The key for logs and errors, unless the entity keeps keys out of them.
    pub(super) shown: Option<String>,
}

impl<T: IdempotentCreate> CallKey<T> {
    /// Every key column equal to its part of the key, each value bound.
    pub(super) fn condition(&self) -> Condition {
        self.columns
            .iter()
            .zip(&self.values)
            .fold(Condition::all(), |all, (column, value)| {
                all.add(ColumnTrait::eq(column, value.clone()))
            })
    }

    pub(super) fn shown(&self) -> &str {
        self.shown.as_deref().unwrap_or(REDACTED)
    }

    /// Whether a part of the key is NULL. SeaORM matches it with `IS NULL` (a NULL is equal to
    /// nothing), which binds no value: the statement's text is not the one kept for keys with
    /// every part ([`statements`](crate::statements)), so such a key's statements are built every time.
    pub(super) fn has_missing_part(&self) -> bool {
        self.values.iter().any(|value| *value == value.as_null())
    }
}
