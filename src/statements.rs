//! The SQL text of the statements a call sends for an entity, built once per entity, backend
//! and column set, then reused with each call's values bound.
//!
//! sea-query builds a statement's text from its parts on every call: every column named,
//! quoted and joined, for a look that then takes a round trip of tens of microseconds. The text
//! depends only on the entity, the backend and which columns the row sets; the values are the
//! call's. So the first call of each kind builds the statement as SeaORM would, and checks that
//! the values it bound are, in order, the ones later calls will bind ([`Values`]); only then
//! is the text kept. A statement whose values would come out in another order (a SeaORM
//! change, a column type that binds more than one value) is not kept: it is built every time,
//! exactly as before, so the cache can cost speed but never correctness.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use sea_orm::{DbBackend, Statement, Value};

/// Which statement of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// The look: the row by its key, at most one.
    Find,
    /// The guarded insert, for a row that sets the columns in this bit set (column `i` of
    /// `Column::iter()` is bit `i`).
    InsertUnlessExists { columns: u64 },
    /// The one-statement path's statement for a row that sets these columns, binding this many
    /// values of the lock key after the row's, and a `lock_timeout` for the insert's waits
    /// after them when `bounded` (PostgreSQL, a bounded wait:
    /// [`entity_waits`](crate::backend::postgres::entity_waits)).
    OneStatement {
        columns: u64,
        lock_values: usize,
        bounded: bool,
    },
}

type Entry = (TypeId, u8, Kind);

/// Every statement text kept so far. A statement not worth keeping maps to `None`, so it is
/// not checked again.
static TEXTS: LazyLock<RwLock<HashMap<Entry, Option<Arc<str>>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// The values a call binds, in the order its statement's placeholders take them.
pub(crate) type Values = Vec<Value>;

/// The statement `kind` of entity `T` on `backend` with `values`: from the kept text, or, the
/// first time (or when not kept), from `build`, which builds it as SeaORM would.
pub(crate) fn statement<T: 'static>(
    backend: DbBackend,
    kind: Kind,
    values: Values,
    build: impl FnOnce() -> Statement,
) -> Statement {
    let entry = (TypeId::of::<T>(), backend_index(backend), kind);
    let kept = TEXTS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&entry)
        .cloned();
    match kept {
        Some(Some(sql)) => Statement::from_sql_and_values(backend, sql.as_ref(), values),
        Some(None) => build(),
        None => {
            let built = build();
            let same = built.values.as_ref().map(|v| &v.0) == Some(&values);
            let text = same.then(|| Arc::<str>::from(built.sql.as_str()));
            TEXTS
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(entry, text);
            built
        }
    }
}

/// `DbBackend` is not `Hash`.
fn backend_index(backend: DbBackend) -> u8 {
    match backend {
        DbBackend::Postgres => 0,
        DbBackend::Sqlite => 1,
        DbBackend::MySql => 2,
        _ => 3,
    }
}

/// Whether the text of statement `kind` of `T` on `backend` is kept.
#[cfg(test)]
pub(crate) fn is_kept<T: 'static>(backend: DbBackend, kind: Kind) -> bool {
    let entry = (TypeId::of::<T>(), backend_index(backend), kind);
    matches!(TEXTS.read().unwrap().get(&entry), Some(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct InOrder;
    struct OutOfOrder;

    fn built(values: Values) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, "SELECT $1, $2", values)
    }

    #[test]
    fn a_text_is_kept_only_when_its_values_come_in_the_order_given() {
        let kind = Kind::Find;
        let values = || vec![Value::from(1_i64), Value::from("a")];
        let first = statement::<InOrder>(DbBackend::Postgres, kind, values(), || built(values()));
        assert_eq!(first.sql, "SELECT $1, $2");
        assert!(is_kept::<InOrder>(DbBackend::Postgres, kind));
        let again = statement::<InOrder>(DbBackend::Postgres, kind, values(), || {
            unreachable!("the kept text is used")
        });
        assert_eq!((again.sql, again.values), (first.sql, first.values));

        // Built with the values the other way round: never kept, built every time.
        let reversed = || vec![Value::from("a"), Value::from(1_i64)];
        for _ in 0..2 {
            let statement =
                statement::<OutOfOrder>(DbBackend::Postgres, kind, values(), || built(reversed()));
            assert_eq!(statement.values.unwrap().0, reversed());
        }
        assert!(!is_kept::<OutOfOrder>(DbBackend::Postgres, kind));
    }
}
