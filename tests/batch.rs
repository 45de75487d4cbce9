//! The batch form (`Entity::many`, `many_with`, `create_many_once`) on PostgreSQL, MariaDB and
//! SQLite (a file): one outcome per item in input order, duplicates collapsing into one
//! creation, `make_data` called once per chunk with exactly the missing keys, a failed chunk
//! writing nothing and naming how far the batch got, and the race: batches and single calls
//! over overlapping keys, 16 tasks over two pools, one row and one `Created` per key among all
//! the answers.
//!
//! The race can fail: with the batch's lock statement skipped (`Backend::lock_many` returning
//! `Locked` at once), batches over the same keys in different orders insert into the unique
//! index in different orders, and the race fails on PostgreSQL and MariaDB with "task 2's batch
//! failed: chunk 1 of 11 of the batch failed after 0 items were done (...): deadlock detected
//! while waiting for lock (724609916, -1626672940)"; on SQLite, with a deferred `BEGIN` in
//! place of the IMMEDIATE one, with "lock (724609916, -1784837078) not granted before the wait
//! was ended for it" (SQLite's busy snapshot). With the lock, every key of every run has one
//! row and one `Created`.

// The helpers below serve the tests of every backend; a build with one backend's feature
// runs that backend's tests only and leaves the others' helpers unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Server, TempDir, drop_at_await_point, key_of, new_pr, on_each_server, rows_for, total_rows,
    until_someone_waits,
};
use entity::{PullRequest, pull_requests};
use migration::{Migrator, MigratorTrait};
use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::{
    Change, Error, IdempotentCreate, Outcome, UpsertOutcome, Wait, acquire_advisory_lock,
};

/// The pull requests of `keys`, as a batch's items.
fn items(keys: &[i64]) -> Vec<(i64, entity::NewPullRequest)> {
    keys.iter().map(|&k| (k, new_pr(k))).collect()
}

/// A SQLite file database, migrated, and a pool of `size` on it.
async fn sqlite(dir: &TempDir, size: u32) -> DatabaseConnection {
    let mut options = test_support::pool_options(&dir.sqlite_url("app.db"), size);
    options.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30))
    });
    let db = test_support::connect_with(options).await;
    Migrator::up(&db, None).await.expect("migrate");
    db
}

/// One outcome per item, in input order; a key given twice is created once (the first item)
/// and `Existing` after; a key stored before is `Existing`; every key has one row.
async fn outcomes_in_order(db: &DatabaseConnection) {
    let before = PullRequest::create_once(db, 2, new_pr(2)).await.unwrap();
    assert!(before.is_created());
    let outcomes = PullRequest::many(items(&[1, 2, 3, 1, 4, 3]))
        .chunk_size(4)
        .exec(db)
        .await
        .unwrap();
    let shape: Vec<(i64, bool)> = outcomes
        .iter()
        .map(|outcome| (outcome.model().pr_id, outcome.is_created()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, true),
            (2, false),
            (3, true),
            (1, false),
            (4, true),
            (3, false)
        ]
    );
    assert_eq!(outcomes[0].model().id, outcomes[3].model().id);
    assert_eq!(outcomes[1].model(), before.model());
    for k in 1..=4 {
        assert_eq!(rows_for(db, k).await, 1, "rows of key {k}");
    }
    // Again: all there.
    let again = PullRequest::create_many_once(db, items(&[4, 3, 2, 1]))
        .await
        .unwrap();
    assert!(again.iter().all(|outcome| !outcome.is_created()));
    assert_eq!(total_rows(db).await, 4);
}

/// `make_data` runs once per chunk, with exactly the keys found missing (each once).
async fn made_for_missing_keys(db: &DatabaseConnection) {
    PullRequest::create_once(db, 20, new_pr(20)).await.unwrap();
    let asked: Arc<Mutex<Vec<Vec<i64>>>> = Arc::default();
    let log = asked.clone();
    let outcomes = PullRequest::many_with(vec![21, 20, 22, 22, 23], move |missing: Vec<i64>| {
        log.lock().unwrap().push(missing.clone());
        async move { Ok::<_, std::io::Error>(missing.into_iter().map(new_pr).collect()) }
    })
    .chunk_size(3)
    .exec(db)
    .await
    .unwrap();
    assert_eq!(*asked.lock().unwrap(), vec![vec![21, 22], vec![23]]);
    let created: Vec<bool> = outcomes.iter().map(Outcome::is_created).collect();
    assert_eq!(created, vec![true, false, true, false, true]);
}

