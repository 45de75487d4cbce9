//! Probes of the batch form's chunk paths (`Entity::many`): cells of the matrix of backends,
//! contexts, data shapes and faults where a break was suspected. Each test states the
//! contract it checks (`/work/shared/DESIGN.md`): one row per key, one `Created` per key,
//! outcomes in input order, typed errors.

// Each backend feature alone builds only its part of this file.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::time::Duration;

use common::composite::{MYSQL_TABLES, POSTGRES_TABLES, SQLITE_TABLES, member_row, members};
use common::{TempDir, new_pr, total_rows};
use entity::PullRequest;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome};

/// The pull requests of `keys`, as a batch's items.
fn items(keys: impl IntoIterator<Item = i64>) -> Vec<(i64, entity::NewPullRequest)> {
    keys.into_iter().map(|k| (k, new_pr(k))).collect()
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

/// On a read-only database where `stored` keys exist: a batch of stored keys only answers
/// `Existing` for each (as single calls do, `tests/read_only.rs`); a batch with a missing key
/// fails its chunk with the typed `ReadOnly`.
async fn read_only_batch(read_only: &DatabaseConnection, stored: &[i64]) {
    let found = PullRequest::many(items(stored.iter().copied()))
        .exec(read_only)
        .await
        .unwrap_or_else(|e| panic!("a batch of stored keys on a read-only database: {e:?}"));
    assert_eq!(
        found
            .iter()
            .map(|o| (o.model().pr_id, o.is_created()))
            .collect::<Vec<_>>(),
        stored.iter().map(|&k| (k, false)).collect::<Vec<_>>()
    );
    let mut with_new: Vec<i64> = stored.to_vec();
    with_new.push(90_000);
    let err = PullRequest::many(items(with_new))
        .exec(read_only)
        .await
        .expect_err("a new key cannot be written");
    assert!(
        matches!(&err, Error::Batch { chunk: 0, done: 0, source, .. } if matches!(**source, Error::ReadOnly(_))),
        "{err:?}"
    );
}

const STORED: [i64; 3] = [1, 2, 3];

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use super::common::{Server, on_each_server};
    use super::*;

    on_each_server! {
        /// A read-only session (PostgreSQL `default_transaction_read_only`, MariaDB
        /// `SET SESSION TRANSACTION READ ONLY`): stored keys `Existing`, a new key `ReadOnly`.
        #[tokio::test]
        async fn on_a_read_only_session_a_batch_of_stored_keys_is_existing(server: Server) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let writable = test_db.connect(2).await;
            PullRequest::create_many_once(&writable, items(STORED)).await.unwrap();
            let read_only = test_db.connect(1).await;
            read_only
                .execute_unprepared(server.sql(
                    "SET default_transaction_read_only = on",
                    "SET SESSION TRANSACTION READ ONLY",
                ))
                .await
                .unwrap();
            read_only_batch(&read_only, &STORED).await;
        }

        /// A batch on a nested transaction (`begin()` on the caller's): its rows are the
        /// nested transaction's, and go with the outer one's rollback.
        #[tokio::test]
        async fn a_batch_on_a_nested_transaction_belongs_to_it(server: Server) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let db = test_db.connect(2).await;
            let outer = db.begin().await.unwrap();
            let nested = outer.begin().await.unwrap();
            let outcomes = PullRequest::many(items([5, 6, 5]))
                .chunk_size(2)
                .exec(&nested)
                .await
                .unwrap();
            assert_eq!(
                outcomes.iter().map(Outcome::is_created).collect::<Vec<_>>(),
                vec![true, true, false]
            );
            nested.commit().await.unwrap();
            let again = PullRequest::many(items([6, 7])).exec(&outer).await.unwrap();
            assert_eq!(
                again.iter().map(Outcome::is_created).collect::<Vec<_>>(),
                vec![false, true]
            );
            outer.rollback().await.unwrap();
            assert_eq!(total_rows(&db).await, 0);
        }

        /// Composite keys, a chunk of 2000 new then stored keys: every key created once, then
        /// found (before the fix the look of 2000 keys overflowed the stack writing its `OR`).
        #[tokio::test]
        async fn a_large_chunk_of_composite_keys_is_created_then_found(server: Server) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let db = test_db.connect(2).await;
            db.execute_unprepared(server.sql(POSTGRES_TABLES, MYSQL_TABLES))
                .await
                .unwrap();
            large_composite_chunk(&db).await;
        }

        /// A writer that bypasses the lock has inserted key 100 and not committed. A batch of
        /// keys 99, 100 and 101 with `Wait::No` fails its chunk with `LockBusy` at once, and
        /// with `Wait::Timeout(1 s)` with `LockTimeout` in about a second, writing nothing: its
        /// insert's wait behind the writer is bounded as its locks' are, on the one statement
        /// (data in hand), the locked path (`make_data`) and a caller's transaction. Before,
        /// every such batch waited for as long as the writer's transaction lasted ("still
        /// waiting after 10s"), on PostgreSQL and on MariaDB alike.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bounded_batch_behind_a_bypassing_writer_ends_in_time(server: Server) {
            use sea_orm::ActiveModelTrait;
            use sea_orm_idempotent::Wait;
            use std::time::Instant;

            let Some(test_db) = server.database().await else {
                return;
            };
            let writer = test_db.connect(1).await;
            let written = writer.begin().await.unwrap();
            PullRequest::new_active_model(&100, new_pr(100))
                .insert(&written)
                .await
                .unwrap();
            let db = test_db.connect(3).await;
            for form in ["one statement", "make_data", "caller's transaction"] {
                for wait in [Wait::No, Wait::Timeout(Duration::from_secs(1))] {
                    let started = Instant::now();
                    let batch = async {
                        match form {
                            "one statement" => {
                                PullRequest::many(items([99, 100, 101])).wait(wait).exec(&db).await
                            }
                            "make_data" => {
                                PullRequest::many_with([99_i64, 100, 101], |keys: Vec<i64>| async move {
                                    Ok::<_, std::io::Error>(keys.into_iter().map(new_pr).collect())
                                })
                                .wait(wait)
                                .exec(&db)
                                .await
                            }
                            _ => {
                                let txn = db
                                    .begin_with_config(Some(sea_orm::IsolationLevel::ReadCommitted), None)
                                    .await
                                    .unwrap();
                                let answer = PullRequest::many(items([99, 100, 101]))
                                    .wait(wait)
                                    .exec(&txn)
                                    .await;
                                txn.rollback().await.unwrap();
                                answer
                            }
                        }
                    };
                    let answer = tokio::time::timeout(Duration::from_secs(10), batch)
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{form}, {wait:?}: still waiting after 10s behind the writer")
                        });
                    let took = started.elapsed();
                    let err = answer.expect_err("the writer holds key 100");
                    let Error::Batch { chunk: 0, done: 0, source, .. } = &err else {
                        panic!("{form}, {wait:?}: {err:?}");
                    };
                    match (wait, &**source) {
                        (Wait::No, Error::LockBusy { .. }) => {}
                        (Wait::Timeout(_), Error::LockTimeout { .. }) => {
                            assert!(took < Duration::from_secs(4), "{form}: took {took:?}");
                        }
                        _ => panic!("{form}, {wait:?}: {err:?}"),
                    }
                    assert_eq!(total_rows(&db).await, 0, "{form}, {wait:?}: nothing written");
                }
            }
            written.rollback().await.unwrap();
        }

        /// A chunk of 21846 keys, whose lock statements on MariaDB bind 3 values per key
        /// (65538, over the 65535 a prepared statement takes: error 1390 "Prepared statement
        /// contains too many placeholders" before the statements were split), and a chunk
        /// exactly at the limit (21845): every key created once, then found. PostgreSQL binds
        /// a chunk's lock keys as two texts, but takes one advisory lock per key: on a private
        /// cluster, so that no other test meets a lock table this full.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn chunks_at_and_over_the_bind_limit_of_the_lock_statements(server: Server) {
            let private;
            let test_db = if server == Server::Postgres {
                private = test_support::Server::private();
                private.database("bind_limit").await
            } else {
                let Some(test_db) = server.database().await else {
                    return;
                };
                test_db
            };
            let db = test_db.connect(2).await;
            for (first, n) in [(1_i64, 21_845_i64), (100_001, 21_846)] {
                let batch = || PullRequest::many(items(first..first + n)).chunk_size(n as usize);
                let created = batch()
                    .exec(&db)
                    .await
                    .unwrap_or_else(|e| panic!("a chunk of {n} new keys: {e}"));
                assert!(created.iter().all(Outcome::is_created), "{n}");
                let found = batch()
                    .exec(&db)
                    .await
                    .unwrap_or_else(|e| panic!("a chunk of {n} stored keys: {e}"));
                assert!(found.iter().all(|o| !o.is_created()), "{n}");
            }
            assert_eq!(total_rows(&db).await, 21_845 + 21_846);
        }
    }
}

