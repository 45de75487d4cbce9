//! `IdempotentCreate`: the trait an entity implements to be created once per natural key; the
//! path of one call is in [`call`](crate::call).
//!
//! (Over 450 lines: most of it is the trait's rustdoc, the crate's user guide for an entity
//! (what a call does, composite keys, callers' transactions, generic code), kept on the trait
//! a user implements, where docs.rs shows it.)

use std::fmt;
use std::future::Future;

use sea_orm::{ConnectionTrait, EntityTrait};

#[cfg(doc)]
use crate::Wait;
use crate::call::{BoxError, NewRow, UnusedMaker};
use crate::key;
use crate::natural_key;
use crate::{Error, KeepExisting, LookFirst, NaturalKey, Once, Outcome, TransactionSource};

/// Create a row exactly once per natural key, however many callers ask at the same moment.
///
/// Implement four small items for an entity (two types, two functions);
/// [`create_once`](Self::create_once), [`create_once_with`](Self::create_once_with) and their
/// forms with options, [`once`](Self::once) and [`once_with`](Self::once_with), come for free.
///
/// The simplest impl takes the new row itself as the data (`type Data = ActiveModel`): the
/// crate sets the key column from the key, so `new_active_model` returns the row as it is.
///
/// ```
/// mod subscribers {
///     use sea_orm::entity::prelude::*;
///
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
///     #[sea_orm(table_name = "subscribers")]
///     pub struct Model {
///         #[sea_orm(primary_key)]
///         pub id: i64,
///         #[sea_orm(unique)]
///         pub email: String,
///         pub name: String,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
///
///     impl sea_orm_idempotent::IdempotentCreate for Entity {
///         type Key = String; // the email address
///         type Data = ActiveModel; // the rest of the row
///
///         fn key_column() -> Column {
///             Column::Email
///         }
///
///         fn new_active_model(_email: &String, row: ActiveModel) -> ActiveModel {
///             row // the crate sets `email` from the key
///         }
///     }
/// }
/// # use sea_orm_idempotent::IdempotentCreate;
/// # assert_eq!(subscribers::Entity::lock_namespace(), "subscribers");
/// ```
///
/// A call is then `subscribers::Entity::create_once(&db, email, subscribers::ActiveModel {
/// name: Set(name), ..Default::default() })`.
///
/// With data of its own type: a table of webhook deliveries, keyed by GitHub's
/// `X-GitHub-Delivery` id, whose data is the payload:
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
/// 0. On a connection pool, waits its turn behind other callers of the same pool and key in
///    this process, before taking a connection, so a burst of waiting duplicates holds one
///    pooled connection at a time and callers of other keys keep the rest. A create-only
///    caller that was waiting already when the caller before it looked for the row under the
///    lock (or with its own look) is handed the row that caller found or created, and returns
///    without a statement: that row was the stored one at a moment during its call. The lock
///    still decides: other pools and processes do not see this queue, and [`Wait::No`]
///    callers (or [`Wait::Timeout`] callers whose bound ran out in it) go on without a turn.
/// 1. Looks for the row by key (one statement). Most duplicate deliveries end here. (Not in a
///    caller's transaction, whose connection is held already and whose isolation level must
///    be checked first; not with an update function; and not while the entity's recent looks
///    kept finding nothing: see [`look_first`](Self::look_first).)
/// 2. Otherwise begins a transaction (READ COMMITTED on PostgreSQL, checked by the lock's
///    first statement; IMMEDIATE on SQLite, after waiting in this process behind the pool's
///    other writers rather than in SQLite's busy handler; READ COMMITTED on MySQL/MariaDB)
///    or a savepoint in the caller's
///    transaction, and
///    takes the key's lock: PostgreSQL's
///    transaction-scoped advisory lock on [`LockKey::for_entity`](crate::LockKey::for_entity)`(lock_namespace(), key)`
///    ([`LockKey::for_composite`](crate::LockKey::for_composite) for a tuple key); on
///    MySQL/MariaDB a row lock on that key's slot in the lock table; on SQLite the write lock
///    the transaction took.
///    On a PostgreSQL pool, with the data in hand and no update function, the transaction
///    is the crate's own on a connection taken from SeaORM's pool: `BEGIN ISOLATION LEVEL
///    READ COMMITTED` and the try for the lock travel in one message (one round trip; a new
///    key then costs three: this, the insert, COMMIT). If the key is held, that transaction
///    is rolled back and the call begins again through SeaORM and waits (two round trips
///    more than waiting at once). Dropped before it ends, such a call closes its connection
///    rather than return it to the pool: the server rolls back and releases the lock.
/// 3. With the lock held, a fresh statement inserts the row unless it exists now, and returns
///    it: under READ COMMITTED it sees the row of a caller that held the lock before us (see
///    [why READ COMMITTED](crate#why-read-committed)).
/// 4. Commits (or releases the savepoint), which releases the lock.
///
/// The key columns are set from `key`, whatever [`new_active_model`](Self::new_active_model)
/// put there, so the row found and the row inserted are always the same key.
///
/// # Generic code
///
/// A function over any entity names the key's shape ([`SingleColumn`](crate::SingleColumn) or
/// [`MultiColumn`](crate::MultiColumn)) as a type parameter of its own, which callers never
/// write: Rust infers it from the entity's key.
///
/// ```
/// use sea_orm::DatabaseConnection;
/// use sea_orm_idempotent::{Error, IdempotentCreate, NaturalKey};
///
/// /// Stores one event of any entity, and says whether it was new.
/// async fn store<E, S>(db: &DatabaseConnection, key: E::Key, data: E::Data) -> Result<bool, Error>
/// where
///     E: IdempotentCreate,
///     E::Key: NaturalKey<S>,
/// {
///     Ok(E::create_once(db, key, data).await?.is_created())
/// }
/// ```
///
/// # Composite keys
///
/// A natural key of several columns is a tuple (two to six values), as SeaORM takes composite
/// primary keys: `type Key = (i64, String)` for `(org_id, login)`. Name its columns, in the
/// same order, with [`key_columns`](Self::key_columns), and give them a composite UNIQUE
/// index. The row is looked for and guarded on every key column, and its lock key is
/// [`LockKey::for_composite`](crate::LockKey::for_composite), which encodes every part
/// unambiguously: `("a,b", "c")` and `("a", "b,c")` are two keys. (The lock key of a
/// one-column key is unchanged: [`LockKey::for_entity`](crate::LockKey::for_entity).)
///
/// ```
/// mod members {
///     use sea_orm::entity::prelude::*;
///
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
///     #[sea_orm(table_name = "members")] // UNIQUE (org_id, login)
///     pub struct Model {
///         #[sea_orm(primary_key)]
///         pub id: i64,
///         pub org_id: i64,
///         pub login: String,
///         pub role: String,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
///
///     impl sea_orm_idempotent::IdempotentCreate for Entity {
///         type Key = (i64, String); // (org_id, login)
///         type Data = ActiveModel;
///
///         fn key_column() -> Column {
///             Column::OrgId // the first key column
///         }
///
///         fn key_columns() -> Vec<Column> {
///             vec![Column::OrgId, Column::Login]
///         }
///
///         fn new_active_model(_: &(i64, String), row: ActiveModel) -> ActiveModel {
///             row // the crate sets org_id and login from the key
///         }
///     }
/// }
/// # use sea_orm_idempotent::IdempotentCreate;
/// # assert_eq!(members::Entity::key_columns().len(), 2);
/// ```
///
/// A call is `members::Entity::create_once(&db, (org_id, login), row)`.
///
/// # Keys the database treats as equal
///
/// The lock is taken on the key's `Display` form, the row is found by the key column's
/// equality; the two must agree. The crate makes them agree where it can tell: `-0.0` locks as
/// `0`, and a timestamp with an offset (`DateTime<FixedOffset>`) locks on its instant, so
/// `10:00 +02:00` and `08:00 +00:00` are one key. (Earlier versions locked these on their text:
/// see the CHANGELOG for the deploy.) A value no database finds again (a float NaN) is refused
/// with [`Error::KeyNotStorable`] before anything is sent, and so is, every time and with
/// nothing written, a key its column stores with less precision than given (microseconds in a
/// `timestamp(0)` or a MySQL `DATETIME`).
///
/// When the column's equality is coarser than `Display` in ways the crate cannot see (a
/// case-insensitive collation, `citext`, `char(n)` padding), `"Mona"` and `"mona"` take
/// different locks for one row. Normalise such keys (lower-case them, trim them) before the
/// call, so keys the database treats as equal display the same.
///
/// # Writers that do not take the lock
///
/// Other code may insert, update or delete rows with plain SQL (an older service, a backfill,
/// an admin). The lock does not exclude it; the crate still never reports `Created` for a row
/// it did not insert. When such a writer has inserted the key and not committed yet, the
/// call's insert waits for it; if it commits, a create-only call returns
/// [`Outcome::Existing`] with that row (on your transaction too, inside the crate's savepoint,
/// so your transaction goes on). The update form cannot run its function on that row (its data
/// went into the insert) and returns the retryable [`Error::WrittenWithoutLock`], as does a
/// call whose row such a writer deleted under it: retry the call.
///
/// # On a caller's transaction
///
/// Each call works in a savepoint the crate names and releases or rolls back by name (not
/// SeaORM's nested transactions, whose depth-numbered savepoints break when calls interleave
/// or are dropped midway). Calls on one transaction take turns, so `join!` over several calls
/// on one `&DatabaseTransaction` is safe: each waits for the one before. A transaction and the
/// transactions nested in it (`txn.begin()`) are one session on one connection, and their
/// calls take turns as one (the call asks the server which session it is on: one round trip).
/// A call's [`Wait`](crate::Wait) bounds the wait for other transactions, not for its turn
/// among calls of the same session: its bound counts from when its turn comes. A call made inside
/// the `make_data` of a call on the same transaction runs nested in its savepoint. Do not run
/// other statements on the transaction concurrently with a call: a call that fails rolls back
/// to its savepoint, which would undo them too.
///
/// A call whose insert is refused because the database is read-only still answers
/// [`Outcome::Existing`] when the row is stored, and your transaction goes on; otherwise it
/// returns [`Error::ReadOnly`].
///
/// If a call on your transaction is dropped (a timeout), its savepoint stays open and what it
/// did (the lock, perhaps the row) is committed or rolled back with your transaction. The
/// crate's statements never abort your transaction when their call goes away, with one
/// exception: an insert whose data breaks a constraint, dropped while the server ran it. Then
/// your next call returns [`Error::TransactionAborted`]; to be sure either way, roll a
/// transaction back after dropping a call on it.
///
/// Every call keeps its key's lock until your transaction ends. On PostgreSQL those locks
/// share the server's lock table (about `max_locks_per_transaction` × `max_connections`
/// entries for all sessions, 6,400 by default; advisory locks do not use a session's
/// fast-path slots): one transaction creating tens of thousands of keys (a seeding migration,
/// which sea-orm-migration runs in a transaction) fails with "out of shared memory" (SQLSTATE
/// 53200), and may make other sessions fail while it lasts. Create that many rows in batches
/// of transactions, or on the connection (each call its own transaction).
///
/// # Calls inside `make_data`
///
/// `make_data` may call `create_once` for other rows (an audit row, say). A call there that
/// needs a lock the enclosing call holds in the same database on another connection would
/// wait for itself forever; it returns [`Error::Reentrant`] at once instead. The same key in
/// another database (a database per tenant) is another lock, and runs. On the same caller's
/// transaction, or one nested in it, it runs nested. On SQLite, the crate's own transaction
/// holds the database file's one write lock, so a call inside `make_data` on another
/// connection to the same file is refused the same way, whatever its key.
///
/// Two calls whose `make_data`s each create the key the other's call holds (task A inside key
/// 1 creates key 2 while task B inside key 2 creates key 1) wait for each other forever. The
/// cycle runs through your code, so neither the crate nor the database can see it: the
/// database sees two transactions idle, not a deadlock. Create inner rows in one key order
/// everywhere, or bound the inner call (`once(key, data).wait(Wait::Timeout(d))`): its
/// [`Error::LockTimeout`] ends the wait, and the enclosing call rolls back.
///
/// A call inside `make_data` on a pool needs a connection of its own: the enclosing call holds
/// one for its transaction while `make_data` runs. On a pool whose every connection the
/// enclosing calls hold (a pool of one, say), the inner call waits for the pool's
/// `acquire_timeout` (SeaORM's default: 30 s) and fails with its `ConnectionAcquire` error
/// ([`Error::Database`]). Give such pools room for the nesting, or make the inner call on the
/// enclosing call's own transaction (`create_once_with` passes none: use
/// [`Once::exec`](crate::Once::exec) on a transaction of yours, with the outer call on it too).
///
/// # Timeouts the server enforces
///
/// Lock waits are not cut short by `statement_timeout` (see [`Wait`]). But the transaction is
/// idle while `make_data` runs, so keep `make_data` shorter than the server's
/// `idle_in_transaction_session_timeout`: past it, PostgreSQL closes the connection (FATAL
/// 25P03) and nothing is written; the error is an [`Error::Database`] that
/// [`is_retryable`](Error::is_retryable), as for any lost connection.
#[async_trait::async_trait]
pub trait IdempotentCreate: EntityTrait {
    /// The natural key: what makes two events "the same" (e.g. GitHub's pull-request id), a
    /// [`NaturalKey`]: one value (`i64`, `String`, `Uuid`, a newtype that is
    /// `Into<sea_orm::Value> + Display`), or a tuple of two to six for a key of several
    /// columns (`(i64, String)`: see [composite keys](IdempotentCreate#composite-keys)). Its
    /// values are bound as parameters, and its `Display` text is hashed into the lock key, so
    /// two keys that display the same share a lock.
    ///
    /// The bound is checked where `create_once` is called (`Self::Key: NaturalKey<_>`), not
    /// here, so that one trait takes both shapes (see [`NaturalKey`]).
    type Key: Clone + fmt::Debug + Send + Sync;

