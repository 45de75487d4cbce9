//! Through PgBouncer (Debian's `pgbouncer`), started by the tests in front of a private
//! throwaway cluster and stopped at the end, even on panic.
//!
//! - Session pooling: `create_once` keeps its promise across several processes and many tasks
//!   (one row per key, no errors), while the same workload without the lock collides.
//! - Transaction pooling: the lock's scope is what matters. `pg_advisory_xact_lock` ends with
//!   its transaction, so it excludes a concurrent holder and leaves nothing behind; a
//!   session-scoped `pg_advisory_lock` stays on the server connection, which PgBouncer hands
//!   to another client next: that client "gets" a lock someone else holds. These use
//!   simple-protocol SQL (`sqlx::raw_sql`), because SeaORM's queries are protocol-level
//!   prepared statements, which PgBouncer before 1.21 (Debian 12 ships 1.18) does not support
//!   in transaction pooling.
//!
//! Without `pgbouncer` installed these tests print a loud line naming the package and pass
//! without running; with `SEA_ORM_IDEMPOTENT_REQUIRE_PGBOUNCER=1` (CI) that is a failure.

#![cfg(feature = "postgres")]

mod common;

use common::{
    Strategy, Tally, Workload, lock_pids, rows_for, run_gated, total_rows, wait_at_gate,
    worker_process,
};
use sea_orm::sqlx::{self, Connection, PgConnection, Row};
use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock};
use test_support::{PgBouncer, PoolMode, Server, TestDb};

const KEYS: i64 = 60;
const CALLERS_PER_KEY: usize = 8;
const TASKS: usize = 32;
const POOL: u32 = 6;
const PROCESSES: usize = 3;

/// `TASKS` tasks over one pool; every key in `first_key..first_key + KEYS` is requested by
/// `CALLERS_PER_KEY` tasks that start together and walk the same keys in the same order.
const WORKLOAD: Workload = Workload {
    keys: KEYS,
    callers_per_key: CALLERS_PER_KEY,
    tasks: TASKS,
};

/// Environment of the worker processes of `session_pooling_several_processes_...`.
const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_PGBOUNCER_WORKER_URL";
const WORKER_STRATEGY: &str = "SEA_ORM_IDEMPOTENT_PGBOUNCER_WORKER_STRATEGY";
const WORKER_FIRST_KEY: &str = "SEA_ORM_IDEMPOTENT_PGBOUNCER_WORKER_FIRST_KEY";

/// One racing process, connected through PgBouncer. Started by
/// `session_pooling_several_processes_create_each_key_once` with the URL in the environment:
/// it waits at the parent's gate, races, and prints its tally. Run plainly, it is the
/// one-process version: many tasks, the same keys, through a session-pooling PgBouncer of its
/// own, each key created once with no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_pooling_worker() {
    if let Ok(url) = std::env::var(WORKER_URL) {
        let strategy = Strategy::from_name(&std::env::var(WORKER_STRATEGY).unwrap());
        let first_key = std::env::var(WORKER_FIRST_KEY).unwrap().parse().unwrap();
        let db = test_support::connect(&url, POOL).await;
        // Wait at the parent's gate, so that all processes start together.
        wait_at_gate(&db).await;
        let tally = WORKLOAD.race(&[db], strategy, first_key).await;
        tally.print_for_parent();
        return;
    }
    if !PgBouncer::installed() {
        return;
    }
    let server = Server::private();
    let bouncer = PgBouncer::start(server.cluster().unwrap(), PoolMode::Session, 50);
    let test_db = server.database("pgbouncer_session_one_process").await;
    let db = test_support::connect(&bouncer.url(&test_db.name), POOL).await;

    let tally = WORKLOAD
        .race(std::slice::from_ref(&db), Strategy::CreateOnce, 1)
        .await;

    assert_eq!(tally, WORKLOAD.exactly_once());
    assert_eq!(total_rows(&db).await, KEYS as u64);
}