/// A read-only SQLite file: stored keys `Existing`, a new key `ReadOnly`.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn on_a_read_only_sqlite_file_a_batch_of_stored_keys_is_existing() {
    let dir = TempDir::new("batch-read-only");
    let url = dir.sqlite_url("ro.db");
    let writable = test_support::connect(&url, 1).await;
    Migrator::up(&writable, None).await.expect("migrate");
    PullRequest::create_many_once(&writable, items(STORED))
        .await
        .unwrap();
    writable.close().await.unwrap();
    let read_only = test_support::connect(&url.replace("mode=rwc", "mode=ro"), 1).await;
    read_only_batch(&read_only, &STORED).await;
}

/// A chunk larger than SQLite's bound-parameter limit (32766): the batch's statements stay
/// within it, every key is created once, and again every key is `Existing`.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_over_sqlites_parameter_limit_is_created_then_found() {
    const N: i64 = 32_767;
    let dir = TempDir::new("batch-bind-limit");
    let db = sqlite(&dir, 2).await;
    let created = PullRequest::many(items(1..=N))
        .chunk_size(N as usize)
        .exec(&db)
        .await
        .unwrap_or_else(|e| panic!("a chunk of {N} new keys: {e}"));
    assert!(created.iter().all(Outcome::is_created));
    let found = PullRequest::many(items(1..=N))
        .chunk_size(N as usize)
        .exec(&db)
        .await
        .unwrap_or_else(|e| panic!("a chunk of {N} stored keys: {e}"));
    assert!(found.iter().all(|o| !o.is_created()));
    assert_eq!(total_rows(&db).await, N as u64);
}

