//! Servers that speak PostgreSQL's protocol but whose advisory locks must not be trusted are
//! refused, before anything is written; a real PostgreSQL passes the behaviour probe and a
//! fake lock function fails it.
//!
//! Each test makes the real PostgreSQL 15 of the test support report another engine, for its
//! own database's connections only: `ALTER DATABASE <its database> SET search_path = fake,
//! pg_catalog, public`, with functions in schema `fake` that answer as the other engine would
//! (`version()`, `current_setting(...)`, or a `pg_try_advisory_xact_lock` stub that returns
//! `true` without locking, as CockroachDB's did). Unqualified calls, which the crate sends,
//! resolve to them because `fake` comes before `pg_catalog` on the path.
//!
//! These tests fail without the detection: with the check in `src/backend/postgres/lock.rs`
//! (`Server::from_row(..)?.check(..)`) removed, the disguised server's locks still work (it is
//! PostgreSQL underneath), so `create_once` returns `Created` and `acquire_advisory_lock`
//! returns `Ok`, and every `expect_err` below panics.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{new_pr, rows_for};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use sea_orm_idempotent::{
    Error, IdempotentCreate, LockKey, ServerRefusal, Wait, acquire_advisory_lock,
    probe_advisory_locks,
};
use test_support::TestDb;

/// What CockroachDB v23.1 answers to `SELECT version()`.
const COCKROACH_23: &str =
    "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 01:53:43, go1.19.10)";

/// Installs `functions` (SQL creating functions in schema `fake`) in the test's database and
/// puts `fake` ahead of `pg_catalog` for every new connection to it; returns a pool of two
/// such connections.
async fn disguised(test_db: &TestDb, functions: &str) -> DatabaseConnection {
    let setup = test_db.connect(1).await;
    setup
        .execute_unprepared(&format!("CREATE SCHEMA fake; {functions}"))
        .await
        .expect("create the fake functions");
    // The name is derived from the test's name ([a-z0-9_] only), never from data.
    setup
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" SET search_path = fake, pg_catalog, public",
            test_db.name
        ))
        .await
        .expect("put the fake schema first for this database");
    setup.close().await.unwrap();
    let db = test_db.connect(2).await;
    // The disguise is in place (and the test would prove nothing if it were not).
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_setting('search_path') AS path",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.try_get::<String>("", "path")
            .unwrap()
            .starts_with("fake"),
        "the disguise did not take"
    );
    db
}

fn fake_version(version: &str) -> String {
    // Test constants only, quoted as SQL literals.
    format!(
        "CREATE FUNCTION fake.version() RETURNS text LANGUAGE sql AS $$ SELECT '{version}'::text $$;"
    )
}

/// `current_setting(name, missing_ok)` that reports `name = value`, and PostgreSQL's answer
/// for every other name.
fn fake_setting(name: &str, value: &str) -> String {
    format!(
        "CREATE FUNCTION fake.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$ \
         SELECT CASE WHEN $1 = '{name}' THEN '{value}'::text \
         ELSE pg_catalog.current_setting($1, $2) END $$;"
    )
}

/// The refusal's reason and the server it names, or a panic.
fn refusal(err: Error) -> (ServerRefusal, Option<String>) {
    assert!(!err.is_retryable(), "{err:?}");
    match err {
        Error::UnsupportedServer { reason, server, .. } => (reason, server),
        other => panic!("expected UnsupportedServer, got {other:?}"),
    }
}

/// Both entry points refuse, with the given reason, and `create_once` wrote nothing.
async fn assert_refused(db: &DatabaseConnection, reason: ServerRefusal) -> Option<String> {
    let err = PullRequest::create_once(db, 1, new_pr(1))
        .await
        .expect_err("create_once must refuse this server");
    let (got, server) = refusal(err);
    assert_eq!(got, reason);
    assert_eq!(rows_for(db, 1).await, 0, "nothing may be written");

    let txn = db.begin().await.unwrap();
    let err = acquire_advisory_lock(&txn, LockKey::BigInt(1), Wait::No)
        .await
        .expect_err("acquire_advisory_lock must refuse this server");
    assert_eq!(refusal(err).0, reason);
    txn.rollback().await.unwrap();
    server
}

#[tokio::test]
async fn cockroach_before_26_2_is_refused_by_its_version() {
    let test_db = TestDb::new().await;
    let db = disguised(&test_db, &fake_version(COCKROACH_23)).await;
    let server = assert_refused(&db, ServerRefusal::FakeAdvisoryLocks).await;
    assert_eq!(server.as_deref(), Some(COCKROACH_23));
}

/// CockroachDB's own setting identifies it even when `version()` does not (a proxy could
/// rewrite the banner).
#[tokio::test]
async fn cockroach_is_refused_by_its_crdb_version_setting() {
    let test_db = TestDb::new().await;
    let db = disguised(
        &test_db,
        &fake_setting(
            "crdb_version",
            "CockroachDB OSS v25.4.1 (x86_64-pc-linux-gnu)",
        ),
    )
    .await;
    let server = assert_refused(&db, ServerRefusal::FakeAdvisoryLocks).await;
    assert!(server.unwrap().starts_with("PostgreSQL 15"));
}

