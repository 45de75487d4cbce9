//! The one-statement path (src/call/one_statement.rs): where a unique index covers exactly
//! the key's columns, a create-only call with data in hand is one statement that tries the
//! key's lock and, granted, inserts with `ON CONFLICT (key) DO NOTHING`.
//!
//! - It still excludes every other taker of the key: raced against the locked path
//!   (`create_once_with`) and against raw lock-takers (the Python recipe: the advisory lock,
//!   then a look and a plain `INSERT`), no caller meets a unique violation and each key has
//!   one row and one creator. With the lock taken out of the statement (its condition made
//!   `true`, so the insert no longer waits for the lock), the raw lock-takers met unique
//!   violations (`left: 23, right: 0` in one run; the count varies, it was never 0 in five
//!   runs).
//! - A batch's chunk of new keys is one statement too, with the same guarantees (the last two
//!   PostgreSQL tests).
//! - Dropping the index while calls run never fails a call: the statement's error (42P10 on
//!   PostgreSQL, SQLite's generic error) sends the call to the locked path, and the catalog is
//!   asked again. With that fallback removed, calls failed with "there is no unique or
//!   exclusion constraint matching the ON CONFLICT specification".
//! - Duplicates that reach the statement consume sequence values, as SeaORM's own
//!   `on_conflict` insert does; an entity that returns `true` from `ids_without_gaps` keeps
//!   the locked path and its ids without gaps.
//!
//! (Over 450 lines, one file: the same guarantees on each backend, whose halves share the
//! races and the entities above them.)

mod common;

// Entities of keyed rows whose every duplicate reaches the insert (no look first), with and
// without `ids_without_gaps`, for the gaps test.
common::keyed_rows::keyed_rows!(with_gaps, "with_gaps", Never);
common::keyed_rows::keyed_rows!(without_gaps, "without_gaps", Never, ids_without_gaps: true);

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::sync::Arc;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(any(feature = "postgres", feature = "mysql"))]
use common::{is_unique_violation, new_pr, raw_lock_taker, rows_for, total_rows};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use entity::PullRequest;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sea_orm::{ConnectionTrait, DatabaseConnection, IsolationLevel};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sea_orm_idempotent::IdempotentCreate;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use tokio::sync::Barrier;