/// Composite keys, a chunk of 2000 stored keys on SQLite: the look for the keys the one
/// statement skipped finds them all (`Existing`), whatever the chunk's size. Before the fix
/// the look was one `OR` of 2000 keys: SeaQuery overflowed the test thread's stack writing it
/// (the process aborted), and with a larger stack SQLite refused it ("Expression tree is too
/// large (maximum depth 1000)").
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_chunk_of_stored_composite_keys_is_found_on_sqlite() {
    let dir = TempDir::new("batch-composite-large");
    let url = dir.sqlite_url("composite.db");
    let db = test_support::connect(&url, 2).await;
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    large_composite_chunk(&db).await;
}

/// A chunk of 2000 new composite keys, then the same stored keys.
async fn large_composite_chunk(db: &DatabaseConnection) {
    let keys: Vec<(i64, String)> = (0..2_000_i64)
        .map(|n| (n % 7, format!("mona-{n}")))
        .collect();
    let batch = || {
        members::Entity::many(keys.iter().map(|key| (key.clone(), member_row(key))))
            .chunk_size(2_000)
    };
    let created = batch()
        .exec(db)
        .await
        .unwrap_or_else(|e| panic!("new keys: {e}"));
    assert!(created.iter().all(Outcome::is_created));
    let found = batch()
        .exec(db)
        .await
        .unwrap_or_else(|e| panic!("stored keys: {e}"));
    assert!(found.iter().all(|o| !o.is_created()));
}

