//! The statements of a call, bound to its key: the look ([`find`]), the guarded insert
//! ([`insert_unless_exists`]) and the update ([`update_existing`]), each text kept per entity
//! ([`statements`]).

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, ReturningClause};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DbBackend, DbErr, FromQueryResult,
    IdenStatic, Iterable, ModelTrait, QueryFilter, QueryResult, QueryTrait, Statement, UpdateMany,
    Value,
};

use super::key::CallKey;
use crate::backend::inserted::Inserted;
use crate::backend::{self, Backend, mysql};
use crate::classify::{ErrorClass, classify};
use crate::error::LockedRow;
use crate::outcome::Done;
use crate::statements::{self, Kind};
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

/// The row with this key, if any: `SELECT cols FROM t WHERE k1 = $1 AND ...` (its text kept
/// per entity: [`statements`]), the first row it returns.
pub(super) async fn find<T, C>(db: &C, key: &CallKey<T>) -> Result<Option<T::Model>, DbErr>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let find = find_statement::<T>(db.get_database_backend(), key);
    // Not `T::find().from_raw_sql(..)`: `find()` builds a whole `SELECT` of every column, only
    // to be replaced by the kept text.
    T::Model::find_by_statement(find).one(db).await
}

/// The statement of [`find`].
pub(super) fn find_statement<T: IdempotentCreate>(
    backend: DbBackend,
    key: &CallKey<T>,
) -> Statement {
    // No `LIMIT 1`: SeaORM binds the limit as a parameter, and SQLite plans a bound LIMIT with
    // its value, so rebinding it expires the prepared statement: every look parsed and planned
    // its SQL again (14% of a late redelivery's profile on SQLite). The key columns are unique,
    // and `one` reads only the first row anyway.
    let build = || T::find().filter(key.condition()).build(backend);
    if key.has_missing_part() {
        return build();
    }
    statements::statement::<T>(backend, Kind::Find, key.values.clone(), build)
}

/// The error of a row that a writer which does not take the lock inserted or deleted between
/// two of the call's statements (see [`Error::WrittenWithoutLock`]).
pub(super) fn written_without_lock<T: IdempotentCreate>(key: &CallKey<T>) -> Error {
    Error::WrittenWithoutLock {
        row: Box::new(LockedRow::new(T::default().table_name(), key.shown.clone())),
    }
}

/// The row the guarded insert returned, as [`Done::Created`], once it is known to be the key's:
/// a key column that stores less than the key's value (`timestamp(0)`, `numeric(10,2)`) returns
/// another value, and a row the key can never find again is refused (the error rolls it back).
/// Parts whose value is of another type than the column's field are not compared.
pub(super) fn created<T: IdempotentCreate>(
    key: &CallKey<T>,
    row: &QueryResult,
) -> Result<Done<T::Model>, Error> {
    let model = T::Model::from_query_result(row, "")?;
    for (column, given) in key.columns.iter().zip(&key.values) {
        let stored = model.get(*column);
        if std::mem::discriminant(&stored) == std::mem::discriminant(given) && stored != *given {
            return Err(stored_with_less_precision::<T>(column.as_str().to_owned()));
        }
    }
    Ok(Done::Created(model))
}

/// A key column (or the key's columns, named together) that stored a created row's key with
/// less precision than it was given: the row can never be found by its key again.
pub(super) fn stored_with_less_precision<T: IdempotentCreate>(column: String) -> Error {
    Error::KeyNotStorable {
        table: T::default().table_name(),
        column,
        cause: "is stored with less precision than it was given (the column rounds or truncates it)",
    }
}

/// `RETURNING` every column of `T`, each as SeaORM reads it into a model.
pub(super) fn every_column<T: IdempotentCreate>() -> ReturningClause {
    Query::returning().exprs(T::Column::iter().map(|column| column.select_as(Expr::col(column))))
}

