//! A batch of calls ([`crate::Many`]): the items split into chunks in input order, each chunk
//! its own transaction (or, on a caller's transaction, its own savepoint). The items are pulled
//! from the caller's iterator one chunk at a time, and each chunk's outcomes are handed to the
//! caller before the next chunk is pulled: a batch holds one chunk, however long its input.
//! Per chunk:
//!
//! 0. its items pulled, and their keys checked (as many parts as key columns, none that cannot
//!    be stored, none held by an enclosing call): a bad key fails the chunk before it sends
//!    anything;
//! 1. where a unique index guards the key (known from the catalog once per pool and entity, as
//!    for single calls), the chunk's data in hand and nothing to update, on a PostgreSQL or
//!    SQLite pool: the chunk in one statement (`one_statement`: the rows inserted with
//!    `ON CONFLICT (key) DO NOTHING RETURNING` in autocommit, under every key's lock), then
//!    one look for the keys it skipped; the rows it did not decide go on to the locked path,
//!    with their data;
//! 2. the chunk's lock keys, sorted and distinct, locked through the seam in one statement
//!    ([`Backend::lock_many`]; SQLite: its IMMEDIATE transaction), so overlapping batches and
//!    single calls never deadlock one another;
//! 3. one look for every distinct key (`rows::look`): under the lock the look, not an index,
//!    tells which rows exist, so a dropped index never lets a row in twice;
//! 4. the data of the keys found missing, given or made by one `make_data` call that receives
//!    all of those keys;
//! 5. one multi-row insert of the missing rows (PostgreSQL and SQLite: `ON CONFLICT DO NOTHING
//!    RETURNING`; MySQL: the insert, then one look for what it inserted);
//! 6. with an update function, the function on each existing row, in input order, under the
//!    lock;
//! 7. COMMIT (or RELEASE), or after an error ROLLBACK: a failed chunk writes nothing, and the
//!    error ([`Error::Batch`]) says which chunk failed and how many items were done before it
//!    (a create-only chunk that a read-only database refused, whose keys all have rows, is
//!    answered `Existing` from one look, as single calls are: `steps::found_after_read_only`);
//! 8. the chunk's outcomes handed over, in input order, with the index of its first item.
//!
//! Items with the same natural key collapse into one creation: the first creates, the others
//! are `Existing` (with an update function: the others run it on the row the first made).
//! A key the batch cannot tell apart by its values alone (two keys of one lock whose values
//! differ, or a row the look returned that matches none of the chunk's keys) is handled as a
//! single call handles it, with its own look and guarded insert, under the chunk's locks.

use std::future::Future;

use sea_orm::ConnectionTrait;
use tracing::Instrument;

use self::one_statement::InOneStatement;
use super::key::{CallKey, refuse_unstorable_parts};
use super::request::BoxError;
use super::under_lock::{Scope, table_of};
use crate::backend::locked_many::LockedMany;
use crate::backend::{Backend, Table};
use crate::call_chain::Chain;
use crate::key_schema;
use crate::natural_key::{Key, NaturalKey};
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId, SessionId};
use crate::turns::{self, Place};
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

/// A batch, as [`crate::Many`] runs it.
pub(crate) struct Batch<I, F, U> {
    /// The caller's items, each key with its data (`None` with `make_data`), pulled one chunk
    /// at a time.
    pub(crate) items: I,
    /// `make_data`: called once per chunk with the keys that need data.
    pub(crate) make_data: Option<F>,
    pub(crate) update: Option<U>,
    pub(crate) wait: Wait,
    pub(crate) chunk_size: usize,
}