    /// What a new row needs besides the key.
    type Data: Send;

    /// The column holding the natural key. It should be UNIQUE: the lock makes the constraint
    /// never fire, and the constraint keeps out writers that do not take the lock. For a
    /// composite key, its first column (and override [`key_columns`](Self::key_columns)).
    fn key_column() -> Self::Column;

    /// The columns holding the natural key, in the order of the key's parts: by default
    /// `[key_column()]`. Override it for a composite key (`type Key = (i64, i32)`): one column
    /// per part of the tuple, together UNIQUE (a composite unique index). A call whose key has
    /// another number of parts than this has columns fails with [`Error::KeyColumns`] before
    /// anything is sent.
    ///
    /// (A function beside [`key_column`](Self::key_column), not a new return type for it:
    /// every one-column impl keeps compiling unchanged, and Rust has no defaults for
    /// associated types that would let the columns follow from the key's type.)
    fn key_columns() -> Vec<Self::Column> {
        vec![Self::key_column()]
    }

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

    /// Whether a call on a connection looks for the row before it takes the lock: by default
    /// [`LookFirst::Adaptive`], which stops looking during a run of new keys (each look would
    /// cost a new key a round trip) and looks again once redeliveries come. Return
    /// [`LookFirst::Always`] or [`LookFirst::Never`] for traffic you know. See [`LookFirst`]
    /// for the statements each choice sends.
    fn look_first() -> LookFirst {
        LookFirst::Adaptive
    }

