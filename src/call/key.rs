//! A call's natural key as its statements bind it: one value per key column.

use sea_orm::{ColumnTrait, Condition, IdenStatic, Value};

use crate::backend::Backend;
use crate::key_schema;
use crate::natural_key::{Key, NaturalKey};
use crate::{Error, IdempotentCreate, LockKey};

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
    /// The call's key, checked before anything is sent: as many parts as key columns, none
    /// that no database finds again (NaN), and, in a caller's transaction, each part of a type
    /// the entity's field takes (on a pool the catalog is read too, once per pool and entity,
    /// after the call's reentry checks: `on_connection`); with its lock key.
    pub(super) fn checked<S>(
        key: T::Key,
        backend: Backend,
        in_callers_transaction: bool,
    ) -> Result<(CallKey<T>, LockKey), Error>
    where
        T::Key: NaturalKey<S>,
    {
        let natural = Key::new(&key);
        let lock_key = natural.lock_key(T::lock_namespace());
        let values = natural.values();
        let columns = T::key_columns();
        if columns.len() != values.len() {
            return Err(Error::KeyColumns {
                table: T::default().table_name(),
                columns: columns.len(),
                parts: values.len(),
            });
        }
        refuse_unstorable_parts::<T>(&columns, &values)?;
        if in_callers_transaction {
            key_schema::check_fields::<T>(backend, &columns, &values)?;
        }
        let shown = T::log_key().then(|| natural.to_string());
        let key = CallKey {
            key,
            columns,
            values,
            shown,
        };
        Ok((key, lock_key))
    }

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
