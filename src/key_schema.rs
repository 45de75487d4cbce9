//! What the schema says about an entity's natural key: whether the table has each key column,
//! whether each part of the key has a type its column and the entity's field hold, and whether
//! a unique index covers the key. Checked before the first call's first statement, once per
//! pool and entity ([`check_first_call`]), and on demand at start-up
//! ([`IdempotentCreate::verify`]).
//!
//! A mismatch is [`Error::KeyType`], naming the table, the column, its type and the key's,
//! where the database would answer "operator does not exist: bigint = text" and SeaORM "Value
//! type mismatch". The entity's side needs no database (SeaORM's `try_set` of the key's value
//! on the entity's field: what would fail when the row is built); the database's side asks the
//! catalog through [`Backend::key_columns`]. A catalog that cannot be read (no privilege)
//! leaves that side unchecked and never fails the call. On a caller's transaction only the
//! entity's side is checked: the transaction is the caller's, and the catalog read is not
//! worth a statement that could abort it.

use std::any::{TypeId, type_name};
use std::collections::{HashMap, HashSet};
use std::mem::discriminant;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use sea_orm::sea_query::Nullable;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseConnection, IdenStatic,
    Value,
};

use crate::backend::Backend;
use crate::backend::key_columns::KeyColumns;
use crate::natural_key::{MultiColumn, NaturalKey, SingleColumn};
use crate::source::PoolId;
use crate::{Error, IdempotentCreate};

/// What [`IdempotentCreate::verify`] found: the key fits the table (otherwise it returns
/// [`Error::KeyType`]), and what else the schema says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The entity's table.
    pub table: &'static str,
    /// Each key column and its type as the database names it, in the key's order.
    pub key_columns: Vec<(String, String)>,
    /// Whether a unique index (or the primary key) covers the key columns, so that no two
    /// rows share a key whoever writes them. The crate does not need one (its lock keeps its
    /// own callers apart), but writers that bypass the lock do; without it the first call
    /// logs a warning unless the entity opts out
    /// ([`IdempotentCreate::warn_without_unique_index`]).
    pub unique_index: bool,
    /// MySQL/MariaDB: whether a lock table of the crate's exists, the slots
    /// ([`mysql_lock_slots`](crate::mysql_lock_slots)) or the per-key table of earlier
    /// versions ([`mysql_lock_table`](crate::mysql_lock_table)); without either every call fails with
    /// [`Error::MissingLockTable`]). `None` on the other backends, which need none.
    pub lock_table: Option<bool>,
}

/// The types of a natural key's parts, known without a key: what
/// [`IdempotentCreate::verify`] checks. Implemented for every key whose parts are sea-query
/// `Nullable` (every type SeaORM binds, and newtypes with `#[derive(DeriveValueType)]`), one
/// value or a tuple of two to six.
pub trait KeyTypes<Shape>: NaturalKey<Shape> {
    /// A NULL of each part's type, in order.
    #[doc(hidden)]
    fn typed_nulls() -> Vec<Value>;
}

impl<T: NaturalKey<SingleColumn> + Nullable> KeyTypes<SingleColumn> for T {
    fn typed_nulls() -> Vec<Value> {
        vec![T::null()]
    }
}

macro_rules! composite_key_types {
    ($(($($part:ident),+))+) => {$(
        impl<$($part: Nullable),+> KeyTypes<MultiColumn> for ($($part,)+)
        where
            ($($part,)+): NaturalKey<MultiColumn>,
        {
            fn typed_nulls() -> Vec<Value> {
                vec![$($part::null()),+]
            }
        }
    )+};
}

composite_key_types! {
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
}

/// An entity on a pool (`None`: the entity's side only, for callers' transactions).
type Checked = (Option<PoolId>, TypeId);

/// The pools on which an entity's key was checked and found to fit.
static CHECKED: LazyLock<RwLock<HashSet<Checked>>> = LazyLock::new(|| RwLock::new(HashSet::new()));

