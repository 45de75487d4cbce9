//! MariaDB only: the lock table of fixed slots (`mysql_lock_slots`) probed adversarially. Two
//! keys of one slot share a lock; these tests check that sharing never costs the promise: one
//! row per key, `Created` exactly once per key, typed errors, no lock outliving its call, and
//! bounded waits that end in time.
//!
//! - Keys of one slot in one caller's transaction: one after the other, at once (`join!`), in
//!   a nested transaction (a savepoint), and with the update form.
//! - A caller's REPEATABLE READ transaction whose snapshot predates another key of the slot's
//!   commit: the typed `UnsafeIsolation`; READ COMMITTED is served.
//! - Shared and exclusive advisory locks on keys of one slot.
//! - Batches whose chunks collide in slots with each other and with single calls.
//! - Dropping the per-key table while calls race on it.
//! - A killed holder, and a dropped waiter.
//! - A call inside `make_data` for another key of the held slot, and the pool's cached choice
//!   of lock table outliving the pool.
//!
//! (Over 450 lines: one probe of one feature, the slots, walked across contexts and faults;
//! each case is short and its helpers are shared with `tests/mysql_lock_slots.rs` through
//! `tests/common/mysql.rs`.)
#![cfg(feature = "mysql")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mysql::{
    create_unguarded, ids_of_one_slot, number, read_committed, read_committed_pool, unguarded,
    unguarded_ids_of_one_slot,
};
use common::{Server, key_of, lock_is_free, new_pr, rows_for, total_rows};
use entity::{PullRequest, pull_requests};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IsolationLevel,
    QueryFilter, Statement, TransactionTrait,
};
use sea_orm_idempotent::{
    Change, Error, IdempotentCreate, MYSQL_LOCK_SLOTS_TABLE, MYSQL_LOCK_TABLE, UpsertOutcome, Wait,
    acquire_advisory_lock, acquire_shared_advisory_lock, mysql_lock_slot,
};
use test_support::TestDb;

/// Keys of `unguarded` with more than one row.
async fn unguarded_duplicates(db: &DatabaseConnection) -> Vec<(i64, i64)> {
    db.query_all_raw(Statement::from_string(
        DbBackend::MySql,
        "SELECT k, CAST(COUNT(*) AS SIGNED) AS n FROM unguarded GROUP BY k HAVING COUNT(*) > 1",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.try_get::<i64>("", "k").unwrap(),
            row.try_get::<i64>("", "n").unwrap(),
        )
    })
    .collect()
}

fn repeatable_read() -> Option<IsolationLevel> {
    Some(IsolationLevel::RepeatableRead)
}

/// `per_slot` ids of each of `slots` slots (the slots of the first ids from `from`), every
/// id's key in one of them: a set of keys that collide in slots many times over.
fn colliding_ids(from: i64, slots: usize, per_slot: usize) -> Vec<i64> {
    let targets: Vec<u32> = (from..)
        .map(|id| mysql_lock_slot(key_of(id)))
        .take(slots)
        .collect();
    let mut found: HashMap<u32, Vec<i64>> = HashMap::new();
    for id in from.. {
        let slot = mysql_lock_slot(key_of(id));
        if targets.contains(&slot) {
            let ids = found.entry(slot).or_default();
            if ids.len() < per_slot {
                ids.push(id);
            }
            if found.len() == targets.len() && found.values().all(|ids| ids.len() == per_slot) {
                break;
            }
        }
    }
    let mut ids: Vec<i64> = found.into_values().flatten().collect();
    ids.sort_unstable();
    ids
}

/// The `generation` of `slot`.
async fn generation(db: &impl ConnectionTrait, slot: u32) -> i64 {
    number(
        db,
        &format!("SELECT `generation` FROM `{MYSQL_LOCK_SLOTS_TABLE}` WHERE `slot` = {slot}"),
    )
    .await
}

