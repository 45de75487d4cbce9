//! One call of [`crate::IdempotentCreate`], from the first look to COMMIT. Read in this
//! order, it is the whole path of a call:
//!
//! 1. here, [`create`]: the key checked, the tracing span, then one of the two contexts:
//!    [`Call::on_connection`] takes the key's turn among the pool's callers and looks (most
//!    duplicates end here), or [`Call::in_callers_transaction`] takes the transaction's turn;
//! 2. [`three_round_trips`] (PostgreSQL, data in hand, on a pool): begin, lock, insert and
//!    commit in three round trips, when the key is free;
//! 3. [`under_lock`]: otherwise, the transaction (or a savepoint of the caller's) is begun and
//!    the key locked through the backend seam, `make_data` or the update function runs if
//!    needed, and the scope commits or rolls back;
//! 4. [`row`]: the statements it sends (the look, the guarded insert, the update), bound to
//!    the key's columns ([`key`]).
//!
//! A batch of calls ([`crate::Many`]) runs the same steps per chunk of keys: [`batch`].
//!
//! What a call asks for (data in hand or made under the lock, an update function) is
//! [`request`].

pub(crate) mod batch;
mod key;
mod one_statement;
mod request;
mod row;
#[cfg(feature = "postgres")]
mod three_round_trips;
mod under_lock;

#[cfg(feature = "postgres")]
use self::three_round_trips::Fast;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, Value};
use tracing::{Instrument, field};

use self::key::CallKey;
use self::one_statement::OneStatement;
pub(crate) use self::request::{
    BoxError, MakeData, NewRow, OnExisting, Request, UnusedMaker, UnusedUpdate,
};
use self::row::{find, found_after_read_only};
use self::under_lock::{Scope, table_of};
use crate::backend::Backend;
use crate::call_chain::{Chain, Frame, Learning, On};
use crate::key_schema;
use crate::metrics;
use crate::natural_key::NaturalKey;
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId, SessionId};
use crate::turns::{self, Arrivals, Place, Turn};
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

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
    let (key, lock_key) =
        CallKey::<T>::checked(key, backend, matches!(db, Handle::Transaction(_)))?;
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
        error_kind = field::Empty,
    );
    let call = Call {
        backend,
        lock_key,
        deadline: Deadline::starting_now(wait),
        chain: Chain::current(),
        span: span.clone(),
        entity: T::default().table_name(),
        session: None,
    };
    let result = match db {
        Handle::Connection(conn) => call.on_connection::<T, F, U>(conn, &key, request).await,
        // Boxed, as every path past the look (see `on_connection`).
        Handle::Transaction(txn) => {
            Box::pin(call.in_callers_transaction::<T, F, U>(txn, &key, request)).await
        }
    }
    .map_err(|err| match backend {
        Backend::Sqlite => err.sqlite_busy_as_lock_error(lock_key, wait),
        Backend::Postgres | Backend::MySql => err,
    })
    .map_err(|err| err.named(lock_key))
    .map_err(|err| err.about_row(T::default().table_name(), key.shown.as_deref()))
    .map_err(|err| match backend {
        Backend::Sqlite => err.at_sqlite_write_lock(),
        Backend::Postgres | Backend::MySql => err,
    });
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
    let (outcome, error_kind) = match &result {
        Ok(outcome) => (outcome.as_str(), ""),
        Err(err) => ("error", err.kind()),
    };
    span.record("outcome", outcome);
    if !error_kind.is_empty() {
        span.record("error_kind", error_kind);
    }
    metrics::count_call(T::default().table_name(), outcome, error_kind);
    result
}

/// One call of [`create`], and what every step of it needs.
pub(super) struct Call {
    pub(super) backend: Backend,
    pub(super) lock_key: LockKey,
    /// The caller's wait, from the call's start.
    pub(super) deadline: Deadline,
    /// The calls this one was made inside (see [`call_chain`](crate::call_chain)).
    pub(super) chain: Chain,
    pub(super) span: tracing::Span,
    /// The entity's table, for the lock-wait metric.
    pub(super) entity: &'static str,
    /// The session of the caller's transaction the call runs in (`None`: on a connection).
    pub(super) session: Option<SessionId>,
}

