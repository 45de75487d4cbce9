//! A batch of calls ([`crate::Many`]): the items split into chunks in input order, each chunk
//! its own transaction (or, on a caller's transaction, its own savepoint). Per chunk:
//!
//! 1. the chunk's lock keys, sorted and distinct, locked through the seam in one statement
//!    ([`Backend::lock_many`]; SQLite: its IMMEDIATE transaction), so overlapping batches and
//!    single calls never deadlock one another;
//! 2. one look for every distinct key ([`look`]);
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

use std::collections::HashMap;
use std::future::Future;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr,
    FromQueryResult, IdenStatic, Iterable, ModelTrait, QueryFilter, Value,
};
use tracing::Instrument;

use super::key::{CallKey, refuse_unstorable_parts};
use super::request::BoxError;
use super::row::{
    Conflicts, RowValues, created, find, find_statement, not_found_by_key, update_existing,
    update_statement, written_without_lock,
};
use super::under_lock::Scope;
use crate::backend::inserted::Inserted;
use crate::backend::{self, Backend, LockedMany};
use crate::call_chain::Chain;
use crate::classify::{ErrorClass, classify};
use crate::natural_key::{Key, NaturalKey};
use crate::outcome::Done;
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId};
use crate::transaction::Txn;
use crate::turns::{self, Place};
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

