//! Who holds a key: `LockHolders` and `IdempotentCreate::lock_holders` against locks really
//! held and really awaited, in both key spaces, including halves above `i32::MAX` (negative
//! `int4`s, which `pg_locks` shows as large unsigned `oid`s). Waits are observed in `pg_locks`
//! with a deadline, never by sleeping.
//!
//! These tests fail if the decoding is wrong: every expected key is compared with what the
//! crate decodes from `pg_locks`, and the one-key form must find exactly the sessions of that
//! key (a wrong encoding of a negative half finds nobody).
//!
//! A waiter's `since` is checked across `Wait::Forever`'s slices: it must be the whole wait,
//! not the current slice's statement (it was, and showed milliseconds for a 2 s wait).
//!
//! `examples/lock_holders.rs` is run as a program against a held and an awaited key.

#![cfg(feature = "postgres")]

mod common;
mod webhook_support;

use std::time::{Duration, Instant};

use common::key_of;
use entity::PullRequest;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{
    Error, IdempotentCreate, LockHolder, LockHolders, LockKey, LockMode, Wait,
    acquire_advisory_lock, acquire_shared_advisory_lock,
};
use test_support::TestDb;
use webhook_support::example_binary;

/// A pool of one connection that reports `name` as its `application_name`.
async fn session(test_db: &TestDb, name: &str) -> DatabaseConnection {
    let separator = if test_db.url.contains('?') { '&' } else { '?' };
    test_support::connect(
        &format!("{}{separator}application_name={name}", test_db.url),
        1,
    )
    .await
}

async fn pid(txn: &DatabaseTransaction) -> i32 {
    txn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT pg_backend_pid() AS pid",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "pid")
    .unwrap()
}

/// Polls `LockHolders::of(key)` until `count` sessions wait for `key`, for at most 30 s.
async fn until_waiters(observer: &DatabaseConnection, key: LockKey, count: usize) -> LockHolders {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holders = LockHolders::of(observer, key).await.unwrap();
        if holders.waiters().count() == count {
            return holders;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} waiters for {key}:\n{holders}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn only<'a>(mut sessions: impl Iterator<Item = &'a LockHolder>) -> &'a LockHolder {
    let first = sessions.next().expect("one session");
    assert!(sessions.next().is_none(), "more than one session");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_and_waiters_in_both_key_spaces() {
    let test_db = TestDb::new().await;
    let holder_db = session(&test_db, "holder").await;
    let pair_waiter_db = session(&test_db, "pair_waiter").await;
    let bigint_waiter_db = session(&test_db, "bigint_waiter").await;
    let observer = test_db.connect(1).await;

    // Pull request 123's key: crc32("123") = 2286445522 > i32::MAX, a negative int4.
    let pair = key_of(123);
    assert_eq!(pair, LockKey::Pair(724_609_916, -2_008_521_774));
    // Both halves negative, and a shared lock.
    let negative_pair = LockKey::Pair(-5, i32::MIN);
    // Python's zlib.crc32(b"PR-123") = 3670997212: low half above i32::MAX.
    let bigint = LockKey::crc32("PR-123");
    // Both halves 0xFFFFFFFF.
    let negative_bigint = LockKey::BigInt(-1);

    let holder = holder_db.begin().await.unwrap();
    let holder_pid = pid(&holder).await;
    for key in [pair, bigint, negative_bigint] {
        acquire_advisory_lock(&holder, key, Wait::No).await.unwrap();
    }
    acquire_shared_advisory_lock(&holder, negative_pair, Wait::No)
        .await
        .unwrap();

    let wait_on = |db: DatabaseConnection, key: LockKey| async move {
        let txn = db.begin().await.unwrap();
        let waiter_pid = pid(&txn).await;
        let started = tokio::spawn(async move {
            // One bounded wait (Wait::Forever waits in slices, with a moment between two in
            // which the session is not in pg_locks).
            acquire_advisory_lock(&txn, key, Wait::Timeout(Duration::from_secs(60)))
                .await
                .unwrap();
            txn.commit().await.unwrap();
        });
        (waiter_pid, started)
    };
    let (pair_waiter_pid, pair_waiter) = wait_on(pair_waiter_db, pair).await;
    let (bigint_waiter_pid, bigint_waiter) = wait_on(bigint_waiter_db, bigint).await;

    // Pair key space, held and awaited.
    let of_pair = until_waiters(&observer, pair, 1).await;
    let held = only(of_pair.holders());
    assert_eq!(
        (held.key, held.pid, held.granted, held.mode),
        (pair, holder_pid, true, LockMode::Exclusive)
    );
    assert_eq!(held.application_name.as_deref(), Some("holder"));
    assert_eq!(held.state.as_deref(), Some("idle in transaction"));
    assert!(held.blocked_by.is_empty());
    assert!(held.since.is_some());
    let waiting = only(of_pair.waiters());
    assert_eq!(
        (waiting.key, waiting.pid, waiting.granted),
        (pair, pair_waiter_pid, false)
    );
    assert_eq!(waiting.application_name.as_deref(), Some("pair_waiter"));
    assert_eq!(waiting.state.as_deref(), Some("active"));
    assert_eq!(waiting.blocked_by, vec![holder_pid]);
    assert!(
        waiting
            .query
            .as_deref()
            .is_some_and(|q| q.contains("pg_advisory_xact_lock(")),
        "{waiting:?}"
    );

    // The entity's own form finds the same sessions.
    let by_entity = PullRequest::lock_holders(&observer, 123).await.unwrap();
    assert_eq!(
        by_entity.0.iter().map(|h| h.pid).collect::<Vec<_>>(),
        vec![holder_pid, pair_waiter_pid]
    );

    // BigInt key space, held and awaited.
    let of_bigint = until_waiters(&observer, bigint, 1).await;
    assert_eq!(only(of_bigint.holders()).pid, holder_pid);
    let waiting = only(of_bigint.waiters());
    assert_eq!(
        (waiting.key, waiting.pid),
        (LockKey::BigInt(3_670_997_212), bigint_waiter_pid)
    );
    assert_eq!(waiting.blocked_by, vec![holder_pid]);

    // Keys nobody waits for, decoded from their large oids.
    let held = only(
        LockHolders::of(&observer, negative_pair)
            .await
            .unwrap()
            .0
            .iter(),
    )
    .clone();
    assert_eq!((held.key, held.mode), (negative_pair, LockMode::Shared));
    let held = only(
        LockHolders::of(&observer, negative_bigint)
            .await
            .unwrap()
            .0
            .iter(),
    )
    .clone();
    assert_eq!(held.key, negative_bigint);

    // Everything in the database: four held, two awaited, holders first.
    let all = LockHolders::all(&observer).await.unwrap();
    let mut held_keys: Vec<LockKey> = all.holders().map(|h| h.key).collect();
    held_keys.sort_by_key(|k| k.to_string());
    let mut expected = vec![pair, negative_pair, bigint, negative_bigint];
    expected.sort_by_key(|k| k.to_string());
    assert_eq!(held_keys, expected, "{all}");
    assert_eq!(all.waiters().count(), 2, "{all}");
    assert!(all.0[..4].iter().all(|h| h.granted), "{all}");
    let table = all.to_string();
    assert!(table.contains("(724609916, -2008521774)"), "{table}");
    assert!(table.contains("waiting"), "{table}");

    // Released: the waiters get the keys, then nobody holds anything.
    holder.commit().await.unwrap();
    pair_waiter.await.unwrap();
    bigint_waiter.await.unwrap();
    let all = LockHolders::all(&observer).await.unwrap();
    assert!(all.is_empty(), "{all}");
}

