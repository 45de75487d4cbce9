//! The statements of a batch's chunk: one look for all its keys, and the multi-row insert of
//! the missing rows (with the guarded single insert a row falls back to).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr,
    FromQueryResult, IdenStatic, Iterable, ModelTrait, QueryFilter, Value,
};

use crate::backend::Backend;
use crate::call::key::CallKey;
use crate::call::row::{
    RowValues, every_column, find, insert_unless_exists, stored_with_less_precision,
};
use crate::classify::{ErrorClass, classify};
use crate::outcome::Done;
use crate::transaction::Txn;
use crate::wait::Deadline;
use crate::{Error, IdempotentCreate, Wait};

/// At most this many bound values in one insert (SQLite's limit is 32766, PostgreSQL's 65535).
pub(super) const MAX_VALUES: usize = 30_000;

/// The key values of `model`, in the order of `key`'s columns.
pub(super) fn model_key<T: IdempotentCreate>(model: &T::Model, key: &CallKey<T>) -> Vec<Value> {
    key.columns
        .iter()
        .map(|column| model.get(*column))
        .collect()
}

/// A key's values as the batch tells keys apart: equal values, and integers of two widths
/// with one value (a key of `i32` for a column of `i64`), are the same key.
pub(super) fn canonical(values: &[Value]) -> Vec<Value> {
    values
        .iter()
        .map(|value| match integer(value) {
            Some(v) => match i64::try_from(v) {
                Ok(v) => Value::BigInt(Some(v)),
                Err(_) => value.clone(),
            },
            None => value.clone(),
        })
        .collect()
}