/// Inserts the row with a guard (`INSERT ... SELECT ... WHERE NOT EXISTS`), then, only if
/// nothing was inserted, reads it. Under the lock the guard fires on PostgreSQL when the row
/// appeared between our first look and the lock, or when the call did not look first (a
/// redelivery while [`LookFirst`](crate::LookFirst) skips the look); on SQLite inside a
/// caller's transaction it is what makes look-and-insert one atomic statement under the write
/// lock.
///
/// A writer that does not take the lock may have inserted the key and not yet committed: the
/// guard cannot see that row, and the insert waits on the unique index for its writer. When it
/// commits, PostgreSQL's `ON CONFLICT DO NOTHING` inserts nothing (no error, so a caller's
/// transaction stays usable) and MySQL's duplicate-key error undoes only the statement; either
/// way the read that follows finds the row, as [`Done::Existing`].
pub(super) async fn insert_unless_exists<T, C>(
    txn: &C,
    key: &CallKey<T>,
    new_row: &RowValues<T>,
    wait: Wait,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let backend = txn.get_database_backend();
    let insert = new_row.insert_unless_exists(backend, key, Conflicts::Absorb);
    let columns: Vec<&str> = T::Column::iter().map(|column| column.as_str()).collect();
    match backend::insert_returning(txn, insert, &columns, wait).await {
        Ok(Inserted::Row(row)) => return created::<T>(key, &row),
        Ok(Inserted::Nothing) => {}
        Err(err)
            if backend == DbBackend::MySql && classify(&err) == ErrorClass::UniqueViolation =>
        {
            return match find::<T, _>(txn, key).await? {
                Some(model) => Ok(Done::Existing(model)),
                None => Err(err.into()),
            };
        }
        Err(err) => return Err(err.into()),
    }
    if let Some(model) = find::<T, _>(txn, key).await? {
        return Ok(Done::Existing(model));
    }
    // Nothing inserted and nothing found: `ON CONFLICT DO NOTHING` absorbed a conflict on
    // another unique index, or a writer deleted the row in between. The insert again, with
    // conflicts raised, tells which (and its error is the database's own).
    let insert = new_row.insert_unless_exists(backend, key, Conflicts::Raise);
    match backend::insert_returning(txn, insert, &columns, wait).await? {
        Inserted::Row(row) => created::<T>(key, &row),
        // MySQL's guard reads the latest row (a locking read, in a REPEATABLE READ
        // transaction), the look this transaction's snapshot: a row the guard keeps finding
        // and the look never does was committed after the snapshot, by a writer that did not
        // count itself on the lock row (MariaDB's one statement, or one that bypasses the
        // lock), which the lock's own snapshot check cannot see.
        Inserted::Nothing
            if backend == DbBackend::MySql
                && mysql::one_statement::snapshot_misses_row(txn, new_row.existing(key))
                    .await? =>
        {
            Err(Error::UnsafeIsolation {
                level: "REPEATABLE READ and read before this call: its snapshot is older than \
                        the key's row, which another writer committed"
                    .to_owned(),
            })
        }
        Inserted::Nothing => Err(written_without_lock::<T>(key)),
    }
}

/// The statement writing the update function's change to the row with this key: the columns
/// the change sets, never the key columns (the row stays the key's). `None` when there is
/// nothing to write. (Built before any await: an active model need not be `Send`.)
pub(super) fn update_statement<T: IdempotentCreate>(
    key: &CallKey<T>,
    change: Change<T::ActiveModel>,
) -> Result<Option<UpdateMany<T>>, Error> {
    let mut row = match change {
        Change::Keep => return Ok(None),
        Change::Refuse(cause) => return Err(Error::UpdateRefused(cause)),
        Change::Update(row) => row,
    };
    for column in &key.columns {
        row.not_set(*column);
    }
    Ok(row
        .is_changed()
        .then(|| T::update_many().set(row).filter(key.condition())))
}

/// Runs `update` and returns the row as it is after it. (MySQL has no `UPDATE ... RETURNING`:
/// there the row is read back by key, in the same transaction, which sees its own write; and
/// the update's lock waits are bounded by `wait`, see
/// [`Backend::bound_entity_wait`](crate::backend::Backend::bound_entity_wait).)
pub(super) async fn update_existing<T, C>(
    txn: &C,
    backend: Backend,
    key: &CallKey<T>,
    update: UpdateMany<T>,
    wait: Wait,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let updated = if txn.support_returning() {
        // A writer that bypasses the lock may hold the row: bounded as the lock's wait.
        backend
            .entity_waits_bounded(txn, wait, update.exec_with_returning(txn))
            .await?
            .into_iter()
            .next()
    } else {
        let statement = backend.bound_entity_wait(update.build(backend.db_backend()), wait);
        txn.execute_raw(statement).await?;
        find::<T, _>(txn, key).await?
    };
    match updated {
        Some(model) => Ok(Done::Updated(model)),
        // Only a writer that does not take the lock can delete the row under it.
        None => Err(written_without_lock::<T>(key)),
    }
}

