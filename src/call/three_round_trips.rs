//! PostgreSQL, data in hand and no update function, on a pool: a new key in three round trips
//! (see [`fast_path`]), when the key is free.

use sea_orm::{DatabaseConnection, DbBackend, FromQueryResult};

use super::Call;
use super::key::CallKey;
use super::request::{NewRow, OnExisting, Request};
use super::row::{Conflicts, RowValues, created, find_statement, written_without_lock};
use crate::backend::Backend;
use crate::backend::postgres::fast_path::{self, Session, Try};
use crate::outcome::Done;
use crate::{Error, IdempotentCreate};

impl Call {
    /// PostgreSQL, data in hand and no update function: begin, lock, insert and commit in
    /// three round trips on a connection of SeaORM's pool (src/backend/postgres/fast_path.rs). The request
    /// comes back, untouched, when this path does not apply (another backend or request, a
    /// mock) or the key is held by another transaction: the usual path then waits for it.
    pub(super) async fn in_three_round_trips<T, F, U>(
        &self,
        conn: &DatabaseConnection,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
    ) -> Result<Fast<T::Model, Request<T::Data, F, U>>, Error>
    where
        T: IdempotentCreate,
    {
        let pool = if self.backend == Backend::Postgres {
            fast_path::pool_of(conn)
        } else {
            None
        };
        let (pool, data) = match (pool, request) {
            (
                Some(pool),
                Request {
                    new_row: NewRow::Ready(data),
                    on_existing: OnExisting::Keep,
                },
            ) => (pool, data),
            (_, request) => return Ok(Fast::NotTaken(request)),
        };
        let mut session = match Session::begin_and_try(pool, self.lock_key, self.deadline).await? {
            Try::Acquired(session) => session,
            Try::Busy => {
                return Ok(Fast::NotTaken(Request {
                    new_row: NewRow::Ready(data),
                    on_existing: OnExisting::Keep,
                }));
            }
        };
        self.record_wait();
        // Taken before the next await: an active model need not be `Send`.
        let new_row = RowValues::<T>::of(key, T::new_active_model(&key.key, data));
        let created = async {
            let new_row = new_row?;
            let backend = DbBackend::Postgres;
            let insert = new_row.insert_unless_exists(backend, key, Conflicts::Absorb);
            if let Some(row) = session.query_one(insert).await? {
                return created::<T>(key, &row);
            }
            // Nothing inserted: see `insert_unless_exists`, the same steps on a connection of
            // SeaORM's.
            let find = find_statement::<T>(backend, key);
            if let Some(row) = session.query_one(find).await? {
                return Ok(Done::Existing(T::Model::from_query_result(&row, "")?));
            }
            let insert = new_row.insert_unless_exists(backend, key, Conflicts::Raise);
            match session.query_one(insert).await? {
                Some(row) => created::<T>(key, &row),
                None => Err(written_without_lock::<T>(key)),
            }
        }
        .await;
        match created {
            Ok(done) => {
                session.commit().await?;
                Ok(Fast::Done(done))
            }
            Err(err) => Err(session.roll_back_after(err).await),
        }
    }
}

/// What [`Call::in_three_round_trips`] did: the call's outcome, or nothing (the request is
/// handed back for the usual path).
pub(super) enum Fast<M, R> {
    Done(Done<M>),
    NotTaken(R),
}