    /// Whether the natural key may be written to logs and errors: the `natural_key` field of
    /// the `create_once` span (at INFO) and the key named in [`Error::LockTimeout`] and its
    /// kin. `true` by default; return `false` when keys are personal data (an email address):
    /// the span then records `natural_key = "<redacted>"` and errors name only the table. The
    /// lock key (a crc32 of the key) is still recorded: it is what `pg_locks` shows.
    fn log_key() -> bool {
        true
    }

    /// Whether every call keeps the locked path, so that a duplicate never consumes a value of
    /// the table's id sequence: `false` by default.
    ///
    /// Where a unique index (or the primary key) covers exactly the key columns, a create-only
    /// call with data in hand on a pool is one statement: it tries the key's lock and, granted,
    /// inserts with `ON CONFLICT (key columns) DO NOTHING`, in autocommit, as fast as SeaORM's
    /// own `on_conflict(..).do_nothing()`. Like that insert, a duplicate that reaches it
    /// consumes a sequence value before the conflict is found, so ids get gaps (most
    /// duplicates never reach it: the look before the lock finds their row). Return `true` to
    /// keep ids without gaps: every call then takes the locked path, which inserts only a row
    /// it knows to be missing. (Calls with `make_data`, the update form and calls on a
    /// caller's transaction always take the locked path: data made once, decisions under the
    /// lock, and no `ON CONFLICT` serialization failures under REPEATABLE READ.) The same holds
    /// for a batch's chunks ([`Many`](crate::Many)): `true` keeps them on the locked path.
    /// MariaDB's one statement (integer keys) is a guarded insert that locks the key's slot:
    /// only a duplicate its guard misses (one committed in the same instant) consumes an
    /// `AUTO_INCREMENT` value.
    fn ids_without_gaps() -> bool {
        false
    }