/// Polls until the session `pid` is waiting for a lock in a statement that began at least
/// `later` after its transaction (for a `Wait::Forever` wait: in a slice after the first), for
/// at most 30 s.
async fn until_waiting_in_a_later_statement(observer: &DatabaseConnection, pid: i32, later: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = observer
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT coalesce(extract(epoch FROM query_start - xact_start)::float8, 0) \
                     AS into_transaction, coalesce(wait_event_type, '') AS waiting_on \
                 FROM pg_stat_activity WHERE pid = $1",
                [pid.into()],
            ))
            .await
            .unwrap()
            .expect("the waiter's session");
        let into_transaction: f64 = row.try_get("", "into_transaction").unwrap();
        let waiting_on: String = row.try_get("", "waiting_on").unwrap();
        if into_transaction >= later && waiting_on == "Lock" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {pid} never waited in a statement {later} s into its transaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter's `since` is its whole wait, not the current slice of it. `Wait::Forever` waits in
/// slices (2 s with the default `deadlock_timeout`), each a statement of its own; this waiter
/// is observed in a slice that began at least 1 s into its transaction, and `since` must
/// cover the time from its `BEGIN`. Before, `since` was read from the current statement's
/// start (`query_start`) and showed about half a second here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiters_since_is_its_whole_wait_across_slices() {
    let test_db = TestDb::new().await;
    let holder_db = session(&test_db, "holder").await;
    let waiter_db = session(&test_db, "waiter").await;
    let observer = test_db.connect(1).await;
    let key = LockKey::BigInt(4_242);
    let holder = holder_db.begin().await.unwrap();
    acquire_advisory_lock(&holder, key, Wait::No).await.unwrap();

    let before_begin = Instant::now();
    let txn = waiter_db.begin().await.unwrap();
    let waiter_pid = pid(&txn).await;
    let after_begin = Instant::now();
    let waiter = tokio::spawn(async move {
        acquire_advisory_lock(&txn, key, Wait::Forever)
            .await
            .unwrap();
        txn.commit().await.unwrap();
    });

    until_waiting_in_a_later_statement(&observer, waiter_pid, 1.0).await;
    // The waiter may be between two slices (out of pg_locks) for a moment: ask until it shows.
    let (waiting, asked, answered) = loop {
        let asked = after_begin.elapsed();
        let holders = LockHolders::of(&observer, key).await.unwrap();
        let answered = before_begin.elapsed();
        if let Some(waiting) = holders.waiters().next() {
            break (waiting.clone(), asked, answered);
        }
    };
    assert_eq!(waiting.pid, waiter_pid);
    let since = waiting
        .since
        .expect("a waiter in a transaction has a since");
    // Its transaction began between `before_begin` and `after_begin`; `since` was read
    // between `asked` (counted from `after_begin`) and `answered` (from `before_begin`).
    let clock_slack = Duration::from_millis(50);
    assert!(
        since + clock_slack >= asked,
        "since {since:?} is less than the {asked:?} the waiter had waited:\n{waiting:?}"
    );
    assert!(
        since <= answered + clock_slack,
        "since {since:?} is more than the {answered:?} since its BEGIN"
    );
    assert!(
        since > Duration::from_secs(1),
        "{since:?}: not past one slice"
    );

    holder.commit().await.unwrap();
    waiter.await.unwrap();
}