/// The pools on which the missing unique index of an entity was warned about.
static WARNED: LazyLock<RwLock<HashSet<(PoolId, TypeId)>>> =
    LazyLock::new(|| RwLock::new(HashSet::new()));

fn checked<T: 'static>(pool: Option<PoolId>) -> bool {
    CHECKED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&(pool, TypeId::of::<T>()))
}

fn learn<T: 'static>(pool: Option<PoolId>) {
    CHECKED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((pool, TypeId::of::<T>()));
}

/// Before a call's first statement on a caller's transaction (or a connection without a
/// pool): once per entity, the key's parts against the entity's fields, with no statement.
///
/// # Errors
///
/// [`Error::KeyType`] when a part does not fit its field.
pub(crate) fn check_fields<T: IdempotentCreate>(
    backend: Backend,
    columns: &[T::Column],
    values: &[Value],
) -> Result<(), Error> {
    if !checked::<T>(None) {
        check_parts::<T>(backend, columns, values, None)?;
        learn::<T>(None);
    }
    Ok(())
}

/// Before a call's first statement on a pool: once per pool and entity, the key's parts
/// against the entity's fields and the table's columns (one catalog read), and the warning
/// when no unique index covers the key. A check that finds a mismatch is not remembered: the
/// next call checks again (the column may have been migrated meanwhile).
///
/// # Errors
///
/// [`Error::KeyType`] when a key column is missing or a part does not fit its column.
///
/// # Cancel Safety
///
/// A read: dropped, it leaves nothing behind (its place among the first calls waiting for
/// the read is given up), and the next call checks again.
pub(crate) async fn check_first_call<T: IdempotentCreate>(
    backend: Backend,
    conn: &DatabaseConnection,
    columns: &[T::Column],
    values: &[Value],
) -> Result<(), Error> {
    let Some(pool) = PoolId::of(conn) else {
        return check_fields::<T>(backend, columns, values);
    };
    // A burst of first calls reads the catalog once: the others wait for that read.
    let reading = reading::<T>(pool);
    let _reading = reading.lock().await;
    if checked::<T>(Some(pool)) {
        return Ok(());
    }
    let entity = T::default();
    let names: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
    match backend
        .key_columns(conn, entity.schema_name(), entity.table_name(), &names)
        .await
    {
        Ok(Some(KeyColumns { types, covered })) => {
            check_parts::<T>(backend, columns, values, Some(&types))?;
            learn::<T>(Some(pool));
            if !covered && T::warn_without_unique_index() && first_warning::<T>(pool) {
                tracing::warn!(
                    entity = entity.table_name(),
                    key_columns = names.join(", "),
                    "no unique index covers the key columns: the crate's lock keeps its own \
                     callers apart, but a writer that bypasses it can store a key twice; add a \
                     UNIQUE index on the key columns (or return false from \
                     IdempotentCreate::warn_without_unique_index)"
                );
            }
        }
        // The table is not found: the call's own statements say so.
        Ok(None) => check_parts::<T>(backend, columns, values, None)?,
        Err(err) => {
            tracing::debug!(
                entity = entity.table_name(),
                error = %err,
                "the catalog could not be read: the key's columns are not checked"
            );
            check_parts::<T>(backend, columns, values, None)?;
            learn::<T>(Some(pool));
        }
    }
    Ok(())
}

/// The one catalog read of entity `T` on `pool` at a time.
fn reading<T: 'static>(pool: PoolId) -> Arc<tokio::sync::Mutex<()>> {
    type Reads = HashMap<(PoolId, TypeId), Arc<tokio::sync::Mutex<()>>>;
    static READING: LazyLock<Mutex<Reads>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    READING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((pool, TypeId::of::<T>()))
        .or_default()
        .clone()
}