/// The one-statement path, the locked path (`create_once_with`) and raw lock-takers, every
/// caller of a key at once, over two pools: no unique violation, one row and one creator per
/// key.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn one_statement_race(pools: [DatabaseConnection; 2]) {
    const KEYS: i64 = 40;
    const TASKS: usize = 24;
    let created = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            // The one-statement calls on one pool, the locked path's on the other: calls of a
            // key on one pool take turns in the process (src/turns.rs), which would keep the
            // one statement out of the race with the locked path's holders. The raw
            // lock-takers on both.
            let db = match task % 3 {
                0 => pools[0].clone(),
                1 => pools[1].clone(),
                _ => pools[task % 2].clone(),
            };
            let (created, violations, barrier) =
                (created.clone(), violations.clone(), barrier.clone());
            tokio::spawn(async move {
                for pr_id in 1..=KEYS {
                    // Every caller of the key at once.
                    barrier.wait().await;
                    let made = match task % 3 {
                        // The one-statement path (data in hand, a unique index on pr_id),
                        // every other round a moment late: then the raw lock-takers have
                        // looked and hold the lock through their pause, the window a
                        // statement without the lock would insert into.
                        0 => {
                            if pr_id % 2 == 0 {
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            }
                            PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                                .await
                                .map(|outcome| outcome.is_created())
                                .unwrap()
                        }
                        // The locked path.
                        1 => PullRequest::create_once_with(&db, pr_id, || async move {
                            Ok::<_, std::io::Error>(new_pr(pr_id))
                        })
                        .await
                        .map(|outcome| outcome.is_created())
                        .unwrap(),
                        _ => match raw_lock_taker(&db, IsolationLevel::ReadCommitted, pr_id, 30)
                            .await
                        {
                            Ok(made) => made,
                            Err(err) if is_unique_violation(&err) => {
                                violations.fetch_add(1, Ordering::Relaxed);
                                false
                            }
                            Err(err) => panic!("raw lock-taker: {err}"),
                        },
                    };
                    if made {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "raw lock-takers met unique violations"
    );
    assert_eq!(created.load(Ordering::Relaxed), KEYS as usize, "creators");
    assert_eq!(total_rows(&pools[0]).await, KEYS as u64);
    for pr_id in 1..=KEYS {
        assert_eq!(rows_for(&pools[0], pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// Calls of the one-statement path on `db` (new keys and duplicates) while `admin` runs
/// `drop_index`, the unique index's drop: no call fails, one row per key.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn drop_index_race(db: DatabaseConnection, admin: DatabaseConnection, drop_index: &str) {
    const TASKS: i64 = 8;
    const KEYS_EACH: i64 = 60;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (db, done) = (db.clone(), done.clone());
            tokio::spawn(async move {
                for n in 0..KEYS_EACH {
                    // Each key twice, by neighbouring tasks: new keys and duplicates.
                    let pr_id = (task / 2) * KEYS_EACH + n + 1;
                    PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                        .await
                        .unwrap_or_else(|err| panic!("pr_id {pr_id}: {err}"));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Drop the index once calls are under way (and before they end).
    while done.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    admin.execute_unprepared(drop_index).await.unwrap();
    let dropped_at = done.load(Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        dropped_at < (TASKS * KEYS_EACH) as usize,
        "the index was dropped after every call ended ({dropped_at})"
    );
    let keys = TASKS / 2 * KEYS_EACH;
    assert_eq!(total_rows(&db).await, keys as u64);
    for pr_id in 1..=keys {
        assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sea_orm::EntityTrait;
    use test_support::TestDb;

    use super::*;
    use super::{with_gaps, without_gaps};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_one_statement_excludes_raw_lock_takers_and_the_locked_path() {
        let test_db = TestDb::new().await;
        super::one_statement_race([test_db.connect(8).await, test_db.connect(8).await]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_index_while_calls_run_fails_no_call() {
        let test_db = TestDb::new().await;
        super::drop_index_race(
            test_db.connect(8).await,
            test_db.connect(1).await,
            "ALTER TABLE pull_requests DROP CONSTRAINT pull_requests_pr_id_key",
        )
        .await;
    }

    /// A batch's chunk of new keys is one statement too (src/call/batch/one_statement.rs): it
    /// tries every key's lock and inserts only if all are granted. Raced against raw
    /// lock-takers and single calls of the locked path, each key gets one row and one
    /// `Created` among all the answers, and no raw lock-taker meets a unique violation. With
    /// the locks taken out of the chunk's statement (the try in
    /// src/backend/postgres/chunk_statement.rs made `true OR pg_try_advisory_xact_lock(n, k)
    /// IS NULL`, which never calls it), a raw lock-taker met a unique violation in each of
    /// three runs (`left: 1, right: 0`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_chunk_in_one_statement_excludes_raw_lock_takers_and_the_locked_path() {
        let test_db = TestDb::new().await;
        let pools = [test_db.connect(8).await, test_db.connect(8).await];
        const KEYS: i64 = 40;
        // Each round's batch covers its key and the next ones: new keys and stored ones.
        const AHEAD: i64 = 4;
        const TASKS: usize = 24;
        let created = Arc::new(AtomicUsize::new(0));
        let violations = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let db = pools[task % 2].clone();
                let (created, violations, barrier) =
                    (created.clone(), violations.clone(), barrier.clone());
                tokio::spawn(async move {
                    for pr_id in 1..=KEYS {
                        barrier.wait().await;
                        let made = match task % 3 {
                            // A batch of new and stored keys, in chunks of two (data in hand,
                            // a unique index on pr_id: each chunk one statement).
                            0 => PullRequest::many((pr_id..pr_id + AHEAD).map(|k| (k, new_pr(k))))
                                .chunk_size(2)
                                .exec(&db)
                                .await
                                .unwrap()
                                .iter()
                                .filter(|outcome| outcome.is_created())
                                .count(),
                            1 => PullRequest::create_once_with(&db, pr_id, || async move {
                                Ok::<_, std::io::Error>(new_pr(pr_id))
                            })
                            .await
                            .map(|outcome| usize::from(outcome.is_created()))
                            .unwrap(),
                            _ => {
                                match raw_lock_taker(&db, IsolationLevel::ReadCommitted, pr_id, 30)
                                    .await
                                {
                                    Ok(made) => usize::from(made),
                                    Err(err) if is_unique_violation(&err) => {
                                        violations.fetch_add(1, Ordering::Relaxed);
                                        0
                                    }
                                    Err(err) => panic!("raw lock-taker: {err}"),
                                }
                            }
                        };
                        created.fetch_add(made, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            violations.load(Ordering::Relaxed),
            0,
            "raw lock-takers met unique violations"
        );
        let keys = (KEYS + AHEAD - 1) as usize;
        assert_eq!(created.load(Ordering::Relaxed), keys, "creators");
        assert_eq!(total_rows(&pools[0]).await, keys as u64);
        for pr_id in 1..=keys as i64 {
            assert_eq!(rows_for(&pools[0], pr_id).await, 1, "pr_id {pr_id}");
        }
    }

    /// Dropping the index while batches run fails no batch and lets no row in twice: the
    /// chunk's statement fails with 42P10, and the chunk takes the locked path with the rows
    /// it built, where a look under the lock, not the index, tells which rows exist. With the
    /// locked path inserting those rows with `ON CONFLICT DO NOTHING` and no look (as a batch
    /// did before, trusting an index it had found at its start), 610 rows were stored for 600
    /// keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_index_while_batches_run_fails_no_batch() {
        let test_db = TestDb::new().await;
        let db = test_db.connect(8).await;
        let admin = test_db.connect(1).await;
        const TASKS: i64 = 4;
        const BATCHES: i64 = 30;
        const SIZE: i64 = 10;
        let done = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (db, done) = (db.clone(), done.clone());
                tokio::spawn(async move {
                    for batch in 0..BATCHES {
                        // Each batch twice, by neighbouring tasks: new keys and stored ones.
                        let start = ((task / 2) * BATCHES + batch) * SIZE + 1;
                        PullRequest::many((start..start + SIZE).map(|k| (k, new_pr(k))))
                            .chunk_size(5)
                            .exec(&db)
                            .await
                            .unwrap_or_else(|err| panic!("batch from {start}: {err}"));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        while done.load(Ordering::Relaxed) < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        admin
            .execute_unprepared("ALTER TABLE pull_requests DROP CONSTRAINT pull_requests_pr_id_key")
            .await
            .unwrap();
        let dropped_at = done.load(Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            dropped_at < (TASKS * BATCHES) as usize,
            "the index was dropped after every batch ended ({dropped_at})"
        );
        let keys = TASKS / 2 * BATCHES * SIZE;
        assert_eq!(total_rows(&db).await, keys as u64);
        for pr_id in 1..=keys {
            assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
        }
    }

    const GAP_TABLES: &str = "
        CREATE TABLE with_gaps (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE,
            v text NOT NULL);
        CREATE TABLE without_gaps (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE,
            v text NOT NULL);";

    #[tokio::test]
    async fn duplicates_consume_ids_unless_the_entity_keeps_them_without_gaps() {
        let test_db = TestDb::new().await;
        let db = test_db.connect(2).await;
        db.execute_unprepared(GAP_TABLES).await.unwrap();
        for k in [1, 1, 1, 2] {
            with_gaps::Entity::create_once(&db, k, "v".to_owned())
                .await
                .unwrap();
            without_gaps::Entity::create_once(&db, k, "v".to_owned())
                .await
                .unwrap();
        }
        let id_of = |rows: Vec<(i64, i64)>, k: i64| {
            rows.into_iter()
                .find(|(key, _)| *key == k)
                .map(|(_, id)| id)
                .unwrap()
        };
        let gaps = with_gaps::Entity::find().all(&db).await.unwrap();
        let gaps: Vec<_> = gaps.into_iter().map(|m| (m.k, m.id)).collect();
        let gapless = without_gaps::Entity::find().all(&db).await.unwrap();
        let gapless: Vec<_> = gapless.into_iter().map(|m| (m.k, m.id)).collect();
        // Two duplicates of key 1 reached `ON CONFLICT DO NOTHING`: two ids consumed.
        assert_eq!(id_of(gaps.clone(), 2), 4);
        assert_eq!(id_of(gapless.clone(), 2), 2);
        // A batch of two stored keys and a new one: its chunk in one statement consumes an
        // id per row it offers; the locked path, only the new row's.
        let batch = || (1..=3).map(|k| (k, "v".to_owned()));
        with_gaps::Entity::many(batch()).exec(&db).await.unwrap();
        without_gaps::Entity::many(batch()).exec(&db).await.unwrap();
        let gaps = with_gaps::Entity::find().all(&db).await.unwrap();
        let gaps: Vec<_> = gaps.into_iter().map(|m| (m.k, m.id)).collect();
        let gapless = without_gaps::Entity::find().all(&db).await.unwrap();
        let gapless: Vec<_> = gapless.into_iter().map(|m| (m.k, m.id)).collect();
        assert_eq!(id_of(gaps, 3), 7);
        assert_eq!(id_of(gapless, 3), 3);
    }
}

/// MariaDB's one statement (src/backend/mysql/one_statement.rs): a guarded insert that locks
/// the key's slot `FOR UPDATE NOWAIT`, in autocommit, on pools whose sessions are READ
/// COMMITTED (on REPEATABLE READ ones every call takes the locked path); the same races as
/// PostgreSQL's. With the slot's lock taken out of the statement (`FOR UPDATE` removed, or
/// the slots not read at all), raw lock-takers met unique violations.
#[cfg(feature = "mysql")]
mod mariadb {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use test_support::TestDb;

    use super::common::mysql::read_committed_pool;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_one_statement_excludes_raw_lock_takers_and_the_locked_path() {
        let Some(test_db) = TestDb::mysql().await else {
            return;
        };
        // A connection for every task: lock-takers waiting on a key hold theirs, and a pool
        // they filled would hold the one-statement calls back until the key is free.
        super::one_statement_race([
            read_committed_pool(&test_db, 12).await,
            read_committed_pool(&test_db, 12).await,
        ])
        .await;
    }

    /// Without the index, the statement still takes the slot's lock and its guard still
    /// looks: the lock, not the index, keeps one row per key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_index_while_calls_run_fails_no_call() {
        let Some(test_db) = TestDb::mysql().await else {
            return;
        };
        let admin = test_db.connect(1).await;
        let index: String = admin
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT INDEX_NAME AS name FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'pull_requests' \
                   AND COLUMN_NAME = 'pr_id' AND NON_UNIQUE = 0",
            ))
            .await
            .unwrap()
            .expect("pr_id's unique index")
            .try_get("", "name")
            .unwrap();
        super::drop_index_race(
            read_committed_pool(&test_db, 8).await,
            admin,
            &format!("ALTER TABLE pull_requests DROP INDEX `{index}`"),
        )
        .await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use entity::PullRequest;
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    use sea_orm_idempotent::IdempotentCreate;

    use super::common::{TempDir, new_pr, rows_for, total_rows};

    /// The table made again without its unique column, rows and all.
    async fn drop_the_unique_index(db: &sea_orm::DatabaseConnection) {
        let table: String = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'pull_requests'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "sql")
            .unwrap();
        assert!(table.contains("UNIQUE"), "{table}");
        let copy = table
            .replacen("\"pull_requests\"", "\"pr_copy\"", 1)
            .replace("UNIQUE", "");
        db.execute_unprepared(&format!(
            "{copy}; INSERT INTO pr_copy SELECT * FROM pull_requests; \
             DROP TABLE pull_requests; ALTER TABLE pr_copy RENAME TO pull_requests;"
        ))
        .await
        .unwrap();
    }

    /// A batch's chunk is one statement on SQLite too (the multi-row insert with `ON CONFLICT
    /// (pr_id) DO NOTHING RETURNING`, in autocommit). After the index is dropped, the next
    /// chunk's statement fails with SQLite's generic error, and the chunk takes the locked path
    /// with the rows it built, where the look decides: no batch fails, no key is stored twice.
    #[tokio::test]
    async fn dropping_the_index_between_batches_fails_no_batch() {
        let dir = TempDir::new("one-statement-sqlite-batch");
        let db = test_support::connect(&dir.sqlite_url("one.db"), 2).await;
        migration::Migrator::up(&db, None).await.expect("migrate");
        let batch = |keys: std::ops::RangeInclusive<i64>| {
            PullRequest::many(keys.map(|k| (k, new_pr(k))))
                .chunk_size(4)
                .exec(&db)
        };
        let created = |outcomes: Vec<sea_orm_idempotent::Outcome<_>>| {
            outcomes
                .iter()
                .filter(|outcome| outcome.is_created())
                .count()
        };
        assert_eq!(created(batch(1..=5).await.unwrap()), 5);
        drop_the_unique_index(&db).await;
        assert_eq!(created(batch(1..=10).await.unwrap()), 5);
        assert_eq!(created(batch(1..=12).await.unwrap()), 2);
        assert_eq!(total_rows(&db).await, 12);
        for pr_id in 1..=12 {
            assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
        }
    }

    /// SQLite has no code of its own for an `ON CONFLICT` target that matches no index: after
    /// the index is dropped, the next call's statement fails with SQLite's generic error, and
    /// the call takes the locked path.
    #[tokio::test]
    async fn dropping_the_index_between_calls_fails_no_call() {
        let dir = TempDir::new("one-statement-sqlite");
        let db = test_support::connect(&dir.sqlite_url("one.db"), 2).await;
        migration::Migrator::up(&db, None).await.expect("migrate");
        for pr_id in 1..=5 {
            assert!(
                PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                    .await
                    .unwrap()
                    .is_created()
            );
        }
        // The unique column's index is automatic and cannot be dropped: the table is made
        // again without it, rows and all.
        drop_the_unique_index(&db).await;
        for pr_id in 1..=10 {
            let outcome = PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                .await
                .unwrap_or_else(|err| panic!("pr_id {pr_id}: {err}"));
            assert_eq!(outcome.is_created(), pr_id > 5, "pr_id {pr_id}");
        }
        assert_eq!(total_rows(&db).await, 10);
        for pr_id in 1..=10 {
            assert_eq!(rows_for(&db, pr_id).await, 1, "pr_id {pr_id}");
        }
    }
}
