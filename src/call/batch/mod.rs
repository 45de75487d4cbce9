//! A batch of calls ([`crate::Many`]): the items split into chunks in input order, each chunk
//! its own transaction (or, on a caller's transaction, its own savepoint). Per chunk:
//!
//! 1. the chunk's lock keys, sorted and distinct, locked through the seam in one statement
//!    ([`Backend::lock_many`]; SQLite: its IMMEDIATE transaction), so overlapping batches and
//!    single calls never deadlock one another;
//! 2. one look for every distinct key (`rows::look`);
//! 3. the data of the keys found missing, given or made by one `make_data` call that receives
//!    all of those keys;
//! 4. one multi-row insert of the missing rows (PostgreSQL and SQLite: `ON CONFLICT DO NOTHING
//!    RETURNING`; MySQL: the insert, then one look for what it inserted);
//! 5. with an update function, the function on each existing row, in input order, under the
//!    lock;
//! 6. COMMIT (or RELEASE), or after an error ROLLBACK: a failed chunk writes nothing, and the
//!    error ([`Error::Batch`]) says which chunk failed and how many items were done before it.
//!
//! Items with the same natural key collapse into one creation: the first creates, the others
//! are `Existing` (with an update function: the others run it on the row the first made).
//! A key the batch cannot tell apart by its values alone (two keys of one lock whose values
//! differ, or a row the look returned that matches none of the chunk's keys) is handled as a
//! single call handles it, with its own look and guarded insert, under the chunk's locks.

use std::future::Future;

use sea_orm::{ConnectionTrait, IdenStatic};
use tracing::Instrument;

use super::key::{CallKey, refuse_unstorable_parts};
use super::request::BoxError;
use super::under_lock::{Scope, table_of};
use crate::backend::locked_many::LockedMany;
use crate::backend::{Backend, Table};
use crate::call_chain::Chain;
use crate::natural_key::{Key, NaturalKey};
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId};
use crate::turns::{self, Place};
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

/// How the data of a batch's new rows comes.
pub(crate) enum Source<D, F> {
    /// One datum per item, in input order.
    Ready(Vec<Option<D>>),
    /// `make_data`: called once per chunk with the keys that need data.
    Make(F),
}

/// A batch, as [`crate::Many`] runs it.
pub(crate) struct Batch<T: IdempotentCreate, F, U> {
    pub(crate) keys: Vec<T::Key>,
    pub(crate) source: Source<T::Data, F>,
    pub(crate) update: Option<U>,
    pub(crate) wait: Wait,
    pub(crate) chunk_size: usize,
}