/// A caller's `statement_timeout` on the pool's sessions (here 200ms) is meant for the
/// application's queries: a single call turns it off for its lock wait (`src/backend/postgres/
/// lock.rs`), so a batch that waits `Wait::Forever` for a held key must wait too, not fail
/// when the server cancels its wait statement (PostgreSQL).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_statement_timeout_does_not_cut_a_forever_batch_wait_short() {
    use common::{key_of, until_someone_waits};
    use sea_orm_idempotent::{Wait, acquire_advisory_lock};

    let test_db = test_support::TestDb::new().await;
    let db = test_db.connect(2).await;
    let observer = test_db.connect(1).await;
    // One connection, whose session cancels any statement after 200ms.
    let timed = test_db.connect(1).await;
    timed
        .execute_unprepared("SET statement_timeout = '200ms'")
        .await
        .unwrap();
    let holder = db.begin().await.unwrap();
    acquire_advisory_lock(&holder, key_of(61), Wait::Forever)
        .await
        .unwrap();
    let single = tokio::spawn({
        let timed = timed.clone();
        async move { PullRequest::create_once(&timed, 61, new_pr(61)).await }
    });
    until_someone_waits(&observer, key_of(61)).await;
    // Past the statement timeout, the single call still waits (the reference behaviour).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!single.is_finished(), "{:?}", single.await);
    holder.commit().await.unwrap();
    assert!(single.await.unwrap().unwrap().is_created());

    let holder = db.begin().await.unwrap();
    acquire_advisory_lock(&holder, key_of(71), Wait::Forever)
        .await
        .unwrap();
    let batch = tokio::spawn({
        let timed = timed.clone();
        async move { PullRequest::create_many_once(&timed, items([70, 71])).await }
    });
    until_someone_waits(&observer, key_of(71)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !batch.is_finished(),
        "the batch stopped waiting: {:?}",
        batch.await
    );
    holder.commit().await.unwrap();
    let outcomes = batch.await.unwrap().unwrap();
    assert!(outcomes.iter().all(Outcome::is_created));
}

#[allow(unreachable_pub)]
mod defaulted {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "defaulted")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub k: i64,
        pub v: String,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = i64;
        /// `v` when given (else the column's default), and `note`.
        type Data = (Option<String>, Option<String>);

        fn key_column() -> Column {
            Column::K
        }

        fn new_active_model(_: &i64, (v, note): Self::Data) -> ActiveModel {
            let mut row = ActiveModel {
                note: Set(note),
                ..Default::default()
            };
            if let Some(v) = v {
                row.v = Set(v);
            }
            row
        }
    }
}

