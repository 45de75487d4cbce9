//! A chunk of new keys in one statement, where a unique index covers exactly the key's
//! columns, in autocommit, then one look for the keys it skipped, whose rows exist:
//!
//! - PostgreSQL ([`chunk_statement`](crate::backend::postgres::chunk_statement)): the
//!   statement tries every key's lock and inserts the rows with `ON CONFLICT (key) DO NOTHING
//!   RETURNING` only if all are granted;
//! - SQLite ([`one_statement`](crate::backend::sqlite::one_statement)): the multi-row insert
//!   with `ON CONFLICT (key) DO NOTHING RETURNING`, whose write lock is every key's lock; only
//!   for a batch that waits [`Wait::Forever`](crate::Wait::Forever), as a single call's one statement.
//!
//! The batch's form of a single call's [one-statement path](crate::call::one_statement), with
//! the same conditions: data in hand, no update function, a pool, a verified index, an entity
//! that allows gaps in its ids; and here also every key of the chunk a lock of its own.
//!
//! Keys not all free, an index gone, or a skipped key's row deleted before the look: those
//! rows are left to the locked path ([`Pending`]), which takes every lock of the chunk, looks,
//! and inserts those still missing. A chunk that goes there after its statement inserted rows
//! is two transactions: if the second fails, the first's rows stay (their items come back
//! `Existing` when the batch runs again).

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Value};

use super::rows::{MAX_VALUES, NewRow, canonical, key_column_names, look, model_key};
use super::steps::{ChunkKeys, Pending};
use crate::backend::Backend;
use crate::backend::inserted::ChunkAnswer;
use crate::call::key::CallKey;
use crate::call::one_statement::key_is_guarded;
use crate::call::row::{every_column, stored_with_less_precision};
use crate::outcome::Done;
use crate::source::PoolId;
use crate::wait::Deadline;
use crate::{Error, IdempotentCreate, LockKey, unique_index};

/// What [`chunk`] did.
pub(super) enum InOneStatement<T: IdempotentCreate> {
    /// The chunk's answers, in input order.
    Done(Vec<Done<T::Model>>),
    /// The path does not apply: the data, untouched.
    NotTaken(Vec<Option<T::Data>>),
    /// Rows the statement did not decide, for the locked path.
    Locked(Pending<T>),
}

/// The chunk of `keys` (with their `lock_keys`, and `sorted`: those sorted and distinct) in one
/// statement, when the path applies (see the module docs).
pub(super) async fn chunk<T: IdempotentCreate>(
    backend: Backend,
    conn: &DatabaseConnection,
    keys: &[CallKey<T>],
    lock_keys: &[LockKey],
    sorted: &[LockKey],
    deadline: Deadline,
    mut data: Vec<Option<T::Data>>,
) -> Result<InOneStatement<T>, Error> {
    let wait = deadline.asked();
    let (Some(pool), false, true, Some(first)) = (
        PoolId::of(conn),
        T::ids_without_gaps(),
        backend.has_chunk_statement(conn, wait),
        keys.first(),
    ) else {
        return Ok(InOneStatement::NotTaken(data));
    };
    if keys.iter().any(CallKey::has_missing_part)
        || !key_is_guarded(backend, conn, pool, first).await
    {
        return Ok(InOneStatement::NotTaken(data));
    }
    let mut chunk = ChunkKeys::<T::Model>::of(keys, lock_keys);
    let alone = chunk
        .firsts
        .iter()
        .any(|&i| chunk.distinct[i].as_ref().is_some_and(|entry| entry.alone));
    if alone {
        return Ok(InOneStatement::NotTaken(data));
    }
    let mut rows = Vec::with_capacity(chunk.firsts.len());
    for &i in &chunk.firsts {
        let datum = data[i].take().ok_or_else(|| {
            Error::Database(DbErr::Custom(format!(
                "no data for item {i} of the chunk, whose row is missing"
            )))
        })?;
        rows.push(NewRow::of(
            i,
            &keys[i],
            T::new_active_model(&keys[i].key, datum),
        )?);
    }
    let width = rows[0].columns.len();
    let statement = if rows
        .iter()
        .all(|row| row.set_columns == rows[0].set_columns)
        && width * rows.len() <= MAX_VALUES
    {
        let values: Vec<Value> = rows.iter().flat_map(|row| row.values.clone()).collect();
        let one_row = one_row(backend.db_backend(), &rows[0], first);
        backend.chunk_statement(&one_row, width, rows.len(), values, sorted, deadline.left())
    } else {
        None
    };
    let Some(statement) = statement else {
        return Ok(InOneStatement::Locked(Pending { chunk, rows }));
    };
    let returned = match backend.run_chunk_statement(conn, statement).await {
        Ok(ChunkAnswer::Inserted(returned)) => returned,
        Ok(ChunkAnswer::KeysHeld) => return Ok(InOneStatement::Locked(Pending { chunk, rows })),
        Err(err) if backend.one_statement_fell_through(&err) => {
            // The index is gone (or the default isolation refused the conflict): ask the
            // catalog again next time; this chunk takes the locked path.
            unique_index::forget::<T>(pool);
            return Ok(InOneStatement::Locked(Pending { chunk, rows }));
        }
        // The insert's wait behind a writer that bypasses the lock, ended by its bound.
        Err(err) => return Err(backend.statement_wait_error(err.into(), sorted[0], deadline)),
    };
    let mut unmatched = 0;
    for row in &returned {
        let model = T::Model::from_query_result(row, "")?;
        match chunk.by_key.get(&canonical(&model_key::<T>(&model, first))) {
            Some(&i) => {
                let entry = chunk.distinct[i].as_mut().expect("a first item");
                entry.row = Some(model);
                entry.created = true;
            }
            None => unmatched += 1,
        }
    }
    if unmatched > 0 {
        return Err(stored_with_less_precision::<T>(key_column_names(first)));
    }
    // The skipped keys' rows exist: one look finds them.
    let skipped: Vec<usize> = chunk
        .firsts
        .iter()
        .copied()
        .filter(|&i| chunk.missing(i))
        .collect();
    chunk.found(look::<T, _>(conn, keys, &skipped).await?, first);
    rows.retain(|row| chunk.missing(row.item));
    if rows.is_empty() {
        Ok(InOneStatement::Done(chunk.answers()))
    } else {
        // Deleted since the conflict: the locked path decides.
        Ok(InOneStatement::Locked(Pending { chunk, rows }))
    }
}

/// SeaORM's insert of `row` alone, with the chunk's `ON CONFLICT (key columns) DO NOTHING` and
/// `RETURNING` every column: the text [`Backend::chunk_statement`] repeats for every row.
fn one_row<T: IdempotentCreate>(
    backend: DbBackend,
    row: &NewRow<T>,
    key: &CallKey<T>,
) -> sea_orm::Statement {
    let mut insert = Query::insert();
    insert
        .into_table(T::default().table_ref())
        .columns(row.columns.iter().copied())
        .values_panic(
            row.columns
                .iter()
                .zip(&row.values)
                .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
        )
        .on_conflict(
            OnConflict::columns(key.columns.iter().copied())
                .do_nothing()
                .to_owned(),
        )
        .returning(every_column::<T>());
    backend.build(&insert)
}