/// Keys of one slot locked one after the other in one caller's transaction (the second finds
/// the slot already this transaction's), at once with `join!` on the same transaction, and in
/// a nested transaction (a savepoint, committed and rolled back): every key is created once,
/// the slot is held until the outer transaction ends, and nothing waits for itself (a wait
/// of the transaction for its own slot would hang here until the test's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_one_slot_in_one_callers_transaction() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(3).await;
    let (ids, slot) = ids_of_one_slot(1, 6);
    let [a, b, c, d, e, f] = ids[..] else {
        unreachable!()
    };
    let body = async {
        // One after the other.
        let txn = db.begin_with_config(read_committed(), None).await.unwrap();
        for id in [a, b] {
            let outcome = PullRequest::create_once(&txn, id, new_pr(id))
                .await
                .unwrap();
            assert!(outcome.is_created(), "{id}");
        }
        // The slot is held by the transaction: another key of it waits.
        let err = PullRequest::once(c, new_pr(c))
            .wait(Wait::Timeout(Duration::from_secs(1)))
            .exec(&db)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
        // At once, on the same transaction.
        let (first, second) = tokio::join!(
            PullRequest::create_once(&txn, c, new_pr(c)),
            PullRequest::create_once(&txn, d, new_pr(d)),
        );
        assert!(first.unwrap().is_created() && second.unwrap().is_created());
        // A nested transaction, committed: its key is created; rolled back: its key is gone,
        // and created again in the outer transaction.
        let nested = txn.begin().await.unwrap();
        assert!(
            PullRequest::create_once(&nested, e, new_pr(e))
                .await
                .unwrap()
                .is_created()
        );
        nested.commit().await.unwrap();
        let nested = txn.begin().await.unwrap();
        assert!(
            PullRequest::create_once(&nested, f, new_pr(f))
                .await
                .unwrap()
                .is_created()
        );
        nested.rollback().await.unwrap();
        assert_eq!(rows_for(&txn, f).await, 0);
        assert!(
            PullRequest::create_once(&txn, f, new_pr(f))
                .await
                .unwrap()
                .is_created()
        );
        // Again in the transaction: all there.
        for id in [a, b, c, d, e, f] {
            let outcome = PullRequest::create_once(&txn, id, new_pr(id))
                .await
                .unwrap();
            assert!(!outcome.is_created(), "{id}");
        }
        // Still held (a rolled-back savepoint releases no row lock).
        assert!(!lock_is_free(&db, key_of(a)).await);
        txn.commit().await.unwrap();
        assert!(lock_is_free(&db, key_of(a)).await);
    };
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("a call waited for its own transaction's slot");
    for id in [a, b, c, d, e, f] {
        assert_eq!(rows_for(&db, id).await, 1, "{id}");
    }
    assert!(generation(&db, slot).await >= 6);
}

/// The update form on keys of one slot, raced by many tasks over two pools: each call adds 1
/// to its key's `number` (read, decided, written under the key's lock), so the final
/// `number` of each key counts every call that updated it. Without the lock (or with two
/// keys of a slot letting each other through) two calls on one key read the same `number` and
/// one increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_form_on_keys_of_one_slot_loses_no_update() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let pools = [test_db.connect(4).await, test_db.connect(4).await];
    let (ids, _) = ids_of_one_slot(1, 3);
    const CALLS: usize = 12;
    let tasks: Vec<_> = (0..CALLS * ids.len())
        .map(|i| {
            let db = pools[i % 2].clone();
            let id = ids[i % ids.len()];
            tokio::spawn(async move {
                PullRequest::once(id, new_pr(id))
                    .update(|existing: &pull_requests::Model, _| {
                        let mut row: pull_requests::ActiveModel = existing.clone().into();
                        row.number = Set(existing.number + 1_000);
                        Change::Update(row)
                    })
                    .exec(&db)
                    .await
            })
        })
        .collect();
    let mut created: HashMap<i64, usize> = HashMap::new();
    let mut updated: HashMap<i64, i32> = HashMap::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            UpsertOutcome::Created(row) => *created.entry(row.pr_id).or_default() += 1,
            UpsertOutcome::Updated(row) => *updated.entry(row.pr_id).or_default() += 1,
            UpsertOutcome::Unchanged(row) => panic!("unchanged {}", row.pr_id),
        }
    }
    for id in ids {
        assert_eq!(created.get(&id), Some(&1), "Created of {id}");
        assert_eq!(
            updated.get(&id),
            Some(&(CALLS as i32 - 1)),
            "updates of {id}"
        );
        let row = PullRequest::find()
            .filter(pull_requests::Column::PrId.eq(id))
            .one(&pools[0])
            .await
            .unwrap()
            .expect("the row");
        assert_eq!(
            row.number,
            new_pr(id).number + 1_000 * (CALLS as i32 - 1),
            "an update of {id} was lost"
        );
        assert_eq!(rows_for(&pools[0], id).await, 1);
    }
}