    /// Whether the first call per pool logs a warning when no unique index (or primary key)
    /// covers the key columns: `true` by default.
    ///
    /// The crate does not need the index: its lock keeps its own callers apart. Writers that
    /// bypass the lock (another service's plain `INSERT`, a backfill) do: without it they can
    /// store a key twice, and the crate's later look then finds one of two rows. Return
    /// `false` for a table where that cannot happen, or where you accept it.
    fn warn_without_unique_index() -> bool {
        true
    }

    /// Checks at start-up what the first call per pool checks, and reports what the schema
    /// says: that the table has every key column
    /// ([`key_columns`](Self::key_columns)), that each part of the key has a type its column
    /// and the entity's field hold, whether a unique index covers the key, and on
    /// MySQL/MariaDB whether the crate's lock table exists. Nothing is written.
    ///
    /// ```no_run
    /// # async fn start(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
    /// use entity::PullRequest;
    /// use sea_orm_idempotent::IdempotentCreate;
    ///
    /// let verified = PullRequest::verify(db).await?; // Error::KeyType if the key does not fit
    /// if !verified.unique_index {
    ///     tracing::warn!(table = verified.table, "no unique index on the natural key");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Each key part's type is known without a key where it is sea-query `Nullable` (see
    /// [`KeyTypes`](crate::KeyTypes)).
    ///
    /// # Errors
    ///
    /// - [`Error::KeyType`]: a key column is missing (or the table is), or a part of the key
    ///   has a type its column or the entity's field does not hold;
    /// - [`Error::KeyColumns`]: the key's parts and [`key_columns`](Self::key_columns)
    ///   disagree;
    /// - [`Error::UnsupportedBackend`]: a backend whose feature is off;
    /// - [`Error::Database`]: the catalog could not be read (no privilege, a lost
    ///   connection).
    ///
    /// # Cancel Safety
    ///
    /// Reads only: dropping the future leaves nothing behind.
    async fn verify<C, Shape>(db: &C) -> Result<crate::Verified, Error>
    where
        C: ConnectionTrait + Sync,
        Self::Key: crate::KeyTypes<Shape>,
    {
        let nulls = <Self::Key as crate::KeyTypes<Shape>>::typed_nulls();
        crate::key_schema::verify::<Self, C>(db, nulls).await
    }