/// A chunk that fails writes nothing; the error names it and the items done before it.
async fn failed_chunk(db: &DatabaseConnection) {
    let mut calls = 0;
    let err = PullRequest::many_with(vec![30, 31, 32, 33, 34], move |missing: Vec<i64>| {
        calls += 1;
        let fail = calls == 2;
        async move {
            if fail {
                Err(std::io::Error::other("the API is down"))
            } else {
                Ok(missing.into_iter().map(new_pr).collect())
            }
        }
    })
    .chunk_size(2)
    .exec(db)
    .await
    .unwrap_err();
    match &err {
        Error::Batch {
            chunk: 1,
            chunks: Some(3),
            done: 2,
            source,
            ..
        } if matches!(**source, Error::MakeData(_)) => {}
        other => panic!("expected chunk 1 of 3 failed after 2 items, got {other:?}"),
    }
    assert!(err.to_string().contains("chunk 2 of 3"), "{err}");
    for (k, rows) in [(30, 1), (31, 1), (32, 0), (33, 0), (34, 0)] {
        assert_eq!(rows_for(db, k).await, rows, "rows of key {k}");
    }
}

/// The update form: per item, under the chunk's locks, on the row as the items before it left
/// it: a later item of a key created by the batch updates the row the first item made.
async fn update_form(db: &DatabaseConnection) {
    PullRequest::create_once(db, 40, new_pr(40)).await.unwrap();
    let titled = |k: i64, title: &str| {
        let mut pr = new_pr(k);
        pr.title = title.to_owned();
        (k, pr)
    };
    let outcomes = PullRequest::many(vec![
        titled(40, "renamed"),
        titled(41, "first"),
        titled(41, "second"),
        titled(40, "renamed"),
    ])
    .chunk_size(3)
    .update(
        |existing: &pull_requests::Model, new: entity::NewPullRequest| {
            if existing.title == new.title {
                Change::Keep
            } else {
                Change::Update(pull_requests::ActiveModel {
                    title: Set(new.title),
                    ..Default::default()
                })
            }
        },
    )
    .exec(db)
    .await
    .unwrap();
    let shape: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|outcome| (outcome.as_str(), outcome.model().title.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("updated", "renamed"),
            ("created", "first"),
            ("updated", "second"),
            ("unchanged", "renamed"),
        ]
    );
    assert!(matches!(outcomes[1], UpsertOutcome::Created(_)));
    assert_eq!(rows_for(db, 41).await, 1);
}