/// A caller's REPEATABLE READ transaction that read before another transaction committed a
/// key of the same slot: its call for its own (new) key is refused with the typed
/// `UnsafeIsolation` before anything is written (the slot's count moved after its snapshot;
/// the check cannot tell which key moved it). Its snapshot check is what stops a wrong
/// answer: the same transaction would not see a row of *its* key committed after its
/// snapshot either, which is the case it exists for (checked here too: the same refusal).
/// The same sequence under READ COMMITTED is served, and so is REPEATABLE READ when nothing
/// of the slot was committed after the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_snapshot_older_than_a_commit_of_another_key_of_the_slot() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    let other = test_db.connect(1).await;
    let (ids, _) = ids_of_one_slot(1, 5);
    let [a, b, c, d, e] = ids[..] else {
        unreachable!()
    };
    // REPEATABLE READ, nothing of the slot committed since its snapshot: served.
    let txn = db.begin_with_config(repeatable_read(), None).await.unwrap();
    assert_eq!(total_rows(&txn).await, 0); // the snapshot
    assert!(
        PullRequest::create_once(&txn, e, new_pr(e))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    // Another key of the slot committed after the snapshot, on the locked path (in a
    // transaction: the one statement on a pool counts no holder, see
    // `a_repeatable_read_snapshot_older_than_a_one_statement_commit`): refused, typed, nothing
    // written.
    let txn = db.begin_with_config(repeatable_read(), None).await.unwrap();
    assert_eq!(total_rows(&txn).await, 1);
    let locked_path = other
        .begin_with_config(read_committed(), None)
        .await
        .unwrap();
    assert!(
        PullRequest::create_once(&locked_path, a, new_pr(a))
            .await
            .unwrap()
            .is_created()
    );
    locked_path.commit().await.unwrap();
    let err = PullRequest::create_once(&txn, b, new_pr(b))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeIsolation { .. }), "{err:?}");
    // The key itself committed after the snapshot: refused the same way (no duplicate, no
    // unique violation).
    let err = PullRequest::create_once(&txn, a, new_pr(a))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeIsolation { .. }), "{err:?}");
    txn.rollback().await.unwrap();
    assert_eq!(rows_for(&db, b).await, 0);
    // READ COMMITTED: served, for another key of the slot and for the key itself.
    let txn = db.begin_with_config(read_committed(), None).await.unwrap();
    assert_eq!(total_rows(&txn).await, 2);
    assert!(
        PullRequest::create_once(&other, c, new_pr(c))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        PullRequest::create_once(&txn, d, new_pr(d))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        !PullRequest::create_once(&txn, c, new_pr(c))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    for (id, rows) in [(a, 1), (b, 0), (c, 1), (d, 1), (e, 1)] {
        assert_eq!(rows_for(&db, id).await, rows, "{id}");
    }
}

