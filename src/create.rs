//! `IdempotentCreate`: lock, look, insert if missing, for any SeaORM entity.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr,
    EntityTrait, FromQueryResult, Iterable, QueryFilter, Value,
};
use tracing::{Instrument, field};

use crate::backend::Serialization;
use crate::local_queue;
use crate::{Error, LockKey, Outcome, TransactionSource, Wait};

/// The boxed error a `make_data` closure may fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Create a row exactly once per natural key, however many callers ask at the same moment.
///
/// Implement the three required items for an entity; [`create_once`](Self::create_once),
/// [`create_once_with`](Self::create_once_with) and
/// [`create_once_waiting`](Self::create_once_waiting) come for free.
///
/// A table of webhook deliveries, keyed by GitHub's `X-GitHub-Delivery` id (the sample
/// schema's impl for `pull_requests` is in `entity/src/idempotent.rs`):
///
/// ```
/// mod deliveries {
///     use sea_orm::entity::prelude::*;
///
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
///     #[sea_orm(table_name = "deliveries")]
///     pub struct Model {
///         #[sea_orm(primary_key)]
///         pub id: i64,
///         #[sea_orm(unique)]
///         pub delivery_id: String,
///         pub payload: String,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
/// }
///
/// use sea_orm::ActiveValue::Set;
/// use sea_orm_idempotent::IdempotentCreate;
///
/// impl IdempotentCreate for deliveries::Entity {
///     type Key = String; // the delivery id
///     type Data = String; // the payload
///
///     fn key_column() -> deliveries::Column {
///         deliveries::Column::DeliveryId
///     }
///
///     fn new_active_model(delivery_id: &String, payload: String) -> deliveries::ActiveModel {
///         deliveries::ActiveModel {
///             delivery_id: Set(delivery_id.clone()),
///             payload: Set(payload),
///             ..Default::default()
///         }
///     }
/// }
/// # assert_eq!(deliveries::Entity::lock_namespace(), "deliveries");
/// ```
///
/// # What a call does
///
/// 0. On a PostgreSQL connection pool, waits its turn behind other callers of the same pool
///    and key in this process, before taking a connection, so a burst of waiting duplicates
///    holds one pooled connection at a time (the advisory lock still decides; other pools and
///    processes do not see this queue; [`Wait::No`] never waits in it).
/// 1. Looks for the row by key (one statement). Most duplicate deliveries end here. (Not in a
///    caller's transaction, whose connection is held already and whose isolation level must
///    be checked first.)
/// 2. Otherwise begins a transaction (READ COMMITTED on PostgreSQL, IMMEDIATE on SQLite) or a
///    savepoint in the caller's transaction, and takes the key's lock: PostgreSQL's
///    transaction-scoped advisory lock on [`LockKey::for_entity`]`(lock_namespace(), key)`.
/// 3. With the lock held, a fresh statement inserts the row unless it exists now (under READ
///    COMMITTED each statement sees every transaction committed before it started, so it sees
///    the row of a caller that held the lock before us), and returns it.
/// 4. Commits (or releases the savepoint), which releases the lock.
///
/// The key column is set from `key`, whatever [`new_active_model`](Self::new_active_model)
/// put there, so the row found and the row inserted are always the same key.
#[async_trait::async_trait]
pub trait IdempotentCreate: EntityTrait {
    /// The natural key: what makes two events "the same" (e.g. GitHub's pull-request id). It is
    /// bound as a parameter when querying, and its `Display` form is hashed into the lock key,
    /// so two keys that display the same share a lock.
    type Key: Into<Value> + Clone + fmt::Display + fmt::Debug + Send + Sync;

    /// What a new row needs besides the key.
    type Data: Send;

    /// The column holding the natural key. It should be UNIQUE: the lock makes the constraint
    /// never fire, and the constraint keeps out writers that do not take the lock.
    fn key_column() -> Self::Column;

    /// Builds the row to insert for `key` from `data`.
    fn new_active_model(key: &Self::Key, data: Self::Data) -> Self::ActiveModel;

