//! Steps 2 to 5 of a batch's chunk, with its locks held: the look, the data of the missing
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
use crate::{Change, Error, IdempotentCreate, LockKey, Wait};

use super::rows::{Distinct, NewRow, canonical, insert_one, insert_rows, look, model_key};

/// Steps 2 to 5 with the chunk's locks held.
pub(super) async fn under_lock<T, F, Fut, E, U>(
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
        match insert_one::<T>(txn, &keys[i], &row, Wait::Forever).await? {
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
                        let updated = update_existing::<T, _>(
                            txn,
                            Backend::of(backend)?,
                            &keys[i],
                            statement,
                            Wait::Forever,
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