/// A caller's REPEATABLE READ transaction that read before a call of the one-statement path
/// (a pool, a unique index over the key) committed a key: that statement counts no holder on
/// the slot, so the snapshot check does not see it. Another key of the slot is served (nothing
/// of *its* key is hidden); the key itself is refused with the typed `UnsafeIsolation`, found
/// by the guarded insert, whose locking read sees the row the snapshot cannot: no second row,
/// no unique violation; a batch of the key too. (Before the guard's finding was read so, this call failed with
/// `WrittenWithoutLock`, retryable, though a retry in the same transaction fails the same way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_snapshot_older_than_a_one_statement_commit() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    // READ COMMITTED sessions: the one statement applies.
    let other = read_committed_pool(&test_db, 1).await;
    let (ids, _) = ids_of_one_slot(1, 2);
    let [a, b] = ids[..] else { unreachable!() };
    let txn = db.begin_with_config(repeatable_read(), None).await.unwrap();
    assert_eq!(total_rows(&txn).await, 0); // the snapshot
    assert!(
        PullRequest::create_once(&other, a, new_pr(a))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        PullRequest::create_once(&txn, b, new_pr(b))
            .await
            .unwrap()
            .is_created()
    );
    let err = PullRequest::create_once(&txn, a, new_pr(a))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeIsolation { .. }), "{err:?}");
    // A batch of the key, refused the same way.
    let err = PullRequest::many([(a, new_pr(a))])
        .exec(&txn)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Batch { source, .. } if matches!(**source, Error::UnsafeIsolation { .. })),
        "{err:?}"
    );
    txn.commit().await.unwrap();
    assert_eq!(rows_for(&db, a).await, 1);
    assert_eq!(rows_for(&db, b).await, 1);
}

/// Shared and exclusive advisory locks on two keys of one slot, in two transactions: two
/// shared holders are both granted; an exclusive request waits for a shared holder and a
/// shared one for an exclusive holder (`Wait::No`: `LockBusy`; a bound: `LockTimeout`, ending
/// within a second of it); once the holder ends, the other is granted. A lock that ignored
/// the slot (a row per key) would grant every one of these at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_exclusive_advisory_locks_on_keys_of_one_slot() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(4).await;
    let observer = test_db.connect(2).await;
    let (ids, _) = ids_of_one_slot(1, 2);
    let (a, b) = (key_of(ids[0]), key_of(ids[1]));
    let second = Duration::from_secs(1);
    for level in [read_committed(), repeatable_read()] {
        // Shared + shared.
        let one = db.begin_with_config(level, None).await.unwrap();
        let two = db.begin_with_config(level, None).await.unwrap();
        acquire_shared_advisory_lock(&one, a, Wait::No)
            .await
            .unwrap();
        acquire_shared_advisory_lock(&two, b, Wait::No)
            .await
            .unwrap();
        // Exclusive against shared holders, from a third transaction.
        let three = db.begin_with_config(level, None).await.unwrap();
        let err = acquire_advisory_lock(&three, b, Wait::No)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
        let started = Instant::now();
        let err = acquire_advisory_lock(&three, a, Wait::Timeout(second))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
        let waited = started.elapsed();
        assert!(
            waited >= second && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        three.rollback().await.unwrap();
        one.commit().await.unwrap();
        two.commit().await.unwrap();
        // Shared against an exclusive holder of the other key.
        let one = db.begin_with_config(level, None).await.unwrap();
        acquire_advisory_lock(&one, a, Wait::No).await.unwrap();
        let two = db.begin_with_config(level, None).await.unwrap();
        let err = acquire_shared_advisory_lock(&two, b, Wait::No)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
        let err = acquire_shared_advisory_lock(&two, b, Wait::Timeout(second))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
        // A waiter is granted when the holder ends.
        let waiter = tokio::spawn({
            let db = db.clone();
            async move {
                let txn = db.begin_with_config(level, None).await.unwrap();
                let locked = acquire_shared_advisory_lock(&txn, b, Wait::Forever).await;
                txn.rollback().await.unwrap();
                locked
            }
        });
        common::until_someone_waits(&observer, b).await;
        one.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the shared waiter was granted")
            .unwrap()
            .unwrap();
        two.rollback().await.unwrap();
        assert!(lock_is_free(&observer, a).await && lock_is_free(&observer, b).await);
    }
}

