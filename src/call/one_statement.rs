//! A new key in one statement, where a unique index covers exactly the key's columns: the
//! statement tries the key's lock and, granted, inserts with `ON CONFLICT (key columns) DO
//! NOTHING`, in autocommit (PostgreSQL: [`one_statement`](crate::backend::postgres::one_statement);
//! SQLite: its write lock is the lock; MariaDB: a guarded insert that locks the key's slot
//! without waiting, [`one_statement`](crate::backend::mysql::one_statement)). Only for a
//! create-only call with data in hand on a pool, whose key has no NULL part, and whose entity
//! allows gaps in its ids ([`IdempotentCreate::ids_without_gaps`]): `make_data` (data made
//! once, under the lock), the update form (decisions under the lock) and callers'
//! transactions (where `ON CONFLICT` meets serialization failures under REPEATABLE READ) keep
//! the locked path.

use sea_orm::{DatabaseConnection, IdenStatic};

use super::Call;
use super::key::CallKey;
use super::request::{NewRow, OnExisting, Request};
use super::row::{RowValues, created, find};
use crate::backend::Backend;
use crate::backend::inserted::Answer;
use crate::backend::one_statement::Shape;
use crate::outcome::Done;
use crate::source::PoolId;
use crate::{Error, IdempotentCreate, unique_index};

/// What [`Call::in_one_statement`] did.
pub(super) enum OneStatement<T: IdempotentCreate, R> {
    /// The call's outcome.
    Done(Done<T::Model>),
    /// The path does not apply: the request, untouched.
    NotTaken(R),
    /// The statement did not decide (the key is held by another transaction, or the index is
    /// gone): the row, built, for the locked path.
    Locked(RowValues<T>),
}

impl Call {
    /// The one-statement path, when it applies (see the module docs).
    pub(super) async fn in_one_statement<T, F, U>(
        &self,
        conn: &DatabaseConnection,
        pool: Option<PoolId>,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
    ) -> Result<OneStatement<T, Request<T::Data, F, U>>, Error>
    where
        T: IdempotentCreate,
    {
        let applies = matches!(
            request,
            Request {
                new_row: NewRow::Ready(_),
                on_existing: OnExisting::Keep,
            }
        ) && !T::ids_without_gaps()
            && !key.has_missing_part();
        let (Some(pool), Some(shape), true) = (
            pool,
            self.backend.one_statement_shape(self.deadline.asked()),
            applies,
        ) else {
            return Ok(OneStatement::NotTaken(request));
        };
        if !key_is_guarded(self.backend, conn, pool, key).await {
            return Ok(OneStatement::NotTaken(request));
        }
        if !self.backend.one_statement_applies(conn, pool).await {
            return Ok(OneStatement::NotTaken(request));
        }
        let NewRow::Ready(data) = request.new_row else {
            unreachable!("checked above: the data is in hand");
        };
        // Built before the next await: an active model need not be `Send`.
        let new_row = RowValues::of(key, T::new_active_model(&key.key, data))?;
        let backend = self.backend.db_backend();
        let wait = self.deadline.left();
        let statement = match shape {
            Shape::OnConflict(condition) => new_row.one_statement(
                backend,
                key,
                condition,
                |insert| self.backend.one_statement(insert, self.lock_key, wait),
                self.backend.one_statement_values(self.lock_key, wait),
                self.backend.one_statement_is_bounded(wait),
            ),
            Shape::OnTheSlot => new_row.insert_on_the_slot(key, self.lock_key),
        };
        let answer = match self.backend.run_one_statement(conn, statement).await {
            Ok(row) => self.backend.read_one_statement(row)?,
            Err(err) if self.backend.one_statement_fell_through(&err) => {
                // The index is gone (or the default isolation refused the conflict): ask the
                // catalog again next time; this call takes the locked path.
                unique_index::forget::<T>(pool);
                return Ok(OneStatement::Locked(new_row));
            }
            // The key is not free now, or the server refused (MySQL): the locked path waits
            // for the key, or meets the cause again.
            Err(err) if self.backend.one_statement_defers(&err) => {
                return Ok(OneStatement::Locked(new_row));
            }
            // The insert's wait behind a writer that bypasses the lock, ended by its bound.
            Err(err) => {
                return Err(self.backend.statement_wait_error(
                    err.into(),
                    self.lock_key,
                    self.deadline,
                ));
            }
        };
        match answer {
            Answer::Inserted(row) => {
                self.record_wait();
                Ok(OneStatement::Done(created::<T>(key, &row)?))
            }
            Answer::KeyHeld => Ok(OneStatement::Locked(new_row)),
            Answer::Nothing => {
                self.record_wait();
                match find::<T, _>(conn, key).await? {
                    Some(model) => Ok(OneStatement::Done(Done::Existing(model))),
                    // Deleted since the conflict: the locked path decides.
                    None => Ok(OneStatement::Locked(new_row)),
                }
            }
        }
    }
}

/// Whether a unique index covers exactly the key's columns, each of a type that stores its
/// part exactly, on `pool`'s database: known, never guessed (the catalog is asked once per
/// pool and entity, [`unique_index`]). A catalog that cannot be read (a server too old, no
/// privilege) says no.
pub(super) async fn key_is_guarded<T: IdempotentCreate>(
    backend: Backend,
    conn: &DatabaseConnection,
    pool: PoolId,
    key: &CallKey<T>,
) -> bool {
    if let Some(guarded) = unique_index::known::<T>(pool) {
        return guarded;
    }
    let entity = T::default();
    let columns: Vec<&str> = key.columns.iter().map(|column| column.as_str()).collect();
    let guarded = backend
        .key_is_unique_indexed(
            conn,
            entity.schema_name(),
            entity.table_name(),
            &columns,
            &key.values,
        )
        .await
        .unwrap_or(false);
    unique_index::learn::<T>(pool, guarded);
    guarded
}