/// On a caller's transaction the batch is that transaction's: rolled back with it, committed
/// with it.
async fn callers_transaction(db: &DatabaseConnection) {
    let txn = db.begin().await.unwrap();
    let outcomes = PullRequest::many(items(&[50, 51, 50]))
        .chunk_size(2)
        .exec(&txn)
        .await
        .unwrap();
    assert_eq!(
        outcomes.iter().map(Outcome::is_created).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    txn.rollback().await.unwrap();
    assert_eq!(
        rows_for(db, 50).await,
        0,
        "rolled back with the caller's transaction"
    );
    let txn = db.begin().await.unwrap();
    let outcomes = PullRequest::create_many_once(&txn, items(&[50, 51]))
        .await
        .unwrap();
    assert!(outcomes.iter().all(Outcome::is_created));
    txn.commit().await.unwrap();
    assert_eq!(rows_for(db, 50).await + rows_for(db, 51).await, 2);
}

/// A batch inside the `make_data` of a call that holds one of its keys would wait for that
/// call, which waits for it: the chunk with that key is refused with `Error::Reentrant`, before
/// any wait.
async fn inside_make_data(db: &DatabaseConnection) {
    let outer = PullRequest::create_once_with(db, 80, || {
        let db = db.clone();
        async move {
            let inner = PullRequest::create_many_once(&db, items(&[81, 80])).await;
            assert!(
                matches!(
                    &inner,
                    Err(Error::Batch { chunk: 0, done: 0, source, .. })
                        if matches!(**source, Error::Reentrant { .. })
                ),
                "the batch must be refused, not wait: {inner:?}"
            );
            Ok::<_, std::io::Error>(new_pr(80))
        }
    })
    .await
    .unwrap();
    assert!(outer.is_created());
    assert_eq!(rows_for(db, 81).await, 0, "the refused batch wrote nothing");
}

const RACE_KEYS: i64 = 120;
const RACE_TASKS: usize = 16;

/// A small deterministic generator (the race's orders are the same every run).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// [`race_created`], then its checks: each key has one row and exactly one `Created`.
async fn race(pools: &[DatabaseConnection], first_key: i64) {
    let created = race_created(pools, first_key).await;
    for key in first_key..first_key + RACE_KEYS {
        assert_eq!(
            created.get(&key).copied().unwrap_or(0),
            1,
            "Created answers for key {key}"
        );
        assert_eq!(rows_for(&pools[0], key).await, 1, "rows of key {key}");
    }
}

/// 16 tasks over two pools: even tasks run batches (every key, in a shuffled order, in chunks
/// of 7 to 40), odd tasks single `create_once` calls (every key, shuffled). Every answer is
/// counted (the `Created` answers per key are returned), and no call fails.
async fn race_created(pools: &[DatabaseConnection], first_key: i64) -> HashMap<i64, usize> {
    let created: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(RACE_TASKS));
    let mut tasks = Vec::new();
    for task in 0..RACE_TASKS {
        let db = pools[task % pools.len()].clone();
        let created = created.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (task as u64 + 1);
            let mut keys: Vec<i64> = (first_key..first_key + RACE_KEYS).collect();
            for i in (1..keys.len()).rev() {
                keys.swap(i, (next(&mut state) % (i as u64 + 1)) as usize);
            }
            barrier.wait().await;
            let mut mine: Vec<i64> = Vec::new();
            if task % 2 == 0 {
                let chunk = 7 + (next(&mut state) % 34) as usize;
                let outcomes = PullRequest::many(items(&keys))
                    .chunk_size(chunk)
                    .exec(&db)
                    .await
                    .unwrap_or_else(|err| panic!("task {task}'s batch failed: {err}"));
                assert_eq!(outcomes.len(), keys.len());
                for (outcome, key) in outcomes.iter().zip(&keys) {
                    assert_eq!(outcome.model().pr_id, *key, "outcomes in input order");
                    if outcome.is_created() {
                        mine.push(*key);
                    }
                }
            } else {
                for key in keys {
                    let outcome = PullRequest::create_once(&db, key, new_pr(key))
                        .await
                        .unwrap_or_else(|err| panic!("task {task}'s call for {key} failed: {err}"));
                    if outcome.is_created() {
                        mine.push(key);
                    }
                }
            }
            let mut created = created.lock().unwrap();
            for key in mine {
                *created.entry(key).or_default() += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    created.lock().unwrap().clone()
}

/// Environment of the worker processes of `four_processes_of_batches_and_single_calls`.
const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_TEST_BATCH_WORKER_URL";
/// Marks the line a worker prints the keys it created on.
const CREATED_LINE: &str = "BATCH_WORKER_CREATED ";

/// One racing process of `four_processes_of_batches_and_single_calls`: with the database in
/// the environment it waits at the parent's start gate, races (16 tasks, two pools) and prints
/// the keys it was answered `Created` for; run plainly it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_race_worker_process() {
    let Ok(url) = std::env::var(WORKER_URL) else {
        return;
    };
    let pools = common::open_pools(&url, 2, 8).await;
    common::wait_at_gate(&pools[0]).await;
    let created = race_created(&pools, 3_000).await;
    let mut keys: Vec<String> = Vec::new();
    for (key, times) in created {
        for _ in 0..times {
            keys.push(key.to_string());
        }
    }
    println!("{CREATED_LINE}{}", keys.join(","));
}

on_each_server! {
    /// One outcome per item in input order, duplicates collapsing (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_come_in_input_order_and_duplicates_collapse(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        outcomes_in_order(&db).await;
    }

    /// `make_data` once per chunk, with the missing keys (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_data_receives_the_missing_keys_once_per_chunk(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        made_for_missing_keys(&db).await;
    }

    /// A failed chunk writes nothing and says how far the batch got (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_chunk_writes_nothing_and_says_how_far_the_batch_got(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        failed_chunk(&db).await;
    }

    /// A batch inside the `make_data` of a call holding one of its keys is refused
    /// (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_inside_make_data_of_a_call_holding_its_key_is_refused(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        inside_make_data(&db).await;
    }

    /// The update form, per item in input order (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_update_form_runs_per_item_in_input_order(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        update_form(&db).await;
    }

    /// A batch on a caller's transaction belongs to it (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_callers_transaction_the_batch_is_that_transactions(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        callers_transaction(&db).await;
    }

    /// A chunk with a key another transaction holds: with `Wait::No` it fails busy and
    /// writes nothing, with a short `Wait::Timeout` it times out, and waiting (on a pool and
    /// on a caller's transaction) it goes on once the holder commits (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_key_makes_the_chunk_wait_as_told(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        let observer = test_db.connect(1).await;
        let holder = db.begin().await.unwrap();
        acquire_advisory_lock(&holder, key_of(61), Wait::Forever).await.unwrap();
        let busy = PullRequest::many(items(&[60, 61, 62]))
            .wait(Wait::No)
            .exec(&db)
            .await
            .unwrap_err();
        assert!(
            matches!(&busy, Error::Batch { chunk: 0, done: 0, source, .. } if matches!(**source, Error::LockBusy { .. })),
            "{busy:?}"
        );
        assert!(busy.is_retryable());
        let timed_out = PullRequest::many(items(&[60, 61, 62]))
            .wait(Wait::Timeout(Duration::from_millis(300)))
            .exec(&db)
            .await
            .unwrap_err();
        assert!(
            matches!(&timed_out, Error::Batch { source, .. } if matches!(**source, Error::LockTimeout { .. })),
            "{timed_out:?}"
        );
        for k in 60..=62 {
            assert_eq!(rows_for(&db, k).await, 0, "nothing written for key {k}");
        }
        let on_pool = tokio::spawn({
            let db = db.clone();
            async move { PullRequest::create_many_once(&db, items(&[60, 61, 62])).await }
        });
        until_someone_waits(&observer, key_of(61)).await;
        let in_txn = tokio::spawn({
            let db = db.clone();
            async move {
                let txn = db.begin().await.unwrap();
                let outcomes = PullRequest::create_many_once(&txn, items(&[63, 61, 64])).await;
                txn.commit().await.unwrap();
                outcomes
            }
        });
        common::poll_locks_until(
            &observer,
            key_of(61),
            false,
            Duration::from_secs(30),
            "both batches wait for the held key",
            |waiters| waiters.len() == 2,
        )
        .await;
        assert!(!on_pool.is_finished() && !in_txn.is_finished(), "they wait for the holder");
        // Waiting, a batch holds only keys that sort before the one it waits for (the locks
        // its first try took were released, on the caller's transaction by ROLLBACK TO
        // SAVEPOINT): nothing taken out of order is held while waiting.
        let order = |k: i64| match key_of(k) {
            sea_orm_idempotent::LockKey::Pair(n, k) => (n, k),
            other => panic!("an entity key is a pair: {other:?}"),
        };
        for k in [60, 62, 63, 64] {
            if order(k) > order(61)
                && let Some(holders) = server.lock_holders(&observer, key_of(k)).await
            {
                assert!(holders.is_empty(), "key {k}, after the waited key, is held while waiting");
            }
        }
        holder.commit().await.unwrap();
        let on_pool = on_pool.await.unwrap().unwrap();
        let in_txn = in_txn.await.unwrap().unwrap();
        // Whichever got key 61 first after the holder committed created it; the other found it.
        let created: Vec<(i64, bool)> = on_pool
            .iter()
            .chain(&in_txn)
            .map(|outcome| (outcome.model().pr_id, outcome.is_created()))
            .collect();
        for k in [60, 61, 62, 63, 64] {
            let times = created.iter().filter(|&&(key, c)| key == k && c).count();
            assert_eq!(times, 1, "Created answers for key {k}: {created:?}");
        }
    }

    /// A bound is each chunk's: a batch that has run longer than its `Wait::Timeout` still
    /// gives a later chunk the whole bound to wait for a held key (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_chunk_waits_the_whole_bound_however_long_the_batch_ran(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let db = test_db.connect(4).await;
        let observer = test_db.connect(1).await;
        let bound = Duration::from_secs(4);
        // Every key's lock taken once before (on MariaDB their lock-table rows then exist).
        let first = db.begin().await.unwrap();
        for k in 70..=73 {
            acquire_advisory_lock(&first, key_of(k), Wait::Forever).await.unwrap();
        }
        first.commit().await.unwrap();
        // The first chunk's `make_data` takes key 72 (of the second chunk only) in another
        // transaction, handed out to be committed later, and outlasts the bound (time passing
        // is the case here).
        let (held, holder) = tokio::sync::oneshot::channel();
        let mut held = Some(held);
        let batch = tokio::spawn({
            let db = db.clone();
            async move {
                let maker_db = db.clone();
                PullRequest::many_with(vec![70, 71, 72, 73], move |missing: Vec<i64>| {
                    let (held, db) = (held.take(), maker_db.clone());
                    async move {
                        if let Some(held) = held {
                            let txn = db.begin().await.unwrap();
                            acquire_advisory_lock(&txn, key_of(72), Wait::Forever)
                                .await
                                .unwrap();
                            held.send(txn).unwrap();
                            tokio::time::sleep(bound + Duration::from_millis(300)).await;
                        }
                        Ok::<_, std::io::Error>(missing.into_iter().map(new_pr).collect())
                    }
                })
                .chunk_size(2)
                .wait(Wait::Timeout(bound))
                .exec(&db)
                .await
            }
        });
        let holder = holder.await.unwrap();
        let mut batch = batch;
        // The second chunk waits for the held key (before the fix it failed at once: its
        // bound was counted from the batch's start, and had run out).
        tokio::select! {
            () = until_someone_waits(&observer, key_of(72)) => {}
            early = &mut batch => {
                panic!("the batch ended without waiting for the held key: {early:?}")
            }
        }
        // Held 2.5 s more, then released: the chunk goes on. (Before the fix, MariaDB, whose
        // lock wait counts whole seconds, turned the spent bound into 1 s.)
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!batch.is_finished(), "the second chunk waits for the holder");
        holder.commit().await.unwrap();
        let outcomes = batch.await.unwrap().unwrap();
        assert!(outcomes.iter().all(Outcome::is_created));
        assert_eq!(outcomes.len(), 4);
    }

    /// Batches and single calls racing over overlapping keys, 16 tasks over two pools: one
    /// row and one `Created` per key (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_and_single_calls_race_to_one_row_and_one_created_per_key(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let pools = vec![test_db.connect(8).await, test_db.connect(8).await];
        race(&pools, 1_000).await;
    }
}

