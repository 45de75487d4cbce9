//! `IdempotentCreate`: lock, look, insert if missing, for any SeaORM entity.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Instant;

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, FromQueryResult, Iterable, QueryFilter, Value,
};
use tracing::{Instrument, field};

use crate::backend::Backend;
use crate::call_chain::{Chain, Frame, Held, On};
use crate::key;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId, TxnId};
use crate::turns::{self, Place};
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
///
/// # Keys the database treats as equal must display the same
///
/// The lock is taken on the key's `Display` form, the row is found by the key column's
/// equality. When that equality is coarser than `Display` (a case-insensitive collation,
/// `citext`, `char(n)` padding), `"Mona"` and `"mona"` take different locks for one row, and
/// racing them gives unique violations. Normalise such keys (lower-case them, trim them) before
/// the call, so keys the database treats as equal display the same.
///
/// # On a caller's transaction
///
/// Each call works in a savepoint the crate names and releases or rolls back by name (not
/// SeaORM's nested transactions, whose depth-numbered savepoints break when calls interleave
/// or are dropped midway). Calls on one transaction take turns, so `join!` over several calls
/// on one `&DatabaseTransaction` is safe: each waits for the one before. A call made inside
/// the `make_data` of a call on the same transaction runs nested in its savepoint. Do not run
/// other statements on the transaction concurrently with a call: a call that fails rolls back
/// to its savepoint, which would undo them too.
///
/// If a call on your transaction is dropped (a timeout), its savepoint stays open and what it
/// did (the lock, perhaps the row) is committed or rolled back with your transaction. The
/// crate's statements never abort your transaction when their call goes away, with one
/// exception: an insert whose data breaks a constraint, dropped while the server ran it. Then
/// your next call returns [`Error::TransactionAborted`]; to be sure either way, roll a
/// transaction back after dropping a call on it.
///
/// # Calls inside `make_data`
///
/// `make_data` may call `create_once` for other rows (an audit row, say). A call there that
/// needs a lock the enclosing call holds on another connection would wait for itself forever;
/// it returns [`Error::Reentrant`] at once instead. On the same caller's transaction it runs
/// nested. On SQLite, the crate's own transaction holds the database's one write lock, so a call
/// inside `make_data` on another connection is refused the same way, whatever its key.
///
/// # Timeouts the server enforces
///
/// Lock waits are not cut short by `statement_timeout` (see [`Wait`]). But the transaction is
/// idle while `make_data` runs, so keep `make_data` shorter than the server's
/// `idle_in_transaction_session_timeout`: past it, PostgreSQL closes the connection (FATAL
/// 25P03) and nothing is written.
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

    /// The namespace hashed into the lock key; by default the table name, qualified by its
    /// schema when the entity has one (`"app.events"`; `"pull_requests"` without), so equal
    /// natural keys of different tables never wait for each other. Override it only to share
    /// locks deliberately, and never change it while old code may run beside new: during a
    /// deploy, old and new code would stop excluding each other.
    fn lock_namespace() -> &'static str {
        let entity = Self::default();
        match entity.schema_name() {
            Some(schema) => key::schema_qualified(schema, entity.table_name()),
            None => entity.table_name(),
        }
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
        create::<Self, MadeAlready<Self::Data>, _, Infallible>(
            db.handle(),
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
        create::<Self, F, Fut, E>(db.handle(), key, Wait::Forever, NewRow::Make(make_data)).await
    }

    /// The general form: like [`create_once_with`](Self::create_once_with), waiting for the
    /// key's lock as `wait` says.
    ///
    /// # Errors
    ///
    /// - [`Error::LockTimeout`] / [`Error::LockBusy`]: the wait ran out (retryable);
    /// - [`Error::Deadlock`]: PostgreSQL cancelled the wait to break a deadlock (retryable);
    /// - [`Error::Reentrant`]: called inside the `make_data` of a call that holds the same
    ///   lock elsewhere; returned before any wait;
    /// - [`Error::TransactionAborted`]: `db` is a caller's transaction that was aborted
    ///   already; returned before any write;
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
    /// unwinds the same way. On a caller's transaction, see
    /// [its section](IdempotentCreate#on-a-callers-transaction).
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
        create::<Self, F, Fut, E>(db.handle(), key, wait, NewRow::Make(make_data)).await
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

