//! MariaDB only: a batch's chunk locks and updates the lock-table rows of its own keys and no
//! others, so a key another transaction holds never makes a chunk without it wait.
//!
//! A holder's transaction holds one key (`create_once` of a key never locked before, its lock
//! row inserted and not committed; or `acquire_advisory_lock` of a key whose row exists); then
//! a batch of other keys, among them the keys whose lock rows sort just below and just above
//! the held one (the neighbours a range or a scan would read first), must be done within a
//! 1 s bound while the holder stays open. On a lock table of few rows and of many rows (the
//! optimizer plans the two differently), with the batch's keys' rows new and existing.
//!
//! Before the fix the chunk's locking read (`... WHERE (space = ? AND k1 = ? AND k2 IN (...))
//! ... FOR UPDATE`) was planned on MariaDB 10.11 as a `ref` scan of the namespace's `(space,
//! k1)` prefix, which reads, and so locks, every row of the namespace, the held one too: the
//! chunk failed with "chunk 1 of 1 of the batch failed after 0 items were done (...): lock
//! ... not granted within 1 s" on the table of few rows (on the big one that statement was a
//! range read). The big table's batch is a whole chunk (500 keys): the row form `(space, k1,
//! k2) IN (...)` of so many keys, an obvious fix, MariaDB turns into a join that scans the
//! lock table.
//!
//! On the per-key table of 0.1 and 0.2 (`mysql_lock_table`, made here: the sample's
//! migrations drop it for the slots), which a database keeps using until it is dropped. On
//! the slots, keys that share a slot do wait for each other, by design; a chunk's slots are
//! looked up by the same whole-primary-key lookups.
#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use common::{key_of, new_pr, rows_for};
use entity::PullRequest;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, Statement, TransactionTrait,
    Value,
};
use sea_orm_idempotent::{
    IdempotentCreate, LockKey, MYSQL_LOCK_TABLE, Wait, acquire_advisory_lock,
};
use test_support::TestDb;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rows {
    /// Only the rows of the keys the test locks.
    Few,
    /// 20 000 rows of other keys of the namespace (and 2 000 of another), analyzed.
    Many,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_makes_no_chunk_without_it_wait_on_a_lock_table_of_few_rows() {
    chunks_do_not_wait_for_other_keys(Rows::Few).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_makes_no_chunk_without_it_wait_on_a_lock_table_of_many_rows() {
    chunks_do_not_wait_for_other_keys(Rows::Many).await;
}

/// The lock table's `k2` of a pull request's key.
fn k2(pr_id: i64) -> i32 {
    match key_of(pr_id) {
        LockKey::Pair(_, k2) => k2,
        other => panic!("an entity key is a pair: {other:?}"),
    }
}

/// The keys among `candidates` whose lock rows sort just below and just above `held`'s.
fn neighbours(held: i64, candidates: impl Iterator<Item = i64>) -> (i64, i64) {
    let h = k2(held);
    let (mut below, mut above): (Option<i64>, Option<i64>) = (None, None);
    for k in candidates.filter(|&k| k != held) {
        let v = k2(k);
        if v < h && below.is_none_or(|b| v > k2(b)) {
            below = Some(k);
        }
        if v > h && above.is_none_or(|a| v < k2(a)) {
            above = Some(k);
        }
    }
    (below.expect("a key below"), above.expect("a key above"))
}

/// Makes the lock rows of `keys` (committed), bound values, 1 000 a statement.
async fn insert_lock_rows(db: &DatabaseConnection, keys: &[LockKey]) {
    for part in keys.chunks(1_000) {
        let rows = vec!["(?, ?, ?)"; part.len()].join(", ");
        let values: Vec<Value> = part
            .iter()
            .flat_map(|key| {
                let (space, k1, k2): (i32, i32, i32) = match *key {
                    LockKey::Pair(a, b) => (2, a, b),
                    LockKey::BigInt(k) => (1, (k >> 32) as i32, k as i32),
                };
                [space.into(), k1.into(), k2.into()]
            })
            .collect();
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            format!("INSERT IGNORE INTO `{MYSQL_LOCK_TABLE}` (`space`, `k1`, `k2`) VALUES {rows}"),
            values,
        ))
        .await
        .unwrap();
    }
}