on_each_server! {
    /// Four OS processes (this test binary, re-run as `batch_race_worker_process`), released
    /// together by a start gate, each racing batches and single calls over the same keys:
    /// each key has one row and one `Created` among all the answers of all the processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_processes_of_batches_and_single_calls(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let direct = test_db.connect(2).await;
        let workers = (0..4).map(|_| {
            let mut worker = common::worker_process("batch_race_worker_process");
            worker.env(WORKER_URL, &test_db.url);
            worker
        });
        let outputs = common::run_gated_outputs(&direct, workers).await;
        let mut created: HashMap<i64, usize> = HashMap::new();
        for output in &outputs {
            let line = common::worker_line(output, CREATED_LINE);
            for key in line.split(',').filter(|key| !key.is_empty()) {
                *created.entry(key.parse().unwrap()).or_default() += 1;
            }
        }
        for key in 3_000..3_000 + RACE_KEYS {
            assert_eq!(created.get(&key).copied().unwrap_or(0), 1, "Created answers for key {key}");
            assert_eq!(rows_for(&direct, key).await, 1, "rows of key {key}");
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_file {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_come_in_input_order_and_duplicates_collapse() {
        let dir = TempDir::new("batch-order");
        outcomes_in_order(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_data_receives_the_missing_keys_once_per_chunk() {
        let dir = TempDir::new("batch-made");
        made_for_missing_keys(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_chunk_writes_nothing_and_says_how_far_the_batch_got() {
        let dir = TempDir::new("batch-failed");
        failed_chunk(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_update_form_runs_per_item_in_input_order() {
        let dir = TempDir::new("batch-update");
        update_form(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_inside_make_data_of_a_call_holding_its_key_is_refused() {
        let dir = TempDir::new("batch-inside");
        inside_make_data(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_callers_transaction_the_batch_is_that_transactions() {
        let dir = TempDir::new("batch-txn");
        callers_transaction(&sqlite(&dir, 4).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_and_single_calls_race_to_one_row_and_one_created_per_key() {
        let dir = TempDir::new("batch-race");
        let pools = vec![sqlite(&dir, 8).await, sqlite(&dir, 8).await];
        race(&pools, 1_000).await;
    }
}

common::keyed_rows::keyed_rows!(plain_keys, "plain_keys", Adaptive);

/// Never assume an index: on a table whose key has no unique index (only the lock keeps it
/// unique) the batch looks before it inserts, so keys stored before come back `Existing` and
/// are not stored twice (PostgreSQL, where a key with a verified unique index is inserted
/// first, `ON CONFLICT DO NOTHING`, and looked for only if skipped).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_unique_index_the_batch_looks_first() {
    let test_db = test_support::TestDb::new().await;
    let db = test_db.connect(4).await;
    db.execute_unprepared(
        "CREATE TABLE plain_keys (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL)",
    )
    .await
    .unwrap();
    plain_keys::Entity::create_once(&db, 2, "two".to_owned())
        .await
        .unwrap();
    let outcomes = plain_keys::Entity::create_many_once(
        &db,
        vec![
            (1, "one".to_owned()),
            (2, "two".to_owned()),
            (3, "three".to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes.iter().map(Outcome::is_created).collect::<Vec<_>>(),
        vec![true, false, true]
    );
    let rows = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n, count(DISTINCT k) AS keys FROM plain_keys",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            rows.try_get::<i64>("", "n").unwrap(),
            rows.try_get::<i64>("", "keys").unwrap()
        ),
        (3, 3),
        "one row per key"
    );
}

/// A server whose default isolation is REPEATABLE READ: the batch's own transactions begin
/// again with READ COMMITTED set explicitly, and a key stored before is found (PostgreSQL).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_default_isolation_is_set_back_to_read_committed() {
    let test_db = test_support::TestDb::new().await;
    let admin = test_db.connect(1).await;
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
            test_db.name
        ))
        .await
        .unwrap();
    let db = test_db.connect(2).await;
    PullRequest::create_once(&db, 70, new_pr(70)).await.unwrap();
    let outcomes = PullRequest::create_many_once(&db, items(&[70, 71]))
        .await
        .unwrap();
    assert_eq!(
        outcomes.iter().map(Outcome::is_created).collect::<Vec<_>>(),
        vec![false, true]
    );
}

/// Advisory locks held in this database, and sessions idle in a transaction, polled until both
/// are 0 or `patience` ran out (a dropped transaction's ROLLBACK is sent by the pool).
async fn leftovers(observer: &DatabaseConnection, patience: Duration) -> (i64, i64) {
    let deadline = std::time::Instant::now() + patience;
    let count = |sql: &'static str| async move {
        observer
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap()
    };
    loop {
        let locks = count(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
        let idle = count(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .await;
        if (locks, idle) == (0, 0) || std::time::Instant::now() > deadline {
            return (locks, idle);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What a dropped batch may leave behind, where the database can tell: PostgreSQL's advisory
/// locks and sessions idle in a transaction, MariaDB's open InnoDB transactions of this
/// database, SQLite's write lock (another connection's `BEGIN IMMEDIATE` is refused). Polled
/// until none is left or `patience` ran out (a dropped transaction's ROLLBACK is sent by the
/// pool, or by the crate's task that runs it to its end); what is left, in words.
async fn leftovers_of_a_drop(observer: &DatabaseConnection, patience: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let left = match observer.get_database_backend() {
            DbBackend::Postgres => {
                let (locks, idle) = leftovers(observer, Duration::ZERO).await;
                [
                    (locks, "advisory locks held"),
                    (idle, "sessions idle in a transaction"),
                ]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect()
            }
            DbBackend::MySql => {
                let open = observer
                    .query_one_raw(Statement::from_string(
                        DbBackend::MySql,
                        "SELECT CAST(count(*) AS SIGNED) AS n FROM information_schema.INNODB_TRX t \
                         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                         WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()",
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get::<i64>("", "n")
                    .unwrap();
                if open > 0 {
                    let what = observer
                        .query_all_raw(Statement::from_string(
                            DbBackend::MySql,
                            "SELECT CONCAT_WS(' / ', t.trx_state, t.trx_started, \
                             IFNULL(t.trx_query, '-'), p.COMMAND, IFNULL(p.STATE, '-')) AS what \
                             FROM information_schema.INNODB_TRX t \
                             JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                             WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()",
                        ))
                        .await
                        .unwrap()
                        .iter()
                        .map(|row| row.try_get::<String>("", "what").unwrap_or_default())
                        .collect::<Vec<_>>();
                    vec![format!("{open} InnoDB transactions open: {what:?}")]
                } else {
                    Vec::new()
                }
            }
            _ => match observer.execute_unprepared("BEGIN IMMEDIATE").await {
                Ok(_) => {
                    observer.execute_unprepared("ROLLBACK").await.unwrap();
                    Vec::new()
                }
                Err(err) => vec![format!("SQLite's write lock held: {err}")],
            },
        };
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A batch of two chunks of three, dropped at every await point in turn on a pool of one
/// connection: after each drop nothing is left (see [`leftovers_of_a_drop`]), and each chunk's
/// keys have all their rows or none (a chunk is all or nothing); the pool still serves the
/// batch that finally completes. Swept twice: with the data in hand (on PostgreSQL and SQLite,
/// where `pr_id` is unique, each chunk of new keys is one statement) and with `make_data` (the
/// locked path on every backend: a transaction of several statements per chunk). How many
/// polls return `Pending` depends on timing, not only on the statements: on a loaded machine
/// a statement's answer can be in before the call awaits it (sqlx's connection reads on
/// another thread), and under two CPU hogs the `make_data` sweep once found a single `Pending`
/// where it usually finds ten. So the sweep asserts only that it dropped the batch somewhere
/// in each form, not how often.
async fn dropped_at_every_await_point(db: &DatabaseConnection, observer: &DatabaseConnection) {
    let mut base = 10_000;
    for made in [false, true] {
        let mut point = 0;
        let mut dropped = 0;
        loop {
            let keys: Vec<i64> = (base..base + 6).collect();
            base += 10;
            let batch = async {
                if made {
                    PullRequest::many_with(keys.clone(), |missing: Vec<i64>| async move {
                        Ok::<_, std::io::Error>(missing.into_iter().map(new_pr).collect())
                    })
                    .chunk_size(3)
                    .exec(db)
                    .await
                } else {
                    PullRequest::many(items(&keys)).chunk_size(3).exec(db).await
                }
            };
            let finished = drop_at_await_point(batch, point).await;
            let left = leftovers_of_a_drop(observer, Duration::from_secs(10)).await;
            assert!(
                left.is_empty(),
                "after a batch (make_data: {made}) dropped at await point {point}: {}",
                left.join(", ")
            );
            for chunk in keys.chunks(3) {
                let mut stored = 0;
                for &k in chunk {
                    stored += rows_for(observer, k).await;
                }
                assert!(
                    stored == 0 || stored == 3,
                    "after a drop at await point {point} (make_data: {made}): {stored} of a \
                     chunk's 3 rows stored"
                );
            }
            match finished {
                Some(outcomes) => {
                    assert_eq!(outcomes.unwrap().len(), 6);
                    break;
                }
                None => dropped += 1,
            }
            point += 1;
            assert!(point < 2_000, "the batch never completed");
        }
        assert!(
            dropped >= 1,
            "no await point swept (make_data: {made}): the batch never returned Pending"
        );
    }
    // The connection still serves, and what the dropped batches stored is found.
    let keys: Vec<i64> = (10_000..base).collect();
    let outcomes = PullRequest::create_many_once(db, items(&keys))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), keys.len());
    let _: &pull_requests::Model = outcomes[0].model();
}

on_each_server! {
    /// A batch dropped at every await point leaves no lock and no half-written chunk
    /// (PostgreSQL, MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_dropped_at_every_await_point_leaves_no_lock_and_no_half_chunk(server: Server) {
        let Some(test_db) = server.database().await else { return };
        let observer = test_db.connect(1).await;
        let db = test_db.connect(1).await;
        dropped_at_every_await_point(&db, &observer).await;
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_at_every_await_point_leaves_no_lock_and_no_half_chunk_on_sqlite() {
    let dir = TempDir::new("batch-drops");
    let db = sqlite(&dir, 1).await;
    let mut options = test_support::pool_options(&dir.sqlite_url("app.db"), 1);
    options.map_sqlx_sqlite_opts(|o| o.busy_timeout(Duration::from_millis(1)));
    let observer = test_support::connect_with(options).await;
    dropped_at_every_await_point(&db, &observer).await;
}