async fn create<T, F, Fut, E>(
    db: Handle<'_>,
    key: T::Key,
    wait: Wait,
    new_row: NewRow<T::Data, F>,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T::Data, E>> + Send,
    E: Into<BoxError>,
{
    let backend = Backend::of(match db {
        Handle::Connection(conn) => conn.get_database_backend(),
        Handle::Transaction(txn) => txn.get_database_backend(),
    })?;
    // Refused up front, so the answer does not depend on whether the row exists yet.
    backend.check_wait(wait)?;
    let lock_key = LockKey::for_entity(T::lock_namespace(), &key);
    // `lock_wait_us`: everything between the call and holding the key, for calls that got
    // past the first look: taking turns, a connection, BEGIN (on SQLite, its write lock) and
    // the advisory lock.
    let span = tracing::info_span!(
        "create_once",
        entity = T::default().table_name(),
        natural_key = %key,
        lock_key = %lock_key,
        lock_wait_us = field::Empty,
        outcome = field::Empty,
    );
    let call = Call {
        backend,
        lock_key,
        wait,
        chain: Chain::current(),
        started: Instant::now(),
        span: span.clone(),
    };
    let result = match db {
        Handle::Connection(conn) => {
            call.on_connection::<T, F, Fut, E>(conn, &key, new_row)
                .await
        }
        Handle::Transaction(txn) => {
            call.in_callers_transaction::<T, F, Fut, E>(txn, &key, new_row)
                .await
        }
    }
    .map_err(|err| match backend {
        Backend::Sqlite => err.sqlite_busy_as_timeout(lock_key),
        Backend::Postgres => err,
    })
    // A timeout reports the bound the caller asked for, not what was left of it after waiting
    // for a turn.
    .map_err(|err| err.with_bound(wait));
    span.record(
        "outcome",
        match &result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        },
    );
    result
}

