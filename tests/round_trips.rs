//! What each path of a call costs. On a real PostgreSQL server, round trips counted on the
//! wire (`tests/common/wire.rs`): a relay between a pool of one and the server counts how often
//! the client speaks after the server answered. On SQLite (no wire), the statements SeaORM
//! reports to its metric callback. And, from SeaORM's `MockDatabase` transaction log, the SQL
//! of the common paths. This is the hot path of every webhook.
//!
//! (Mock results only script the answers; concurrency is proven against a real server in
//! `create_once.rs`.)

#![cfg(feature = "postgres")]

mod common;

use std::collections::BTreeMap;
use std::future::Future;

use common::keyed_rows::keyed_rows;
use common::versions::{self, documents, edit, newer_only};
use common::wire::RoundTrips;
use common::{new_pr, until_a_statement_waits_for_a_table, until_someone_waits};
use entity::{PullRequest, pull_requests};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, MockDatabase, Transaction, TransactionTrait, Value,
};
use sea_orm_idempotent::{
    IdempotentCreate, LockKey, MISSES_BEFORE_SKIPPING, Wait, acquire_advisory_lock,
};
use test_support::TestDb;

// Without a unique index on `k`: every new key takes the locked path.
keyed_rows!(always_looks, "always_looks", Always);
keyed_rows!(never_looks, "never_looks", Never);
// With one: a create-only call with data in hand is one statement (src/call/one_statement.rs).
keyed_rows!(indexed_always, "indexed_always", Always);
keyed_rows!(indexed_never, "indexed_never", Never);
// Its own adaptive memory: crc32("adaptive_looks"), crc32("adaptive_looks_sqlite") and
// crc32("pull_requests") fall in different slots (src/look.rs), so the mock tests below, on
// `pull_requests`, still look.
keyed_rows!(adaptive_looks, "adaptive_looks", Adaptive);
// The SQLite test's, in yet another slot: the two tests run at once.
#[cfg(feature = "sqlite")]
keyed_rows!(adaptive_looks_sqlite, "adaptive_looks_sqlite", Adaptive);

const POSTGRES_TABLES: &str = "
    CREATE TABLE always_looks (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL);
    CREATE TABLE never_looks (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL);
    CREATE TABLE adaptive_looks (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL);
    CREATE TABLE indexed_always (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE,
        v text NOT NULL);
    CREATE TABLE indexed_never (id bigserial PRIMARY KEY, k bigint NOT NULL UNIQUE,
        v text NOT NULL);";

#[cfg(feature = "sqlite")]
const SQLITE_TABLES: &str = "
    CREATE TABLE always_looks (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL,
        v TEXT NOT NULL);
    CREATE TABLE never_looks (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL,
        v TEXT NOT NULL);
    CREATE TABLE adaptive_looks_sqlite (id INTEGER PRIMARY KEY AUTOINCREMENT,
        k INTEGER NOT NULL, v TEXT NOT NULL);
    CREATE TABLE indexed_always (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL UNIQUE,
        v TEXT NOT NULL);
    CREATE TABLE indexed_never (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL UNIQUE,
        v TEXT NOT NULL);";

/// What `call` cost on the wire, after `warm_up` (the same path once on other keys, so that
/// sqlx's per-connection statement preparation, a round trip of its own the first time a
/// statement's text is used, is not counted).
async fn trips<W: Future, C: Future>(wire: &RoundTrips, warm_up: W, call: C) -> usize {
    warm_up.await;
    wire.take();
    call.await;
    wire.take()
}

