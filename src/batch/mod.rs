//! [`Many`]: the batch form of a call, for backfills: many keys, one outcome per key, in
//! chunks of one transaction each. Its path is in `src/call/batch/`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;

use crate::call::BoxError;
use crate::call::batch::{self, Batch, Source};
use crate::{
    Change, Error, IdempotentCreate, KeepExisting, NaturalKey, Outcome, TransactionSource,
    UpsertOutcome, Wait,
};

/// The chunk size of a batch unless [`Many::chunk_size`] says otherwise: each chunk is one
/// transaction holding one lock per key, well below PostgreSQL's shared lock table
/// (`max_locks_per_transaction` × connections, 64 × 100 by default).
pub const DEFAULT_CHUNK_SIZE: usize = 500;

/// The maker type of [`IdempotentCreate::many`], never called: the data is given up front.
pub type GivenData<T> =
    fn(
        Vec<<T as IdempotentCreate>::Key>,
    ) -> std::future::Ready<Result<Vec<<T as IdempotentCreate>::Data>, Infallible>>;

/// [`Many`] with an update function ([`Many::update`]).
pub struct UpdateEach<U>(U);

/// A batch of calls, built up: [`IdempotentCreate::many`] (data in hand) or
/// [`IdempotentCreate::many_with`] (data made only for the keys found missing, by one call per
/// chunk), then any of [`chunk_size`](Many::chunk_size), [`wait`](Many::wait) and
/// [`update`](Many::update), then [`exec`](Many::exec). It returns one outcome per item, in
/// input order, with the promise of single calls: for each key, one row and one `Created`
/// among all the answers of all the batches and single calls that race for it.
///
/// ```no_run
/// # mod subscribers {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "subscribers")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key)]
/// #         pub id: i64,
/// #         #[sea_orm(unique)]
/// #         pub email: String,
/// #         pub name: String,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// #     impl sea_orm_idempotent::IdempotentCreate for Entity {
/// #         type Key = String;
/// #         type Data = ActiveModel;
/// #         fn key_column() -> Column { Column::Email }
/// #         fn new_active_model(_: &String, row: ActiveModel) -> ActiveModel { row }
/// #     }
/// # }
/// use sea_orm::ActiveValue::Set;
/// use sea_orm_idempotent::{IdempotentCreate, Outcome};
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
/// let emails = vec!["mona@example.com".to_owned(), "hubot@example.com".to_owned()];
/// // Data made only for the emails not stored yet: one call with all of them per chunk.
/// let outcomes = subscribers::Entity::many_with(emails, |missing: Vec<String>| async move {
///     let rows = missing.iter().map(|_| subscribers::ActiveModel {
///         name: Set("from the directory".into()),
///         ..Default::default()
///     });
///     Ok::<_, std::io::Error>(rows.collect())
/// })
/// .chunk_size(500)
/// .exec(&db)
/// .await?;
/// let created = outcomes.iter().filter(|outcome| outcome.is_created()).count();
/// # Ok(()) }
/// ```
///
/// # Chunks
///
/// The items are split into chunks of [`chunk_size`](Many::chunk_size) in input order
/// ([`DEFAULT_CHUNK_SIZE`]); each chunk is one transaction of the crate's own (on a caller's
/// transaction, one savepoint in it): its keys' locks taken in one statement in one sorted
/// order (SQLite: its IMMEDIATE transaction), one look, one `make_data` call for the keys
/// found missing, one multi-row insert, then COMMIT. A failed chunk writes nothing and the
/// batch stops with [`Error::Batch`], which says which chunk failed and how many items were
/// done before it (stored: run the batch again, they come back `Existing`).
///
/// Items with the same key collapse into one creation: the first is `Created`, the others
/// `Existing` (with an update function, the others run it on the row the first made).
///
/// # Waits
///
/// As single calls: [`Wait::Forever`] by default, [`Wait::Timeout`] bounding the wait for the
/// whole chunk's locks (counted from the batch's start), [`Wait::No`] failing a chunk whose
/// keys are not all free at once; SQLite takes [`Wait::Forever`] only.
#[must_use = "nothing happens until `.exec(&db)` is awaited"]
pub struct Many<T: IdempotentCreate, F, U> {
    keys: Vec<T::Key>,
    source: Source<T::Data, F>,
    on_existing: U,
    wait: Wait,
    chunk_size: usize,
}

