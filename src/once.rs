//! [`Once`]: one call of [`IdempotentCreate`] with its options (how long to wait, data made
//! lazily, an update function for a row that exists) chosen by name, then run with
//! [`exec`](Once::exec). The call's path is in [`crate::call`].

use std::fmt;
use std::future::Future;

use sea_orm::ActiveModelTrait;

use crate::call::{self, BoxError, NewRow, OnExisting, Request, UnusedUpdate};
use crate::natural_key::Key;
use crate::{Error, IdempotentCreate, NaturalKey, Outcome, TransactionSource, UpsertOutcome, Wait};

/// One call, built up: [`IdempotentCreate::once`] (data in hand) or
/// [`IdempotentCreate::once_with`] (data made only if needed), then any of
/// [`wait`](Once::wait) and [`update`](Once::update), then [`exec`](Once::exec), as SeaORM's
/// `Entity::insert(..).on_conflict(..).exec(&db)`.
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
/// use std::time::Duration;
///
/// use sea_orm::ActiveValue::Set;
/// use sea_orm_idempotent::{Change, IdempotentCreate, Wait};
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
/// let row = subscribers::ActiveModel { name: Set("Mona".into()), ..Default::default() };
/// // Data in hand, waiting at most 200 ms for the key's lock:
/// let outcome = subscribers::Entity::once("mona@example.com".to_owned(), row.clone())
///     .wait(Wait::Timeout(Duration::from_millis(200)))
///     .exec(&db)
///     .await?;
///
/// // Create, or bring the existing row's name up to date:
/// let outcome = subscribers::Entity::once("mona@example.com".to_owned(), row)
///     .update(|existing, new| match new.name.as_ref() {
///         name if *name == existing.name => Change::Keep,
///         _ => Change::Update(new),
///     })
///     .exec(&db)
///     .await?;
/// println!("{}", outcome.as_str()); // "created", "updated" or "unchanged"
/// # Ok(()) }
/// ```
///
/// The type parameters record what was chosen: `F` makes the data (for data in hand, a
/// function never called), `U` is [`KeepExisting`] or [`UpdateExisting`]. Nothing is sent
/// before [`exec`](Once::exec).
#[must_use = "nothing happens until `.exec(&db)` is awaited"]
pub struct Once<T: IdempotentCreate, F, U> {
    key: T::Key,
    wait: Wait,
    new_row: NewRow<T::Data, F>,
    on_existing: U,
}

/// [`Once`] without an update function: a row that exists is returned as it is
/// ([`Outcome::Existing`]).
#[derive(Debug, Clone, Copy)]
pub struct KeepExisting;

/// [`Once`] with an update function ([`Once::update`]).
pub struct UpdateExisting<U>(U);

/// [`Once`] with an update function that is given the new row ([`Once::update_row`]).
pub struct UpdateRow<U>(U);

/// What an update function ([`Once::update`]) decides for a row that exists, given the row
/// and the new data. It runs under the key's lock, on the row as the calls before it left it.
pub enum Change<A> {
    /// Write the columns this active model sets (`Set`); the key columns are never changed.
    /// A model that sets no column writes nothing ([`UpsertOutcome::Unchanged`]).
    Update(A),
    /// Leave the row as it is: a duplicate, or an event older than the row
    /// ([`UpsertOutcome::Unchanged`]).
    Keep,
    /// Refuse the call with the caller's own error, e.g. the same idempotency key arriving
    /// with different data: the call returns [`Error::UpdateRefused`] and writes nothing.
    Refuse(BoxError),
}

impl<A> Change<A> {
    /// [`Change::Refuse`] with `cause`, boxed.
    pub fn refuse(cause: impl Into<BoxError>) -> Self {
        Change::Refuse(cause.into())
    }
}

impl<A> fmt::Debug for Change<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Update(_) => f.write_str("Update(..)"),
            Change::Keep => f.write_str("Keep"),
            Change::Refuse(cause) => f.debug_tuple("Refuse").field(cause).finish(),
        }
    }
}

impl<T: IdempotentCreate, F> Once<T, F, KeepExisting> {
    pub(crate) fn new(key: T::Key, new_row: NewRow<T::Data, F>) -> Self {
        Once {
            key,
            wait: Wait::Forever,
            new_row,
            on_existing: KeepExisting,
        }
    }