/// What the guarded insert does with a conflict on a unique index (PostgreSQL; the other
/// backends' statement is the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conflicts {
    /// `ON CONFLICT DO NOTHING`: wait for a writer that does not take the lock, and insert
    /// nothing if it committed the key.
    Absorb,
    /// No `ON CONFLICT`: the database's own error (rare: see [`insert_unless_exists`]).
    Raise,
}

/// The columns a new row sets and their values, the key's included: what the guarded insert
/// binds. (Taken from the active model before any await: an active model need not be `Send`.)
pub(super) struct RowValues<T: IdempotentCreate> {
    /// Bit `i` for column `i` of `Column::iter()`.
    set_columns: u64,
    columns: Vec<T::Column>,
    values: Vec<Value>,
}

impl<T: IdempotentCreate> RowValues<T> {
    /// Fails (instead of panicking) when the key's value does not fit the key column's type.
    pub(super) fn of(key: &CallKey<T>, mut row: T::ActiveModel) -> Result<Self, DbErr> {
        for (column, value) in key.columns.iter().zip(&key.values) {
            row.try_set(*column, value.clone())?;
        }
        let mut new_row = RowValues {
            set_columns: 0,
            columns: Vec::new(),
            values: Vec::new(),
        };
        for (index, column) in T::Column::iter().enumerate() {
            if let ActiveValue::Set(value) | ActiveValue::Unchanged(value) = row.get(column) {
                new_row.set_columns |= 1_u64.checked_shl(index as u32).unwrap_or(0);
                new_row.columns.push(column);
                new_row.values.push(value);
            }
        }
        Ok(new_row)
    }

    /// `INSERT INTO t (cols) SELECT vals WHERE condition ON CONFLICT (key columns) DO NOTHING
    /// RETURNING cols`, for the one-statement path (`condition`: the backend's, see
    /// [`Backend::one_statement_shape`](crate::backend::Backend::one_statement_shape)).
    /// Built every time, as SeaORM builds its own `on_conflict` insert.
    pub(super) fn insert_on_conflict(
        &self,
        backend: DbBackend,
        key: &CallKey<T>,
        condition: &'static str,
    ) -> Statement {
        let source = Query::select()
            .exprs(
                self.columns
                    .iter()
                    .zip(&self.values)
                    .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
            )
            .and_where(Expr::cust(condition))
            .to_owned();
        let mut insert = Query::insert();
        insert
            .into_table(T::default().table_ref())
            .columns(self.columns.iter().copied())
            .select_from(source)
            .expect("columns and values are built pairwise, so their counts match")
            .on_conflict(
                OnConflict::columns(key.columns.iter().copied())
                    .do_nothing()
                    .to_owned(),
            )
            .returning(every_column::<T>());
        backend.build(&insert)
    }

    /// The one-statement path's statement: [`insert_on_conflict`](Self::insert_on_conflict)
    /// as `wrap` wraps it (PostgreSQL: with the try for the lock), whose values are this row's
    /// then `lock_values`; its text kept per entity and set of columns ([`statements`]).
    pub(super) fn one_statement(
        &self,
        backend: DbBackend,
        key: &CallKey<T>,
        condition: &'static str,
        wrap: impl FnOnce(Statement) -> Statement,
        lock_values: Vec<Value>,
        bounded: bool,
    ) -> Statement {
        let build = || wrap(self.insert_on_conflict(backend, key, condition));
        if T::Column::iter().count() > 64 || key.has_missing_part() {
            return build();
        }
        let kind = Kind::OneStatement {
            columns: self.set_columns,
            lock_values: lock_values.len(),
            bounded,
        };
        let mut bound = self.values.clone();
        bound.extend(lock_values);
        statements::statement::<T>(backend, kind, bound, build)
    }