/// Runs `batch` on `db`, a chunk at a time: pulls the chunk's items from the caller's iterator,
/// checks their keys, runs the chunk, and hands its outcomes, in input order, to `hand_over`
/// with the index of the chunk's first item, before pulling the next chunk. Nothing of a chunk
/// is kept after it is handed over, so the batch holds one chunk's items and outcomes at a
/// time, however long the input. Returns how many items were done.
pub(crate) async fn create_many<T, S, I, F, Fut, E, U, H>(
    db: Handle<'_>,
    batch: Batch<I, F, U>,
    mut hand_over: H,
) -> Result<usize, Error>
where
    T: IdempotentCreate,
    T::Key: NaturalKey<S>,
    I: Iterator<Item = (T::Key, Option<T::Data>)> + Send,
    F: FnMut(Vec<T::Key>) -> Fut + Send,
    Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
    E: Into<BoxError>,
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
    H: FnMut(usize, Vec<Done<T::Model>>) + Send,
{
    let backend = Backend::of(match db {
        Handle::Connection(conn) => conn.get_database_backend(),
        Handle::Transaction(txn) => txn.get_database_backend(),
    })?;
    let Batch {
        mut items,
        mut make_data,
        mut update,
        wait,
        chunk_size,
    } = batch;
    let chunk_size = chunk_size.max(1);
    // How many chunks there will be, when the input says how many items it holds (a `Vec`'s
    // iterator does); for errors and the span only.
    let hinted_items = match items.size_hint() {
        (low, Some(high)) if low == high => Some(low),
        _ => None,
    };
    let hinted_chunks = hinted_items.map(|items| items.div_ceil(chunk_size));
    let span = tracing::info_span!(
        "create_many_once",
        entity = T::default().table_name(),
        items = hinted_items,
        chunks = hinted_chunks,
    );
    // One call (for the span's wait and the reports), its bound counted per chunk below: a
    // long batch gives each chunk the whole bound, as `Many::wait` promises.
    let deadline = Deadline::starting_now(wait);
    // On a caller's transaction, calls on its session take turns (src/turns.rs), as single
    // calls do: interleaved savepoints would undo each other's work. The turn is taken once,
    // for the whole batch, after the first chunk's keys passed the checks below.
    let session = match db {
        Handle::Transaction(txn) => Some(backend.session_of(txn).await?),
        Handle::Connection(_) => None,
    };
    let chain = Chain::current();
    let mut turn = None;
    let columns = T::key_columns();
    let mut done = 0;
    for chunk in 0.. {
        let fail = |err: Error| {
            let err = if T::log_key() {
                err
            } else {
                err.without_values()
            };
            tracing::debug!(parent: &span, chunk, done, error = %err, "chunk failed");
            Error::Batch {
                chunk,
                chunks: hinted_chunks.filter(|&chunks| chunk < chunks),
                done,
                source: Box::new(err),
            }
        };
        // The chunk's items, and their keys checked: a bad key fails its chunk, which has
        // sent nothing yet (the chunks before it are stored).
        let mut keys: Vec<CallKey<T>> = Vec::with_capacity(chunk_size);
        let mut lock_keys: Vec<LockKey> = Vec::with_capacity(chunk_size);
        let mut data: Vec<Option<T::Data>> = Vec::new();
        for (key, datum) in items.by_ref().take(chunk_size) {
            let natural = Key::new(&key);
            let values = natural.values();
            if columns.len() != values.len() {
                return Err(fail(Error::KeyColumns {
                    table: T::default().table_name(),
                    columns: columns.len(),
                    parts: values.len(),
                }));
            }
            refuse_unstorable_parts::<T>(&columns, &values).map_err(fail)?;
            lock_keys.push(natural.lock_key(T::lock_namespace()));
            let shown = T::log_key().then(|| natural.to_string());
            keys.push(CallKey::<T> {
                key,
                columns: columns.clone(),
                values,
                shown,
            });
            if make_data.is_none() {
                data.push(datum);
            }
        }
        if keys.is_empty() {
            break;
        }
        // The key against the table, before the chunk's first statement, as a single call
        // checks it (src/key_schema.rs): on a pool once per pool and entity, from the catalog;
        // on a caller's transaction from the entity's fields. A key that does not fit fails
        // its chunk with `Error::KeyType`, instead of the database's own type error.
        match db {
            Handle::Connection(conn) if !key_schema::checked_on::<T>(conn) => {
                Box::pin(key_schema::check_first_call::<T>(
                    backend,
                    conn,
                    &keys[0].columns,
                    &keys[0].values,
                ))
                .await
                .map_err(fail)?;
            }
            Handle::Connection(_) => {}
            Handle::Transaction(_) => {
                key_schema::check_fields::<T>(backend, &keys[0].columns, &keys[0].values)
                    .map_err(fail)?;
            }
        }
        // A batch inside the `make_data` of a call that holds one of its keys (on another
        // connection, or SQLite's write lock of the same file) would wait for that call, which
        // waits for it: refused before its chunk waits, as a single call is. On a pool the
        // crate cannot know the enclosing call's database before taking a connection, so a key
        // held by an enclosing call in another database is refused too.
        let reentrant = lock_keys.iter().copied().find(|&key| match (db, session) {
            (Handle::Transaction(_), Some(session)) => backend.waits_in(&chain, key, session),
            (Handle::Connection(conn), _) => match backend {
                Backend::Sqlite => backend.waits_on_connection(&chain, key, conn),
                Backend::Postgres | Backend::MySql => chain.holds(key),
            },
            (Handle::Transaction(_), None) => false,
        });
        if let Some(key) = reentrant {
            return Err(fail(Error::Reentrant { key }));
        }
        if turn.is_none() {
            turn = Some(match session {
                Some(session) => {
                    let place = Place::Transaction {
                        session,
                        depth: chain.depth_on(session),
                    };
                    turns::take(place, Wait::Forever).await
                }
                None => None,
            });
        }
        // Data in hand and nothing to update: on a pool, where a unique index guards the key,
        // the chunk may be one statement (`one_statement`).
        let in_one_statement =
            make_data.is_none() && update.is_none() && !keys.iter().any(CallKey::has_missing_part);
        let first = lock_keys.first().copied();
        let result = run_chunk::<T, F, Fut, E, U>(
            backend,
            db,
            session,
            in_one_statement,
            &keys,
            &lock_keys,
            data,
            make_data.as_mut(),
            update.as_mut(),
            deadline.counting_from_now(),
        )
        .instrument(span.clone())
        .await;
        let result = match result {
            Ok(outcomes) => Ok(outcomes),
            Err(err) => {
                let err = match (backend, first) {
                    (Backend::Sqlite, Some(key)) => err.sqlite_busy_as_lock_error(key, wait),
                    _ => err,
                };
                let err = match first {
                    Some(key) => err.named(key),
                    None => err,
                };
                // A read-only database refuses the chunk's lock or insert even when every row
                // is stored: stored rows are still the answer, as for single calls.
                match err {
                    Error::ReadOnly(read_only) if update.is_none() => match db {
                        Handle::Connection(conn) => {
                            steps::found_after_read_only(conn, &keys, &lock_keys, read_only)
                                .instrument(span.clone())
                                .await
                        }
                        Handle::Transaction(txn) => {
                            steps::found_after_read_only(txn, &keys, &lock_keys, read_only)
                                .instrument(span.clone())
                                .await
                        }
                    },
                    err => Err(err),
                }
            }
        };
        match result {
            Ok(outcomes) => {
                // The chunk's keys go before its outcomes are handed over: the caller's
                // callback may keep the outcomes, the batch keeps nothing of the chunk.
                drop((keys, lock_keys));
                let first_item = done;
                done += outcomes.len();
                hand_over(first_item, outcomes);
            }
            Err(err) => return Err(fail(err)),
        }
    }
    span.record("items", done);
    span.record("chunks", done.div_ceil(chunk_size));
    Ok(done)
}