/// Whether the key of entity `T` was checked on `conn`'s pool already (no allocation, no
/// await: what every call after the first asks).
pub(crate) fn checked_on<T: 'static>(conn: &DatabaseConnection) -> bool {
    PoolId::of(conn).is_some_and(|pool| checked::<T>(Some(pool)))
}

/// Whether this is the first warning about entity `T` on `pool`.
fn first_warning<T: 'static>(pool: PoolId) -> bool {
    WARNED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((pool, TypeId::of::<T>()))
}

/// [`IdempotentCreate::verify`]: the checks of a first call, now, with a NULL of each key
/// part's type, and what the schema says.
pub(crate) async fn verify<T, C>(db: &C, values: Vec<Value>) -> Result<Verified, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let backend = Backend::of(db.get_database_backend())?;
    let entity = T::default();
    let columns = T::key_columns();
    if columns.len() != values.len() {
        return Err(Error::KeyColumns {
            table: entity.table_name(),
            columns: columns.len(),
            parts: values.len(),
        });
    }
    let names: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
    let found = backend
        .key_columns(db, entity.schema_name(), entity.table_name(), &names)
        .await?;
    let Some(KeyColumns { types, covered }) = found else {
        return Err(key_type::<T>(&columns, 0, None));
    };
    check_parts::<T>(backend, &columns, &values, Some(&types))?;
    let lock_table = backend.lock_table_exists(db).await?;
    Ok(Verified {
        table: entity.table_name(),
        key_columns: names
            .iter()
            .zip(types)
            .map(|(name, column_type)| ((*name).to_owned(), column_type.unwrap_or_default()))
            .collect(),
        unique_index: covered,
        lock_table,
    })
}

/// Each part of the key against its column: the table has it (`types`, when the catalog was
/// read: one per column, `None` where the table has no such column), the entity's field holds
/// the part's value, and the column's type does.
fn check_parts<T: IdempotentCreate>(
    backend: Backend,
    columns: &[T::Column],
    values: &[Value],
    types: Option<&[Option<String>]>,
) -> Result<(), Error> {
    for (part, (column, value)) in columns.iter().zip(values).enumerate() {
        let column_type = types.map(|types| types.get(part).cloned().flatten());
        let fits = match &column_type {
            Some(None) => return Err(key_type::<T>(columns, part, None)),
            Some(Some(column_type)) => backend.key_part_fits(value, column_type),
            None => true,
        };
        if !fits || !field_holds::<T>(*column, value) {
            let named = column_type
                .flatten()
                .unwrap_or_else(|| format!("{:?}", column.def().get_column_type()));
            return Err(key_type::<T>(columns, part, Some(named)));
        }
    }
    Ok(())
}

/// Whether the entity's field of `column` holds a key part bound as `value`: SeaORM's
/// `try_set`, which is what builds the new row; for a NULL of the part's type (in
/// [`verify`]), the variant of the field's default value (a field without a default fits).
fn field_holds<T: IdempotentCreate>(column: T::Column, value: &Value) -> bool {
    if *value != value.as_null() {
        let mut row = <T::ActiveModel as ActiveModelTrait>::default();
        return row.try_set(column, value.clone()).is_ok();
    }
    match <T::ActiveModel as ActiveModelTrait>::default_values().get(column) {
        ActiveValue::Set(field) | ActiveValue::Unchanged(field) => {
            discriminant(&field) == discriminant(value)
        }
        ActiveValue::NotSet => true,
    }
}

/// [`Error::KeyType`] for part `part` of `T`'s key.
fn key_type<T: IdempotentCreate>(
    columns: &[T::Column],
    part: usize,
    column_type: Option<String>,
) -> Error {
    let key = type_name::<T::Key>();
    Error::KeyType {
        table: T::default().table_name(),
        column: columns
            .get(part)
            .map(|column| column.as_str().to_owned())
            .unwrap_or_default(),
        column_type,
        key_type: if columns.len() > 1 {
            format!("part {} of {key}", part + 1)
        } else {
            key.to_owned()
        },
    }
}