/// Runs `PROCESSES` copies of this test binary as `session_pooling_worker` with `strategy`
/// through `url`, opens the gate (held on `direct`) once all wait at it, and returns their
/// summed tally.
async fn run_workers(
    direct: &DatabaseConnection,
    url: &str,
    strategy: Strategy,
    first_key: i64,
) -> Tally {
    let workers = (0..PROCESSES).map(|_| {
        let mut worker = worker_process("session_pooling_worker");
        worker
            .env(WORKER_URL, url)
            .env(WORKER_STRATEGY, strategy.name())
            .env(WORKER_FIRST_KEY, first_key.to_string());
        worker
    });
    let mut total = Tally::default();
    for tally in run_gated(direct, workers).await {
        total.add(tally);
    }
    total
}

/// Session pooling: `PROCESSES` OS processes of `TASKS` tasks each, all through one
/// PgBouncer, released together by a gate (a lock the parent holds, coordinated through
/// `pg_locks`), race on the same keys: each key is created exactly once in all, with no
/// errors.
///
/// Catches: anything in the path that breaks the lock across clients (a pooler that reuses a
/// server connection mid-transaction, a lock that does not reach the server). The same run
/// with the lock left out (`Strategy::Naive`, first) shows the workload does race through
/// PgBouncer: it gets unique violations, which the assertion requires, so a workload too tame
/// to catch a broken lock fails the test instead of passing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_several_processes_create_each_key_once() {
    if !PgBouncer::installed() {
        return;
    }
    let server = Server::private();
    let bouncer = PgBouncer::start(server.cluster().unwrap(), PoolMode::Session, 100);
    let test_db = server.database("pgbouncer_session_processes").await;
    let direct = test_db.connect(2).await;
    let url = bouncer.url(&test_db.name);

    let naive = run_workers(&direct, &url, Strategy::Naive, 1).await;
    eprintln!("naive through PgBouncer: {naive:?}");
    assert!(
        naive.unique_violations > 0,
        "the naive workload should race, or the test proves nothing: {naive:?}"
    );

    const FIRST_KEY: i64 = 10_000;
    let tally = run_workers(&direct, &url, Strategy::CreateOnce, FIRST_KEY).await;
    assert_eq!(
        tally,
        Tally {
            created: KEYS as usize,
            existing: KEYS as usize * (CALLERS_PER_KEY * PROCESSES - 1),
            unique_violations: 0,
            other_errors: 0,
        },
        "Created once per key across processes, no errors"
    );
    for pr_id in FIRST_KEY..FIRST_KEY + KEYS {
        assert_eq!(rows_for(&direct, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// A raw connection through PgBouncer (sqlx, no pool: each is one PgBouncer client).
async fn client(bouncer: &PgBouncer, db: &TestDb) -> PgConnection {
    PgConnection::connect(&bouncer.url(&db.name))
        .await
        .unwrap_or_else(|e| panic!("connect through pgbouncer: {e}\n{}", bouncer.log()))
}

/// Runs one simple-protocol query returning one boolean column.
async fn ask(conn: &mut PgConnection, sql: &'static str) -> bool {
    sqlx::raw_sql(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<bool, _>(0)
        .unwrap()
}

async fn run(conn: &mut PgConnection, sql: &'static str) {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Transaction pooling, two server connections: client A holds `pg_advisory_xact_lock` in an
/// open transaction (PgBouncer pins A to a server connection until it ends); client B, on the
/// other server connection, cannot take the key; after A's COMMIT, B can, and no advisory lock
/// is left on any server connection.
///
/// Catches: an xact lock that did not exclude through the pooler (B's probe succeeds), or one
/// that outlived its transaction (B's probe after COMMIT fails, or `pg_locks` still shows it).
#[tokio::test]
async fn transaction_pooling_xact_lock_excludes_and_ends_with_the_transaction() {
    if !PgBouncer::installed() {
        return;
    }
    let server = Server::private();
    let bouncer = PgBouncer::start(server.cluster().unwrap(), PoolMode::Transaction, 2);
    let test_db = server.database("pgbouncer_transaction_xact").await;
    let direct = test_db.connect(1).await;
    let mut a = client(&bouncer, &test_db).await;
    let mut b = client(&bouncer, &test_db).await;

    run(&mut a, "BEGIN; SELECT pg_advisory_xact_lock(7001)").await;
    assert!(
        !ask(&mut b, "SELECT pg_try_advisory_xact_lock(7001)").await,
        "A's transaction-scoped lock excludes B"
    );
    assert_eq!(
        lock_pids(&direct, LockKey::BigInt(7001), true).await.len(),
        1
    );

    run(&mut a, "COMMIT").await;
    assert!(
        lock_pids(&direct, LockKey::BigInt(7001), true)
            .await
            .is_empty(),
        "gone with A's transaction"
    );
    assert!(
        ask(&mut b, "SELECT pg_try_advisory_xact_lock(7001)").await,
        "B takes it once A committed"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Transaction pooling, one server connection: client A takes a session-scoped
/// `pg_advisory_lock` (autocommit) and believes it holds the key. The lock stays on the server
/// connection, which PgBouncer hands to client B next: B's `pg_try_advisory_lock` on the same
/// key *succeeds* (PostgreSQL sees the same session re-entering its own lock), so A and B both
/// "hold" an exclusive lock; and it outlives A: after A disconnects, a direct connection still
/// cannot take it. This is why the crate only uses transaction-scoped locks.
///
/// This test asserts PostgreSQL's and PgBouncer's behaviour, not the crate's: it documents the
/// hazard the crate's design avoids, and fails if the setup stops reproducing it (e.g. a
/// PgBouncer that resets sessions between transactions), in which case the advice of docs/backends.md ("Behind PgBouncer")
/// must be revisited.
#[tokio::test]
async fn transaction_pooling_session_lock_leaks_to_another_client() {
    if !PgBouncer::installed() {
        return;
    }
    let server = Server::private();
    let bouncer = PgBouncer::start(server.cluster().unwrap(), PoolMode::Transaction, 1);
    let test_db = server.database("pgbouncer_transaction_session").await;
    let direct = test_db.connect(1).await;
    let mut a = client(&bouncer, &test_db).await;
    let mut b = client(&bouncer, &test_db).await;

    assert!(
        ask(&mut a, "SELECT pg_try_advisory_lock(7002)").await,
        "A takes it"
    );
    assert!(
        ask(&mut b, "SELECT pg_try_advisory_lock(7002)").await,
        "B gets the lock A holds: exclusion is gone"
    );
    a.close().await.unwrap();
    let direct_txn = direct.begin().await.unwrap();
    let err = acquire_advisory_lock(&direct_txn, LockKey::BigInt(7002), Wait::No)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LockBusy { .. }),
        "the lock outlives A, held by the pooled server connection: {err:?}"
    );
    direct_txn.rollback().await.unwrap();
    b.close().await.unwrap();
}

/// Transaction pooling with SeaORM's own (prepared) statements, on a PgBouncer that does not
/// keep them (Debian 12's 1.18 has no `max_prepared_statements`): a deployment mistake. Every
/// call that fails must say so with the typed, non-retryable `PreparedStatementsLost`. Before,
/// the server's 42P05 / 26000 came back raw, and 08P01 ("bind message supplies N parameters")
/// counted as retryable with the rest of class 08, so a receiver answered 503 forever.
#[tokio::test]
async fn transaction_pooling_with_prepared_statements_is_a_named_deployment_mistake() {
    if !PgBouncer::installed() {
        return;
    }
    let server = Server::private();
    let bouncer = PgBouncer::start(server.cluster().unwrap(), PoolMode::Transaction, 1);
    let test_db = server.database("pgbouncer_transaction_prepared").await;
    let db = test_support::connect(&bouncer.url(&test_db.name), 4).await;
    let calls = (0..24_i64).map(|key| {
        let db = db.clone();
        tokio::spawn(async move {
            entity::PullRequest::create_once(&db, 9_000 + key, common::new_pr(9_000 + key)).await
        })
    });
    let mut failed = 0;
    for call in calls.collect::<Vec<_>>() {
        if let Err(err) = call.await.unwrap() {
            failed += 1;
            assert!(
                matches!(err, Error::PreparedStatementsLost(_)) && !err.is_retryable(),
                "{err:?}"
            );
        }
    }
    assert!(failed > 0, "the misconfiguration showed in no call");
}
