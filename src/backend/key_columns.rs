//! What a backend's catalog says about an entity's key columns: the seam's answer for every
//! backend ([`Backend::key_columns`](super::Backend::key_columns)), and what kind of value a
//! key part is, as each backend compares it with a column's type ([`KeyPart`]).

use sea_orm::Value;

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

/// What kind of value a key part is, as the backends' catalogs compare it with a column's type
/// (`fits`: whether the database can compare them; `stores_exactly`: whether the column keeps
/// it as given). One classification, so that every backend reads a key part alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPart {
    /// A signed integer, or an unsigned one of at most 32 bits.
    Integer,
    /// A `u64`, which not every integer column can hold.
    BigUnsigned,
    /// An `f32` or an `f64`.
    Float,
    /// A string.
    String,
    /// A `char`.
    Char,
    /// A boolean.
    Bool,
    /// Bytes.
    Bytes,
    /// Anything else (dates and times, UUIDs, ...): no backend refuses it by type.
    Other,
}

impl KeyPart {
    /// The kind of `value`.
    pub(crate) fn of(value: &Value) -> KeyPart {
        match value {
            Value::TinyInt(_)
            | Value::SmallInt(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::TinyUnsigned(_)
            | Value::SmallUnsigned(_)
            | Value::Unsigned(_) => KeyPart::Integer,
            Value::BigUnsigned(_) => KeyPart::BigUnsigned,
            Value::Float(_) | Value::Double(_) => KeyPart::Float,
            Value::String(_) => KeyPart::String,
            Value::Char(_) => KeyPart::Char,
            Value::Bool(_) => KeyPart::Bool,
            Value::Bytes(_) => KeyPart::Bytes,
            #[allow(unreachable_patterns)]
            _ => KeyPart::Other,
        }
    }
}