    /// The namespace hashed into the lock key; by default the table name, so equal natural
    /// keys of different tables never wait for each other. Override it only to share locks
    /// deliberately, and never change it while old code may run beside new.
    fn lock_namespace() -> &'static str {
        Self::default().table_name()
    }

    /// Creates the row for `key` from `data` unless it exists, waiting for the lock as long as
    /// it takes ([`Wait::Forever`]).
    ///
    /// `db` is a [`DatabaseConnection`](sea_orm::DatabaseConnection) (the call runs in its own
    /// transaction) or a caller's [`DatabaseTransaction`](sea_orm::DatabaseTransaction) (a
    /// savepoint in it; the caller's commit decides, and the lock is held until then).
    ///
    /// # Errors
    ///
    /// See [`create_once_waiting`](Self::create_once_waiting).
    ///
    /// # Cancel Safety
    ///
    /// See [`create_once_waiting`](Self::create_once_waiting).
    async fn create_once<C>(
        db: &C,
        key: Self::Key,
        data: Self::Data,
    ) -> Result<Outcome<Self::Model>, Error>
    where
        C: TransactionSource,
    {
        create::<Self, C, MadeAlready<Self::Data>, _, Infallible>(
            db,
            key,
            Wait::Forever,
            NewRow::Ready(data),
        )
        .await
    }

    /// Like [`create_once`](Self::create_once), but the data is made by `make_data`, which runs
    /// only when the row does not exist yet, while the lock is held: fetch details from an API
    /// once, not once per duplicate. Keep it short: every caller with the same key waits for it.
    ///
    /// # Errors
    ///
    /// [`Error::MakeData`] when `make_data` fails (nothing written, lock released); otherwise
    /// see [`create_once_waiting`](Self::create_once_waiting).
    ///
    /// # Cancel Safety
    ///
    /// See [`create_once_waiting`](Self::create_once_waiting).
    async fn create_once_with<C, F, Fut, E>(
        db: &C,
        key: Self::Key,
        make_data: F,
    ) -> Result<Outcome<Self::Model>, Error>
    where
        C: TransactionSource,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Self::Data, E>> + Send,
        E: Into<BoxError>,
    {
        create::<Self, C, F, Fut, E>(db, key, Wait::Forever, NewRow::Make(make_data)).await
    }

    /// The general form: like [`create_once_with`](Self::create_once_with), waiting for the
    /// key's lock as `wait` says.
    ///
    /// # Errors
    ///
    /// - [`Error::LockTimeout`] / [`Error::LockBusy`]: the wait ran out (retryable);
    /// - [`Error::Deadlock`]: PostgreSQL aborted the transaction to break a deadlock
    ///   (retryable);
    /// - [`Error::UnsafeIsolation`]: `db` is a caller's REPEATABLE READ or SERIALIZABLE
    ///   transaction; returned before any write;
    /// - [`Error::UnsupportedBackend`]: neither PostgreSQL nor SQLite;
    /// - [`Error::UnsupportedServer`]: a server whose advisory locks are known not to lock,
    ///   a wait on CockroachDB v26.2+, or a server too old; returned before any write;
    /// - [`Error::Database`] with `DbErr::BackendNotSupported`: [`Wait::Timeout`] or
    ///   [`Wait::No`] on SQLite, whose lock wait is the connection's `busy_timeout`; nothing is
    ///   written;
    /// - [`Error::MakeData`]: `make_data` failed;
    /// - [`Error::Database`]: anything else, e.g. the data violates a constraint or the table
    ///   does not exist. [`Error::is_retryable`] tells whether a retry can help.
    ///
    /// After an error nothing was written: the transaction (or savepoint) was rolled back.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future (a timeout, a client gone) before the COMMIT is sent writes nothing:
    /// the transaction is rolled back, which releases the lock, and the connection goes back to
    /// the pool. Dropped after the COMMIT was sent, the row may be committed without the caller
    /// seeing `Created`; a retry then returns `Existing`. If it is
    /// dropped while PostgreSQL is still waiting for the lock, the server-side wait ends within
    /// one bounded slice (see [`Wait::Forever`]) and is never turned into a lock held for the
    /// departed caller; meanwhile that one connection stays busy. A panic inside `make_data`
    /// unwinds the same way.
    async fn create_once_waiting<C, F, Fut, E>(
        db: &C,
        key: Self::Key,
        wait: Wait,
        make_data: F,
    ) -> Result<Outcome<Self::Model>, Error>
    where
        C: TransactionSource,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Self::Data, E>> + Send,
        E: Into<BoxError>,
    {
        create::<Self, C, F, Fut, E>(db, key, wait, NewRow::Make(make_data)).await
    }

    /// The sessions holding or waiting for `key`'s lock right now: who a slow or timed-out
    /// `create_once` of that key is waiting for. See [`LockHolders`](crate::LockHolders).
    ///
    /// # Errors
    ///
    /// As [`LockHolders::all`](crate::LockHolders::all).
    ///
    /// # Cancel Safety
    ///
    /// As [`LockHolders::all`](crate::LockHolders::all).
    async fn lock_holders<C>(db: &C, key: Self::Key) -> Result<crate::LockHolders, Error>
    where
        C: ConnectionTrait + Sync,
    {
        let lock_key = LockKey::for_entity(Self::lock_namespace(), &key);
        crate::LockHolders::of(db, lock_key).await
    }
}