/// A holder of a slot whose connection is killed (`KILL CONNECTION`, as an operator or a
/// failover does) releases it: a call for another key of the slot, waiting without a bound,
/// goes on and creates its row, and the killed holder's key has none. A lock that outlived
/// its session (a named `GET_LOCK` kept by a pooled connection) would hang the waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_of_a_slot_releases_it() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder_db = test_db.connect(1).await;
    let db = test_db.connect(2).await;
    let admin = test_db.connect(2).await;
    let (ids, _) = ids_of_one_slot(1, 2);
    let (a, b) = (ids[0], ids[1]);
    let holder = holder_db
        .begin_with_config(read_committed(), None)
        .await
        .unwrap();
    assert!(
        PullRequest::create_once(&holder, a, new_pr(a))
            .await
            .unwrap()
            .is_created()
    );
    let holder_id = Server::MariaDb.connection_id(&holder).await;
    let waiter = tokio::spawn({
        let db = db.clone();
        async move { PullRequest::create_once(&db, b, new_pr(b)).await }
    });
    common::until_someone_waits(&admin, key_of(b)).await;
    assert!(!waiter.is_finished());
    Server::MariaDb.kill_connection(&admin, holder_id).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter went on once the holder was killed")
        .unwrap()
        .unwrap();
    assert!(outcome.is_created());
    assert!(
        holder.commit().await.is_err(),
        "the killed holder committed"
    );
    assert_eq!(
        (rows_for(&admin, a).await, rows_for(&admin, b).await),
        (0, 1)
    );
    // The holder's pool of one is usable again, and its key is free.
    let outcome = PullRequest::once(a, new_pr(a))
        .wait(Wait::Timeout(Duration::from_secs(10)))
        .exec(&holder_db)
        .await
        .unwrap();
    assert!(outcome.is_created());
    assert!(lock_is_free(&admin, key_of(a)).await);
}

/// A call dropped (a request timeout) while it waits for a slot held by another key's
/// holder leaves no lock behind: once the holder commits, the slot is free within a slice of
/// the unbounded wait (the wait went on on the server, and if granted its transaction was
/// rolled back), and the dropped call's pool of one serves the next call. A lock kept by the
/// dropped call's connection would keep the slot busy until the test's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_it_waits_for_a_slot_leaves_no_lock() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let holder_db = test_db.connect(1).await;
    let waiter_db = test_db.connect(1).await;
    let observer = test_db.connect(2).await;
    let (ids, _) = ids_of_one_slot(1, 3);
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    for wait in [Wait::Forever, Wait::Timeout(Duration::from_secs(30))] {
        observer
            .execute_unprepared("DELETE FROM pull_requests")
            .await
            .unwrap();
        let holder = holder_db
            .begin_with_config(read_committed(), None)
            .await
            .unwrap();
        assert!(
            PullRequest::create_once(&holder, a, new_pr(a))
                .await
                .unwrap()
                .is_created()
        );
        let dropped = tokio::time::timeout(
            Duration::from_millis(1_500),
            PullRequest::once(b, new_pr(b)).wait(wait).exec(&waiter_db),
        )
        .await;
        assert!(
            dropped.is_err(),
            "{wait:?}: the call did not wait: {dropped:?}"
        );
        holder.commit().await.unwrap();
        // Free within a few seconds (one slice of the unbounded wait; a bounded wait granted
        // when the holder committed is rolled back at once).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock_is_free(&observer, key_of(c)).await {
            assert!(
                Instant::now() < deadline,
                "{wait:?}: the dropped call's lock outlived it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outcome = PullRequest::once(b, new_pr(b))
            .wait(Wait::Timeout(Duration::from_secs(10)))
            .exec(&waiter_db)
            .await
            .unwrap();
        assert!(outcome.is_created(), "{wait:?}");
        assert_eq!(rows_for(&observer, b).await, 1);
    }
}

/// Tally of a race: `Created` per key.
type Created = HashMap<i64, usize>;