    /// When the row exists, run `update` on it and the new data, under the key's lock, and
    /// write the [`Change`] it returns: "apply this event only if it is newer than the row" is
    /// then one race-free call, across processes. `exec` then returns an [`UpsertOutcome`].
    ///
    /// With `Data = ActiveModel`, read the new data's fields with SeaORM's
    /// `ActiveValue::try_as_ref` (or `as_option`), which give `None` for a field the data did
    /// not set; `as_ref` panics there. With another `Data` type,
    /// [`update_row`](Once::update_row) gives the function the new row as an active model.
    ///
    /// With an update function there is no unlocked first look: every call takes the lock,
    /// so that the function sees the row as the calls before it left it. With
    /// [`once_with`](IdempotentCreate::once_with), `make_data` runs for an update too: the
    /// function needs the new data.
    pub fn update<U>(self, update: U) -> Once<T, F, UpdateExisting<U>>
    where
        U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        Once {
            key: self.key,
            wait: self.wait,
            new_row: self.new_row,
            on_existing: UpdateExisting(update),
        }
    }

    /// As [`update`](Once::update), but the function is given the new data as the row the call
    /// would insert, `new_active_model(&key, data)` with the key's columns set: an active model
    /// whatever the entity's `Data` type. Read its fields without panicking with SeaORM's
    /// `ActiveValue::try_as_ref` (`None` for a field the data did not set), and return it,
    /// changed or not, as [`Change::Update`].
    ///
    /// ```no_run
    /// # mod events {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// #     #[sea_orm(table_name = "events")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         #[sea_orm(unique)]
    /// #         pub event_id: String,
    /// #         pub version: i32,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// #     impl sea_orm_idempotent::IdempotentCreate for Entity {
    /// #         type Key = String;
    /// #         type Data = i32; // a custom data type: just the version
    /// #         fn key_column() -> Column { Column::EventId }
    /// #         fn new_active_model(_: &String, version: i32) -> ActiveModel {
    /// #             ActiveModel { version: sea_orm::ActiveValue::Set(version), ..Default::default() }
    /// #         }
    /// #     }
    /// # }
    /// use sea_orm_idempotent::{Change, IdempotentCreate};
    ///
    /// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
    /// let outcome = events::Entity::once("evt-1".to_owned(), 7)
    ///     .update_row(|existing, new_row| match new_row.version.try_as_ref() {
    ///         Some(version) if *version > existing.version => Change::Update(new_row),
    ///         _ => Change::Keep,
    ///     })
    ///     .exec(&db)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn update_row<U>(self, update: U) -> Once<T, F, UpdateRow<U>>
    where
        U: FnOnce(&T::Model, T::ActiveModel) -> Change<T::ActiveModel> + Send,
    {
        Once {
            key: self.key,
            wait: self.wait,
            new_row: self.new_row,
            on_existing: UpdateRow(update),
        }
    }

    /// Runs the call on `db`: creates the row unless it exists (see
    /// [`IdempotentCreate::create_once`] for the handles, errors and cancel safety).
    ///
    /// # Errors
    ///
    /// As [`IdempotentCreate::create_once_with`].
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<Outcome<T::Model>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let request = Request {
            new_row: self.new_row,
            on_existing: OnExisting::<UnusedUpdate<T>>::Keep,
        };
        let done = call::create::<T, S, F, _>(db.handle(), self.key, self.wait, request).await?;
        Ok(done.into_outcome())
    }
}

impl<T: IdempotentCreate, F, U> Once<T, F, UpdateExisting<U>>
where
    U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    /// Runs the call on `db`: creates the row, or runs the update function on the row that
    /// exists and writes its change.
    ///
    /// # Errors
    ///
    /// [`Error::UpdateRefused`] when the function returned [`Change::Refuse`] (nothing
    /// written, lock released); otherwise as [`IdempotentCreate::create_once_with`].
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<UpsertOutcome<T::Model>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let request = Request {
            new_row: self.new_row,
            on_existing: OnExisting::Update(self.on_existing.0),
        };
        let done = call::create::<T, S, F, U>(db.handle(), self.key, self.wait, request).await?;
        Ok(done.into_upsert())
    }
}

impl<T: IdempotentCreate, F, U> Once<T, F, UpdateRow<U>>
where
    U: FnOnce(&T::Model, T::ActiveModel) -> Change<T::ActiveModel> + Send,
{
    /// Runs the call on `db`: creates the row, or gives the update function the row that
    /// exists and the new row, and writes its change.
    ///
    /// # Errors
    ///
    /// As [`exec`](Once::exec) with [`update`](Once::update).
    pub async fn exec<C, S, Fut, E>(self, db: &C) -> Result<UpsertOutcome<T::Model>, Error>
    where
        C: TransactionSource,
        T::Key: NaturalKey<S>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let key = self.key.clone();
        let key_values = Key::new(&self.key).values();
        let update = self.on_existing.0;
        Once::<T, F, _> {
            key: self.key,
            wait: self.wait,
            new_row: self.new_row,
            on_existing: UpdateExisting(move |existing: &T::Model, data: T::Data| {
                let mut new_row = T::new_active_model(&key, data);
                // The key's columns, as the insert sets them. A value of another type than its
                // column's is left out here: the call refuses it before any statement.
                for (column, value) in T::key_columns().into_iter().zip(key_values) {
                    let _ = new_row.try_set(column, value);
                }
                update(existing, new_row)
            }),
        }
        .exec(db)
        .await
    }
}

impl<T: IdempotentCreate, F, U> Once<T, F, U> {
    /// How long to wait for the key's lock (by default [`Wait::Forever`]).
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }
}

impl<T: IdempotentCreate, F, U> fmt::Debug for Once<T, F, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match self.new_row {
            NewRow::Ready(_) => "given",
            NewRow::Make(_) => "made if needed",
        };
        f.debug_struct("Once")
            .field("entity", &T::default().table_name())
            .field(
                "key",
                if T::log_key() {
                    &self.key
                } else {
                    &"<redacted>"
                },
            )
            .field("wait", &self.wait)
            .field("data", &data)
            .finish_non_exhaustive()
    }
}