/// Runs `batch` on `db`: one [`Done`] per item, in input order.
pub(crate) async fn create_many<T, S, F, Fut, E, U>(
    db: Handle<'_>,
    batch: Batch<T, F, U>,
) -> Result<Vec<Done<T::Model>>, Error>
where
    T: IdempotentCreate,
    T::Key: NaturalKey<S>,
    F: FnMut(Vec<T::Key>) -> Fut + Send,
    Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
    E: Into<BoxError>,
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    let backend = Backend::of(match db {
        Handle::Connection(conn) => conn.get_database_backend(),
        Handle::Transaction(txn) => txn.get_database_backend(),
    })?;
    let Batch {
        keys,
        mut source,
        mut update,
        wait,
        chunk_size,
    } = batch;
    let chunk_size = chunk_size.max(1);
    // Every key checked before anything is sent: a bad key fails the batch, not a chunk.
    let columns = T::key_columns();
    let mut call_keys = Vec::with_capacity(keys.len());
    let mut lock_keys = Vec::with_capacity(keys.len());
    for key in keys {
        let natural = Key::new(&key);
        let values = natural.values();
        if columns.len() != values.len() {
            return Err(Error::KeyColumns {
                table: T::default().table_name(),
                columns: columns.len(),
                parts: values.len(),
            });
        }
        refuse_unstorable_parts::<T>(&columns, &values)?;
        lock_keys.push(natural.lock_key(T::lock_namespace()));
        let shown = T::log_key().then(|| natural.to_string());
        call_keys.push(CallKey::<T> {
            key,
            columns: columns.clone(),
            values,
            shown,
        });
    }
    let items = call_keys.len();
    let chunks = items.div_ceil(chunk_size);
    // Data in hand, nothing to update, and a verified unique index on the key: the insert is
    // the look (`ON CONFLICT DO NOTHING RETURNING`, then a look for the rest only).
    let inserts_first = matches!(source, Source::Ready(_))
        && update.is_none()
        && !call_keys.iter().any(CallKey::has_missing_part)
        && {
            let entity = T::default();
            let names: Vec<&str> = columns.iter().map(|column| column.as_str()).collect();
            let (schema, table) = (entity.schema_name(), entity.table_name());
            match db {
                Handle::Connection(conn) => {
                    backend
                        .unique_index_covers(conn, schema, table, &names)
                        .await?
                }
                Handle::Transaction(txn) => {
                    backend
                        .unique_index_covers(txn, schema, table, &names)
                        .await?
                }
            }
        };
    let span = tracing::info_span!(
        "create_many_once",
        entity = T::default().table_name(),
        items,
        chunks,
    );
    let deadline = Deadline::starting_now(wait);
    // On a caller's transaction, calls on its session take turns (src/turns.rs), as single
    // calls do: interleaved savepoints would undo each other's work.
    // A batch inside the `make_data` of a call that holds one of its keys (on another
    // connection, or SQLite's write lock of the same file) would wait for that call, which
    // waits for it: refused before any wait, as a single call is. On a pool the crate cannot
    // know the enclosing call's database before taking a connection, so a key held by an
    // enclosing call in another database is refused too.
    let chain = Chain::current();
    let refuse = |waits: &dyn Fn(LockKey) -> bool| match lock_keys.iter().find(|key| waits(**key)) {
        Some(key) => Err(Error::Reentrant { key: *key }),
        None => Ok(()),
    };
    let _turn = match db {
        Handle::Transaction(txn) => {
            let session = backend.session_of(txn).await?;
            refuse(&|key| backend.waits_in(&chain, key, session))?;
            let place = Place::Transaction {
                session,
                depth: chain.depth_on(session),
            };
            turns::take(place, Wait::Forever).await
        }
        Handle::Connection(conn) => {
            refuse(&|key| match backend {
                Backend::Sqlite => backend.waits_on_connection(&chain, key, conn),
                Backend::Postgres | Backend::MySql => chain.holds(key),
            })?;
            None
        }
    };
    let mut done: Vec<Done<T::Model>> = Vec::with_capacity(items);
    for (chunk, start) in (0..items).step_by(chunk_size).enumerate() {
        let end = (start + chunk_size).min(items);
        let data: Vec<Option<T::Data>> = match &mut source {
            Source::Ready(all) => all[start..end].iter_mut().map(Option::take).collect(),
            Source::Make(_) => Vec::new(),
        };
        let maker = match &mut source {
            Source::Ready(_) => None,
            Source::Make(make) => Some(make),
        };
        let chunk_keys = &call_keys[start..end];
        let chunk_locks = &lock_keys[start..end];
        let first = chunk_locks.first().copied();
        let result = run_chunk::<T, F, Fut, E, U>(
            backend,
            db,
            inserts_first,
            chunk_keys,
            chunk_locks,
            data,
            maker,
            update.as_mut(),
            deadline,
        )
        .instrument(span.clone())
        .await;
        match result {
            Ok(outcomes) => done.extend(outcomes),
            Err(err) => {
                let err = match (backend, first) {
                    (Backend::Sqlite, Some(key)) => err.sqlite_busy_as_lock_error(key, wait),
                    _ => err,
                };
                let err = match first {
                    Some(key) => err.named(key),
                    None => err,
                };
                let err = if T::log_key() {
                    err
                } else {
                    err.without_values()
                };
                tracing::debug!(parent: &span, chunk, done = done.len(), error = %err, "chunk failed");
                return Err(Error::Batch {
                    chunk,
                    chunks,
                    done: done.len(),
                    source: Box::new(err),
                });
            }
        }
    }
    Ok(done)
}

/// One chunk: lock, look, make, insert (update), end.
#[allow(clippy::too_many_arguments)]
async fn run_chunk<T, F, Fut, E, U>(
    backend: Backend,
    db: Handle<'_>,
    inserts_first: bool,
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
    let scope = locked_scope(backend, db, &sorted, deadline, table_of::<T>).await?;
    let txn = scope.txn();
    let work = steps::under_lock::<T, F, Fut, E, U>(
        &txn,
        keys,
        lock_keys,
        data,
        maker,
        update,
        inserts_first,
    );
    match work.await {
        Ok(done) => {
            scope.commit().await?;
            Ok(done)
        }
        Err(err) => Err(scope.roll_back_after(err).await),
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
            .lock_many(scope.txn(), keys, deadline, attempt)
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

mod rows;
mod steps;
