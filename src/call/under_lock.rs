//! With the key's turn taken and no row found: the crate's own transaction (or a savepoint in
//! the caller's) is begun, the key locked through the backend seam, the row created unless
//! present (or updated), and the scope ended: COMMIT or RELEASE after success, ROLLBACK at once
//! after an error.

use sea_orm::sea_query::TableRef;
use sea_orm::{DatabaseConnection, EntityName};

use super::Call;
use super::key::CallKey;
use super::request::{MakeData, NewRow, OnExisting, Request};
use super::row::{
    RowValues, find, insert_unless_exists, update_existing, update_statement, written_without_lock,
};
use crate::backend::Table;
use crate::call_chain::Frame;
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::transaction::{Own, Txn};
use crate::{Change, Error, IdempotentCreate};

/// Where the work under the lock runs, and how it ends.
pub(super) enum Scope<'a> {
    /// The crate's own transaction: COMMIT or ROLLBACK.
    Own(Own),
    /// A savepoint of the crate's in a caller's transaction: RELEASE, or ROLLBACK TO.
    Savepoint(Savepoint<'a>),
}

impl Scope<'_> {
    pub(super) fn txn(&self) -> Txn<'_> {
        match self {
            Scope::Own(own) => own.txn(),
            Scope::Savepoint(savepoint) => Txn::Plain(savepoint.txn()),
        }
    }

    /// Commits (or releases the savepoint). A failed `RELEASE` leaves the savepoint, and
    /// whatever was done in it, in the caller's transaction: it is rolled back at once, so the
    /// caller is never told of a failure whose work stays. (A failed `COMMIT` has ended the
    /// transaction already.)
    pub(super) async fn commit(self) -> Result<(), Error> {
        match self {
            Scope::Own(own) => Ok(own.commit().await?),
            Scope::Savepoint(savepoint) => match savepoint.release().await {
                Ok(()) => Ok(()),
                Err(err) => Err(Scope::Savepoint(savepoint).roll_back_after(err).await),
            },
        }
    }

    /// Rolls back now after `err`, and returns `err`: the lock is free when the caller sees
    /// the error (dropping the crate's own transaction would only queue the ROLLBACK for the
    /// pool to send when it next checks the connection). If the rollback fails, the connection
    /// (and with its session, the lock) is gone.
    pub(super) async fn roll_back_after(self, err: Error) -> Error {
        let rolled_back = match self {
            Scope::Own(own) => own.rollback().await.map_err(Error::from),
            Scope::Savepoint(savepoint) => savepoint.rollback().await,
        };
        if let Err(rollback) = rolled_back {
            tracing::debug!(%rollback, "rollback after a failed create_once failed");
        }
        err
    }
}

/// The table of entity `T`, as a [`Table`].
pub(super) fn table_of<T: EntityName>() -> TableRef {
    T::default().table_ref()
}