/// At most this many bound values in one insert (SQLite's limit is 32766, PostgreSQL's 65535).
const MAX_VALUES: usize = 30_000;

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
    backend.check_wait(batch.wait)?;
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
                    (Backend::Sqlite, Some(key)) => err.sqlite_busy_as_timeout(key),
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
    let scope = locked_scope(backend, db, &sorted, deadline).await?;
    let txn = scope.txn();
    let work =
        under_lock::<T, F, Fut, E, U>(&txn, keys, lock_keys, data, maker, update, inserts_first);
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
) -> Result<Scope<'a>, Error> {
    let mut attempt = 0;
    let mut read_committed = false;
    loop {
        let scope = match db {
            Handle::Connection(conn) => {
                Scope::Own(backend.begin_many(conn, keys, read_committed).await?)
            }
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

/// What one distinct key of a chunk is, as the work under the lock learns it.
struct Distinct<M> {
    /// The row, once found or created.
    row: Option<M>,
    /// Whether this key's row was created by this chunk.
    created: bool,
    /// Handled one by one: its lock key is shared with another distinct key of the chunk, or
    /// the look returned a row no key matched.
    alone: bool,
}

/// Steps 2 to 5 with the chunk's locks held.
async fn under_lock<T, F, Fut, E, U>(
    txn: &Txn<'_>,
    keys: &[CallKey<T>],
    lock_keys: &[LockKey],
    mut data: Vec<Option<T::Data>>,
    maker: Option<&mut F>,
    mut update: Option<&mut U>,
    inserts_first: bool,
) -> Result<Vec<Done<T::Model>>, Error>
where
    T: IdempotentCreate,
    F: FnMut(Vec<T::Key>) -> Fut + Send,
    Fut: Future<Output = Result<Vec<T::Data>, E>> + Send,
    E: Into<BoxError>,
    U: FnMut(&T::Model, T::Data) -> Change<T::ActiveModel> + Send,
{
    let backend = txn.get_database_backend();
    let n = keys.len();
    // The first item of each natural key stands for the others.
    let mut first_of = vec![0_usize; n];
    let mut firsts: Vec<usize> = Vec::new();
    let mut by_key: HashMap<Vec<Value>, usize> = HashMap::with_capacity(n);
    for i in 0..n {
        first_of[i] = *by_key.entry(canonical(&keys[i].values)).or_insert(i);
        if first_of[i] == i {
            firsts.push(i);
        }
    }
    let mut per_lock: HashMap<LockKey, usize> = HashMap::with_capacity(firsts.len());
    for &i in &firsts {
        *per_lock.entry(lock_keys[i]).or_default() += 1;
    }
    let mut distinct: Vec<Option<Distinct<T::Model>>> = (0..n).map(|_| None).collect();
    for &i in &firsts {
        distinct[i] = Some(Distinct {
            row: None,
            created: false,
            alone: per_lock[&lock_keys[i]] > 1,
        });
    }
    // 2. The look, one statement (unless the insert is the look).
    let rows = if inserts_first {
        Vec::new()
    } else {
        look::<T>(txn, keys, &firsts).await?
    };
    let mut orphans = false;
    for model in rows {
        match by_key
            .get(&canonical(&model_key::<T>(&model, &keys[0])))
            .copied()
        {
            Some(i) => distinct[i].as_mut().expect("a first item").row = Some(model),
            None => orphans = true,
        }
    }
    for &i in &firsts {
        let entry = distinct[i].as_mut().expect("a first item");
        if entry.row.is_none() && (orphans || entry.alone) {
            // Told apart by the database's own equality, as a single call's look does.
            entry.alone = true;
            entry.row = find::<T, _>(txn, &keys[i]).await?;
        }
    }
    // 3. The data: for the missing keys' first items, and with an update function for every
    // item whose key has a row (or is a later item of a missing key).
    let updating = update.is_some();
    let needs: Vec<usize> = (0..n)
        .filter(|&i| {
            let missing = distinct[first_of[i]]
                .as_ref()
                .is_some_and(|entry| entry.row.is_none());
            (missing && first_of[i] == i) || updating
        })
        .collect();
    if let Some(make) = maker
        && !needs.is_empty()
    {
        let asked: Vec<T::Key> = needs.iter().map(|&i| keys[i].key.clone()).collect();
        let made = make(asked).await.map_err(|e| Error::MakeData(e.into()))?;
        if made.len() != needs.len() {
            return Err(Error::MakeData(
                format!(
                    "make_data returned {} rows for {} keys (it must return one per key, in order)",
                    made.len(),
                    needs.len()
                )
                .into(),
            ));
        }
        data = (0..n).map(|_| None).collect();
        for (i, datum) in needs.iter().copied().zip(made) {
            data[i] = Some(datum);
        }
    }
    // 4. The missing rows, inserted.
    let mut new_rows: Vec<NewRow<T>> = Vec::new();
    let mut one_by_one: Vec<(usize, RowValues<T>)> = Vec::new();
    for &i in &firsts {
        let entry = distinct[i].as_ref().expect("a first item");
        if entry.row.is_some() {
            continue;
        }
        let datum = data[i].take().ok_or_else(|| {
            Error::Database(DbErr::Custom(format!(
                "no data for item {i} of the chunk, whose row is missing"
            )))
        })?;
        let model = T::new_active_model(&keys[i].key, datum);
        if entry.alone {
            one_by_one.push((i, RowValues::of(&keys[i], model)?));
        } else {
            new_rows.push(NewRow::of(i, &keys[i], model)?);
        }
    }
    insert_rows::<T>(
        txn,
        backend,
        keys,
        &by_key,
        &mut distinct,
        new_rows,
        inserts_first,
    )
    .await?;
    for (i, row) in one_by_one {
        match insert_one::<T>(txn, backend, &keys[i], &row).await? {
            Done::Created(model) => {
                let entry = distinct[i].as_mut().expect("a first item");
                entry.row = Some(model);
                entry.created = true;
            }
            done => distinct[i].as_mut().expect("a first item").row = Some(done.model().clone()),
        }
    }
    // 5. The answers, in input order; with an update function, each item's change.
    let mut done = Vec::with_capacity(n);
    for i in 0..n {
        let first = first_of[i];
        let entry = distinct[first].as_mut().expect("a first item");
        let row = entry.row.clone().expect("every key has its row now");
        if i == first && entry.created {
            done.push(Done::Created(row));
            continue;
        }
        match update.as_mut() {
            None => done.push(Done::Existing(row)),
            Some(update) => {
                // No data left: the first item's went into an insert that found the row a
                // writer which does not take the lock committed meanwhile; the update function
                // never saw that row (as a single call: a retry runs it on it).
                let datum = data[i]
                    .take()
                    .ok_or_else(|| written_without_lock::<T>(&keys[i]))?;
                match update_statement::<T>(&keys[i], update(&row, datum))? {
                    Some(statement) => {
                        let updated = update_existing::<T, _>(txn, &keys[i], statement).await?;
                        entry.row = Some(updated.model().clone());
                        done.push(updated);
                    }
                    None => done.push(Done::Unchanged(row)),
                }
            }
        }
    }
    Ok(done)
}

/// The key values of `model`, in the order of `key`'s columns.
fn model_key<T: IdempotentCreate>(model: &T::Model, key: &CallKey<T>) -> Vec<Value> {
    key.columns
        .iter()
        .map(|column| model.get(*column))
        .collect()
}

/// A key's values as the batch tells keys apart: equal values, and integers of two widths
/// with one value (a key of `i32` for a column of `i64`), are the same key.
fn canonical(values: &[Value]) -> Vec<Value> {
    values
        .iter()
        .map(|value| match integer(value) {
            Some(v) => match i64::try_from(v) {
                Ok(v) => Value::BigInt(Some(v)),
                Err(_) => value.clone(),
            },
            None => value.clone(),
        })
        .collect()
}

fn integer(value: &Value) -> Option<i128> {
    Some(match value {
        Value::TinyInt(Some(v)) => i128::from(*v),
        Value::SmallInt(Some(v)) => i128::from(*v),
        Value::Int(Some(v)) => i128::from(*v),
        Value::BigInt(Some(v)) => i128::from(*v),
        Value::TinyUnsigned(Some(v)) => i128::from(*v),
        Value::SmallUnsigned(Some(v)) => i128::from(*v),
        Value::Unsigned(Some(v)) => i128::from(*v),
        Value::BigUnsigned(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

/// One statement that looks for the rows of the `items` of `keys`: `k IN (...)` for a
/// one-column key, `(k1 = ? AND k2 = ?) OR ...` otherwise; every value bound.
async fn look<T: IdempotentCreate>(
    txn: &Txn<'_>,
    keys: &[CallKey<T>],
    items: &[usize],
) -> Result<Vec<T::Model>, DbErr> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let columns = T::key_columns();
    let condition = match columns.as_slice() {
        [column] if items.iter().all(|&i| !keys[i].has_missing_part()) => Condition::all().add(
            Expr::col(*column).is_in(
                items
                    .iter()
                    .map(|&i| column.save_as(Expr::val(keys[i].values[0].clone()))),
            ),
        ),
        _ => items
            .iter()
            .fold(Condition::any(), |any, &i| any.add(keys[i].condition())),
    };
    T::find().filter(condition).all(txn).await
}

/// A new row of the multi-row insert: which item it is for, its columns and values, and the
/// guarded single insert it falls back to.
struct NewRow<T: IdempotentCreate> {
    item: usize,
    /// Bit `i` for column `i` of `Column::iter()`: rows with the same columns share a statement.
    set_columns: Vec<bool>,
    columns: Vec<T::Column>,
    values: Vec<Value>,
}

impl<T: IdempotentCreate> NewRow<T> {
    fn of(item: usize, key: &CallKey<T>, mut model: T::ActiveModel) -> Result<Self, DbErr> {
        for (column, value) in key.columns.iter().zip(&key.values) {
            model.try_set(*column, value.clone())?;
        }
        let mut row = NewRow {
            item,
            set_columns: Vec::new(),
            columns: Vec::new(),
            values: Vec::new(),
        };
        for column in T::Column::iter() {
            match model.get(column) {
                ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                    row.set_columns.push(true);
                    row.columns.push(column);
                    row.values.push(value);
                }
                ActiveValue::NotSet => row.set_columns.push(false),
            }
        }
        Ok(row)
    }

    /// The row as a single call's guarded insert binds it (built only when needed).
    fn guarded(&self, key: &CallKey<T>) -> Result<RowValues<T>, DbErr> {
        let mut model = <T::ActiveModel as ActiveModelTrait>::default();
        for (column, value) in self.columns.iter().zip(&self.values) {
            model.try_set(*column, value.clone())?;
        }
        RowValues::of(key, model)
    }
}

/// Inserts `rows`: one statement per set of columns (usually one), at most [`MAX_VALUES`]
/// values each. The rows it returns (MySQL: the rows a look then finds) are the created rows;
/// a row that a writer which does not take the lock committed meanwhile, or that conflicts
/// otherwise, is handled as a single call's guarded insert handles it.
async fn insert_rows<T: IdempotentCreate>(
    txn: &Txn<'_>,
    backend: DbBackend,
    keys: &[CallKey<T>],
    by_key: &HashMap<Vec<Value>, usize>,
    distinct: &mut [Option<Distinct<T::Model>>],
    mut rows: Vec<NewRow<T>>,
    inserts_first: bool,
) -> Result<(), Error> {
    rows.sort_by(|a, b| a.set_columns.cmp(&b.set_columns).then(a.item.cmp(&b.item)));
    let mut start = 0;
    while start < rows.len() {
        let width = rows[start].columns.len().max(1);
        let most = (MAX_VALUES / width).max(1);
        let mut end = start + 1;
        while end < rows.len()
            && end - start < most
            && rows[end].set_columns == rows[start].set_columns
        {
            end += 1;
        }
        let group = &rows[start..end];
        let mut insert = Query::insert();
        insert
            .into_table(T::default().table_ref())
            .columns(group[0].columns.iter().copied());
        for row in group {
            insert
                .values(
                    row.columns
                        .iter()
                        .zip(&row.values)
                        .map(|(column, value)| column.save_as(Expr::val(value.clone()))),
                )
                .map_err(|err| DbErr::Custom(err.to_string()))?;
        }
        let items: Vec<usize> = group.iter().map(|row| row.item).collect();
        // MySQL: whether the multi-row insert stored every row of the group.
        let mut stored = false;
        let inserted: Vec<T::Model> = match backend {
            DbBackend::MySql => match txn.execute_raw(backend.build(&insert)).await {
                Ok(_) => {
                    stored = true;
                    look::<T>(txn, keys, &items).await?
                }
                // A row committed meanwhile by a writer that does not take the lock: the
                // statement is undone; every row goes the single call's way.
                Err(err) if classify(&err) == ErrorClass::UniqueViolation => Vec::new(),
                Err(err) => return Err(err.into()),
            },
            _ => {
                insert
                    .on_conflict(OnConflict::new().do_nothing().to_owned())
                    .returning(Query::returning().exprs(
                        T::Column::iter().map(|column| column.select_as(Expr::col(column))),
                    ));
                let returned = txn.query_all_raw(backend.build(&insert)).await?;
                returned
                    .iter()
                    .map(|row| T::Model::from_query_result(row, ""))
                    .collect::<Result<_, _>>()?
            }
        };
        let mut unmatched = 0;
        for model in inserted {
            match by_key
                .get(&canonical(&model_key::<T>(&model, &keys[0])))
                .copied()
                .filter(|i| items.contains(i))
            {
                Some(i) => {
                    let entry = distinct[i].as_mut().expect("a first item");
                    entry.row = Some(model);
                    entry.created = true;
                }
                None => unmatched += 1,
            }
        }
        if unmatched > 0 && backend != DbBackend::MySql {
            // A returned row whose key matches none given: the column stores less than the
            // key's value (`created` tells which).
            return Err(Error::KeyNotStorable {
                table: T::default().table_name(),
                column: keys[items[0]]
                    .columns
                    .iter()
                    .map(|column| column.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                cause: "is stored with less precision than it was given (the column rounds or truncates it)",
            });
        }
        if inserts_first {
            // No look before: the rows the insert skipped exist; one look finds them.
            let skipped: Vec<usize> = group
                .iter()
                .map(|row| row.item)
                .filter(|&i| {
                    distinct[i]
                        .as_ref()
                        .is_some_and(|entry| entry.row.is_none())
                })
                .collect();
            for model in look::<T>(txn, keys, &skipped).await? {
                if let Some(i) = by_key
                    .get(&canonical(&model_key::<T>(&model, &keys[0])))
                    .copied()
                    .filter(|i| skipped.contains(i))
                {
                    distinct[i].as_mut().expect("a first item").row = Some(model);
                }
            }
        }
        for row in group {
            let key = &keys[row.item];
            let entry = distinct[row.item].as_mut().expect("a first item");
            if entry.row.is_some() {
                continue;
            }
            if stored {
                // MySQL stored it, and its values did not find it: the database's own
                // equality does, or the column keeps less than the key's value.
                entry.row = Some(
                    find::<T, _>(txn, key)
                        .await?
                        .ok_or_else(|| not_found_by_key::<T>(key))?,
                );
                entry.created = true;
                continue;
            }
            match insert_one::<T>(txn, backend, key, &row.guarded(key)?).await? {
                Done::Created(model) => {
                    entry.row = Some(model);
                    entry.created = true;
                }
                done => entry.row = Some(done.model().clone()),
            }
        }
        start = end;
    }
    Ok(())
}

/// One row's guarded insert, as a single call makes it under the lock
/// (`INSERT ... SELECT ... WHERE NOT EXISTS`), then the look when nothing was inserted.
async fn insert_one<T: IdempotentCreate>(
    txn: &Txn<'_>,
    backend: DbBackend,
    key: &CallKey<T>,
    row: &RowValues<T>,
) -> Result<Done<T::Model>, Error> {
    let reread = || find_statement::<T>(backend, key);
    let insert = row.insert_unless_exists(backend, key, Conflicts::Absorb);
    match backend::insert_returning(txn, insert, reread).await {
        Ok(Inserted::Row(found)) => return created::<T>(key, &found),
        Ok(Inserted::NotFoundByKey) => return Err(not_found_by_key::<T>(key)),
        Ok(Inserted::Nothing) => {}
        Err(err)
            if backend == DbBackend::MySql && classify(&err) == ErrorClass::UniqueViolation => {}
        Err(err) => return Err(err.into()),
    }
    if let Some(model) = find::<T, _>(txn, key).await? {
        return Ok(Done::Existing(model));
    }
    let insert = row.insert_unless_exists(backend, key, Conflicts::Raise);
    match backend::insert_returning(txn, insert, reread).await? {
        Inserted::Row(found) => created::<T>(key, &found),
        Inserted::NotFoundByKey => Err(not_found_by_key::<T>(key)),
        Inserted::Nothing => Err(written_without_lock::<T>(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_two_integer_widths_are_the_same_key() {
        let same = |a: Value, b: Value| canonical(&[a]) == canonical(&[b]);
        assert!(same(Value::from(7_i32), Value::from(7_i64)));
        assert!(!same(Value::from(7_i32), Value::from(8_i64)));
        assert!(!same(
            Value::from("a".to_owned()),
            Value::from("A".to_owned())
        ));
    }

    #[test]
    fn locks_sort_as_the_lock_table_orders_them() {
        let mut keys = vec![
            LockKey::Pair(2, -1),
            LockKey::Pair(-5, 9),
            LockKey::Pair(2, -3),
        ];
        keys.sort_unstable_by_key(|key| order(*key));
        assert_eq!(
            keys,
            vec![
                LockKey::Pair(-5, 9),
                LockKey::Pair(2, -3),
                LockKey::Pair(2, -1)
            ]
        );
    }
}