    /// Creates the row for `key` from `data` unless it exists, waiting for the lock as long as
    /// it takes ([`Wait::Forever`]). The headline call; [`once`](Self::once) is the same call
    /// with options (a bounded wait, an update function for a row that exists).
    ///
    /// `db` is a [`DatabaseConnection`](sea_orm::DatabaseConnection) (the call runs in its own
    /// transaction), a caller's [`DatabaseTransaction`](sea_orm::DatabaseTransaction) (a
    /// savepoint in it; the caller's commit decides, and the lock is held until then), or a
    /// [`DatabaseExecutor`](sea_orm::DatabaseExecutor), e.g. a migration's
    /// `manager.get_connection()` (see [`TransactionSource`]).
    ///
    /// # Errors
    ///
    /// See [`create_once_with`](Self::create_once_with).
    ///
    /// # Cancel Safety
    ///
    /// As [`create_once_with`](Self::create_once_with), with one difference: on a PostgreSQL pool
    /// this call runs on a connection the crate took from the pool itself (see [what a call
    /// does](Self#what-a-call-does)), and dropping the future before its COMMIT or ROLLBACK
    /// completed closes that connection instead of handing it back: the server rolls the
    /// transaction back and releases the lock, and the pool opens a new connection when it
    /// needs one.
    async fn create_once<C, Shape>(
        db: &C,
        key: Self::Key,
        data: Self::Data,
    ) -> Result<Outcome<Self::Model>, Error>
    where
        C: TransactionSource,
        Self::Key: NaturalKey<Shape>,
    {
        Self::once(key, data).exec(db).await
    }