/// One chunk: lock, look, make, insert (update), end.
#[allow(clippy::too_many_arguments)]
async fn run_chunk<T, F, Fut, E, U>(
    backend: Backend,
    db: Handle<'_>,
    session: Option<SessionId>,
    in_one_statement: bool,
    keys: &[CallKey<T>],
    lock_keys: &[LockKey],
    data: Vec<Option<T::Data>>,
    maker: Option<&mut F>,
    update: Option<&mut U>,
    deadline: Deadline,
) -> Result<Vec<Done<T::Model>>, Error>
where
    T: IdempotentCreate,
    F: FnMut(Vec<T::Key>) -> Fut + Send,
    Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
    E: Into<BoxError>,
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    let mut sorted: Vec<LockKey> = lock_keys.to_vec();
    sorted.sort_unstable_by_key(|key| order(*key));
    sorted.dedup();
    debug_assert!(sorted.iter().all(|key| matches!(key, LockKey::Pair(..))));
    // On SQLite, this pool's writers take turns for the write lock, as single calls do.
    let _writer = match (backend, db) {
        (Backend::Sqlite, Handle::Connection(conn)) => match PoolId::of(conn) {
            Some(pool) => {
                turns::take(Place::Writer { pool }, Wait::Timeout(turns::WRITER_WAIT)).await
            }
            None => None,
        },
        _ => None,
    };
    // New keys where a unique index guards them: the chunk in one statement, if it applies.
    let mut data = data;
    let mut pending = None;
    if let (true, Handle::Connection(conn)) = (in_one_statement, db) {
        match one_statement::chunk::<T>(backend, conn, keys, lock_keys, &sorted, deadline, data)
            .await?
        {
            InOneStatement::Done(done) => return Ok(done),
            InOneStatement::NotTaken(given) => data = given,
            InOneStatement::Locked(rows) => {
                pending = Some(rows);
                data = Vec::new();
            }
        }
    }
    let scope = locked_scope(backend, db, session, &sorted, deadline, table_of::<T>).await?;
    let txn = scope.txn();
    let work = match pending {
        Some(pending) => steps::insert_pending(&txn, keys, pending, deadline).await,
        None => {
            steps::under_lock::<T, F, Fut, E, U>(
                &txn, keys, lock_keys, data, maker, update, deadline,
            )
            .await
        }
    };
    match work {
        Ok(done) => {
            scope.commit().await?;
            Ok(done)
        }
        Err(err) => {
            // A wait of the inserts or updates on the entity table, typed as the lock's.
            let err = backend
                .entity_wait_error(&txn, err, sorted[0], deadline)
                .await;
            Err(scope.roll_back_after(err).await)
        }
    }
}

