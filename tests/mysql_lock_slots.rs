//! MariaDB only: the lock table of fixed slots (`mysql_lock_slots`, issue 25: a lock table
//! that never grows), and the switch from the per-key table of 0.1 and 0.2.
//!
//! - The sample's migrations make every slot once, and no lock adds a row: the table stays at
//!   65536 rows however many keys are created, one by one or in batches.
//! - Two keys of one slot wait for each other (a bounded wait runs out while the other key is
//!   held; an unbounded one waits until it commits) and each still gets its own row; a key of
//!   another slot is not held up; a batch of two keys of one slot locks it once.
//! - A slot the migration did not make (deleted here) is made by its first lock, on the pool,
//!   in a caller's transaction and in a batch, as the per-key table's rows are.
//! - A database that has the per-key table keeps locking the keys' own rows (older versions
//!   know no other), and the slots are not touched.
//! - Dropping the per-key table switches every pool to the slots with no moment in which a
//!   holder of a per-key row and a holder of the same key's slot run at once: a transaction of
//!   an older version (0.2's statements, by hand) holds key 7 on its per-key row, with its row
//!   inserted; the `DROP TABLE` waits for it (its metadata lock), and so do the calls on key 7
//!   that come meanwhile, from a pool that had chosen the per-key table, a new pool and a
//!   caller's transaction. When the holder commits, the table goes and the waiters find the
//!   row (`Existing`), one row. With the choice mutated to prefer the slots while the per-key
//!   table exists (`lock_tables::ask`), the calls do not wait for the older version's lock:
//!   this test then fails.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::mysql::{create_unguarded, ids_of_one_slot, number, read_committed, unguarded};
use common::{key_of, new_pr, rows_for, total_rows};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::{
    Error, IdempotentCreate, LockKey, MYSQL_LOCK_SLOTS, MYSQL_LOCK_SLOTS_TABLE, MYSQL_LOCK_TABLE,
    Wait, mysql_lock_slot,
};
use test_support::TestDb;

/// `[rows, distinct slots, lowest, highest, sum of generation]` of the slot table.
async fn slots(db: &DatabaseConnection) -> [i64; 5] {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            format!(
                "SELECT CAST(COUNT(*) AS SIGNED), CAST(COUNT(DISTINCT `slot`) AS SIGNED), \
                 CAST(MIN(`slot`) AS SIGNED), CAST(MAX(`slot`) AS SIGNED), \
                 CAST(COALESCE(SUM(`generation`), 0) AS SIGNED) FROM `{MYSQL_LOCK_SLOTS_TABLE}`"
            ),
        ))
        .await
        .unwrap()
        .expect("a row");
    [0, 1, 2, 3, 4].map(|i| row.try_get_by_index::<i64>(i).unwrap())
}