/// The (never called) maker type of [`NewRow::Ready`].
type MadeAlready<D> = fn() -> std::future::Ready<Result<D, Infallible>>;

/// The data of a new row: given up front, or made only once we know the row is missing.
enum NewRow<D, F> {
    Ready(D),
    Make(F),
}

async fn create<T, C, F, Fut, E>(
    db: &C,
    key: T::Key,
    wait: Wait,
    new_row: NewRow<T::Data, F>,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    C: TransactionSource,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T::Data, E>> + Send,
    E: Into<BoxError>,
{
    let serialization = Serialization::of(db.get_database_backend())?;
    // Refused up front, so the answer does not depend on whether the row exists yet.
    serialization.check_wait(wait)?;
    let lock_key = LockKey::for_entity(T::lock_namespace(), &key);
    // `lock_wait_us`: everything between the call and holding the key, for calls that got
    // past the first look: the waiting room, taking a connection and BEGIN (on SQLite, its
    // write lock), and the advisory lock.
    let span = tracing::info_span!(
        "create_once",
        entity = T::default().table_name(),
        natural_key = %key,
        lock_key = %lock_key,
        lock_wait_us = field::Empty,
        outcome = field::Empty,
    );
    let result = async {
        let record_wait = |waited: Duration| {
            span.record(
                "lock_wait_us",
                u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
            );
        };
        // The waiting room (src/local_queue.rs): callers of one PostgreSQL pool on the same
        // key take turns here, before taking a connection, so a burst on one key holds at most
        // one of the pool's connections. The turn is held to the end of this block (after
        // COMMIT or ROLLBACK); the advisory lock still decides. From here on `wait` is what is
        // left of the caller's bound.
        let admission = local_queue::admit(db, lock_key, wait).await;
        let wait = admission.database_wait();
        // Most duplicates arrive after the first delivery committed: one statement, no lock.
        // Not inside a caller's transaction: there the connection is held already (nothing to
        // save), a look before the savepoint would take a REPEATABLE READ snapshot and answer
        // before the isolation check, and a failed look would abort the caller's transaction.
        if !db.is_callers_transaction()
            && let Some(model) = find::<T, _>(db, &key).await?
        {
            return Ok(Outcome::Existing(model));
        }
        let (txn, begin_wait) = serialization.begin(db, lock_key, wait).await?;
        let locked = async {
            let lock_wait = serialization.lock(&txn, lock_key, wait).await?;
            record_wait(admission.waited() + begin_wait + lock_wait);
            find_or_insert::<T, F, Fut, E>(&txn, &key, new_row).await
        }
        .await;
        match locked {
            Ok(outcome) => {
                txn.commit().await?;
                Ok(outcome)
            }
            Err(err) => {
                // Roll back now, so the lock is free when the caller sees the error: dropping
                // `txn` would only queue the ROLLBACK for the pool to send when it next checks
                // the connection. If the rollback fails, the connection (and with its session,
                // the lock) is gone.
                if let Err(rollback) = txn.rollback().await {
                    tracing::debug!(%rollback, "rollback after a failed create_once failed");
                }
                Err(err)
            }
        }
    }
    .instrument(span.clone())
    .await
    // A timeout reports the bound the caller asked for, not what the waiting room left of it.
    .map_err(|err| local_queue::restore_bound(err, wait));
    span.record(
        "outcome",
        match &result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        },
    );
    result
}