/// Rows whose columns differ (a column `NotSet` in some rows, taking its default) and an
/// `Option` column NULL in every row of a chunk: every row stored as given, one `Created` per
/// key, in input order, on the one-statement and the locked path.
async fn columns_differ_per_row(db: &DatabaseConnection) {
    let data = |k: i64| -> (Option<String>, Option<String>) {
        (
            (k % 2 == 0).then(|| format!("v{k}")),
            None, // NULL in every row
        )
    };
    let keys = [1_i64, 2, 3, 4, 2, 5];
    let outcomes = defaulted::Entity::many(keys.iter().map(|&k| (k, data(k))))
        .chunk_size(3)
        .exec(db)
        .await
        .unwrap();
    let shape: Vec<(i64, bool, String)> = outcomes
        .iter()
        .map(|o| (o.model().k, o.is_created(), o.model().v.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, true, "dflt".to_owned()),
            (2, true, "v2".to_owned()),
            (3, true, "dflt".to_owned()),
            (4, true, "v4".to_owned()),
            (2, false, "v2".to_owned()),
            (5, true, "dflt".to_owned()),
        ]
    );
    assert!(outcomes.iter().all(|o| o.model().note.is_none()));
    let again = defaulted::Entity::many(keys.iter().map(|&k| (k, data(k))))
        .exec(db)
        .await
        .unwrap();
    assert!(again.iter().all(|o| !o.is_created()));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn rows_whose_columns_differ_are_each_stored_as_given_on_sqlite() {
    let dir = TempDir::new("batch-defaulted");
    let db = test_support::connect(&dir.sqlite_url("d.db"), 2).await;
    db.execute_unprepared(
        "CREATE TABLE defaulted (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL UNIQUE, \
         v TEXT NOT NULL DEFAULT 'dflt', note TEXT)",
    )
    .await
    .unwrap();
    columns_differ_per_row(&db).await;
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod defaulted_on_servers {
    use super::common::{Server, on_each_server};
    use super::*;

    on_each_server! {
        #[tokio::test]
        async fn rows_whose_columns_differ_are_each_stored_as_given(server: Server) {
            let Some(test_db) = server.database().await else {
                return;
            };
            let db = test_db.connect(2).await;
            db.execute_unprepared(server.sql(
                "CREATE TABLE defaulted (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE, \
                 v text NOT NULL DEFAULT 'dflt', note text)",
                "CREATE TABLE defaulted (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 k BIGINT NOT NULL UNIQUE, v VARCHAR(50) NOT NULL DEFAULT 'dflt', note TEXT)",
            ))
            .await
            .unwrap();
            columns_differ_per_row(&db).await;
        }
    }
}

/// MariaDB: a chunk of 21846 keys, whose lock statements go in pieces of 10000 keys, one of
/// which (in the third piece, in key order) another transaction holds. The chunk's no-wait
/// insert fails at that piece; the chunk waits, piece by piece in key order, for the held row
/// (seen in the process list); once the holder commits, every key is created once. With the
/// pieces joined back into one statement (`KEYS_PER_STATEMENT` above 21846) the chunk fails
/// with error 1390 ("Prepared statement contains too many placeholders") instead.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_in_pieces_waits_for_a_held_key_then_creates_every_key() {
    use common::{key_of, until_someone_waits};
    use sea_orm_idempotent::{LockKey, Wait, acquire_advisory_lock};

    const N: i64 = 21_846;
    let Some(test_db) = test_support::TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(3).await;
    let k2 = |pr_id: i64| match key_of(pr_id) {
        LockKey::Pair(_, k2) => k2,
        other => panic!("an entity key is a pair: {other:?}"),
    };
    let mut sorted: Vec<i64> = (1..=N).collect();
    sorted.sort_by_key(|&k| k2(k));
    let held = sorted[20_500];
    // The held key's lock row, committed; then held by an open transaction.
    PullRequest::create_once(&db, held, new_pr(held))
        .await
        .unwrap();
    let holder = db.begin().await.unwrap();
    acquire_advisory_lock(&holder, key_of(held), Wait::Forever)
        .await
        .unwrap();
    let batch = tokio::spawn({
        let db = db.clone();
        async move {
            PullRequest::many(items(1..=N))
                .chunk_size(N as usize)
                .exec(&db)
                .await
        }
    });
    until_someone_waits(&db, key_of(held)).await;
    holder.commit().await.unwrap();
    let outcomes = batch
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the chunk of {N} keys: {e}"));
    assert_eq!(outcomes.len(), N as usize);
    for (i, outcome) in outcomes.iter().enumerate() {
        let key = i as i64 + 1;
        assert_eq!(outcome.model().pr_id, key);
        assert_eq!(outcome.is_created(), key != held, "{key}");
    }
    assert_eq!(total_rows(&db).await, N as u64);
}