pub(super) fn integer(value: &Value) -> Option<i128> {
    Some(match value {
        Value::TinyInt(Some(v)) => i128::from(*v),
        Value::SmallInt(Some(v)) => i128::from(*v),
        Value::Int(Some(v)) => i128::from(*v),
        Value::BigInt(Some(v)) => i128::from(*v),
        Value::TinyUnsigned(Some(v)) => i128::from(*v),
        Value::SmallUnsigned(Some(v)) => i128::from(*v),
        Value::Unsigned(Some(v)) => i128::from(*v),
        Value::BigUnsigned(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

/// What one distinct key of a chunk is, as the work under the lock learns it.
pub(super) struct Distinct<M> {
    /// The row, once found or created.
    pub(super) row: Option<M>,
    /// Whether this key's row was created by this chunk.
    pub(super) created: bool,
    /// Handled one by one: its lock key is shared with another distinct key of the chunk, or
    /// the look returned a row no key matched.
    pub(super) alone: bool,
}

/// At most this many keys in one `(k1 = ? AND k2 = ?) OR ...` look: SQLite refuses an
/// expression deeper than 1000 ("Expression tree is too large"), and SeaQuery writes the `OR`s
/// as a nested expression, recursively (over 1000 overflowed a 2 MiB stack).
const KEYS_PER_OR: usize = 200;

/// Looks for the rows of the `items` of `keys`: `k IN (...)` for a one-column key,
/// `(k1 = ? AND k2 = ?) OR ...` otherwise; every value bound. One statement per
/// [`MAX_VALUES`] bound values (a one-column key) or [`KEYS_PER_OR`] keys (otherwise), so a
/// chunk of any size stays within every database's limits.
pub(super) async fn look<T: IdempotentCreate, C: ConnectionTrait>(
    txn: &C,
    keys: &[CallKey<T>],
    items: &[usize],
) -> Result<Vec<T::Model>, DbErr> {
    let columns = T::key_columns();
    let in_list =
        |items: &[usize]| columns.len() == 1 && items.iter().all(|&i| !keys[i].has_missing_part());
    let per_statement = if in_list(items) {
        MAX_VALUES
    } else {
        KEYS_PER_OR.min(MAX_VALUES / columns.len().max(1))
    };
    let mut rows = Vec::new();
    for piece in items.chunks(per_statement.max(1)) {
        let condition = match columns.as_slice() {
            [column] if in_list(piece) => Condition::all().add(
                Expr::col(*column).is_in(
                    piece
                        .iter()
                        .map(|&i| column.save_as(Expr::val(keys[i].values[0].clone()))),
                ),
            ),
            _ => piece
                .iter()
                .fold(Condition::any(), |any, &i| any.add(keys[i].condition())),
        };
        rows.extend(T::find().filter(condition).all(txn).await?);
    }
    Ok(rows)
}

/// A new row of the multi-row insert: which item it is for, its columns and values, and the
/// guarded single insert it falls back to.
pub(super) struct NewRow<T: IdempotentCreate> {
    pub(super) item: usize,
    /// Bit `i` for column `i` of `Column::iter()`: rows with the same columns share a statement.
    pub(super) set_columns: Vec<bool>,
    pub(super) columns: Vec<T::Column>,
    pub(super) values: Vec<Value>,
}

impl<T: IdempotentCreate> NewRow<T> {
    pub(super) fn of(
        item: usize,
        key: &CallKey<T>,
        mut model: T::ActiveModel,
    ) -> Result<Self, DbErr> {
        for (column, value) in key.columns.iter().zip(&key.values) {
            model.try_set(*column, value.clone())?;
        }
        let mut row = NewRow {
            item,
            set_columns: Vec::new(),
            columns: Vec::new(),
            values: Vec::new(),
        };
        for column in T::Column::iter() {
            match model.get(column) {
                ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                    row.set_columns.push(true);
                    row.columns.push(column);
                    row.values.push(value);
                }
                ActiveValue::NotSet => row.set_columns.push(false),
            }
        }
        Ok(row)
    }

    /// The row as a single call's guarded insert binds it (built only when needed).
    pub(super) fn guarded(&self, key: &CallKey<T>) -> Result<RowValues<T>, DbErr> {
        let mut model = <T::ActiveModel as ActiveModelTrait>::default();
        for (column, value) in self.columns.iter().zip(&self.values) {
            model.try_set(*column, value.clone())?;
        }
        RowValues::of(key, model)
    }
}

/// Inserts `rows`: one statement per set of columns (usually one), at most [`MAX_VALUES`]
/// values each. The rows it returns (MySQL: with MariaDB's `RETURNING`) are the created rows;
/// a row that a writer which does not take the lock committed meanwhile, or that conflicts
/// otherwise, is handled as a single call's guarded insert handles it.
pub(super) async fn insert_rows<T: IdempotentCreate>(
    txn: &Txn<'_>,
    backend: DbBackend,
    keys: &[CallKey<T>],
    by_key: &HashMap<Vec<Value>, usize>,
    distinct: &mut [Option<Distinct<T::Model>>],
    mut rows: Vec<NewRow<T>>,
    deadline: Deadline,
) -> Result<(), Error> {
    // Each statement's waits on the entity table (behind a writer that bypasses the lock, or
    // InnoDB's gap and AUTO-INC locks) bounded by what is left of the chunk's wait.
    let bounds = Backend::of(backend)?;
    rows.sort_by(|a, b| a.set_columns.cmp(&b.set_columns).then(a.item.cmp(&b.item)));
    let mut start = 0;
    while start < rows.len() {
        let width = rows[start].columns.len().max(1);
        let most = (MAX_VALUES / width).max(1);
        let mut end = start + 1;
        while end < rows.len()
            && end - start < most
            && rows[end].set_columns == rows[start].set_columns
        {
            end += 1;
        }
        let group = &rows[start..end];
        let mut insert = Query::insert();
        insert
            .into_table(T::default().table_ref())
            .columns(group[0].columns.iter().copied());
        for row in group {
            insert
                .values(
                    row.columns
                        .iter()
                        .zip(&row.values)
                        .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
                )
                .map_err(|err| DbErr::Custom(err.to_string()))?;
        }
        let items: Vec<usize> = group.iter().map(|row| row.item).collect();
        let mut in_group = vec![false; keys.len()];
        for &i in &items {
            in_group[i] = true;
        }
        // MySQL: whether the multi-row insert stored every row of the group.
        let mut stored = false;
        let inserted: Vec<T::Model> = match backend {
            // MariaDB's `RETURNING` (10.5+, as the guarded insert's): the rows it stored, read
            // back by the insert itself.
            DbBackend::MySql => {
                let columns: Vec<&str> = T::Column::iter().map(|column| column.as_str()).collect();
                let insert = crate::backend::mysql::returning(backend.build(&insert), &columns);
                let insert = bounds.bound_entity_wait(insert, deadline.left());
                match txn.query_all_raw(insert).await {
                    Ok(returned) => {
                        stored = true;
                        returned
                            .iter()
                            .map(|row| T::Model::from_query_result(row, ""))
                            .collect::<Result<_, _>>()?
                    }
                    // A row committed meanwhile by a writer that does not take the lock: the
                    // statement is undone; every row goes the single call's way.
                    Err(err) if classify(&err) == ErrorClass::UniqueViolation => Vec::new(),
                    Err(err) => return Err(err.into()),
                }
            }
            _ => {
                insert
                    .on_conflict(OnConflict::new().do_nothing().to_owned())
                    .returning(every_column::<T>());
                let returned = bounds
                    .entity_waits_bounded(
                        txn,
                        deadline.left(),
                        txn.query_all_raw(backend.build(&insert)),
                    )
                    .await?;
                returned
                    .iter()
                    .map(|row| T::Model::from_query_result(row, ""))
                    .collect::<Result<_, _>>()?
            }
        };
        let mut unmatched = 0;
        for model in inserted {
            match by_key
                .get(&canonical(&model_key::<T>(&model, &keys[0])))
                .copied()
                .filter(|&i| in_group[i])
            {
                Some(i) => {
                    let entry = distinct[i].as_mut().expect("a first item");
                    entry.row = Some(model);
                    entry.created = true;
                }
                None => unmatched += 1,
            }
        }
        if unmatched > 0 && backend != DbBackend::MySql {
            // A returned row whose key matches none given: the column stores less than the
            // key's value (`created` tells which).
            return Err(stored_with_less_precision::<T>(key_column_names(
                &keys[items[0]],
            )));
        }
        for row in group {
            let key = &keys[row.item];
            let entry = distinct[row.item].as_mut().expect("a first item");
            if entry.row.is_some() {
                continue;
            }
            if stored {
                // MySQL stored it, and the key of no returned row is its key: the database's
                // own equality finds it, or the column keeps less than the key's value.
                entry.row = Some(
                    find::<T, _>(txn, key)
                        .await?
                        .ok_or_else(|| not_found_by_key::<T>(key))?,
                );
                entry.created = true;
                continue;
            }
            match insert_one::<T>(txn, key, &row.guarded(key)?, deadline.left()).await? {
                Done::Created(model) => {
                    entry.row = Some(model);
                    entry.created = true;
                }
                done => entry.row = Some(done.model().clone()),
            }
        }
        start = end;
    }
    Ok(())
}

/// The key's columns, named together for an error.
pub(super) fn key_column_names<T: IdempotentCreate>(key: &CallKey<T>) -> String {
    let columns: Vec<&str> = key.columns.iter().map(|column| column.as_str()).collect();
    columns.join(", ")
}

/// MySQL: a row the chunk inserted whose returned key matches none given and that a read by
/// its key does not find, so a key column stores less than the key's value.
pub(super) fn not_found_by_key<T: IdempotentCreate>(key: &CallKey<T>) -> Error {
    Error::KeyNotStorable {
        table: T::default().table_name(),
        column: key_column_names(key),
        cause: "is stored differently from how it was given (the column rounds or truncates it), so the row is not found by its key",
    }
}

/// One row's guarded insert, as a single call makes it under the lock
/// ([`insert_unless_exists`]: `INSERT ... SELECT ... WHERE NOT EXISTS`, then the look when
/// nothing was inserted).
pub(super) async fn insert_one<T: IdempotentCreate>(
    txn: &Txn<'_>,
    key: &CallKey<T>,
    row: &RowValues<T>,
    wait: Wait,
) -> Result<Done<T::Model>, Error> {
    insert_unless_exists::<T, _>(txn, key, row, wait).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LockKey;
    use crate::call::batch::order;

    #[test]
    fn keys_of_two_integer_widths_are_the_same_key() {
        let same = |a: Value, b: Value| canonical(&[a]) == canonical(&[b]);
        assert!(same(Value::from(7_i32), Value::from(7_i64)));
        assert!(!same(Value::from(7_i32), Value::from(8_i64)));
        assert!(!same(
            Value::from("a".to_owned()),
            Value::from("A".to_owned())
        ));
    }

    #[test]
    fn locks_sort_as_the_lock_table_orders_them() {
        let mut keys = vec![
            LockKey::Pair(2, -1),
            LockKey::Pair(-5, 9),
            LockKey::Pair(2, -3),
        ];
        keys.sort_unstable_by_key(|key| order(*key));
        assert_eq!(
            keys,
            vec![
                LockKey::Pair(-5, 9),
                LockKey::Pair(2, -3),
                LockKey::Pair(2, -1)
            ]
        );
    }
}