/// Batches (chunks of 7 keys, most of them sharing their slot with other keys of the chunk
/// and of other chunks) and single calls over the same keys, in different orders, by eight
/// tasks over two pools: every call succeeds (no deadlock: a chunk locks its slots in sorted
/// order, each once), every key has one row and one `Created`. Without the batch's lock the
/// chunks insert into the unique index in different orders and deadlock (see
/// `tests/batch.rs`); a chunk that locked a slot once per key, or out of order, would
/// deadlock with another chunk on the slots themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_single_calls_on_colliding_slots() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let pools = [test_db.connect(4).await, test_db.connect(4).await];
    for (round, from) in [1_i64, 1_000_000, 2_000_000].into_iter().enumerate() {
        let ids = colliding_ids(from, 6, 10);
        assert_eq!(ids.len(), 60);
        let tasks: Vec<_> = (0..8_usize)
            .map(|task| {
                let db = pools[task % 2].clone();
                let mut order = ids.clone();
                order.rotate_left(task * 7 % ids.len());
                if task % 4 >= 2 {
                    order.reverse();
                }
                tokio::spawn(async move {
                    let mut created: Created = HashMap::new();
                    if task % 2 == 0 {
                        let outcomes = PullRequest::many(order.iter().map(|&k| (k, new_pr(k))))
                            .chunk_size(7)
                            .exec(&db)
                            .await
                            .unwrap_or_else(|err| panic!("task {task}'s batch: {err:?}"));
                        for outcome in outcomes {
                            if outcome.is_created() {
                                *created.entry(outcome.model().pr_id).or_default() += 1;
                            }
                        }
                    } else {
                        for k in order {
                            let outcome = PullRequest::create_once(&db, k, new_pr(k))
                                .await
                                .unwrap_or_else(|err| panic!("task {task}, key {k}: {err:?}"));
                            if outcome.is_created() {
                                *created.entry(k).or_default() += 1;
                            }
                        }
                    }
                    created
                })
            })
            .collect();
        let mut created: Created = HashMap::new();
        for task in tasks {
            for (k, n) in tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("the race ended")
                .unwrap()
            {
                *created.entry(k).or_default() += n;
            }
        }
        for &k in &ids {
            assert_eq!(created.get(&k), Some(&1), "round {round}: Created of {k}");
            assert_eq!(
                rows_for(&pools[0], k).await,
                1,
                "round {round}: rows of {k}"
            );
        }
    }
}

/// The pool's choice of lock table is kept for the pool (its address), and a pool's address
/// is reused once it is gone: a pool on a database that has only the slots, closed and
/// dropped, then a pool on a database that still has the per-key table. The second must lock
/// the per-key rows (older versions lock those: a process locking slots there runs alongside
/// them); the slot table of that database must stay untouched. If the first pool's answer
/// (slots) were used for the second, its slots would be counted.
#[tokio::test]
async fn a_pools_choice_of_lock_table_does_not_outlive_the_pool() {
    let (Some(slots_db), Some(per_key_db)) = (
        TestDb::mysql_part("slots").await,
        TestDb::mysql_part("per_key").await,
    ) else {
        return;
    };
    common::mysql::with_the_per_key_table(&per_key_db).await;
    let observer = per_key_db.connect(1).await;
    for id in 1..=30_i64 {
        let first = slots_db.connect(1).await;
        assert!(
            PullRequest::create_once(&first, id, new_pr(id))
                .await
                .unwrap()
                .is_created()
        );
        first.close().await.unwrap();
        let second = per_key_db.connect(1).await;
        assert!(
            PullRequest::create_once(&second, id, new_pr(id))
                .await
                .unwrap()
                .is_created()
        );
        second.close().await.unwrap();
        let slots_locked = number(
            &observer,
            &format!(
                "SELECT CAST(COALESCE(SUM(`generation`), 0) AS SIGNED) \
                 FROM `{MYSQL_LOCK_SLOTS_TABLE}`"
            ),
        )
        .await;
        assert_eq!(
            slots_locked, 0,
            "pool {id} on the per-key database locked a slot: it used a dropped pool's choice"
        );
    }
    assert_eq!(
        number(
            &observer,
            &format!("SELECT COUNT(*) FROM `{MYSQL_LOCK_TABLE}`")
        )
        .await,
        30
    );
}