impl Call {
    /// Begins the crate's own transaction and takes the lock in it. On PostgreSQL the
    /// transaction starts with a plain `BEGIN` (the server's default isolation, checked by the
    /// lock's first statement); a server whose default is stricter than READ COMMITTED costs
    /// one more begin, with the level set explicitly. `table` is the entity's (SQLite takes
    /// its write lock with a write to it, see [`Backend::begin`](crate::backend::Backend::begin)).
    pub(super) async fn begin_and_lock<'a>(
        &self,
        conn: &DatabaseConnection,
        table: Table,
    ) -> Result<Scope<'a>, Error> {
        let txn = self.backend.begin(conn, self.deadline, table).await?;
        match self.lock(Scope::Own(txn)).await {
            Err(err @ Error::UnsafeIsolation { .. }) => {
                match self.backend.begin_read_committed(conn).await {
                    Some(txn) => self.lock(Scope::Own(txn?)).await,
                    None => Err(err),
                }
            }
            locked => locked,
        }
    }

    /// Takes the key's lock in `scope`; after an error, rolls `scope` back at once.
    pub(super) async fn lock<'a>(&self, scope: Scope<'a>) -> Result<Scope<'a>, Error> {
        match self
            .backend
            .lock(scope.txn(), self.lock_key, self.deadline, self.session)
            .await
        {
            Ok(()) => {
                self.record_wait();
                Ok(scope)
            }
            Err(err) => Err(scope.roll_back_after(err).await),
        }
    }

    /// With the lock held in `scope`: create the row unless present (or update it), then end
    /// the scope: commit (or release the savepoint) after success, roll back at once after an
    /// error.
    pub(super) async fn create_and_end<T, F, U>(
        &self,
        scope: Scope<'_>,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
        frame: Frame,
    ) -> Result<Done<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: MakeData<T::Data>,
        U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        let created = self
            .create_under_lock::<T, F, U>(&scope.txn(), key, request, frame)
            .await;
        self.end(scope, created).await
    }

    /// With the lock held in `scope`: insert `new_row` unless the key's row exists now, then end
    /// the scope (the locked path of a call whose one statement did not decide, see
    /// [`in_one_statement`](Call::in_one_statement)).
    pub(super) async fn insert_and_end<T: IdempotentCreate>(
        &self,
        scope: Scope<'_>,
        key: &CallKey<T>,
        new_row: RowValues<T>,
    ) -> Result<Done<T::Model>, Error> {
        let wait = self.deadline.left();
        let created = insert_unless_exists::<T, _>(&scope.txn(), key, &new_row, wait).await;
        self.end(scope, created).await
    }

    /// Ends `scope` after the work under the lock: commits after success; after an error (a
    /// wait on the entity table typed as the lock's, see
    /// [`Backend::entity_wait_error`](crate::backend::Backend::entity_wait_error)) rolls back
    /// at once.
    async fn end<M>(
        &self,
        scope: Scope<'_>,
        done: Result<Done<M>, Error>,
    ) -> Result<Done<M>, Error> {
        match done {
            Ok(outcome) => {
                scope.commit().await?;
                Ok(outcome)
            }
            Err(err) => {
                let err = self
                    .backend
                    .entity_wait_error(&scope.txn(), err, self.lock_key, self.deadline)
                    .await;
                Err(scope.roll_back_after(err).await)
            }
        }
    }

    /// With the lock held: insert the row unless it exists now, or run the update function on
    /// the row that does. The data is made (by `make_data`, with this call's frame on the call
    /// chain) only when a fresh look says it is needed.
    pub(super) async fn create_under_lock<T, F, U>(
        &self,
        txn: &Txn<'_>,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
        frame: Frame,
    ) -> Result<Done<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: MakeData<T::Data>,
        U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        let Request {
            new_row,
            on_existing,
        } = request;
        if let (NewRow::Ready(_), OnExisting::Keep) = (&new_row, &on_existing) {
            // Data in hand and nothing to do with an existing row: one guarded statement.
            let data = self.data(new_row, frame).await?;
            let new_row = RowValues::of(key, T::new_active_model(&key.key, data))?;
            return insert_unless_exists::<T, _>(txn, key, &new_row, self.deadline.left()).await;
        }
        match (find::<T, _>(txn, key).await?, on_existing) {
            (None, on_existing) => {
                let data = self.data(new_row, frame).await?;
                let new_row = RowValues::of(key, T::new_active_model(&key.key, data))?;
                match insert_unless_exists::<T, _>(txn, key, &new_row, self.deadline.left()).await?
                {
                    // The row appeared after the look under the lock: only a writer that does
                    // not take the lock makes one, and the update function never saw it (its
                    // data went into the insert). A retry runs it on that row.
                    Done::Existing(_) if matches!(on_existing, OnExisting::Update(_)) => {
                        Err(written_without_lock::<T>(key))
                    }
                    done => Ok(done),
                }
            }
            (Some(model), OnExisting::Keep) => Ok(Done::Existing(model)),
            (Some(model), OnExisting::Update(update)) => {
                let data = self.data(new_row, frame).await?;
                match update_statement::<T>(key, update(&model, data))? {
                    Some(update) => {
                        let wait = self.deadline.left();
                        update_existing::<T, _>(txn, self.backend, key, update, wait).await
                    }
                    None => Ok(Done::Unchanged(model)),
                }
            }
        }
    }

    /// The data for the row: as given, or made now by `make_data` inside this call's frame.
    pub(super) async fn data<D, F: MakeData<D>>(
        &self,
        new_row: NewRow<D, F>,
        frame: Frame,
    ) -> Result<D, Error> {
        match new_row {
            NewRow::Ready(data) => Ok(data),
            NewRow::Make(make_data) => self
                .chain
                .run_inside(frame, make_data())
                .await
                .map_err(|e| Error::MakeData(e.into())),
        }
    }

    /// Refuses a call that would wait for an enclosing call (`would_wait`): it would wait for
    /// itself.
    pub(super) fn refuse_reentry(&self, would_wait: bool) -> Result<(), Error> {
        if would_wait {
            Err(Error::Reentrant { key: self.lock_key })
        } else {
            Ok(())
        }
    }

    pub(super) fn record_wait(&self) {
        let waited = self.deadline.elapsed();
        self.span.record(
            "lock_wait_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
        crate::metrics::record_lock_wait(self.entity, waited);
    }
}
