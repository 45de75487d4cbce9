//! Steps 3 to 6 of a batch's chunk, with its locks held: the look, the data of the missing
//! keys, the insert, the update function; and how the chunk tells its keys apart.

use std::collections::HashMap;
use std::future::Future;

use sea_orm::{ConnectionTrait, DbErr, Value};

use crate::backend::Backend;
use crate::call::key::CallKey;
use crate::call::request::BoxError;
use crate::call::row::{RowValues, find, update_existing, update_statement, written_without_lock};
use crate::outcome::Done;
use crate::transaction::Txn;
use crate::wait::Deadline;
use crate::{Change, Error, IdempotentCreate, LockKey};

use super::rows::{Distinct, NewRow, canonical, insert_one, insert_rows, look, model_key};

/// A chunk's items by natural key: the first item of each key stands for the others.
pub(super) struct ChunkKeys<M> {
    /// For each item, the first item of its key.
    pub(super) first_of: Vec<usize>,
    /// The first items, in input order.
    pub(super) firsts: Vec<usize>,
    /// Each key (as [`canonical`]) to its first item.
    pub(super) by_key: HashMap<Vec<Value>, usize>,
    /// For each first item, what the chunk learns of its key; `None` for the others.
    pub(super) distinct: Vec<Option<Distinct<M>>>,
}

impl<M> ChunkKeys<M> {
    pub(super) fn of<T: IdempotentCreate>(keys: &[CallKey<T>], lock_keys: &[LockKey]) -> Self {
        let n = keys.len();
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
        let mut distinct: Vec<Option<Distinct<M>>> = (0..n).map(|_| None).collect();
        for &i in &firsts {
            distinct[i] = Some(Distinct {
                row: None,
                created: false,
                alone: per_lock[&lock_keys[i]] > 1,
            });
        }
        ChunkKeys {
            first_of,
            firsts,
            by_key,
            distinct,
        }
    }

    /// Whether first item `i`'s key has no row yet.
    pub(super) fn missing(&self, i: usize) -> bool {
        self.distinct[i]
            .as_ref()
            .is_some_and(|entry| entry.row.is_none())
    }

    /// The rows a look returned, each given to its key if that key has none yet (`key`: any
    /// key of the chunk, for its columns).
    pub(super) fn found<T: IdempotentCreate<Model = M>>(&mut self, rows: Vec<M>, key: &CallKey<T>) {
        for model in rows {
            if let Some(&i) = self.by_key.get(&canonical(&model_key::<T>(&model, key)))
                && self.missing(i)
            {
                self.distinct[i].as_mut().expect("a first item").row = Some(model);
            }
        }
    }

    /// A create-only chunk's answers, in input order, once every key has its row: `Created`
    /// for the first item of a key the chunk created, `Existing` for every other.
    pub(super) fn answers(self) -> Vec<Done<M>>
    where
        M: Clone,
    {
        let ChunkKeys {
            first_of,
            mut distinct,
            ..
        } = self;
        // Each key's last item takes its row; the items before it, a copy.
        let mut last_of = vec![0_usize; first_of.len()];
        for (i, &first) in first_of.iter().enumerate() {
            last_of[first] = i;
        }
        (0..first_of.len())
            .map(|i| {
                let first = first_of[i];
                let entry = distinct[first].as_mut().expect("a first item");
                let row = if last_of[first] == i {
                    entry.row.take()
                } else {
                    entry.row.clone()
                };
                let row = row.expect("every key has its row now");
                if i == first && entry.created {
                    Done::Created(row)
                } else {
                    Done::Existing(row)
                }
            })
            .collect()
    }
}