/// Every path of a call on PostgreSQL, counted on the wire, one call at a time over a pool of
/// one connection. Data in hand unless said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_costs_its_round_trips_on_postgres() {
    let test_db = TestDb::new().await;
    let direct = test_db.connect(2).await;
    direct.execute_unprepared(POSTGRES_TABLES).await.unwrap();
    direct
        .execute_unprepared(versions::POSTGRES_TABLES)
        .await
        .unwrap();
    let wire = RoundTrips::start(&test_db.url).await;
    let db = test_support::connect(&wire.url, 1).await;
    let always = |k: i64| always_looks::Entity::create_once(&db, k, "v".to_owned());
    let never = |k: i64| never_looks::Entity::create_once(&db, k, "v".to_owned());

    // A redelivery of a stored row: the look, and nothing else.
    assert_eq!(trips(&wire, always(1), always(1)).await, 1);
    // A new key: the look, then (src/backend/postgres/fast_path.rs) BEGIN and the try-lock (with the isolation
    // and server checks) in one message, the guarded insert returning the row, COMMIT.
    assert_eq!(trips(&wire, always(2), always(3)).await, 4);
    // Without the look: BEGIN with the try-lock, insert, COMMIT.
    assert_eq!(trips(&wire, never(1), never(2)).await, 3);
    // A redelivery without the look: BEGIN with the try-lock, the guarded insert (which
    // finds the row and returns nothing), the read of the row, COMMIT.
    assert_eq!(trips(&wire, never(1), never(2)).await, 4);
    // make_data (SeaORM's transaction): the look, BEGIN, try-lock, the look under the lock,
    // insert, COMMIT.
    let made = |k: i64| {
        always_looks::Entity::create_once_with(&db, k, || async {
            Ok::<_, std::convert::Infallible>("made".to_owned())
        })
    };
    assert_eq!(trips(&wire, made(4), made(5)).await, 6);

    // Adaptive (the default): a run of new keys stops the look after a few misses ...
    let adaptive = |k: i64| adaptive_looks::Entity::create_once(&db, k, "v".to_owned());
    for k in 1..=i64::from(MISSES_BEFORE_SKIPPING) {
        assert!(adaptive(k).await.unwrap().is_created());
    }
    assert_eq!(trips(&wire, adaptive(100), adaptive(101)).await, 3);
    // ... a redelivery found under the lock turns it back on (BEGIN with the try-lock, the
    // guarded insert, the read of the row, COMMIT) ...
    assert_eq!(trips(&wire, async {}, adaptive(101)).await, 4);
    // ... and the next redelivery is the look alone.
    assert_eq!(trips(&wire, async {}, adaptive(101)).await, 1);

    // The update form: no look before the lock. BEGIN, try-lock, the look under the lock,
    // then the insert, the update, or nothing, then COMMIT.
    let upsert = |owner: i64, version: i32| {
        documents::Entity::once((owner, "a.md".to_owned()), edit(version))
            .update(newer_only)
            .exec(&db)
    };
    assert_eq!(trips(&wire, upsert(1, 1), upsert(2, 1)).await, 5); // created
    assert_eq!(trips(&wire, upsert(1, 2), upsert(2, 2)).await, 5); // updated
    assert_eq!(trips(&wire, upsert(1, 2), upsert(2, 2)).await, 4); // unchanged

    // Duplicates that arrived while the first caller was at work are handed the row it stored
    // (src/turns.rs): not one round trip of theirs. The first caller's look is held up by a
    // table lock while three more callers of its key queue behind it in the waiting room
    // (each polled once, which takes it there: nothing between the call and the waiting room
    // awaits); then its look misses, it creates the row in three round trips and passes it on. Without
    // the row passed on, each duplicate would look: 7.
    let burst = async {
        let blocker = direct.begin().await.unwrap();
        blocker
            .execute_unprepared("LOCK TABLE always_looks IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let call = || {
            let db = db.clone();
            tokio::spawn(async move {
                always_looks::Entity::create_once(&db, 200, "v".to_owned())
                    .await
                    .unwrap()
            })
        };
        let first = call();
        until_a_statement_waits_for_a_table(&direct).await;
        // The duplicates, polled once each here: a call's first poll runs without awaiting up
        // to the waiting room, where it is counted and then waits for the first caller's turn.
        let mut duplicates: Vec<_> = (0..3)
            .map(|_| Box::pin(always_looks::Entity::create_once(&db, 200, "v".to_owned())))
            .collect();
        for duplicate in &mut duplicates {
            std::future::poll_fn(|cx| {
                assert!(
                    duplicate.as_mut().poll(cx).is_pending(),
                    "a duplicate waits its turn"
                );
                std::task::Poll::Ready(())
            })
            .await;
        }
        blocker.commit().await.unwrap();
        let created = first.await.unwrap();
        assert!(created.is_created());
        for duplicate in duplicates {
            let outcome = duplicate.await.unwrap();
            assert!(!outcome.is_created());
            assert_eq!(outcome.model(), created.model());
        }
    };
    assert_eq!(trips(&wire, async {}, burst).await, 4);

    // In a caller's transaction: which session it is (so that calls on it and on transactions
    // nested in it take turns as one: src/source.rs), SAVEPOINT, try-lock, insert, RELEASE
    // (BEGIN and COMMIT are the caller's). The session's round trip came with issue 22's
    // fix of nested transactions; it was 4.
    let txn = db.begin().await.unwrap();
    let in_txn = |k: i64| always_looks::Entity::create_once(&txn, k, "v".to_owned());
    assert_eq!(trips(&wire, in_txn(6), in_txn(7)).await, 5);
    txn.commit().await.unwrap();

    // A contended wait (the key held elsewhere, released while the call waits): the look,
    // BEGIN with the try-lock (busy), ROLLBACK, then SeaORM's transaction: BEGIN, the
    // try-lock (busy again), the wait's preparation, the wait, its outcome, insert, COMMIT.
    // Two more than before the three-round-trip path (the ROLLBACK and the first try).
    let contended = |k: i64| {
        let (db, direct) = (db.clone(), direct.clone());
        async move {
            let key = LockKey::for_entity("always_looks", &k);
            let held = direct.begin().await.unwrap();
            acquire_advisory_lock(&held, key, Wait::Forever)
                .await
                .unwrap();
            let waiter = tokio::spawn(async move {
                always_looks::Entity::create_once(&db, k, "v".to_owned()).await
            });
            until_someone_waits(&direct, key).await;
            held.commit().await.unwrap();
            assert!(waiter.await.unwrap().unwrap().is_created());
        }
    };
    assert_eq!(trips(&wire, contended(8), contended(9)).await, 10);

    // Wait::No on a held key: BEGIN with the try-lock (busy), ROLLBACK; LockBusy at once.
    let busy = |k: i64| {
        let direct = direct.clone();
        let db = &db;
        async move {
            let held = direct.begin().await.unwrap();
            let key = LockKey::for_entity("never_looks", &k);
            acquire_advisory_lock(&held, key, Wait::Forever)
                .await
                .unwrap();
            let err = never_looks::Entity::once(k, "v".to_owned())
                .wait(Wait::No)
                .exec(db)
                .await
                .unwrap_err();
            assert!(
                matches!(err, sea_orm_idempotent::Error::LockBusy { .. }),
                "{err:?}"
            );
            held.rollback().await.unwrap();
        }
    };
    assert_eq!(trips(&wire, busy(10), busy(11)).await, 2);

    // Where a unique index covers the key (the catalog asked once per pool and entity, in the
    // warm-up): one statement tries the lock and inserts `ON CONFLICT (k) DO NOTHING`.
    let indexed = |k: i64| indexed_always::Entity::create_once(&db, k, "v".to_owned());
    let indexed_never = |k: i64| indexed_never::Entity::create_once(&db, k, "v".to_owned());
    // A new key: the look, then the one statement.
    assert_eq!(trips(&wire, indexed(1), indexed(2)).await, 2);
    // Without the look: the one statement alone, as SeaORM's own `on_conflict` insert.
    assert_eq!(trips(&wire, indexed_never(1), indexed_never(2)).await, 1);
    // A redelivery without the look: the statement (nothing inserted), then the read.
    assert_eq!(trips(&wire, indexed_never(1), indexed_never(2)).await, 2);
    // A contended key: the look, the statement (the lock not granted, nothing inserted), then
    // the locked path: BEGIN, the try-lock, the wait's preparation, the wait, its outcome,
    // the insert, COMMIT.
    let contended_indexed = |k: i64| {
        let (db, direct) = (db.clone(), direct.clone());
        async move {
            let key = LockKey::for_entity("indexed_always", &k);
            let held = direct.begin().await.unwrap();
            acquire_advisory_lock(&held, key, Wait::Forever)
                .await
                .unwrap();
            let waiter = tokio::spawn(async move {
                indexed_always::Entity::create_once(&db, k, "v".to_owned()).await
            });
            until_someone_waits(&direct, key).await;
            held.commit().await.unwrap();
            assert!(waiter.await.unwrap().unwrap().is_created());
        }
    };
    assert_eq!(
        trips(&wire, contended_indexed(8), contended_indexed(9)).await,
        9
    );

    // A batch's chunk (src/call/batch/): where a unique index covers the key, new keys are one
    // statement that tries every key's lock and inserts `ON CONFLICT (k) DO NOTHING`.
    let batch = |keys: std::ops::Range<i64>| {
        indexed_always::Entity::many(keys.map(|k| (k, "v".to_owned()))).exec(&db)
    };
    assert_eq!(trips(&wire, batch(100..103), batch(200..203)).await, 1);
    // Stored keys: the statement (nothing inserted), then one look for all of them.
    assert_eq!(trips(&wire, batch(100..103), batch(200..203)).await, 2);
    // Without the index, the locked path: BEGIN, the try of every lock, the look, the insert,
    // COMMIT.
    let unindexed = |keys: std::ops::Range<i64>| {
        always_looks::Entity::many(keys.map(|k| (k, "v".to_owned()))).exec(&db)
    };
    // (Keys no earlier call of this test stored: a chunk that inserts fewer rows than its
    // warm-up sends an insert text sqlx prepares first, a round trip of its own.)
    assert_eq!(
        trips(&wire, unindexed(1000..1003), unindexed(1100..1103)).await,
        5
    );
}

