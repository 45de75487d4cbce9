//! One call of [`crate::IdempotentCreate`], from the first look to COMMIT:
//! [`create`] takes the caller's turn, looks, begins the transaction (or a savepoint of the
//! caller's), takes the lock through the backend seam, runs `make_data` if the row is missing
//! (or the update function if it exists), inserts unless present or updates, and commits or
//! rolls back. Read top to bottom, it is the whole path of a call; the statements it sends are
//! at the end.
//!
//! (Over 800 lines on purpose: the point of this file is one call's whole path in one read,
//! both ways to the lock (the three-round-trip path and SeaORM's transaction), with the key it
//! binds and the statements it sends; the last hundred lines are its unit tests.)

use std::convert::Infallible;
use std::future::Future;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    ModelTrait, QueryFilter, QueryResult, QueryTrait, Statement, UpdateMany, Value,
};
use tracing::{Instrument, field};

#[cfg(feature = "postgres")]
use crate::backend::postgres::fast_path::{self, Session, Try};
use crate::backend::{self, Backend, Inserted};
use crate::call_chain::{Chain, Frame, Learning, On};
use crate::classify::{ErrorClass, classify};
use crate::error::LockedRow;
use crate::natural_key::{Key, NaturalKey};
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId, SessionId};
use crate::statements::{self, Kind};
use crate::transaction::{Own, Txn};
use crate::turns::{self, Arrivals, Place, Turn};
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

/// The boxed error a `make_data` closure may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `make_data`: makes the new row's data, at most once per call, under the lock.
pub(crate) trait MakeData<D>: FnOnce() -> <Self as MakeData<D>>::Fut + Send {
    type Fut: Future<Output = Result<D, Self::Error>> + Send;
    type Error: Into<BoxError>;
}

impl<D, F, Fut, E> MakeData<D> for F
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<D, E>> + Send,
    E: Into<BoxError>,
{
    type Fut = Fut;
    type Error = E;
}

/// The maker type of [`NewRow::Ready`], never called: the data is given up front.
pub(crate) type UnusedMaker<D> = fn() -> std::future::Ready<Result<D, Infallible>>;

/// The data of a new row: given up front, or made only once we know it is needed.
pub(crate) enum NewRow<D, F> {
    Ready(D),
    Make(F),
}

/// The update function's type of [`OnExisting::Keep`], never called.
pub(crate) type UnusedUpdate<T> = fn(
    &<T as EntityTrait>::Model,
    <T as IdempotentCreate>::Data,
) -> Change<<T as EntityTrait>::ActiveModel>;

/// What a call does with a row that exists: keep it (a create-only call), or run the caller's
/// update function on it, under the lock.
pub(crate) enum OnExisting<U> {
    Keep,
    Update(U),
}

/// What a call asks for: the data of a new row, and what to do with an existing one.
pub(crate) struct Request<D, F, U> {
    pub(crate) new_row: NewRow<D, F>,
    pub(crate) on_existing: OnExisting<U>,
}

pub(crate) async fn create<T, S, F, U>(
    db: Handle<'_>,
    key: T::Key,
    wait: Wait,
    request: Request<T::Data, F, U>,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    T::Key: NaturalKey<S>,
    F: MakeData<T::Data>,
    U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    let backend = Backend::of(match db {
        Handle::Connection(conn) => conn.get_database_backend(),
        Handle::Transaction(txn) => txn.get_database_backend(),
    })?;
    // Refused up front, so the answer does not depend on whether the row exists yet.
    backend.check_wait(wait)?;
    let natural = Key::new(&key);
    let lock_key = natural.lock_key(T::lock_namespace());
    let values = natural.values();
    let columns = T::key_columns();
    if columns.len() != values.len() {
        return Err(Error::KeyColumns {
            table: T::default().table_name(),
            columns: columns.len(),
            parts: values.len(),
        });
    }
    refuse_unstorable_parts::<T>(&columns, &values)?;
    let shown = T::log_key().then(|| natural.to_string());
    let key = CallKey::<T> {
        key,
        columns,
        values,
        shown,
    };
    let keeps = matches!(request.on_existing, OnExisting::Keep);
    // `lock_wait_us`: everything between the call and holding the key, for calls that got
    // past the first look: taking turns, a connection, BEGIN (on SQLite, its write lock) and
    // the advisory lock.
    let span = tracing::info_span!(
        "create_once",
        entity = T::default().table_name(),
        natural_key = key.shown(),
        lock_key = %lock_key,
        lock_wait_us = field::Empty,
        outcome = field::Empty,
    );
    let call = Call {
        backend,
        lock_key,
        deadline: Deadline::starting_now(wait),
        chain: Chain::current(),
        span: span.clone(),
    };
    let result = match db {
        Handle::Connection(conn) => call.on_connection::<T, F, U>(conn, &key, request).await,
        // Boxed, as every path past the look (see `on_connection`).
        Handle::Transaction(txn) => {
            Box::pin(call.in_callers_transaction::<T, F, U>(txn, &key, request)).await
        }
    }
    .map_err(|err| match backend {
        Backend::Sqlite => err.sqlite_busy_as_timeout(lock_key),
        Backend::Postgres | Backend::MySql => err,
    })
    .map_err(|err| err.named(lock_key))
    .map_err(|err| err.about_row(T::default().table_name(), key.shown.as_deref()));
    // A read-only database refuses the insert even when the row is there (the call may have
    // gone straight to the lock, without a look): a stored row is still the answer.
    let result = match result {
        Err(Error::ReadOnly(err)) if keeps => match db {
            Handle::Connection(conn) => found_after_read_only::<T, _>(conn, &key, err).await,
            Handle::Transaction(txn) => found_after_read_only::<T, _>(txn, &key, err).await,
        },
        result => result,
    };
    let result = match result {
        Err(err) if !T::log_key() => Err(err.without_values()),
        result => result,
    };
    span.record(
        "outcome",
        match &result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        },
    );
    result
}