impl<T: IdempotentCreate> Many<T, GivenData<T>, KeepExisting> {
    pub(crate) fn given(items: impl IntoIterator<Item = (T::Key, T::Data)>) -> Self {
        let (keys, data): (Vec<T::Key>, Vec<Option<T::Data>>) = items
            .into_iter()
            .map(|(key, data)| (key, Some(data)))
            .unzip();
        Many {
            keys,
            source: Source::Ready(data),
            on_existing: KeepExisting,
            wait: Wait::Forever,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl<T: IdempotentCreate, F> Many<T, F, KeepExisting> {
    pub(crate) fn made(keys: impl IntoIterator<Item = T::Key>, make_data: F) -> Self {
        Many {
            keys: keys.into_iter().collect(),
            source: Source::Make(make_data),
            on_existing: KeepExisting,
            wait: Wait::Forever,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// For each item whose row exists, run `update` on it and the item's data, under the
    /// chunk's locks, and write the [`Change`] it returns. `exec` then returns an
    /// [`UpsertOutcome`] per item. With [`many_with`](IdempotentCreate::many_with),
    /// `make_data` then receives every key of the chunk: the function needs the new data.
    pub fn update<U>(self, update: U) -> Many<T, F, UpdateEach<U>>
    where
        U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        Many {
            keys: self.keys,
            source: self.source,
            on_existing: UpdateEach(update),
            wait: self.wait,
            chunk_size: self.chunk_size,
        }
    }

    /// Runs the batch on `db` (a pool: a transaction per chunk; a caller's transaction: a
    /// savepoint per chunk, the caller's commit decides): one [`Outcome`] per item, in input
    /// order.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] for a failed chunk, with the chunk's own error (as
    /// [`IdempotentCreate::create_once_with`]'s; [`Error::MakeData`] also when `make_data`
    /// returns another number of rows than it was given keys). A key whose parts do not match
    /// the key columns ([`Error::KeyColumns`]) or cannot be stored
    /// ([`Error::KeyNotStorable`]), an unsupported backend or wait, fail the whole batch
    /// before anything is sent.
    ///
    /// # Cancel Safety
    ///
    /// Dropped, the chunk in progress writes nothing and releases its locks (its transaction
    /// is rolled back, as a single call's is); the chunks before it are stored. Dropped after a
    /// chunk's COMMIT was sent, that chunk may be stored without the caller seeing it: running
    /// the batch again returns its items as `Existing`.
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<Vec<Outcome<T::Model>>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
    {
        let batch = Batch::<T, F, UnusedUpdate<T>> {
            keys: self.keys,
            source: self.source,
            update: None,
            wait: self.wait,
            chunk_size: self.chunk_size,
        };
        let done = batch::create_many::<T, S, F, Fut, E, _>(db.handle(), batch).await?;
        Ok(done.into_iter().map(|done| done.into_outcome()).collect())
    }
}

/// The update function's type of a create-only batch, never called.
type UnusedUpdate<T> = fn(
    &<T as sea_orm::EntityTrait>::Model,
    <T as IdempotentCreate>::Data,
) -> Change<<T as sea_orm::EntityTrait>::ActiveModel>;

impl<T: IdempotentCreate, F, U> Many<T, F, UpdateEach<U>>
where
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    /// Runs the batch on `db`: one [`UpsertOutcome`] per item, in input order.
    ///
    /// # Errors
    ///
    /// As [`Many::exec`] for a create-only batch; a chunk whose update function returned
    /// [`Change::Refuse`] fails with [`Error::Batch`] around [`Error::UpdateRefused`].
    ///
    /// # Cancel Safety
    ///
    /// As [`Many::exec`] for a create-only batch.
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<Vec<UpsertOutcome<T::Model>>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
    {
        let batch = Batch::<T, F, U> {
            keys: self.keys,
            source: self.source,
            update: Some(self.on_existing.0),
            wait: self.wait,
            chunk_size: self.chunk_size,
        };
        let done = batch::create_many::<T, S, F, Fut, E, U>(db.handle(), batch).await?;
        Ok(done.into_iter().map(|done| done.into_upsert()).collect())
    }
}

impl<T: IdempotentCreate, F, U> Many<T, F, U> {
    /// How long each chunk waits for its keys' locks (by default [`Wait::Forever`]).
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// How many items each chunk (one transaction) holds: by default
    /// [`DEFAULT_CHUNK_SIZE`]; 0 counts as 1.
    pub fn chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }
}

impl<T: IdempotentCreate, F, U> fmt::Debug for Many<T, F, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match self.source {
            Source::Ready(_) => "given",
            Source::Make(_) => "made for the missing keys",
        };
        f.debug_struct("Many")
            .field("entity", &T::default().table_name())
            .field("items", &self.keys.len())
            .field("chunk_size", &self.chunk_size)
            .field("wait", &self.wait)
            .field("data", &data)
            .finish_non_exhaustive()
    }
}