/// Whether `table` is in the test's database.
async fn table_exists(db: &DatabaseConnection, table: &str) -> bool {
    number(
        db,
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        ),
    )
    .await
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_makes_every_slot_and_no_lock_adds_a_row() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(4).await;
    let n = i64::from(MYSQL_LOCK_SLOTS);
    assert_eq!(slots(&db).await, [n, n, 0, n - 1, 0]);
    assert!(!table_exists(&db, MYSQL_LOCK_TABLE).await);
    let singles = (1..=200_i64).map(|id| {
        let db = db.clone();
        tokio::spawn(async move { PullRequest::create_once(&db, id, new_pr(id)).await })
    });
    for single in singles.collect::<Vec<_>>() {
        assert!(single.await.unwrap().unwrap().is_created());
    }
    let outcomes = PullRequest::many((201..=1_400_i64).map(|id| (id, new_pr(id))))
        .exec(&db)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.is_created()));
    let txn = db.begin().await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 1_401, new_pr(1_401))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    assert_eq!(total_rows(&db).await, 1_401);
    let [rows, distinct, lowest, highest, holders] = slots(&db).await;
    assert_eq!([rows, distinct, lowest, highest], [n, n, 0, n - 1]);
    // Every single call counted its holder; every chunk its slots, once each.
    assert!(holders > 200, "{holders} holders counted");
    assert!(!table_exists(&db, MYSQL_LOCK_TABLE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_one_slot_wait_for_each_other_and_each_gets_its_row() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let (a, b) = match ids_of_one_slot(1, 2).0[..] {
        [a, b] => (a, b),
        _ => unreachable!(),
    };
    let other = (1..)
        .find(|&id| mysql_lock_slot(key_of(id)) != mysql_lock_slot(key_of(a)))
        .expect("another slot");
    let holder_db = test_db.connect(1).await;
    let db = test_db.connect(2).await;
    // READ COMMITTED: a REPEATABLE READ holder's insert would also lock the gaps of the
    // entity's unique index, which holds up other keys' inserts (see `docs/backends.md`).
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
    // `b` shares `a`'s slot: a bounded wait runs out, and nothing is written.
    let err = PullRequest::once(b, new_pr(b))
        .wait(Wait::Timeout(Duration::from_secs(1)))
        .exec(&db)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    assert_eq!(rows_for(&db, b).await, 0);
    // Another slot is not held up. (Not `Wait::No`: the entity's insert may meet the
    // holder's AUTO-INC lock for an instant, which `Wait::No` reports as `LockBusy`, see
    // `tests/single_probe.rs`.)
    let created = PullRequest::once(other, new_pr(other))
        .wait(Wait::Timeout(Duration::from_secs(5)))
        .exec(&db)
        .await
        .unwrap();
    assert!(created.is_created());
    // An unbounded wait for `b` lasts until `a`'s holder commits, then creates `b`'s row.
    let waiter = tokio::spawn({
        let db = db.clone();
        async move { PullRequest::create_once(&db, b, new_pr(b)).await }
    });
    // Seen waiting in the process list, then still unanswered.
    common::until_someone_waits(&db, key_of(b)).await;
    assert!(!waiter.is_finished(), "b did not wait for its slot");
    holder.commit().await.unwrap();
    assert!(waiter.await.unwrap().unwrap().is_created());
    assert_eq!((rows_for(&db, a).await, rows_for(&db, b).await), (1, 1));
    // A batch of two keys of one slot (and a third) locks the slot once: all created.
    let (c, d) = match ids_of_one_slot(10_000, 2).0[..] {
        [c, d] => (c, d),
        _ => unreachable!(),
    };
    let e = d + 1;
    let outcomes = PullRequest::many([c, d, e].map(|id| (id, new_pr(id))))
        .exec(&db)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.is_created()));
    // And in a caller's transaction.
    let (f, g) = match ids_of_one_slot(20_000, 2).0[..] {
        [f, g] => (f, g),
        _ => unreachable!(),
    };
    let txn = db.begin().await.unwrap();
    let outcomes = PullRequest::many([f, g].map(|id| (id, new_pr(id))))
        .exec(&txn)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.is_created()));
    txn.commit().await.unwrap();
    for id in [c, d, e, f, g] {
        assert_eq!(rows_for(&db, id).await, 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_the_migration_did_not_make_is_made_by_its_first_lock() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    // Three keys of three slots, each slot's row deleted: on the pool, in a caller's
    // transaction, in a batch.
    let ids = [5_i64, 6, 9];
    let slots_of: Vec<u32> = ids.iter().map(|&id| mysql_lock_slot(key_of(id))).collect();
    assert!(slots_of[0] != slots_of[1] && slots_of[1] != slots_of[2] && slots_of[0] != slots_of[2]);
    let generation = |slot: u32| {
        let db = db.clone();
        async move {
            number(
                &db,
                &format!(
                    "SELECT CAST(COALESCE(MAX(`generation`), -1) AS SIGNED) \
                     FROM `{MYSQL_LOCK_SLOTS_TABLE}` WHERE `slot` = {slot}"
                ),
            )
            .await
        }
    };
    for slot in &slots_of {
        db.execute_unprepared(&format!(
            "DELETE FROM `{MYSQL_LOCK_SLOTS_TABLE}` WHERE `slot` = {slot}"
        ))
        .await
        .unwrap();
        assert_eq!(generation(*slot).await, -1, "slot {slot} is gone");
    }
    assert!(
        PullRequest::create_once(&db, ids[0], new_pr(ids[0]))
            .await
            .unwrap()
            .is_created()
    );
    let txn = db.begin_with_config(read_committed(), None).await.unwrap();
    assert!(
        PullRequest::create_once(&txn, ids[1], new_pr(ids[1]))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    let outcomes = PullRequest::many([(ids[2], new_pr(ids[2]))])
        .exec(&db)
        .await
        .unwrap();
    assert!(outcomes[0].is_created());
    for (id, slot) in ids.iter().zip(&slots_of) {
        assert_eq!(rows_for(&db, *id).await, 1, "{id}");
        // Made by the lock, counted: its creator is its first holder.
        assert!(generation(*slot).await >= 1, "slot {slot} of {id}");
    }
    assert_eq!(slots(&db).await[0], i64::from(MYSQL_LOCK_SLOTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_the_per_key_table_locks_the_keys_own_rows() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    common::mysql::with_the_per_key_table(&test_db).await;
    let db = test_db.connect(2).await;
    let per_key_rows = format!("SELECT COUNT(*) FROM `{MYSQL_LOCK_TABLE}`");
    assert!(
        PullRequest::create_once(&db, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
    let txn = db.begin().await.unwrap();
    assert!(
        PullRequest::create_once(&txn, 2, new_pr(2))
            .await
            .unwrap()
            .is_created()
    );
    txn.commit().await.unwrap();
    let outcomes = PullRequest::many((3..=5_i64).map(|id| (id, new_pr(id))))
        .exec(&db)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.is_created()));
    assert_eq!(number(&db, &per_key_rows).await, 5);
    assert_eq!(slots(&db).await[4], 0, "a slot was locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_per_key_table_switches_to_the_slots_with_no_gap_in_the_lock() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    common::mysql::with_the_per_key_table(&test_db).await;
    let observer = test_db.connect(1).await;
    create_unguarded(&observer).await;
    let rows_of = |k: i64| {
        let observer = observer.clone();
        async move {
            number(
                &observer,
                &format!("SELECT COUNT(*) FROM unguarded WHERE k = {k}"),
            )
            .await
        }
    };
    let create = |db: DatabaseConnection, k: i64| async move {
        unguarded::Entity::create_once(&db, k, format!("event {k}")).await
    };
    // A pool that chose the per-key table before the drop.
    let chose_per_key = test_db.connect(2).await;
    assert!(create(chose_per_key.clone(), 1).await.unwrap().is_created());
    // The holder, as 0.2 runs in a caller's transaction: key 7's per-key row locked (made,
    // counted), then the event inserted; not committed yet.
    let holder_db = test_db.connect(1).await;
    let holder = holder_db
        .begin_with_config(read_committed(), None)
        .await
        .unwrap();
    let LockKey::Pair(k1, k2) = LockKey::for_entity("unguarded", &7_i64) else {
        panic!("an entity key is a pair")
    };
    holder
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            format!(
                "INSERT INTO `{MYSQL_LOCK_TABLE}` (`space`, `k1`, `k2`, `generation`) \
                 VALUES (2, ?, ?, 1) ON DUPLICATE KEY UPDATE `generation` = `generation` + 1"
            ),
            [k1.into(), k2.into()],
        ))
        .await
        .unwrap();
    holder
        .execute_unprepared("INSERT INTO unguarded (k, v) VALUES (7, 'event 7')")
        .await
        .unwrap();
    // The drop waits for the holder's transaction (its metadata lock on the table).
    let dropper_db = test_db.connect(1).await;
    let dropper = tokio::spawn({
        let dropper_db = dropper_db.clone();
        async move {
            dropper_db
                .execute_unprepared(&format!("DROP TABLE `{MYSQL_LOCK_TABLE}`"))
                .await
        }
    });
    let waiting_drop = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                        WHERE DB = DATABASE() AND INFO LIKE 'DROP TABLE%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while number(&observer, waiting_drop).await == 0 {
        assert!(std::time::Instant::now() < deadline, "the DROP never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Calls on key 7 meanwhile: from the pool that chose the per-key table, a new pool, and a
    // caller's transaction on another new pool.
    let new_pool = test_db.connect(1).await;
    let callers_pool = test_db.connect(1).await;
    let calls = [
        tokio::spawn(create(chose_per_key.clone(), 7)),
        tokio::spawn(create(new_pool.clone(), 7)),
        tokio::spawn({
            let db = callers_pool.clone();
            async move {
                let txn = db.begin_with_config(read_committed(), None).await?;
                let outcome = unguarded::Entity::create_once(&txn, 7, "event 7".to_owned()).await;
                txn.commit().await?;
                outcome
            }
        }),
    ];
    // All three seen waiting in their lock statement (behind the DROP's metadata lock); with
    // the choice mutated to prefer the slots they never wait, and this times out.
    common::poll_locks_until(
        &observer,
        LockKey::for_entity("unguarded", &7_i64),
        false,
        Duration::from_secs(30),
        "the three calls on key 7 wait",
        |waiting| waiting.len() >= 3,
    )
    .await;
    for (i, call) in calls.iter().enumerate() {
        assert!(!call.is_finished(), "call {i} did not wait for the holder");
    }
    assert!(
        !dropper.is_finished(),
        "the DROP did not wait for the holder"
    );
    holder.commit().await.unwrap();
    dropper.await.unwrap().unwrap();
    for (i, call) in calls.into_iter().enumerate() {
        let outcome = call.await.unwrap();
        assert!(
            matches!(&outcome, Ok(outcome) if !outcome.is_created()),
            "call {i}: {outcome:?}"
        );
    }
    assert_eq!(rows_of(7).await, 1);
    // Every pool now locks the slots: the per-key table is gone and new keys are created.
    assert!(!table_exists(&observer, MYSQL_LOCK_TABLE).await);
    let before = slots(&observer).await[4];
    for (k, db) in [(8, &chose_per_key), (9, &new_pool), (10, &callers_pool)] {
        assert!(create(db.clone(), k).await.unwrap().is_created());
    }
    assert_eq!(slots(&observer).await[4], before + 3);
    assert_eq!(
        total_rows(&observer).await,
        0,
        "no pull request was touched"
    );
}