/// The text logged in place of a key whose entity keeps keys out of logs
/// ([`IdempotentCreate::log_key`]).
const REDACTED: &str = "<redacted>";

/// Refuses a key with a part no database can find again: a float NaN equals nothing (SQLite
/// even stores it as NULL), so every delivery would create another row.
fn refuse_unstorable_parts<T: IdempotentCreate>(
    columns: &[T::Column],
    values: &[Value],
) -> Result<(), Error> {
    let nan = |value: &Value| match value {
        Value::Float(Some(x)) => x.is_nan(),
        Value::Double(Some(x)) => x.is_nan(),
        _ => false,
    };
    match columns.iter().zip(values).find(|(_, value)| nan(value)) {
        Some((column, _)) => Err(Error::KeyNotStorable {
            table: T::default().table_name(),
            column: column.as_str().to_owned(),
            cause: "is NaN, which equals nothing (SQLite stores it as NULL)",
        }),
        None => Ok(()),
    }
}

/// After the database refused the write as read-only: the row, if it is stored, as
/// [`Done::Existing`]; otherwise the read-only error.
async fn found_after_read_only<T, C>(
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

/// A call's natural key: as given (for `new_active_model`), and the columns and values it
/// binds, one value per key column.
struct CallKey<T: IdempotentCreate> {
    key: T::Key,
    columns: Vec<T::Column>,
    values: Vec<Value>,
    /// The key for logs and errors, unless the entity keeps keys out of them.
    shown: Option<String>,
}

impl<T: IdempotentCreate> CallKey<T> {
    /// Every key column equal to its part of the key, each value bound.
    fn condition(&self) -> Condition {
        self.columns
            .iter()
            .zip(&self.values)
            .fold(Condition::all(), |all, (column, value)| {
                all.add(ColumnTrait::eq(column, value.clone()))
            })
    }

    fn shown(&self) -> &str {
        self.shown.as_deref().unwrap_or(REDACTED)
    }

    /// Whether a part of the key is NULL. SeaORM matches it with `IS NULL` (a NULL is equal to
    /// nothing), which binds no value: the statement's text is not the one kept for keys with
    /// every part ([`statements`]), so such a key's statements are built every time.
    fn has_missing_part(&self) -> bool {
        self.values.iter().any(|value| *value == value.as_null())
    }
}

/// One call of [`create`], and what every step of it needs.
struct Call {
    backend: Backend,
    lock_key: LockKey,
    /// The caller's wait, from the call's start.
    deadline: Deadline,
    /// The calls this one was made inside (see [`call_chain`](crate::call_chain)).
    chain: Chain,
    span: tracing::Span,
}

/// Where the work under the lock runs, and how it ends.
enum Scope<'a> {
    /// The crate's own transaction: COMMIT or ROLLBACK.
    Own(Own),
    /// A savepoint of the crate's in a caller's transaction: RELEASE, or ROLLBACK TO.
    Savepoint(Savepoint<'a>),
}

impl Scope<'_> {
    fn txn(&self) -> Txn<'_> {
        match self {
            Scope::Own(own) => own.txn(),
            Scope::Savepoint(savepoint) => Txn::Plain(savepoint.txn()),
        }
    }

    /// Commits (or releases the savepoint). A failed `RELEASE` leaves the savepoint, and
    /// whatever was done in it, in the caller's transaction: it is rolled back at once, so the
    /// caller is never told of a failure whose work stays. (A failed `COMMIT` has ended the
    /// transaction already.)
    async fn commit(self) -> Result<(), Error> {
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
    async fn roll_back_after(self, err: Error) -> Error {
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

impl Call {
    /// On a connection: take the key's turn among this pool's callers, look, and only if the
    /// row is missing begin the crate's own transaction, lock, insert unless present, commit.
    async fn on_connection<T, F, U>(
        &self,
        conn: &DatabaseConnection,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
    ) -> Result<Done<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: MakeData<T::Data>,
        U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        // Only a call whose `make_data` may run can enclose another: its session is kept
        // for those (src/call_chain.rs) while it lasts.
        let may_enclose = matches!(request.new_row, NewRow::Make(_));
        let _learning = may_enclose.then(|| Learning::start(self.deadline.call()));
        let held =
            Some(
                self.backend
                    .held_on(self.lock_key, conn, self.deadline.call(), may_enclose),
            );
        self.refuse_reentry(
            self.backend
                .waits_on_connection(&self.chain, self.lock_key, conn),
        )?;
        let work = async {
            // The waiting room (src/turns.rs): callers of one pool on the same key
            // take turns before taking a connection, so a burst on one key holds at most one of
            // the pool's connections. The turn is held to the end of this block (after COMMIT
            // or ROLLBACK); the advisory lock still decides. A caller whose bound ran out here
            // goes on without a turn.
            let pool = PoolId::of(conn);
            let turn = match pool {
                Some(pool) => {
                    let place = Place::Key {
                        pool,
                        key: self.lock_key,
                    };
                    turns::take(place, self.deadline.asked()).await
                }
                None => None,
            };
            let keeps = matches!(request.on_existing, OnExisting::Keep);
            // The row of our key that the caller before us in the waiting room found or
            // created while we waited: no statement at all. Not with an update function (it
            // must see the row under the lock). Keyed by the natural key's values: a caller of
            // another key whose lock key collides with ours shares the room, not the row.
            if keeps
                && let Some(row) = turn
                    .as_ref()
                    .and_then(|turn| turn.passed_on::<Vec<Value>, T::Model>(&key.values))
            {
                return Ok(Done::Existing(row));
            }
            // Passes the row on to those who arrived before `arrivals` was counted, which is
            // before the statement that found or created it (src/turns.rs).
            let pass_on = |done: &Done<T::Model>, arrivals: Option<Arrivals>| {
                if let (Some(turn), Some(arrivals)) = (&turn, arrivals) {
                    turn.pass_on(&key.values, done.model(), arrivals);
                }
            };
            // Most duplicates arrive after the first delivery committed: one statement, no
            // lock. Not with an update function, and not while this entity's recent looks kept
            // missing (src/look.rs).
            let look_first = T::look_first();
            let looked = keeps && look_first.looks(T::lock_namespace(), self.backend);
            // What the call found under the lock, learnt once per call: a miss after a look
            // that missed is the same miss; a row found there turns the look back on.
            let learn = |done: &Done<T::Model>| {
                let existed = !matches!(done, Done::Created(_));
                if !looked || existed {
                    look_first.found(T::lock_namespace(), existed);
                }
            };
            if looked {
                let arrivals = turn.as_ref().map(Turn::arrivals);
                let found = find::<T, _>(conn, key).await?;
                look_first.found(T::lock_namespace(), found.is_some());
                if let Some(model) = found {
                    let done = Done::Existing(model);
                    pass_on(&done, arrivals);
                    return Ok(done);
                }
            }
            let arrivals = turn.as_ref().map(Turn::arrivals);
            #[cfg(feature = "postgres")]
            // The paths past the look are boxed: their futures (SeaORM's transaction, the
            // lock's statements, the insert) are several kilobytes, and unboxed they would
            // make every call's future that large, to be moved and allocated by every
            // redelivery that only looks.
            let request =
                match Box::pin(self.in_three_round_trips::<T, F, U>(conn, key, request)).await? {
                    Fast::Done(done) => {
                        learn(&done);
                        pass_on(&done, arrivals);
                        return Ok(done);
                    }
                    Fast::NotTaken(request) => request,
                };
            // On SQLite, this pool's writers take turns for the write lock here, in arrival
            // order, not in SQLite's busy handler (src/turns.rs). Held to COMMIT or ROLLBACK.
            let _writer = match (self.backend, pool) {
                (Backend::Sqlite, Some(pool)) => {
                    let place = Place::Writer { pool };
                    turns::take(place, Wait::Timeout(turns::WRITER_WAIT)).await
                }
                _ => None,
            };
            let scope = Box::pin(self.begin_and_lock(conn)).await?;
            let frame = Frame {
                held,
                on: On::Connection,
            };
            let done = Box::pin(self.create_and_end::<T, F, U>(scope, key, request, frame)).await?;
            learn(&done);
            pass_on(&done, arrivals);
            Ok(done)
        };
        work.instrument(self.span.clone()).await
    }

    /// In a caller's transaction: take this transaction's turn, then in a savepoint of the
    /// crate's own lock and insert unless present, then release the savepoint (the caller's
    /// commit decides) or roll back to it.
    async fn in_callers_transaction<T, F, U>(
        &self,
        txn: &DatabaseTransaction,
        key: &CallKey<T>,
        request: Request<T::Data, F, U>,
    ) -> Result<Done<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: MakeData<T::Data>,
        U: FnOnce(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    {
        let work = async {
            // The session the transaction runs on, which transactions nested in it
            // (`txn.begin()`) share: SeaORM keeps the connection private, so the server
            // names it (one round trip).
            let session = SessionId::of(txn).await?;
            let on = On::Transaction(session);
            let held = self.backend.held_in(self.lock_key, session);
            self.refuse_reentry(self.backend.waits_in(&self.chain, self.lock_key, session))?;
            // Calls on one session take turns (src/turns.rs): interleaved savepoints would
            // undo each other's work. Waiting for a sibling's turn is not waiting for another
            // transaction: whatever the caller's bound, wait for it, and count the bound from
            // when it comes.
            let place = Place::Transaction {
                session,
                depth: self.chain.depth_on(session),
            };
            let _turn = turns::take(place, Wait::Forever).await;
            let call = Call {
                deadline: self.deadline.counting_from_now(),
                chain: self.chain.clone(),
                span: self.span.clone(),
                ..*self
            };
            // No look before the savepoint: the connection is held already (nothing to save),
            // a look would take a REPEATABLE READ snapshot and answer before the isolation
            // check, and a failed look would abort the caller's transaction.
            let savepoint = Savepoint::begin(txn).await?;
            let scope = call.lock(Scope::Savepoint(savepoint)).await?;
            let frame = Frame { held, on };
            call.create_and_end::<T, F, U>(scope, key, request, frame)
                .await
        };
        work.instrument(self.span.clone()).await
    }

    /// PostgreSQL, data in hand and no update function: begin, lock, insert and commit in
    /// three round trips on a connection of SeaORM's pool (src/fast_path.rs). The request
    /// comes back, untouched, when this path does not apply (another backend or request, a
    /// mock) or the key is held by another transaction: the usual path then waits for it.
    #[cfg(feature = "postgres")]
    async fn in_three_round_trips<T, F, U>(
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

    /// Begins the crate's own transaction and takes the lock in it. On PostgreSQL the
    /// transaction starts with a plain `BEGIN` (the server's default isolation, checked by the
    /// lock's first statement); a server whose default is stricter than READ COMMITTED costs
    /// one more begin, with the level set explicitly.
    async fn begin_and_lock<'a>(&self, conn: &DatabaseConnection) -> Result<Scope<'a>, Error> {
        let txn = self.backend.begin(conn, self.lock_key).await?;
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
    async fn lock<'a>(&self, scope: Scope<'a>) -> Result<Scope<'a>, Error> {
        match self
            .backend
            .lock(scope.txn(), self.lock_key, self.deadline)
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
    async fn create_and_end<T, F, U>(
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
        match self
            .create_under_lock::<T, F, U>(&scope.txn(), key, request, frame)
            .await
        {
            Ok(outcome) => {
                scope.commit().await?;
                Ok(outcome)
            }
            Err(err) => Err(scope.roll_back_after(err).await),
        }
    }

    /// With the lock held: insert the row unless it exists now, or run the update function on
    /// the row that does. The data is made (by `make_data`, with this call's frame on the call
    /// chain) only when a fresh look says it is needed.
    async fn create_under_lock<T, F, U>(
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
            return insert_unless_exists::<T, _>(txn, key, data).await;
        }
        match (find::<T, _>(txn, key).await?, on_existing) {
            (None, on_existing) => {
                let data = self.data(new_row, frame).await?;
                match insert_unless_exists::<T, _>(txn, key, data).await? {
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
                    Some(update) => update_existing::<T, _>(txn, key, update).await,
                    None => Ok(Done::Unchanged(model)),
                }
            }
        }
    }

    /// The data for the row: as given, or made now by `make_data` inside this call's frame.
    async fn data<D, F: MakeData<D>>(
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
    fn refuse_reentry(&self, would_wait: bool) -> Result<(), Error> {
        if would_wait {
            Err(Error::Reentrant { key: self.lock_key })
        } else {
            Ok(())
        }
    }

    fn record_wait(&self) {
        let waited = self.deadline.elapsed();
        self.span.record(
            "lock_wait_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
    }
}

/// What [`Call::in_three_round_trips`] did: the call's outcome, or nothing (the request is
/// handed back for the usual path).
#[cfg(feature = "postgres")]
enum Fast<M, R> {
    Done(Done<M>),
    NotTaken(R),
}

/// The row with this key, if any: `SELECT cols FROM t WHERE k1 = $1 AND ...` (its text kept
/// per entity: [`statements`]), the first row it returns.
async fn find<T, C>(db: &C, key: &CallKey<T>) -> Result<Option<T::Model>, DbErr>
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
fn find_statement<T: IdempotentCreate>(backend: DbBackend, key: &CallKey<T>) -> Statement {
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
fn written_without_lock<T: IdempotentCreate>(key: &CallKey<T>) -> Error {
    Error::WrittenWithoutLock {
        row: Box::new(LockedRow {
            table: T::default().table_name(),
            natural_key: key.shown.clone(),
        }),
    }
}

/// The row the guarded insert returned, as [`Done::Created`], once it is known to be the key's:
/// a key column that stores less than the key's value (`timestamp(0)`, `numeric(10,2)`) returns
/// another value, and a row the key can never find again is refused (the error rolls it back).
/// Parts whose value is of another type than the column's field are not compared.
fn created<T: IdempotentCreate>(
    key: &CallKey<T>,
    row: &QueryResult,
) -> Result<Done<T::Model>, Error> {
    let model = T::Model::from_query_result(row, "")?;
    for (column, given) in key.columns.iter().zip(&key.values) {
        let stored = model.get(*column);
        if std::mem::discriminant(&stored) == std::mem::discriminant(given) && stored != *given {
            return Err(Error::KeyNotStorable {
                table: T::default().table_name(),
                column: column.as_str().to_owned(),
                cause: "is stored with less precision than it was given (the column rounds or truncates it)",
            });
        }
    }
    Ok(Done::Created(model))
}

/// MySQL/MariaDB, which cannot return the row it inserted: the row inserted in this
/// transaction is not found by its key, so a key column stores less than the key's value.
fn not_found_by_key<T: IdempotentCreate>(key: &CallKey<T>) -> Error {
    let columns: Vec<&str> = key.columns.iter().map(|column| column.as_str()).collect();
    Error::KeyNotStorable {
        table: T::default().table_name(),
        column: columns.join(", "),
        cause: "is stored differently from how it was given (the column rounds or truncates it), so the row is not found by its key",
    }
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
async fn insert_unless_exists<T, C>(
    txn: &C,
    key: &CallKey<T>,
    data: T::Data,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let backend = txn.get_database_backend();
    let new_row = RowValues::<T>::of(key, T::new_active_model(&key.key, data))?;
    let insert = new_row.insert_unless_exists(backend, key, Conflicts::Absorb);
    let reread = || find_statement::<T>(backend, key); // MySQL: no RETURNING
    match backend::insert_returning(txn, insert, reread).await {
        Ok(Inserted::Row(row)) => return created::<T>(key, &row),
        Ok(Inserted::NotFoundByKey) => return Err(not_found_by_key::<T>(key)),
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
    match backend::insert_returning(txn, insert, reread).await? {
        Inserted::Row(row) => created::<T>(key, &row),
        Inserted::NotFoundByKey => Err(not_found_by_key::<T>(key)),
        Inserted::Nothing => Err(written_without_lock::<T>(key)),
    }
}

/// The statement writing the update function's change to the row with this key: the columns
/// the change sets, never the key columns (the row stays the key's). `None` when there is
/// nothing to write. (Built before any await: an active model need not be `Send`.)
fn update_statement<T: IdempotentCreate>(
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
/// there the row is read back by key, in the same transaction, which sees its own write.)
async fn update_existing<T, C>(
    txn: &C,
    key: &CallKey<T>,
    update: UpdateMany<T>,
) -> Result<Done<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let updated = if txn.support_returning() {
        update.exec_with_returning(txn).await?.into_iter().next()
    } else {
        update.exec(txn).await?;
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
enum Conflicts {
    /// `ON CONFLICT DO NOTHING`: wait for a writer that does not take the lock, and insert
    /// nothing if it committed the key.
    Absorb,
    /// No `ON CONFLICT`: the database's own error (rare: see [`insert_unless_exists`]).
    Raise,
}

/// The columns a new row sets and their values, the key's included: what the guarded insert
/// binds. (Taken from the active model before any await: an active model need not be `Send`.)
struct RowValues<T: IdempotentCreate> {
    /// Bit `i` for column `i` of `Column::iter()`.
    set_columns: u64,
    columns: Vec<T::Column>,
    values: Vec<Value>,
}

impl<T: IdempotentCreate> RowValues<T> {
    /// Fails (instead of panicking) when the key's value does not fit the key column's type.
    fn of(key: &CallKey<T>, mut row: T::ActiveModel) -> Result<Self, DbErr> {
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

    /// `INSERT INTO t (cols) SELECT vals WHERE NOT EXISTS (SELECT 1 FROM t WHERE k1 = $1 AND
    /// k2 = $2 ...) [ON CONFLICT DO NOTHING] RETURNING cols`, every value bound, with SeaORM's
    /// own per-column casts (enums); its text kept per entity and set of columns
    /// ([`statements`]).
    fn insert_unless_exists(
        &self,
        backend: DbBackend,
        key: &CallKey<T>,
        conflicts: Conflicts,
    ) -> Statement {
        let build = || {
            let existing = Query::select()
                .expr(Expr::cust("1"))
                .from(T::default().table_ref())
                .cond_where(key.condition())
                .to_owned();
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
                .returning(
                    Query::returning()
                        .exprs(T::Column::iter().map(|column| column.select_as(Expr::col(column)))),
                );
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

#[cfg(test)]
mod tests {
    use sea_orm::{DatabaseBackend, MockDatabase};

    use super::*;

    #[allow(unreachable_pub)]
    mod rows {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "rows")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub org: i64,
            pub login: String,
            pub note: Option<String>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}

        impl crate::IdempotentCreate for Entity {
            type Key = (i64, String);
            type Data = ActiveModel;

            fn key_column() -> Column {
                Column::Org
            }

            fn key_columns() -> Vec<Column> {
                vec![Column::Org, Column::Login]
            }

            fn new_active_model(_: &(i64, String), row: ActiveModel) -> ActiveModel {
                row
            }
        }
    }

    /// The crate's own statements bind their values in the order [`statements`] expects, so
    /// their texts are kept after the first call: the look, and the insert for each set of
    /// columns.
    #[tokio::test]
    async fn the_look_and_the_insert_are_built_once() {
        let key = (7_i64, "mona".to_owned());
        let natural = Key::new(&key);
        let call_key = CallKey::<rows::Entity> {
            values: natural.values(),
            key,
            columns: vec![rows::Column::Org, rows::Column::Login],
            shown: None,
        };
        for backend in [DatabaseBackend::Postgres, DatabaseBackend::Sqlite] {
            let db = MockDatabase::new(backend)
                .append_query_results([Vec::<rows::Model>::new()])
                .into_connection();
            assert_eq!(find::<rows::Entity, _>(&db, &call_key).await.unwrap(), None);
            assert!(statements::is_kept::<rows::Entity>(backend, Kind::Find));

            for note in [None, Some(sea_orm::ActiveValue::Set(Some("hi".to_owned())))] {
                let mut row = <rows::ActiveModel as Default>::default();
                if let Some(note) = note {
                    row.note = note;
                }
                let statement = |row| {
                    RowValues::<rows::Entity>::of(&call_key, row)
                        .unwrap()
                        .insert_unless_exists(backend, &call_key, Conflicts::Absorb)
                };
                let first = statement(row.clone());
                let again = statement(row);
                assert_eq!((first.sql, first.values), (again.sql, again.values));
            }
            // Columns: id 0, org 1, login 2, note 3.
            for columns in [0b0110, 0b1110] {
                assert!(statements::is_kept::<rows::Entity>(
                    backend,
                    Kind::InsertUnlessExists { columns }
                ));
            }
        }
    }
}