impl Call {
    /// On a connection: take the key's turn among this pool's callers, look, and only if the
    /// row is missing lock and insert unless present: in one statement where a unique index
    /// covers the key, otherwise in the crate's own transaction, then commit.
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
            // The key against the table, before the call's first statement: once per pool and
            // entity (src/key_schema.rs). Boxed: it is a catalog read, once.
            if !key_schema::checked_on::<T>(conn) {
                Box::pin(key_schema::check_first_call::<T>(
                    self.backend,
                    conn,
                    &key.columns,
                    &key.values,
                ))
                .await?;
            }
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
            // On SQLite, this pool's writers take turns for the write lock here, in arrival
            // order, not in SQLite's busy handler (src/turns.rs). Held to COMMIT or ROLLBACK.
            let _writer = match (self.backend, pool) {
                (Backend::Sqlite, Some(pool)) => self.writer_turn(pool).await?,
                _ => None,
            };
            // The paths past the look are boxed: their futures (SeaORM's transaction, the
            // lock's statements, the insert) are several kilobytes, and unboxed they would
            // make every call's future that large, to be moved and allocated by every
            // redelivery that only looks.
            let request =
                match Box::pin(self.in_one_statement::<T, F, U>(conn, pool, key, request)).await? {
                    OneStatement::Done(done) => {
                        learn(&done);
                        pass_on(&done, arrivals);
                        return Ok(done);
                    }
                    OneStatement::Locked(new_row) => {
                        let scope = Box::pin(self.begin_and_lock(conn, table_of::<T>)).await?;
                        let done = Box::pin(self.insert_and_end::<T>(scope, key, new_row)).await?;
                        learn(&done);
                        pass_on(&done, arrivals);
                        return Ok(done);
                    }
                    OneStatement::NotTaken(request) => request,
                };
            #[cfg(feature = "postgres")]
            let request =
                match Box::pin(self.in_three_round_trips::<T, F, U>(conn, key, request)).await? {
                    Fast::Done(done) => {
                        learn(&done);
                        pass_on(&done, arrivals);
                        return Ok(done);
                    }
                    Fast::NotTaken(request) => request,
                };
            let scope = Box::pin(self.begin_and_lock(conn, table_of::<T>)).await?;
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

    /// SQLite: this pool's writer turn (see [`turns`]), waited for as the caller's wait has
    /// left: [`Wait::Forever`] up to [`turns::WRITER_WAIT`], then on without a turn (SQLite's
    /// busy handler decides); a bound up to what is left of it ([`Error::LockTimeout`] when it
    /// runs out, or on without a turn when `WRITER_WAIT` runs out first); [`Wait::No`] not at
    /// all ([`Error::LockBusy`] when another caller has it).
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future gives up the place in the queue ([`turns::take`]).
    async fn writer_turn(&self, pool: PoolId) -> Result<Option<Turn<'static>>, Error> {
        let place = Place::Writer { pool };
        let key = self.lock_key;
        match self.deadline.left() {
            Wait::Forever => Ok(turns::take(place, Wait::Timeout(turns::WRITER_WAIT)).await),
            Wait::Timeout(left) if left > turns::WRITER_WAIT => {
                Ok(turns::take(place, Wait::Timeout(turns::WRITER_WAIT)).await)
            }
            Wait::Timeout(left) if !left.is_zero() => {
                match turns::take(place, Wait::Timeout(left)).await {
                    Some(turn) => Ok(Some(turn)),
                    None => Err(Error::LockTimeout {
                        key,
                        row: None,
                        timeout: self.deadline.reported_bound(),
                        source: None,
                    }),
                }
            }
            Wait::No | Wait::Timeout(_) => match turns::take(place, Wait::No).await {
                Some(turn) => Ok(Some(turn)),
                None => Err(Error::LockBusy { key, row: None }),
            },
        }
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
            let session = self.backend.session_of(txn).await?;
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
                session: Some(session),
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
}