fn stored(pr_id: i64) -> pull_requests::Model {
    let data = new_pr(pr_id);
    pull_requests::Model {
        id: 1,
        pr_id,
        repository: data.repository,
        number: data.number,
        title: data.title,
        author: data.author,
        state: data.state,
        head_sha: data.head_sha,
        first_delivery_id: data.delivery_id,
        created_at: "2026-11-26T00:00:00Z".parse().unwrap(),
        updated_at: None,
    }
}

fn lock_granted() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("acquired", Value::from(true)),
        ("isolation", Value::from("read committed")),
        // Which server answered (src/backend/postgres/engine.rs): PostgreSQL.
        ("server_version", Value::from("PostgreSQL 15.14")),
        ("server_version_num", Value::from("150014")),
        ("crdb_version", Value::String(None)),
        ("yb_silence", Value::String(None)),
        // The session the lock was taken in (src/source.rs): what a call inside `make_data`
        // compares with to tell re-entry from another database.
        ("session_pid", Value::from(4242_i64)),
        ("session_database", Value::from("app")),
        ("session_port", Value::from("5432")),
        ("session_cluster", Value::String(None)),
    ])
}

fn statements(log: &[Transaction]) -> Vec<String> {
    log.iter()
        .flat_map(|t| t.statements())
        .map(|s| s.sql.clone())
        .collect()
}