    /// Like [`create_once`](Self::create_once), but the data is made by `make_data`, which runs
    /// only when the row does not exist yet, while the lock is held: fetch details from an API
    /// once, not once per duplicate. Keep it short: every caller with the same key waits for it.
    /// With options: [`once_with`](Self::once_with).
    ///
    /// # Errors
    ///
    /// - [`Error::LockTimeout`] / [`Error::LockBusy`]: a bounded wait ([`Once::wait`]) ran
    ///   out (retryable);
    /// - [`Error::Deadlock`]: the server broke a deadlock by cancelling the wait (retryable);
    /// - [`Error::Reentrant`]: called inside the `make_data` of a call that holds the same
    ///   lock elsewhere; returned before any wait;
    /// - [`Error::TransactionAborted`]: `db` is a caller's transaction that was aborted
    ///   already; returned before any write;
    /// - [`Error::UnsafeIsolation`]: `db` is a caller's REPEATABLE READ or SERIALIZABLE
    ///   transaction; returned before any write;
    /// - [`Error::UnsupportedBackend`]: a backend whose feature is off; nothing is written;
    /// - [`Error::MissingLockTable`]: MySQL/MariaDB without the crate's lock table
    ///   ([`mysql_lock_slots`](crate::mysql_lock_slots)); nothing is written;
    /// - [`Error::KeyColumns`]: the key's parts and [`key_columns`](Self::key_columns)
    ///   disagree; nothing is sent;
    /// - [`Error::KeyType`]: a key column is missing, or a part of the key has a type its
    ///   column does not hold (checked at the first call per pool, and by
    ///   [`verify`](Self::verify)); nothing is written;
    /// - [`Error::UnsupportedServer`]: a server whose advisory locks are known not to lock,
    ///   a wait on CockroachDB v26.2+, or a server too old; returned before any write;
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
    async fn create_once_with<C, Shape, F, Fut, E>(
        db: &C,
        key: Self::Key,
        make_data: F,
    ) -> Result<Outcome<Self::Model>, Error>
    where
        C: TransactionSource,
        Self::Key: NaturalKey<Shape>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Self::Data, E>> + Send,
        E: Into<BoxError>,
    {
        Self::once_with(key, make_data).exec(db).await
    }