    /// MariaDB's one statement ([`mysql::one_statement`]):
    /// `INSERT INTO t (cols) SELECT vals FROM slots WHERE slot = ? AND NOT EXISTS (SELECT 1
    /// FROM t WHERE key) FOR UPDATE NOWAIT RETURNING cols`, every value bound (the row's, the
    /// slot of `lock_key`, the key's); its text kept per entity and set of columns
    /// ([`statements`]).
    pub(super) fn insert_on_the_slot(&self, key: &CallKey<T>, lock_key: LockKey) -> Statement {
        let build = || {
            let mut source = Query::select();
            source.exprs(
                self.columns
                    .iter()
                    .zip(&self.values)
                    .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
            );
            mysql::one_statement::on_the_slot(&mut source, lock_key);
            source.and_where(Expr::exists(self.existing(key)).not());
            let mut insert = Query::insert();
            insert
                .into_table(T::default().table_ref())
                .columns(self.columns.iter().copied())
                .select_from(source)
                .expect("columns and values are built pairwise, so their counts match");
            let columns: Vec<&str> = T::Column::iter().map(|column| column.as_str()).collect();
            mysql::returning(DbBackend::MySql.build(&insert), &columns)
        };
        if T::Column::iter().count() > 64 {
            return build();
        }
        let mut bound = self.values.clone();
        bound.push(mysql::one_statement::slot_value(lock_key));
        bound.extend(key.values.iter().cloned());
        let kind = Kind::OneStatement {
            columns: self.set_columns,
            lock_values: 1,
            bounded: false,
        };
        statements::statement::<T>(DbBackend::MySql, kind, bound, build)
    }

    /// The key's rows: `SELECT 1 FROM t WHERE key`, the guard's subquery.
    fn existing(&self, key: &CallKey<T>) -> sea_orm::sea_query::SelectStatement {
        Query::select()
            .expr(Expr::cust("1"))
            .from(T::default().table_ref())
            .cond_where(key.condition())
            .to_owned()
    }

    /// `INSERT INTO t (cols) SELECT vals WHERE NOT EXISTS (SELECT 1 FROM t WHERE k1 = $1 AND
    /// k2 = $2 ...) [ON CONFLICT DO NOTHING] RETURNING cols`, every value bound, with SeaORM's
    /// own per-column casts (enums); its text kept per entity and set of columns
    /// ([`statements`]).
    pub(super) fn insert_unless_exists(
        &self,
        backend: DbBackend,
        key: &CallKey<T>,
        conflicts: Conflicts,
    ) -> Statement {
        let build = || {
            let existing = self.existing(key);
            let source = Query::select()
                .exprs(
                    self.columns
                        .iter()
                        .zip(&self.values)
                        .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
                )
                .and_where(Expr::exists(existing).not())
                .to_owned();
            let mut insert = Query::insert();
            insert
                .into_table(T::default().table_ref())
                .columns(self.columns.iter().copied())
                .select_from(source)
                .expect("columns and values are built pairwise, so their counts match")
                .returning(every_column::<T>());
            if conflicts == Conflicts::Absorb && backend == DbBackend::Postgres {
                // No conflict target: the key's columns need no unique index of their own.
                insert.on_conflict(OnConflict::new().do_nothing().to_owned());
            }
            backend.build(&insert)
        };
        if conflicts == Conflicts::Raise || T::Column::iter().count() > 64 || key.has_missing_part()
        {
            // The rare statement, more columns than the set's bits, or a key matched with
            // `IS NULL`: built every time.
            return build();
        }
        let mut bound = self.values.clone();
        bound.extend(key.values.iter().cloned());
        let kind = Kind::InsertUnlessExists {
            columns: self.set_columns,
        };
        statements::statement::<T>(backend, kind, bound, build)
    }
}

/// After the database refused the write as read-only: the row, if it is stored, as
/// [`Done::Existing`]; otherwise the read-only error.
pub(super) async fn found_after_read_only<T, C>(
    db: &C,
    key: &CallKey<T>,
    read_only: DbErr,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    match find::<T, _>(db, key).await {
        Ok(Some(model)) => Ok(Done::Existing(model)),
        Ok(None) | Err(_) => Err(Error::ReadOnly(read_only)),
    }
}

#[cfg(test)]
mod tests;