/// One call of [`create`], and what every step of it needs.
struct Call {
    backend: Backend,
    lock_key: LockKey,
    /// The caller's wait, from `started`.
    wait: Wait,
    /// The calls this one was made inside (see [`call_chain`](crate::call_chain)).
    chain: Chain,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    /// On a connection: take the key's turn among this pool's callers, look, and only if the
    /// row is missing begin the crate's own transaction, lock, insert unless present, commit.
    async fn on_connection<T, F, Fut, E>(
        &self,
        conn: &DatabaseConnection,
        key: &T::Key,
        new_row: NewRow<T::Data, F>,
    ) -> Result<Outcome<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let held = self.backend.held(self.lock_key, On::Connection);
        self.refuse_reentry(held, On::Connection)?;
        let work = async {
            // The waiting room (src/turns.rs): callers of one PostgreSQL pool on the same key
            // take turns before taking a connection, so a burst on one key holds at most one of
            // the pool's connections. The turn is held to the end of this block (after COMMIT
            // or ROLLBACK); the advisory lock still decides. A caller whose bound ran out here
            // goes on without a turn.
            let _turn = match PoolId::of(conn) {
                Some(pool) => {
                    let place = Place::Key {
                        pool,
                        key: self.lock_key,
                    };
                    turns::take(place, self.wait).await
                }
                None => None,
            };
            // Most duplicates arrive after the first delivery committed: one statement, no
            // lock.
            if let Some(model) = find::<T, _>(conn, key).await? {
                return Ok(Outcome::Existing(model));
            }
            let txn = self.backend.begin(conn).await?;
            let locked = async {
                self.backend
                    .lock(&txn, self.lock_key, self.wait_left())
                    .await?;
                self.record_wait();
                let frame = Frame {
                    held,
                    on: On::Connection,
                };
                self.create_under_lock::<T, F, Fut, E>(&txn, key, new_row, frame)
                    .await
            }
            .await;
            match locked {
                Ok(outcome) => {
                    txn.commit().await?;
                    Ok(outcome)
                }
                Err(err) => {
                    // Roll back now, so the lock is free when the caller sees the error:
                    // dropping `txn` would only queue the ROLLBACK for the pool to send when it
                    // next checks the connection. If the rollback fails, the connection (and
                    // with its session, the lock) is gone.
                    if let Err(rollback) = txn.rollback().await {
                        tracing::debug!(%rollback, "rollback after a failed create_once failed");
                    }
                    Err(err)
                }
            }
        };
        work.instrument(self.span.clone()).await
    }

    /// In a caller's transaction: take this transaction's turn, then in a savepoint of the
    /// crate's own lock and insert unless present, then release the savepoint (the caller's
    /// commit decides) or roll back to it.
    async fn in_callers_transaction<T, F, Fut, E>(
        &self,
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
        let on = On::Transaction(TxnId::of(txn));
        let held = self.backend.held(self.lock_key, on);
        self.refuse_reentry(held, on)?;
        let work = async {
            // Calls on one transaction take turns (src/turns.rs): interleaved savepoints would
            // undo each other's work.
            let place = Place::Transaction {
                txn: TxnId::of(txn),
                depth: self.chain.depth_on(TxnId::of(txn)),
            };
            let Some(_turn) = turns::take(place, self.wait).await else {
                return Err(self.ran_out());
            };
            // No look before the savepoint: the connection is held already (nothing to save),
            // a look would take a REPEATABLE READ snapshot and answer before the isolation
            // check, and a failed look would abort the caller's transaction.
            let savepoint = Savepoint::begin(txn).await?;
            let locked = async {
                self.backend
                    .lock(txn, self.lock_key, self.wait_left())
                    .await?;
                self.record_wait();
                let frame = Frame { held, on };
                self.create_under_lock::<T, F, Fut, E>(txn, key, new_row, frame)
                    .await
            }
            .await;
            match locked {
                Ok(outcome) => {
                    savepoint.release().await?;
                    Ok(outcome)
                }
                Err(err) => {
                    if let Err(rollback) = savepoint.rollback().await {
                        tracing::debug!(%rollback, "rollback to the savepoint of a failed create_once failed");
                    }
                    Err(err)
                }
            }
        };
        work.instrument(self.span.clone()).await
    }

    /// With the lock held: insert the row unless it exists now. `make_data` runs only when a
    /// fresh look finds no row, with this call's frame on the call chain.
    async fn create_under_lock<T, F, Fut, E>(
        &self,
        txn: &DatabaseTransaction,
        key: &T::Key,
        new_row: NewRow<T::Data, F>,
        frame: Frame,
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
                    let data = self
                        .chain
                        .run_inside(frame, make_data())
                        .await
                        .map_err(|e| Error::MakeData(e.into()))?;
                    insert_unless_exists::<T, _>(txn, key, data).await
                }
            },
        }
    }

    /// Refuses a call whose lock an enclosing call holds elsewhere: it would wait for itself.
    fn refuse_reentry(&self, held: Option<Held>, on: On) -> Result<(), Error> {
        match held {
            Some(held) if self.chain.would_wait_for_itself(held, on) => {
                Err(Error::Reentrant { key: self.lock_key })
            }
            _ => Ok(()),
        }
    }

    /// What is left of the caller's wait for the database lock.
    fn wait_left(&self) -> Wait {
        self.wait.after(self.started.elapsed())
    }

    /// The error of a bound that ran out before the database was asked.
    fn ran_out(&self) -> Error {
        match self.wait {
            Wait::Timeout(timeout) if !timeout.is_zero() => Error::LockTimeout {
                key: self.lock_key,
                timeout: Some(timeout),
                source: None,
            },
            _ => Error::LockBusy { key: self.lock_key },
        }
    }

    fn record_wait(&self) {
        let waited = self.started.elapsed();
        self.span.record(
            "lock_wait_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
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