/// After the database refused a create-only chunk's write as read-only (a read-only
/// transaction, server or file, or a hot standby, which refuses the lock statement or the
/// insert even when every row is stored): the chunk's answers, all `Existing`, if every key
/// has its row (found by the batch's look, then by the database's own equality, as a single
/// call finds it); otherwise the read-only error.
pub(super) async fn found_after_read_only<T: IdempotentCreate, C: ConnectionTrait>(
    db: &C,
    keys: &[CallKey<T>],
    lock_keys: &[LockKey],
    read_only: DbErr,
) -> Result<Vec<Done<T::Model>>, Error> {
    let mut chunk = ChunkKeys::<T::Model>::of(keys, lock_keys);
    let Ok(rows) = look::<T, _>(db, keys, &chunk.firsts).await else {
        return Err(Error::ReadOnly(read_only));
    };
    chunk.found(rows, &keys[0]);
    for i in chunk.firsts.clone() {
        if !chunk.missing(i) {
            continue;
        }
        match find::<T, _>(db, &keys[i]).await {
            Ok(Some(model)) => chunk.distinct[i].as_mut().expect("a first item").row = Some(model),
            Ok(None) | Err(_) => return Err(Error::ReadOnly(read_only)),
        }
    }
    Ok(chunk.answers())
}

/// A chunk's rows the [one statement](super::one_statement) left to the locked path
/// ([`insert_pending`]), with what the chunk knows of its keys so far.
pub(super) struct Pending<T: IdempotentCreate> {
    pub(super) chunk: ChunkKeys<T::Model>,
    pub(super) rows: Vec<NewRow<T>>,
}

/// The rows the [one statement](super::one_statement) left to the locked path (every lock of
/// the chunk held): looked for, and those missing inserted, as steps 3 and 5 do; then the
/// chunk's answers.
pub(super) async fn insert_pending<T: IdempotentCreate>(
    txn: &Txn<'_>,
    keys: &[CallKey<T>],
    pending: Pending<T>,
    deadline: Deadline,
) -> Result<Vec<Done<T::Model>>, Error> {
    let Pending {
        mut chunk,
        mut rows,
    } = pending;
    // Under the lock the look tells which rows exist (not an index, which may be gone).
    let items: Vec<usize> = rows.iter().map(|row| row.item).collect();
    chunk.found(look::<T, _>(txn, keys, &items).await?, &keys[items[0]]);
    rows.retain(|row| chunk.missing(row.item));
    insert_rows::<T>(
        txn,
        txn.get_database_backend(),
        keys,
        &chunk.by_key,
        &mut chunk.distinct,
        rows,
        deadline,
    )
    .await?;
    Ok(chunk.answers())
}

/// Steps 3 to 6 with the chunk's locks held.
pub(super) async fn under_lock<T, F, Fut, E, U>(
    txn: &Txn<'_>,
    keys: &[CallKey<T>],
    lock_keys: &[LockKey],
    mut data: Vec<Option<T::Data>>,
    maker: Option<&mut F>,
    mut update: Option<&mut U>,
    deadline: Deadline,
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
    let ChunkKeys {
        first_of,
        firsts,
        by_key,
        mut distinct,
    } = ChunkKeys::of(keys, lock_keys);
    // 3. The look, one statement.
    let rows = look::<T, _>(txn, keys, &firsts).await?;
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
    // 4. The data: for the missing keys' first items, and with an update function for every
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
    // 5. The missing rows, inserted.
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
        deadline,
    )
    .await?;
    for (i, row) in one_by_one {
        match insert_one::<T>(txn, &keys[i], &row, deadline.left()).await? {
            Done::Created(model) => {
                let entry = distinct[i].as_mut().expect("a first item");
                entry.row = Some(model);
                entry.created = true;
            }
            done => distinct[i].as_mut().expect("a first item").row = Some(done.model().clone()),
        }
    }
    // 6. The answers, in input order; with an update function, each item's change.
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
                        let updated = update_existing::<T, _>(
                            txn,
                            Backend::of(backend)?,
                            &keys[i],
                            statement,
                            deadline.left(),
                        )
                        .await?;
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