    /// The call of [`create_once`](Self::create_once), with options: `.wait(..)` bounds the
    /// lock wait, `.update(..)` runs a function on a row that exists; `.exec(&db)` runs it.
    /// See [`Once`].
    fn once(key: Self::Key, data: Self::Data) -> Once<Self, UnusedMaker<Self::Data>, KeepExisting> {
        Once::new(key, NewRow::Ready(data))
    }

    /// The call of [`create_once_with`](Self::create_once_with), with options: the data is
    /// made by `make_data` only when it is needed (for a new row, or for the update function
    /// of a row that exists). See [`Once`].
    fn once_with<F>(key: Self::Key, make_data: F) -> Once<Self, F, KeepExisting> {
        Once::new(key, NewRow::Make(make_data))
    }

    /// Creates the rows of many keys at once, each unless it exists: the batch form of
    /// [`create_once`](Self::create_once) for backfills, in chunks of
    /// [`DEFAULT_CHUNK_SIZE`](crate::DEFAULT_CHUNK_SIZE) items, each one transaction. One
    /// [`Outcome`] per item, in input order. With options (chunk size, waits, an update
    /// function): [`many`](Self::many). See [`Many`](crate::Many).
    ///
    /// # Errors
    ///
    /// As [`Many::exec`](crate::Many::exec).
    ///
    /// # Cancel Safety
    ///
    /// As [`Many::exec`](crate::Many::exec).
    async fn create_many_once<C, Shape, I>(
        db: &C,
        items: I,
    ) -> Result<Vec<Outcome<Self::Model>>, Error>
    where
        C: TransactionSource,
        Self::Key: NaturalKey<Shape>,
        I: IntoIterator<Item = (Self::Key, Self::Data)> + Send,
        I::IntoIter: Send,
    {
        Self::many(items).exec(db).await
    }

    /// The batch of [`create_many_once`](Self::create_many_once), with options: `.chunk_size(n)`,
    /// `.wait(..)`, `.update(..)`; `.exec(&db)` runs it, `.for_each_chunk(&db, ..)` runs it
    /// with memory bounded by the chunk size. `items` is pulled one chunk at a time, as each
    /// chunk starts. See [`Many`](crate::Many).
    fn many<I>(
        items: I,
    ) -> crate::Many<Self, crate::GivenItems<I::IntoIter>, crate::GivenData<Self>, KeepExisting>
    where
        I: IntoIterator<Item = (Self::Key, Self::Data)>,
    {
        crate::Many::given(items)
    }

    /// A batch whose data is made by `make_data` only for the keys found missing: one call
    /// per chunk receives all of that chunk's missing keys (one API request for many rows)
    /// and returns one datum per key, in the order given. `keys` is pulled one chunk at a
    /// time, as each chunk starts. See [`Many`](crate::Many).
    fn many_with<I, F>(
        keys: I,
        make_data: F,
    ) -> crate::Many<Self, crate::MadeItems<I::IntoIter, Self::Data>, F, KeepExisting>
    where
        I: IntoIterator<Item = Self::Key>,
    {
        crate::Many::made(keys, make_data)
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
    async fn lock_holders<C, Shape>(db: &C, key: Self::Key) -> Result<crate::LockHolders, Error>
    where
        C: ConnectionTrait + Sync,
        Self::Key: NaturalKey<Shape>,
    {
        let lock_key = natural_key::lock_key(Self::lock_namespace(), &key);
        crate::LockHolders::of(db, lock_key).await
    }
}