/// A redelivery of a stored row costs one statement: no transaction, no lock.
#[tokio::test]
async fn an_existing_row_costs_one_statement() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let outcome = PullRequest::create_once(&db, 7, new_pr(7)).await.unwrap();
    assert!(!outcome.is_created());
    let sql = statements(&db.into_transaction_log());
    assert_eq!(sql.len(), 1, "{sql:#?}");
    assert!(sql[0].starts_with("SELECT"), "{sql:#?}");
}

/// A new row through SeaORM's transaction (what a mock connection, or a call that is not data
/// in hand, takes): look (miss), then in one transaction lock (uncontended: one try-lock, no
/// wait) and insert-unless-exists: three statements plus BEGIN and COMMIT. The look after the
/// lock and the insert are one statement, not two. (A real pool takes the three-round-trip
/// path instead: `every_path_costs_its_round_trips_on_postgres`.)
#[tokio::test]
async fn a_new_row_costs_look_lock_insert() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([Vec::<pull_requests::Model>::new()])
        .append_query_results([vec![lock_granted()]])
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let outcome = PullRequest::create_once(&db, 7, new_pr(7)).await.unwrap();
    assert!(outcome.is_created());
    let log = db.into_transaction_log();
    let sql = statements(&log);
    assert_eq!(sql.len(), 5, "{sql:#?}");
    assert!(
        sql[0].starts_with("SELECT \"pull_requests\".\"id\""),
        "{sql:#?}"
    );
    assert_eq!(sql[1], "BEGIN");
    assert!(
        sql[2].contains("pg_try_advisory_xact_lock($1, $2)"),
        "{sql:#?}"
    );
    assert!(
        sql[3].starts_with("INSERT INTO \"pull_requests\"")
            && sql[3].contains("WHERE NOT EXISTS")
            && sql[3].contains("RETURNING"),
        "{sql:#?}"
    );
    assert_eq!(sql[4], "COMMIT");
    // The look runs outside the transaction; lock and insert inside one.
    assert_eq!(log.len(), 2, "{log:#?}");
}