/// The per-key table dropped while single calls and batches race on a per-key database
/// (`unguarded`: no unique index, so a call that runs alongside another holder of its key
/// stores a second row), with a caller's transaction holding a per-key row from before the
/// drop: the `DROP TABLE` waits for it, the calls that come meanwhile wait behind the drop,
/// and every call of every task ends with `Created` or `Existing`, one `Created` and one row
/// per key, before, during and after the switch. Keys include several of one slot. With the
/// choice made to prefer the slots while the per-key table exists, the calls on the held key
/// run beside the holder and store a second row of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_per_key_table_while_calls_race() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    common::mysql::with_the_per_key_table(&test_db).await;
    let observer = test_db.connect(2).await;
    create_unguarded(&observer).await;
    let mut keys: Vec<i64> = (1..=24).collect();
    keys.extend(unguarded_ids_of_one_slot(1_000, 6));
    let held = keys[0];
    let pools = [test_db.connect(4).await, test_db.connect(4).await];
    // The caller's transaction holding `held`'s per-key row (made, counted) and its event.
    let holder_db = test_db.connect(1).await;
    let holder = holder_db
        .begin_with_config(read_committed(), None)
        .await
        .unwrap();
    assert!(
        unguarded::Entity::create_once(&holder, held, format!("event {held}"))
            .await
            .unwrap()
            .is_created()
    );
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..6_usize)
        .map(|task| {
            let db = pools[task % 2].clone();
            let dropped = dropped.clone();
            let mut order = keys.clone();
            order.rotate_left(task * 5 % keys.len());
            if task % 3 == 1 {
                order.reverse();
            }
            tokio::spawn(async move {
                let mut created: Created = HashMap::new();
                let mut after = 0;
                // Rounds until two after the drop.
                while after < 2 {
                    if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                        after += 1;
                    }
                    if task % 2 == 0 {
                        let outcomes = unguarded::Entity::many(
                            order.iter().map(|&k| (k, format!("event {k}"))),
                        )
                        .chunk_size(5)
                        .exec(&db)
                        .await
                        .unwrap_or_else(|err| panic!("task {task}'s batch: {err:?}"));
                        for outcome in outcomes {
                            if outcome.is_created() {
                                *created.entry(outcome.model().k).or_default() += 1;
                            }
                        }
                    } else {
                        for &k in &order {
                            let outcome =
                                unguarded::Entity::create_once(&db, k, format!("event {k}"))
                                    .await
                                    .unwrap_or_else(|err| panic!("task {task}, key {k}: {err:?}"));
                            if outcome.is_created() {
                                *created.entry(k).or_default() += 1;
                            }
                        }
                    }
                }
                created
            })
        })
        .collect();
    // The drop, once the tasks are under way; it waits for the holder.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dropper_db = test_db.connect(1).await;
    let dropper = tokio::spawn(async move {
        dropper_db
            .execute_unprepared(&format!("DROP TABLE `{MYSQL_LOCK_TABLE}`"))
            .await
    });
    let waiting_drop = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                        WHERE DB = DATABASE() AND INFO LIKE 'DROP TABLE%'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while number(&observer, waiting_drop).await == 0 {
        assert!(Instant::now() < deadline, "the DROP never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        !dropper.is_finished(),
        "the DROP did not wait for the holder"
    );
    holder.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), dropper)
        .await
        .expect("the DROP ran once the holder committed")
        .unwrap()
        .unwrap();
    dropped.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut created: Created = HashMap::new();
    *created.entry(held).or_default() += 1;
    for task in tasks {
        for (k, n) in tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the race ended")
            .unwrap()
        {
            *created.entry(k).or_default() += n;
        }
    }
    assert_eq!(unguarded_duplicates(&observer).await, vec![]);
    for &k in &keys {
        assert_eq!(created.get(&k), Some(&1), "Created of {k}");
    }
    assert_eq!(
        number(&observer, "SELECT COUNT(*) FROM unguarded").await,
        keys.len() as i64
    );
}