/// Locks of another database are other locks: not listed.
#[tokio::test]
async fn only_this_databases_locks_are_listed() {
    let this = TestDb::named("holders_this_db").await;
    let other = TestDb::named("holders_other_db").await;
    let other_db = other.connect(2).await;
    let txn = other_db.begin().await.unwrap();
    acquire_advisory_lock(&txn, LockKey::BigInt(7), Wait::No)
        .await
        .unwrap();
    let observer = this.connect(1).await;
    assert!(LockHolders::all(&observer).await.unwrap().is_empty());
    assert_eq!(
        LockHolders::all(&other_db).await.unwrap().0.len(),
        1,
        "seen from its own database"
    );
    txn.rollback().await.unwrap();
}

#[tokio::test]
async fn sqlite_has_no_advisory_locks_to_list() {
    let db = sea_orm::MockDatabase::new(DbBackend::Sqlite).into_connection();
    let err = LockHolders::all(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedBackend {
                backend: DbBackend::Sqlite,
                ..
            }
        ),
        "{err:?}"
    );
}

/// The example, run as a user runs it, while pull request 123's key is held and awaited: its
/// table shows both sessions; `--key` of a free key prints the empty answer; `--probe` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_prints_who_holds_a_pull_requests_key() {
    let test_db = TestDb::new().await;
    let holder_db = session(&test_db, "holder").await;
    let waiter_db = session(&test_db, "waiter").await;
    let observer = test_db.connect(1).await;
    let key = key_of(123);
    let holder = holder_db.begin().await.unwrap();
    let holder_pid = pid(&holder).await;
    acquire_advisory_lock(&holder, key, Wait::No).await.unwrap();
    let waiter = tokio::spawn(async move {
        let txn = waiter_db.begin().await.unwrap();
        acquire_advisory_lock(&txn, key, Wait::Timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        txn.commit().await.unwrap();
    });
    until_waiters(&observer, key, 1).await;

    let run = |args: &'static [&'static str]| {
        tokio::process::Command::new(example_binary("lock_holders"))
            .args(args)
            .env("DATABASE_URL", &test_db.url)
            .stdin(std::process::Stdio::null())
            .output()
    };
    let output = run(&["--pr", "123", "--probe"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("probe: "), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("(724609916, -2008521774)"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].contains(" held ") && rows[0].contains(&holder_pid.to_string()),
        "{stdout}"
    );
    assert!(rows[0].contains("holder"), "{stdout}");
    assert!(
        rows[1].contains(" waiting ") && rows[1].contains("waiter"),
        "{stdout}"
    );

    let output = run(&["--key", "-42"]).await.unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "no advisory locks held or awaited\n"
    );

    holder.commit().await.unwrap();
    waiter.await.unwrap();
}

/// axum handlers and `tokio::spawn` need `Send` futures; this does not compile otherwise.
#[tokio::test]
async fn lock_holders_and_probe_futures_are_send() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    let all = tokio::spawn({
        let db = db.clone();
        async move { LockHolders::all(&db).await }
    });
    assert!(all.await.unwrap().unwrap().is_empty());
    let of_pr = tokio::spawn({
        let db = db.clone();
        async move { PullRequest::lock_holders(&db, 1).await }
    });
    assert!(of_pr.await.unwrap().unwrap().is_empty());
    let probe = tokio::spawn(async move { sea_orm_idempotent::probe_advisory_locks(&db).await });
    probe.await.unwrap().unwrap();
}
