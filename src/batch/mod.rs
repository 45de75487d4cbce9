//! [`Many`]: the batch form of a call, for backfills: many keys, one outcome per key, in
//! chunks of one transaction each. Its path is in `src/call/batch/`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use crate::call::BoxError;
use crate::call::batch::{self, Batch};
use crate::outcome::Done;
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

/// The items of [`IdempotentCreate::many`] as [`Many`] pulls them, one chunk at a time: the
/// caller's iterator of `(key, data)`, each datum in hand.
pub struct GivenItems<I>(I);

impl<K, D, I: Iterator<Item = (K, D)>> Iterator for GivenItems<I> {
    type Item = (K, Option<D>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(key, data)| (key, Some(data)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// The items of [`IdempotentCreate::many_with`] as [`Many`] pulls them, one chunk at a time:
/// the caller's iterator of keys, whose data `make_data` makes for the missing ones.
pub struct MadeItems<I, D>(I, PhantomData<fn() -> D>);

impl<K, D, I: Iterator<Item = K>> Iterator for MadeItems<I, D> {
    type Item = (K, Option<D>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|key| (key, None))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A batch of calls, built up: [`IdempotentCreate::many`] (data in hand) or
/// [`IdempotentCreate::many_with`] (data made only for the keys found missing, by one call per
/// chunk), then any of [`chunk_size`](Many::chunk_size), [`wait`](Many::wait) and
/// [`update`](Many::update), then [`exec`](Many::exec) (every outcome in one `Vec`) or
/// [`for_each_chunk`](Many::for_each_chunk) (each chunk's outcomes handed over as it is done).
/// One outcome per item, in input order, with the promise of single calls: for each key, one
/// row and one `Created` among all the answers of all the batches and single calls that race
/// for it.
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
/// Where a unique index covers exactly the key's columns (known from the catalog, never
/// guessed: see [`ids_without_gaps`](IdempotentCreate::ids_without_gaps) for when not to rely
/// on it), a chunk with its data in hand and no update function, run on a pool, is one
/// statement in autocommit: on PostgreSQL it tries every key's lock, never waiting, and only
/// if all are granted inserts the rows with `ON CONFLICT (key) DO NOTHING RETURNING`; on
/// SQLite (for [`Wait::Forever`]) the insert takes the write lock, every key's lock there. One
/// more statement then reads the rows of the keys it skipped. The locks still exclude every other
/// taker of those keys while the rows are written. A key held elsewhere, or the index gone,
/// sends the chunk to the transaction above, which waits. A chunk whose statement stored rows
/// and that then needs the transaction (a skipped key's row deleted before the read: rare) is
/// two transactions: if the second fails, the first one's rows stay stored. Duplicates that
/// reach the statement consume sequence values, as single calls' do.
///
/// # Memory
///
/// The batch pulls a chunk's items from the input iterator only when it starts that chunk, and
/// keeps nothing of a chunk once its outcomes are handed over: with
/// [`for_each_chunk`](Many::for_each_chunk), memory is bounded by the chunk size, not by the
/// batch (10 million keys read lazily from a file or a cursor take one chunk's room at a time).
/// [`exec`](Many::exec) keeps every outcome, with its row, for the `Vec` it returns.
///
/// Items with the same key collapse into one creation: the first is `Created`, the others
/// `Existing` (with an update function, the others run it on the row the first made).
///
/// # Waits
///
/// As single calls: [`Wait::Forever`] by default, [`Wait::Timeout`] bounding the wait for the
/// whole chunk's locks (counted from the chunk's start: each chunk of a long batch has the
/// whole bound), [`Wait::No`] failing a chunk whose keys are not all free at once; on SQLite
/// each bounds the wait for its write lock, as a single call's does.
#[must_use = "nothing happens until `.exec(&db)` or `.for_each_chunk(&db, ..)` is awaited"]
pub struct Many<T: IdempotentCreate, I, F, U> {
    items: I,
    make_data: Option<F>,
    on_existing: U,
    wait: Wait,
    chunk_size: usize,
    entity: PhantomData<fn() -> T>,
}

impl<T: IdempotentCreate, I> Many<T, GivenItems<I>, GivenData<T>, KeepExisting>
where
    I: Iterator<Item = (T::Key, T::Data)>,
{
    pub(crate) fn given(items: impl IntoIterator<IntoIter = I>) -> Self {
        Many {
            items: GivenItems(items.into_iter()),
            make_data: None,
            on_existing: KeepExisting,
            wait: Wait::Forever,
            chunk_size: DEFAULT_CHUNK_SIZE,
            entity: PhantomData,
        }
    }
}

impl<T: IdempotentCreate, I, F> Many<T, MadeItems<I, T::Data>, F, KeepExisting>
where
    I: Iterator<Item = T::Key>,
{
    pub(crate) fn made(keys: impl IntoIterator<IntoIter = I>, make_data: F) -> Self {
        Many {
            items: MadeItems(keys.into_iter(), PhantomData),
            make_data: Some(make_data),
            on_existing: KeepExisting,
            wait: Wait::Forever,
            chunk_size: DEFAULT_CHUNK_SIZE,
            entity: PhantomData,
        }
    }
}

impl<T: IdempotentCreate, I, F> Many<T, I, F, KeepExisting> {
    /// For each item whose row exists, run `update` on it and the item's data, under the
    /// chunk's locks, and write the [`Change`] it returns. `exec` then returns an
    /// [`UpsertOutcome`] per item. With [`many_with`](IdempotentCreate::many_with),
    /// `make_data` then receives every key of the chunk: the function needs the new data.
    pub fn update<U>(self, update: U) -> Many<T, I, F, UpdateEach<U>>
    where
        U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        Many {
            items: self.items,
            make_data: self.make_data,
            on_existing: UpdateEach(update),
            wait: self.wait,
            chunk_size: self.chunk_size,
            entity: PhantomData,
        }
    }
}

impl<T, I, F> Many<T, I, F, KeepExisting>
where
    T: IdempotentCreate,
    I: Iterator<Item = (T::Key, Option<T::Data>)> + Send,
{
    /// Runs the batch on `db` (a pool: a transaction per chunk; a caller's transaction: a
    /// savepoint per chunk, the caller's commit decides): one [`Outcome`] per item, in input
    /// order, all kept for the `Vec` it returns ([`for_each_chunk`](Many::for_each_chunk)
    /// collecting them).
    ///
    /// # Errors
    ///
    /// As [`for_each_chunk`](Many::for_each_chunk).
    ///
    /// # Cancel Safety
    ///
    /// As [`for_each_chunk`](Many::for_each_chunk): dropped, the outcomes of the chunks done
    /// are lost with the future, not their rows.
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<Vec<Outcome<T::Model>>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
    {
        let mut all = Vec::with_capacity(self.items.size_hint().0);
        self.for_each_chunk(db, |_, outcomes| all.extend(outcomes))
            .await?;
        Ok(all)
    }

    /// Runs the batch on `db` as [`exec`](Many::exec) does, but hands each chunk's outcomes
    /// to `each` as soon as the chunk is done (committed, or on a caller's transaction
    /// released into it), with the index of the chunk's first item in the input: one
    /// [`Outcome`] per item of the chunk, in input order, the chunks in order. The batch pulls
    /// the next chunk's items only after that and keeps nothing of a chunk it handed over, so
    /// memory is bounded by the chunk size, however many items the input yields. Returns how
    /// many items were done (all of them).
    ///
    /// ```no_run
    /// # fn new_pr(pr_id: i64) -> entity::NewPullRequest { test_support::new_pr(pr_id) }
    /// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
    /// use entity::PullRequest;
    /// use sea_orm_idempotent::IdempotentCreate;
    ///
    /// // Ten million keys, never all in memory: made lazily, pulled 500 (a chunk) at a time.
    /// let items = (1..=10_000_000_i64).map(|pr_id| (pr_id, new_pr(pr_id)));
    /// let mut created = 0;
    /// let done = PullRequest::many(items)
    ///     .for_each_chunk(&db, |first, outcomes| {
    ///         created += outcomes.iter().filter(|outcome| outcome.is_created()).count();
    ///         eprintln!("items {first}..{} stored", first + outcomes.len());
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] for a failed chunk, with the chunk's own error (as
    /// [`IdempotentCreate::create_once_with`]'s; [`Error::MakeData`] also when `make_data`
    /// returns another number of rows than it was given keys; [`Error::KeyColumns`] or
    /// [`Error::KeyNotStorable`] for a key of the chunk whose parts do not match the key
    /// columns or cannot be stored, and [`Error::Reentrant`] for one an enclosing call holds:
    /// checked as the chunk's items are pulled, before it sends anything). The chunks before
    /// it are stored, and their outcomes were handed over (`done` items). An unsupported
    /// backend fails the batch before anything is sent.
    ///
    /// # Cancel Safety
    ///
    /// Dropped, the chunk in progress writes nothing and releases its locks (its transaction
    /// is rolled back, as a single call's is); the chunks before it are stored, and each one's
    /// outcomes were handed over. Dropped after a chunk's COMMIT was sent, or while a chunk's
    /// one statement runs (see [Chunks](Many#chunks): it runs in autocommit, so once it is
    /// sent the server finishes and commits it), that chunk may be stored without its
    /// outcomes being handed over: running the batch again returns its items as `Existing`.
    pub async fn for_each_chunk<C, S, Fut, E, H>(self, db: &C, mut each: H) -> Result<usize, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
        H: FnMut(usize, Vec<Outcome<T::Model>>) + Send,
    {
        let batch = Batch {
            items: self.items,
            make_data: self.make_data,
            update: None::<UnusedUpdate<T>>,
            wait: self.wait,
            chunk_size: self.chunk_size,
        };
        batch::create_many::<T, S, I, F, Fut, E, _, _>(db.handle(), batch, |first, done| {
            each(first, done.into_iter().map(Done::into_outcome).collect())
        })
        .await
    }
}

/// The update function's type of a create-only batch, never called.
type UnusedUpdate<T> = fn(
    &<T as sea_orm::EntityTrait>::Model,
    <T as IdempotentCreate>::Data,
) -> Change<<T as sea_orm::EntityTrait>::ActiveModel>;

impl<T, I, F, U> Many<T, I, F, UpdateEach<U>>
where
    T: IdempotentCreate,
    I: Iterator<Item = (T::Key, Option<T::Data>)> + Send,
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    /// Runs the batch on `db`: one [`UpsertOutcome`] per item, in input order, all kept for
    /// the `Vec` it returns ([`for_each_chunk`](Many::for_each_chunk) collecting them).
    ///
    /// # Errors
    ///
    /// As [`for_each_chunk`](Many::for_each_chunk) of this form.
    ///
    /// # Cancel Safety
    ///
    /// As [`for_each_chunk`](Many::for_each_chunk) of this form.
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<Vec<UpsertOutcome<T::Model>>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
    {
        let mut all = Vec::with_capacity(self.items.size_hint().0);
        self.for_each_chunk(db, |_, outcomes| all.extend(outcomes))
            .await?;
        Ok(all)
    }

    /// Runs the batch on `db`, handing each chunk's [`UpsertOutcome`]s to `each` as soon as
    /// the chunk is done, with the index of its first item, as the create-only
    /// [`for_each_chunk`](Many::for_each_chunk) does (memory bounded by the chunk size).
    /// Returns how many items were done.
    ///
    /// # Errors
    ///
    /// As the create-only [`for_each_chunk`](Many::for_each_chunk); a chunk whose update
    /// function returned [`Change::Refuse`] fails with [`Error::Batch`] around
    /// [`Error::UpdateRefused`].
    ///
    /// # Cancel Safety
    ///
    /// As the create-only [`for_each_chunk`](Many::for_each_chunk).
    pub async fn for_each_chunk<C, S, Fut, E, H>(self, db: &C, mut each: H) -> Result<usize, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnMut(Vec<T::Key>) -> Fut + Send,
        Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
        E: Into<BoxError>,
        H: FnMut(usize, Vec<UpsertOutcome<T::Model>>) + Send,
    {
        let batch = Batch {
            items: self.items,
            make_data: self.make_data,
            update: Some(self.on_existing.0),
            wait: self.wait,
            chunk_size: self.chunk_size,
        };
        batch::create_many::<T, S, I, F, Fut, E, U, _>(db.handle(), batch, |first, done| {
            each(first, done.into_iter().map(Done::into_upsert).collect())
        })
        .await
    }
}

impl<T: IdempotentCreate, I, F, U> Many<T, I, F, U> {
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

impl<T: IdempotentCreate, I, F, U> fmt::Debug for Many<T, I, F, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match self.make_data {
            None => "given",
            Some(_) => "made for the missing keys",
        };
        f.debug_struct("Many")
            .field("entity", &T::default().table_name())
            .field("chunk_size", &self.chunk_size)
            .field("wait", &self.wait)
            .field("data", &data)
            .finish_non_exhaustive()
    }
}

impl<I> fmt::Debug for GivenItems<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GivenItems").finish_non_exhaustive()
    }
}

impl<I, D> fmt::Debug for MadeItems<I, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MadeItems").finish_non_exhaustive()
    }
}