/// A call made inside `make_data` for *another* key of the slot the enclosing call holds, on
/// another connection of the pool (or a caller's transaction on another connection): it would
/// wait for its own caller, whose lock is the slot's row, a deadlock the server cannot see
/// (both transactions idle but one). The promise for the same key is a fast
/// `Error::Reentrant` (`tests/namespaces.rs`); a key of the same slot is the same lock. It
/// must fail fast or be served, never hang: the test bounds it at 20 s.
async fn a_call_inside_make_data_for_another_key_of_the_held_slot(inner_on: Inner) {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(3).await;
    let other = test_db.connect(1).await;
    let (ids, _) = ids_of_one_slot(1, 2);
    let (a, b) = (ids[0], ids[1]);
    let outer = |inner_on: Inner| {
        let db = db.clone();
        let other = other.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let outer = tokio::time::timeout(
                Duration::from_secs(20),
                PullRequest::create_once_with(&db, a, || async {
                    let inner = match inner_on {
                        Inner::Pool => PullRequest::create_once(&db, b, new_pr(b)).await,
                        Inner::BatchOnThePool => PullRequest::many([(b, new_pr(b))])
                            .exec(&db)
                            .await
                            .map(|mut outcomes| outcomes.remove(0)),
                        Inner::BatchInACallersTransaction => {
                            let txn = other.begin().await.unwrap();
                            let inner = PullRequest::many([(b, new_pr(b))])
                                .exec(&txn)
                                .await
                                .map(|mut outcomes| outcomes.remove(0));
                            txn.rollback().await.unwrap();
                            inner
                        }
                        Inner::CallersTransaction => {
                            let txn = other.begin().await.unwrap();
                            let inner = PullRequest::create_once(&txn, b, new_pr(b)).await;
                            txn.rollback().await.unwrap();
                            inner
                        }
                    };
                    tx.send(inner.map(|outcome| outcome.is_created())).unwrap();
                    Ok::<_, Error>(new_pr(a))
                }),
            )
            .await;
            (outer, rx.await)
        }
    };
    {
        let (outer, inner) = outer(inner_on).await;
        let outer = outer.unwrap_or_else(|_| {
            panic!("{inner_on:?}: the inner call for another key of the held slot hung")
        });
        assert!(outer.is_ok(), "{inner_on:?}: {outer:?}");
        let inner = inner.unwrap();
        let reentrant = |err: &Error| match err {
            Error::Reentrant { .. } => true,
            Error::Batch { source, .. } => matches!(**source, Error::Reentrant { .. }),
            _ => false,
        };
        assert!(
            matches!(&inner, Ok(true)) || inner.as_ref().is_err_and(reentrant),
            "{inner_on:?}: {inner:?}"
        );
        db.execute_unprepared("DELETE FROM pull_requests")
            .await
            .unwrap();
    }
}

/// The inner call on another connection of the pool. It hung before the call chain compared
/// slots on MariaDB (it compared keys): 'Pool: the inner call for another key of the held slot
/// hung'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_inside_make_data_for_another_key_of_the_held_slot_on_the_pool() {
    a_call_inside_make_data_for_another_key_of_the_held_slot(Inner::Pool).await;
}

/// The inner call in a caller's transaction on another connection; it hung too before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_inside_make_data_for_another_key_of_the_held_slot_in_a_callers_transaction() {
    a_call_inside_make_data_for_another_key_of_the_held_slot(Inner::CallersTransaction).await;
}

/// A batch inside `make_data` for another key of the held slot, on the pool: its chunk would
/// wait for the enclosing call (it hung, 'BatchOnThePool: ...', before the chunk's lock
/// compared slots with the call chain's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_inside_make_data_for_another_key_of_the_held_slot_on_the_pool() {
    a_call_inside_make_data_for_another_key_of_the_held_slot(Inner::BatchOnThePool).await;
}

/// The same batch in a caller's transaction on another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_inside_make_data_for_another_key_of_the_held_slot_in_a_callers_transaction() {
    a_call_inside_make_data_for_another_key_of_the_held_slot(Inner::BatchInACallersTransaction)
        .await;
}

/// Where the inner call of `a_call_inside_make_data_for_another_key_of_the_held_slot` runs.
#[derive(Debug, Clone, Copy)]
enum Inner {
    Pool,
    CallersTransaction,
    BatchOnThePool,
    BatchInACallersTransaction,
}