/// Values are bound, never formatted: a key full of SQL does not appear in the SQL text.
#[tokio::test]
async fn data_is_bound_not_formatted() {
    let db = MockDatabase::new(DatabaseBackend::Postgres)
        .append_query_results([Vec::<pull_requests::Model>::new()])
        .append_query_results([vec![lock_granted()]])
        .append_query_results([vec![stored(7)]])
        .into_connection();
    let mut data = new_pr(7);
    data.title = "'; DROP TABLE pull_requests; --".into();
    PullRequest::create_once(&db, 7, data).await.unwrap();
    for sql in statements(&db.into_transaction_log()) {
        assert!(!sql.contains("DROP TABLE"), "{sql}");
    }
}

#[cfg(feature = "sqlite")]
/// The statements SeaORM reports for `call`, after `warm_up`, on a SQLite connection whose
/// metric callback appends to `log`.
async fn statements_of<W: Future, C: Future>(
    log: &std::sync::Mutex<Vec<String>>,
    warm_up: W,
    call: C,
) -> Vec<String> {
    warm_up.await;
    log.lock().unwrap().clear();
    call.await;
    std::mem::take(&mut *log.lock().unwrap())
}

/// Every path of a call on SQLite (a file database), as the statements SeaORM reports to its
/// metric callback: no wire to count, each statement is a call into SQLite. (SeaORM does not
/// report BEGIN and COMMIT there; each transaction has one of each.) The lock is the IMMEDIATE
/// begin itself: no statement of its own.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn every_path_costs_its_statements_on_sqlite() {
    let dir = common::TempDir::new("round-trips-sqlite");
    let mut db = test_support::connect(&dir.sqlite_url("trips.db"), 1).await;
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    db.execute_unprepared(versions::SQLITE_TABLES)
        .await
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    db.set_metric_callback({
        let log = log.clone();
        move |info| {
            let sql = &info.statement.sql;
            let verb = sql.split_whitespace().next().unwrap_or("");
            // The one-statement path's insert names its conflict target.
            let shown = if sql.contains("ON CONFLICT (") {
                format!("{verb} ON CONFLICT")
            } else {
                verb.to_owned()
            };
            log.lock().unwrap().push(shown);
        }
    });
    let db = &db;
    let always = |k: i64| always_looks::Entity::create_once(db, k, "v".to_owned());
    let never = |k: i64| never_looks::Entity::create_once(db, k, "v".to_owned());

    assert_eq!(statements_of(&log, always(1), always(1)).await, ["SELECT"]);
    assert_eq!(
        statements_of(&log, always(2), always(3)).await,
        ["SELECT", "INSERT"]
    );
    assert_eq!(statements_of(&log, never(1), never(2)).await, ["INSERT"]);
    assert_eq!(
        statements_of(&log, never(1), never(2)).await,
        ["INSERT", "SELECT"]
    );
    // Adaptive looks on SQLite even after a run of new keys: a look is no round trip there.
    let adaptive = |k: i64| adaptive_looks_sqlite::Entity::create_once(db, k, "v".to_owned());
    for k in 1..=i64::from(MISSES_BEFORE_SKIPPING) + 1 {
        adaptive(k).await.unwrap();
    }
    assert_eq!(
        statements_of(&log, async {}, adaptive(100)).await,
        ["SELECT", "INSERT"]
    );
    let upsert = |owner: i64, version: i32| {
        documents::Entity::once((owner, "a.md".to_owned()), edit(version))
            .update(newer_only)
            .exec(db)
    };
    assert_eq!(
        statements_of(&log, upsert(1, 1), upsert(2, 1)).await,
        ["SELECT", "INSERT"]
    );
    assert_eq!(
        statements_of(&log, upsert(1, 2), upsert(2, 2)).await,
        ["SELECT", "UPDATE"]
    );
    assert_eq!(
        statements_of(&log, upsert(1, 2), upsert(2, 2)).await,
        ["SELECT"]
    );
    let txn = db.begin().await.unwrap();
    let in_txn = |k: i64| always_looks::Entity::create_once(&txn, k, "v".to_owned());
    // The crate's SAVEPOINT and RELEASE around it are not reported either (sent unprepared);
    // the SELECT is the session's file (`pragma_database_list`, in process: src/source.rs).
    assert_eq!(
        statements_of(&log, in_txn(6), in_txn(7)).await,
        ["SELECT", "INSERT"]
    );
    txn.commit().await.unwrap();

    // Where a unique index covers the key: the look, then one `INSERT ... ON CONFLICT (k) DO
    // NOTHING RETURNING` in autocommit (no BEGIN IMMEDIATE, no COMMIT) ...
    let indexed = |k: i64| indexed_always::Entity::create_once(db, k, "v".to_owned());
    let indexed_never = |k: i64| indexed_never::Entity::create_once(db, k, "v".to_owned());
    assert_eq!(
        statements_of(&log, indexed(1), indexed(2)).await,
        ["SELECT", "INSERT ON CONFLICT"]
    );
    assert_eq!(
        statements_of(&log, indexed_never(1), indexed_never(2)).await,
        ["INSERT ON CONFLICT"]
    );
    // ... and a redelivery without the look: the insert (nothing), then the read.
    assert_eq!(
        statements_of(&log, indexed_never(1), indexed_never(2)).await,
        ["INSERT ON CONFLICT", "SELECT"]
    );

    // A batch's chunk of new keys where the index covers the key: one multi-row
    // `INSERT ... ON CONFLICT (k) DO NOTHING RETURNING` in autocommit; stored keys add one
    // look for all of them. Without the index: BEGIN IMMEDIATE (not reported), the look, the
    // insert, COMMIT.
    let batch = |keys: std::ops::Range<i64>| {
        indexed_always::Entity::many(keys.map(|k| (k, "v".to_owned()))).exec(db)
    };
    assert_eq!(
        statements_of(&log, batch(100..103), batch(200..203)).await,
        ["INSERT ON CONFLICT"]
    );
    assert_eq!(
        statements_of(&log, batch(100..103), batch(200..203)).await,
        ["INSERT ON CONFLICT", "SELECT"]
    );
    let unindexed = |keys: std::ops::Range<i64>| {
        always_looks::Entity::many(keys.map(|k| (k, "v".to_owned()))).exec(db)
    };
    assert_eq!(
        statements_of(&log, unindexed(1000..1003), unindexed(1100..1103)).await,
        ["SELECT", "INSERT"]
    );
}