/// v26.2's locks are real but survive ROLLBACK TO SAVEPOINT: trying once is accepted (and
/// works, on the PostgreSQL underneath), waiting is refused.
#[tokio::test]
async fn cockroach_26_2_may_try_once_but_not_wait() {
    let test_db = TestDb::new().await;
    let db = disguised(
        &test_db,
        &fake_version("CockroachDB CCL v26.2.1 (x86_64-pc-linux-gnu, built 2026/06/01)"),
    )
    .await;
    let outcome = PullRequest::once(2, new_pr(2))
        .wait(Wait::No)
        .exec(&db)
        .await
        .unwrap();
    assert!(outcome.is_created());
    for wait in [Wait::Forever, Wait::Timeout(Duration::from_millis(100))] {
        let err = PullRequest::once(3, new_pr(3))
            .wait(wait)
            .exec(&db)
            .await
            .expect_err("waiting is refused");
        assert_eq!(refusal(err).0, ServerRefusal::SavepointKeepsLocks);
        let txn = db.begin().await.unwrap();
        let err = acquire_advisory_lock(&txn, LockKey::BigInt(3), wait)
            .await
            .expect_err("waiting is refused");
        assert_eq!(refusal(err).0, ServerRefusal::SavepointKeepsLocks);
        txn.rollback().await.unwrap();
    }
    assert_eq!(rows_for(&db, 3).await, 0);
}

/// YugabyteDB with its "advisory locks are not yet implemented" error silenced: the functions
/// succeed without locking.
#[tokio::test]
async fn yugabyte_with_the_silenced_error_is_refused() {
    let test_db = TestDb::new().await;
    let functions = format!(
        "{} {}",
        fake_version("PostgreSQL 15.2-YB-2025.1.0.0-b168 on x86_64-pc-linux-gnu"),
        fake_setting("yb_silence_advisory_locks_not_supported_error", "on"),
    );
    let db = disguised(&test_db, &functions).await;
    assert_refused(&db, ServerRefusal::FakeAdvisoryLocks).await;
}

/// A server older than the crate's SQL is a typed error, not a syntax error.
#[tokio::test]
async fn a_server_too_old_is_refused() {
    let test_db = TestDb::new().await;
    let functions = format!(
        "{} CREATE FUNCTION fake.current_setting(text) RETURNS text LANGUAGE sql AS $$ \
         SELECT CASE WHEN $1 = 'server_version_num' THEN '90525'::text \
         ELSE pg_catalog.current_setting($1) END $$;",
        fake_version("PostgreSQL 9.5.25 on x86_64-pc-linux-gnu"),
    );
    let db = disguised(&test_db, &functions).await;
    assert_refused(&db, ServerRefusal::TooOld).await;
}

/// The detection costs no statement of its own, and PostgreSQL passes it: the probe and a
/// create both succeed on the test support's server.
#[tokio::test]
async fn real_postgres_passes_the_probe() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    probe_advisory_locks(&db).await.unwrap();
    // Twice: nothing of the first probe is left behind.
    probe_advisory_locks(&db).await.unwrap();
    assert!(
        PullRequest::create_once(&db, 4, new_pr(4))
            .await
            .unwrap()
            .is_created()
    );
}

/// A `pg_try_advisory_xact_lock` that answers `true` without locking, on a server that
/// otherwise says it is PostgreSQL: the engine check cannot know, the probe finds out.
/// Without the probe's second connection (remove its middle try) this test fails.
#[tokio::test]
async fn a_fake_try_lock_fails_the_probe() {
    let test_db = TestDb::new().await;
    let db = disguised(
        &test_db,
        "CREATE FUNCTION fake.pg_try_advisory_xact_lock(integer, integer) RETURNS boolean \
         LANGUAGE sql AS $$ SELECT true $$;",
    )
    .await;
    let err = probe_advisory_locks(&db)
        .await
        .expect_err("the probe must catch a try-lock that does not lock");
    let (reason, server) = refusal(err);
    assert_eq!(reason, ServerRefusal::ProbeFailed);
    assert!(server.unwrap().starts_with("PostgreSQL"));
}

/// A try-lock that never grants fails the probe too (it would turn every call into
/// `LockBusy`).
#[tokio::test]
async fn a_try_lock_that_never_grants_fails_the_probe() {
    let test_db = TestDb::new().await;
    let db = disguised(
        &test_db,
        "CREATE FUNCTION fake.pg_try_advisory_xact_lock(integer, integer) RETURNS boolean \
         LANGUAGE sql AS $$ SELECT false $$;",
    )
    .await;
    let err = probe_advisory_locks(&db).await.expect_err("probe fails");
    assert_eq!(refusal(err).0, ServerRefusal::ProbeFailed);
}

#[tokio::test]
async fn the_probe_needs_two_connections() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;
    let err = probe_advisory_locks(&db).await.unwrap_err();
    assert!(
        matches!(err, Error::Database(DbErr::BackendNotSupported { .. })),
        "{err:?}"
    );
}