/// With the lock held: insert the row unless it exists now. `make_data` runs only when a fresh
/// look finds no row.
async fn find_or_insert<T, F, Fut, E>(
    txn: &DatabaseTransaction,
    key: &T::Key,
    new_row: NewRow<T::Data, F>,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T::Data, E>> + Send,
    E: Into<BoxError>,
{
    match new_row {
        NewRow::Ready(data) => insert_unless_exists::<T, _>(txn, key, data).await,
        NewRow::Make(make_data) => match find::<T, _>(txn, key).await? {
            Some(model) => Ok(Outcome::Existing(model)),
            None => {
                let data = make_data().await.map_err(|e| Error::MakeData(e.into()))?;
                insert_unless_exists::<T, _>(txn, key, data).await
            }
        },
    }
}

async fn find<T, C>(db: &C, key: &T::Key) -> Result<Option<T::Model>, DbErr>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    T::find()
        .filter(T::key_column().eq(key.clone()))
        .one(db)
        .await
}

/// Inserts the row with a guard (`INSERT ... SELECT ... WHERE NOT EXISTS`), then, only if the
/// guard found the row, reads it. Under the lock the guard never fires on PostgreSQL unless the
/// row appeared between our first look and the lock; on SQLite inside a caller's transaction
/// it is what makes look-and-insert one atomic statement under the write lock.
async fn insert_unless_exists<T, C>(
    txn: &C,
    key: &T::Key,
    data: T::Data,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let insert = insert_unless_exists_statement::<T>(key, T::new_active_model(key, data))?;
    if let Some(row) = txn.query_one(&insert).await? {
        return Ok(Outcome::Created(T::Model::from_query_result(&row, "")?));
    }
    match find::<T, _>(txn, key).await? {
        Some(model) => Ok(Outcome::Existing(model)),
        None => Err(Error::Database(DbErr::RecordNotFound(format!(
            "{}: the insert found a row for key {key} that is no longer there",
            T::default().table_name()
        )))),
    }
}

/// `INSERT INTO t (cols) SELECT vals WHERE NOT EXISTS (SELECT 1 FROM t WHERE key = $k)
/// RETURNING cols`, every value bound, with SeaORM's own per-column casts (enums).
///
/// Fails (instead of panicking) when the key's value does not fit the key column's type.
fn insert_unless_exists_statement<T: IdempotentCreate>(
    key: &T::Key,
    mut row: T::ActiveModel,
) -> Result<InsertStatement, DbErr> {
    row.try_set(T::key_column(), key.clone().into())?;
    let (columns, values): (Vec<_>, Vec<_>) = T::Column::iter()
        .filter_map(|column| match row.get(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                Some((column, column.save_as(Expr::val(value))))
            }
            ActiveValue::NotSet => None,
        })
        .unzip();
    let existing = Query::select()
        .expr(Expr::cust("1"))
        .from(T::default().table_ref())
        .and_where(T::key_column().eq(key.clone()))
        .to_owned();
    let source = Query::select()
        .exprs(values)
        .and_where(Expr::exists(existing).not())
        .to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(T::default().table_ref())
        .columns(columns)
        .select_from(source)
        .expect("columns and values are built pairwise, so their counts match")
        .returning(
            Query::returning()
                .exprs(T::Column::iter().map(|column| column.select_as(Expr::col(column)))),
        );
    Ok(insert.to_owned())
}