async fn chunks_do_not_wait_for_other_keys(rows: Rows) {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    common::mysql::with_the_per_key_table(&test_db).await;
    let db = test_db.connect(4).await;
    let holder_db = test_db.connect(1).await;
    let rc = || Some(IsolationLevel::ReadCommitted);
    // Round 0: the held key's row is made by the holder (not committed); round 1: it exists.
    let held_keys = [72_i64, 172];
    let mut used: Vec<i64> = held_keys.to_vec();
    for (round, &held) in held_keys.iter().enumerate() {
        let row_exists = round == 1;
        let candidates = || (1..=200_000_i64).filter(|k| !used.contains(k));
        let (below, above) = neighbours(held, candidates());
        // The batch: the neighbours and, on the big table, a whole chunk (500 keys).
        let extra = if rows == Rows::Many { 498 } else { 2 };
        let mut batch: Vec<i64> = vec![below, above];
        batch.extend(
            candidates()
                .filter(|&k| k != below && k != above && k != held)
                .skip(1_000 * round)
                .take(extra),
        );
        used.extend(&batch);
        if rows == Rows::Many && round == 0 {
            // Other keys, none sorting between the neighbours, and another namespace's.
            let (lo, hi) = (k2(below), k2(above));
            let mut others: Vec<LockKey> = (1_000_000..1_020_000_i64)
                .filter(|&k| !(lo..=hi).contains(&k2(k)))
                .map(key_of)
                .collect();
            others.extend((0..2_000).map(LockKey::BigInt));
            insert_lock_rows(&db, &others).await;
            db.execute_unprepared(&format!("ANALYZE TABLE `{MYSQL_LOCK_TABLE}`"))
                .await
                .unwrap();
        }
        if row_exists {
            // Every key locked once before: their rows exist, committed.
            let mut keys: Vec<LockKey> = batch.iter().copied().map(key_of).collect();
            keys.push(key_of(held));
            insert_lock_rows(&db, &keys).await;
        }
        let holder = holder_db.begin_with_config(rc(), None).await.unwrap();
        if row_exists {
            acquire_advisory_lock(&holder, key_of(held), Wait::Forever)
                .await
                .unwrap();
        } else {
            let outcome = PullRequest::create_once(&holder, held, new_pr(held))
                .await
                .unwrap();
            assert!(outcome.is_created());
        }
        let items: Vec<_> = batch.iter().map(|&k| (k, new_pr(k))).collect();
        let started = Instant::now();
        let outcomes = PullRequest::many(items)
            .wait(Wait::Timeout(Duration::from_secs(1)))
            .exec(&db)
            .await;
        let took = started.elapsed();
        let outcomes = outcomes.unwrap_or_else(|err| {
            panic!(
                "{rows:?} rows, held key {held} (row existed: {row_exists}), batch of its \
                 neighbours {below} and {above} and {extra} others waited for it ({took:?}): \
                 {err}"
            )
        });
        assert_eq!(outcomes.len(), batch.len());
        assert!(outcomes.iter().all(|outcome| outcome.is_created()));
        // The holder was never in the way: it still holds its key, alone.
        let busy = PullRequest::once(held, new_pr(held))
            .wait(Wait::No)
            .exec(&db)
            .await;
        assert!(
            matches!(busy, Err(sea_orm_idempotent::Error::LockBusy { .. })),
            "the held key {held} stays held: {busy:?}"
        );
        holder.commit().await.unwrap();
        for &k in &batch {
            assert_eq!(rows_for(&db, k).await, 1, "key {k}");
        }
    }
}