/// The one order every batch takes its locks in: the lock table's primary key on MySQL,
/// `(namespace, key)` on PostgreSQL, the same for every entity key ([`LockKey::Pair`]).
fn order(key: LockKey) -> (u8, i32, i32) {
    match key {
        LockKey::Pair(namespace, key) => (2, namespace, key),
        LockKey::BigInt(key) => (1, (key >> 32) as i32, key as i32),
    }
}

/// Begins the chunk's scope and takes its locks; when the backend asks for another attempt
/// (a contended try, a slice of a wait that ran out), rolls the scope back and begins again.
async fn locked_scope<'a>(
    backend: Backend,
    db: Handle<'a>,
    session: Option<SessionId>,
    keys: &[LockKey],
    deadline: Deadline,
    table: Table,
) -> Result<Scope<'a>, Error> {
    let mut attempt = 0;
    let mut read_committed = false;
    loop {
        let scope = match db {
            Handle::Connection(conn) => Scope::Own(
                backend
                    .begin_many(conn, keys, read_committed, deadline.left(), table)
                    .await?,
            ),
            Handle::Transaction(txn) => Scope::Savepoint(Savepoint::begin(txn).await?),
        };
        match backend
            .lock_many(scope.txn(), keys, deadline, attempt, session)
            .await
        {
            Ok(LockedMany::Locked) => return Ok(scope),
            // The server's default isolation is stricter: begin again with READ COMMITTED set
            // explicitly (the crate's own transaction only; a caller's keeps the error).
            Err(err @ Error::UnsafeIsolation { .. })
                if matches!(scope, Scope::Own(_)) && !read_committed =>
            {
                let _ = scope.roll_back_after(err).await;
                read_committed = true;
            }
            Ok(LockedMany::Again) => {
                let again = Error::LockBusy {
                    key: keys[0],
                    row: None,
                };
                let _ = scope.roll_back_after(again).await;
                attempt += 1;
            }
            Err(err) => return Err(scope.roll_back_after(err).await),
        }
    }
}

mod one_statement;
mod rows;
mod steps;
