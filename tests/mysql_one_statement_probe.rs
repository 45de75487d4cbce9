//! Adversarial probes of MariaDB's one-statement path (src/backend/mysql/one_statement.rs):
//! on a pool whose sessions are READ COMMITTED, a create-only call with data in hand is one
//! autocommit `INSERT ... SELECT ... FROM sea_orm_idempotent_lock_slots ... FOR UPDATE NOWAIT
//! RETURNING`. Each test races it against another taker of the same keys and checks the
//! promise: one row per key, exactly one `Created` per key among all callers, no unique
//! violation reaching a caller, `LockBusy`/`LockTimeout` only where the key is really held,
//! and no connection left inside a transaction. The comment on each test says which break it
//! catches.
//!
//! (Over 450 lines, one file: the probes are one matrix of the path against every other taker
//! of its keys, on the same pools and checks; read together they show what was tried.)

#![cfg(feature = "mysql")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::mysql::{ids_of_one_slot, number, read_committed_pool};
use common::{is_unique_violation, new_pr, raw_lock_taker, rows_for, total_rows};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, IsolationLevel, TransactionTrait};
use sea_orm_idempotent::{Change, Error, IdempotentCreate, Wait, mysql_lock_slot};
use test_support::TestDb;
use tokio::sync::Barrier;

/// One way of taking a key, raced against the others.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// `create_once` (the one statement on a READ COMMITTED pool; the locked path elsewhere).
    Create,
    /// `create_once_with`: the locked path (`make_data` runs under the lock).
    CreateWith,
    /// `once(..).update(..)`: the update form, always locked.
    Update,
    /// `create_once` with `Wait::No`: `LockBusy` allowed.
    WaitNo,
    /// `create_once` with a short `Wait::Timeout`: `LockTimeout` allowed.
    WaitShort,
    /// The advisory lock in a transaction at this level, a look, a plain `INSERT`.
    Raw(IsolationLevel),
    /// `create_once` in the caller's fresh transaction at this level, then commit.
    InTxn(IsolationLevel),
}

/// What a race saw.
#[derive(Default)]
struct Seen {
    created: AtomicUsize,
    busy: AtomicUsize,
    violations: AtomicUsize,
}

/// Every `(pool, role)` takes every key of `keys`, all at once per key; panics on any error
/// its role does not allow. Then: one row per key, one creator per key, no unique violation.
async fn race(keys: Vec<i64>, takers: Vec<(DatabaseConnection, Role)>) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let barrier = Arc::new(Barrier::new(takers.len()));
    let tasks: Vec<_> = takers
        .into_iter()
        .enumerate()
        .map(|(task, (db, role))| {
            let (seen, barrier, keys) = (seen.clone(), barrier.clone(), keys.clone());
            tokio::spawn(async move {
                for (round, pr_id) in keys.into_iter().enumerate() {
                    barrier.wait().await;
                    // Every other round, odd tasks a moment late: the one statement then meets
                    // holders mid-transaction.
                    if (round + task) % 2 == 1 {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    let made: Result<bool, Error> = match role {
                        Role::Create => PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                            .await
                            .map(|o| o.is_created()),
                        Role::CreateWith => {
                            PullRequest::create_once_with(&db, pr_id, || async move {
                                Ok::<_, std::io::Error>(new_pr(pr_id))
                            })
                            .await
                            .map(|o| o.is_created())
                        }
                        Role::Update => PullRequest::once(pr_id, new_pr(pr_id))
                            .update(|_, _| Change::Keep)
                            .exec(&db)
                            .await
                            .map(|o| matches!(o, sea_orm_idempotent::UpsertOutcome::Created(_))),
                        Role::WaitNo | Role::WaitShort => {
                            let wait = match role {
                                Role::WaitNo => Wait::No,
                                _ => Wait::Timeout(Duration::from_millis(20)),
                            };
                            match PullRequest::once(pr_id, new_pr(pr_id))
                                .wait(wait)
                                .exec(&db)
                                .await
                            {
                                Err(Error::LockBusy { .. } | Error::LockTimeout { .. }) => {
                                    seen.busy.fetch_add(1, Ordering::Relaxed);
                                    Ok(false)
                                }
                                other => other.map(|o| o.is_created()),
                            }
                        }
                        Role::Raw(level) => match raw_lock_taker(&db, level, pr_id, 10).await {
                            Ok(made) => Ok(made),
                            Err(err) if is_unique_violation(&err) => {
                                seen.violations.fetch_add(1, Ordering::Relaxed);
                                Ok(false)
                            }
                            Err(err) => panic!("raw lock-taker ({level:?}), pr_id {pr_id}: {err}"),
                        },
                        Role::InTxn(level) => {
                            let txn = db.begin_with_config(Some(level), None).await.unwrap();
                            let made = PullRequest::create_once(&txn, pr_id, new_pr(pr_id))
                                .await
                                .map(|o| o.is_created());
                            if made.is_ok() {
                                txn.commit().await.unwrap();
                            }
                            made
                        }
                    };
                    match made {
                        Ok(true) => {
                            seen.created.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(err) => panic!("{role:?} (task {task}), pr_id {pr_id}: {err:?}"),
                    }
                }
            })
        })
        .collect();
    let mut panics = Vec::new();
    for task in tasks {
        if let Err(err) = task.await {
            panics.push(err.to_string());
        }
    }
    assert!(panics.is_empty(), "callers failed: {panics:#?}");
    seen
}

/// One row per key in `keys` and `created` creators.
async fn one_row_each(db: &DatabaseConnection, keys: &[i64], seen: &Seen) {
    assert_eq!(
        seen.violations.load(Ordering::Relaxed),
        0,
        "raw lock-takers met unique violations"
    );
    assert_eq!(
        seen.created.load(Ordering::Relaxed),
        keys.len(),
        "creators (one per key)"
    );
    assert_eq!(total_rows(db).await, keys.len() as u64);
    for &pr_id in keys {
        assert_eq!(rows_for(db, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// READ COMMITTED pools (the one statement) and REPEATABLE READ pools (the locked path, raw
/// lock-takers at both levels, and create_once inside a caller's REPEATABLE READ transaction)
/// on one database, every caller of a key at once. Catches: a one statement that slips past a
/// holder in a REPEATABLE READ session (a second row, or a raw lock-taker's unique
/// violation), a caller's transaction refused with `UnsafeIsolation` or a deadlock although
/// it read nothing before the call, two `Created` for one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_isolation_pools_race_the_same_keys() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = [
        read_committed_pool(&test_db, 6).await,
        read_committed_pool(&test_db, 6).await,
    ];
    let rr = test_db.connect(8).await;
    assert_eq!(
        number(&rr, "SELECT @@tx_isolation = 'REPEATABLE-READ'").await,
        1
    );
    let takers = vec![
        (rc[0].clone(), Role::Create),
        (rc[1].clone(), Role::Create),
        (rc[0].clone(), Role::Raw(IsolationLevel::ReadCommitted)),
        (rr.clone(), Role::Create),
        (rr.clone(), Role::CreateWith),
        (rr.clone(), Role::Raw(IsolationLevel::RepeatableRead)),
        (rr.clone(), Role::InTxn(IsolationLevel::RepeatableRead)),
        (rc[1].clone(), Role::InTxn(IsolationLevel::RepeatableRead)),
    ];
    let keys: Vec<i64> = (1..=40).collect();
    let seen = race(keys.clone(), takers).await;
    one_row_each(&rr, &keys, &seen).await;
}

/// `Wait::No` and `Wait::Timeout` callers (on REPEATABLE READ and READ COMMITTED pools) race
/// the one statement, the locked path and raw lock-takers on the same keys. Catches: a
/// short-waiting caller that writes a second row or a `Created` beside another's, or that
/// fails with anything but `LockBusy`/`LockTimeout` (a 1205 of the statement leaking as a
/// database error, a unique violation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_waits_race_the_one_statement() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = [
        read_committed_pool(&test_db, 6).await,
        read_committed_pool(&test_db, 6).await,
    ];
    let rr = test_db.connect(6).await;
    let takers = vec![
        (rc[0].clone(), Role::Create),
        (rc[1].clone(), Role::Create),
        (rc[1].clone(), Role::WaitNo),
        (rc[0].clone(), Role::WaitShort),
        (rr.clone(), Role::WaitNo),
        (rr.clone(), Role::WaitShort),
        (rr.clone(), Role::CreateWith),
        (rr.clone(), Role::Raw(IsolationLevel::ReadCommitted)),
    ];
    let keys: Vec<i64> = (1..=40).collect();
    let seen = race(keys.clone(), takers).await;
    one_row_each(&rr, &keys, &seen).await;
}

/// `Wait::No` (and 1 ms `Wait::Timeout`) calls on `waiters`, one at a time, of 200 keys
/// nobody else takes (their slots too), while 4 tasks on `hammers` create other keys of the
/// same table as fast as they can. Panics on any error but a `Wait::No` call's `LockBusy`,
/// and unless each key busy answered has no row (then its retry creates it) and each other
/// key one. The number of busy answers.
async fn busy_for_free_keys(hammers: &DatabaseConnection, waiters: &DatabaseConnection) -> usize {
    let mine: Vec<i64> = (1_000_000..1_000_200).collect();
    let my_slots: std::collections::HashSet<u32> = mine
        .iter()
        .map(|id| mysql_lock_slot(common::key_of(*id)))
        .collect();
    let others: Vec<i64> = (1..)
        .filter(|id| !my_slots.contains(&mysql_lock_slot(common::key_of(*id))))
        .take(1500)
        .collect();
    let others = Arc::new(others);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let (db, others, stop) = (hammers.clone(), others.clone(), stop.clone());
            tokio::spawn(async move {
                for pr_id in others.iter().skip(task).step_by(4) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    PullRequest::create_once(&db, *pr_id, new_pr(*pr_id))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut busy = Vec::new();
    for (n, pr_id) in mine.iter().enumerate() {
        let wait = if n % 2 == 0 {
            Wait::No
        } else {
            Wait::Timeout(Duration::from_millis(1))
        };
        match PullRequest::once(*pr_id, new_pr(*pr_id))
            .wait(wait)
            .exec(waiters)
            .await
        {
            Ok(outcome) => assert!(outcome.is_created(), "pr_id {pr_id}"),
            // Allowed (`Error::LockBusy`'s docs): a lock the row's insert needs on the entity
            // table, here the AUTO-INC lock of another key's `INSERT ... SELECT`.
            Err(Error::LockBusy { .. }) if wait == Wait::No => busy.push(*pr_id),
            Err(err) => panic!("pr_id {pr_id} ({wait:?}): {err:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // Nothing written by a busy call; its retry creates the row.
    for pr_id in &mine {
        let rows = rows_for(waiters, *pr_id).await;
        assert_eq!(rows, u64::from(!busy.contains(pr_id)), "pr_id {pr_id}");
    }
    for pr_id in &busy {
        assert!(
            PullRequest::create_once(waiters, *pr_id, new_pr(*pr_id))
                .await
                .unwrap()
                .is_created()
        );
    }
    busy.len()
}

/// `Wait::No` and 1 ms `Wait::Timeout` calls (the one statement, on a READ COMMITTED pool) of
/// keys nobody holds, while one-statement calls of other keys (other slots) insert into the
/// same table. A `Wait::No` call may answer `LockBusy` there (a few in 200: the AUTO-INC lock
/// of another key's `INSERT ... SELECT`, which `Error::LockBusy`'s docs allow; the locked path
/// answers so too, next test). Catches: any other error (a `Wait::Timeout` call refused
/// before its bound, the statement's 1205 leaking as a database error), a busy call that
/// wrote its row, a busy call's retry that does not create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_waits_of_free_keys_beside_one_statement_inserts() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 8).await;
    let busy = busy_for_free_keys(&rc, &rc).await;
    eprintln!("{busy} busy of 200 (one statement)");
}

/// The same on the locked path only (REPEATABLE READ pools): a false busy there too, so it is
/// not the one statement's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_waits_of_free_keys_beside_locked_path_inserts() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rr = test_db.connect(8).await;
    let busy = busy_for_free_keys(&rr, &rr).await;
    eprintln!("{busy} busy of 200 (locked path)");
}

/// The update form and `create_once_with` on a READ COMMITTED pool race the one statement on
/// another. Catches: the one statement inserting while the update form holds the key (two
/// rows, or an `Updated`/`Unchanged` answer plus a second `Created`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_update_form_races_the_one_statement() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = [
        read_committed_pool(&test_db, 6).await,
        read_committed_pool(&test_db, 6).await,
        read_committed_pool(&test_db, 6).await,
    ];
    let takers = vec![
        (rc[0].clone(), Role::Create),
        (rc[0].clone(), Role::Create),
        (rc[1].clone(), Role::Update),
        (rc[1].clone(), Role::Update),
        (rc[2].clone(), Role::CreateWith),
        (rc[2].clone(), Role::Create),
        (rc[2].clone(), Role::InTxn(IsolationLevel::ReadCommitted)),
    ];
    let keys: Vec<i64> = (1..=40).collect();
    let seen = race(keys.clone(), takers).await;
    one_row_each(&rc[0], &keys, &seen).await;
}

/// Keys that share one lock slot, raced by the one statement (two pools), the locked path
/// and raw lock-takers. Catches: the statement's guard confusing keys of one slot (a key's
/// row taken as another's), a wait on the slot turning into an error, a second row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colliding_keys_of_one_slot_race() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = [
        read_committed_pool(&test_db, 6).await,
        read_committed_pool(&test_db, 6).await,
    ];
    let rr = test_db.connect(6).await;
    let (ids, _slot) = ids_of_one_slot(1, 8);
    // Each round races neighbouring keys of the slot: task t takes ids[(round + t) % 8].
    let seen = Arc::new(Seen::default());
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8usize)
        .map(|task| {
            let db = match task % 3 {
                0 => rc[0].clone(),
                1 => rc[1].clone(),
                _ => rr.clone(),
            };
            let (seen, barrier, ids) = (seen.clone(), barrier.clone(), ids.clone());
            tokio::spawn(async move {
                for round in 0..24usize {
                    barrier.wait().await;
                    let pr_id = ids[(round / 3 + task) % ids.len()];
                    let made = match task % 4 {
                        3 => raw_lock_taker(&db, IsolationLevel::ReadCommitted, pr_id, 10)
                            .await
                            .unwrap_or_else(|err| {
                                assert!(!is_unique_violation(&err), "pr_id {pr_id}: {err}");
                                panic!("pr_id {pr_id}: {err}")
                            }),
                        2 => PullRequest::create_once_with(&db, pr_id, || async move {
                            Ok::<_, std::io::Error>(new_pr(pr_id))
                        })
                        .await
                        .unwrap()
                        .is_created(),
                        _ => PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                            .await
                            .unwrap_or_else(|err| panic!("pr_id {pr_id}: {err:?}"))
                            .is_created(),
                    };
                    if made {
                        seen.created.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    one_row_each(&rr, &ids, &seen).await;
}

/// A call inside `make_data` of another call, on the same READ COMMITTED pool: of a key of
/// another slot, and of another key of the outer key's slot. Catches: the inner one statement
/// hanging or deadlocking on the slot the outer call holds (where the locked path answers),
/// and the inner call's row written twice. The same on a REPEATABLE READ pool (the locked
/// path) tells what the locked path answers; the one statement must answer the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_inside_make_data_of_another() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 4).await;
    let rr = test_db.connect(4).await;
    let (same_slot, _) = ids_of_one_slot(10_000, 4);
    let other_slot = (20_000..)
        .find(|id| mysql_lock_slot(common::key_of(*id)) != mysql_lock_slot(common::key_of(1)))
        .unwrap();
    let mut answers = Vec::new();
    for (db, outer, inner) in [
        (&rc, 1, other_slot),
        (&rc, same_slot[0], same_slot[1]),
        (&rr, 2, other_slot + 1),
        (&rr, same_slot[2], same_slot[3]),
    ] {
        let inner_db = db.clone();
        let call = PullRequest::create_once_with(db, outer, move || async move {
            PullRequest::create_once(&inner_db, inner, new_pr(inner))
                .await
                .map(|o| o.is_created())
                .map_err(|err| format!("{err:?}"))?;
            Ok::<_, String>(new_pr(outer))
        });
        let answer = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .map(|r| r.map(|o| o.is_created()).map_err(|err| format!("{err:?}")));
        answers.push(format!("{outer} then {inner}: {answer:?}"));
    }
    // The one statement (first two) answers as the locked path (last two) does.
    let kind = |a: &String| {
        if a.contains("Ok(Ok(true))") {
            "created"
        } else if a.contains("Elapsed") {
            "hung"
        } else if a.contains("Reentrant") {
            "reentrant"
        } else {
            "other"
        }
    };
    assert_eq!(kind(&answers[0]), kind(&answers[2]), "{answers:#?}");
    assert_eq!(kind(&answers[1]), kind(&answers[3]), "{answers:#?}");
    assert_eq!(kind(&answers[0]), "created", "{answers:#?}");
    for pr_id in [1, 2, other_slot, other_slot + 1] {
        assert_eq!(rows_for(&rc, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// A writer that bypasses the lock inserts a key and holds it uncommitted while one-statement
/// calls of the key run (waiting forever, and with a short timeout), then commits. Catches:
/// a call that creates a second row or `Created` beside the writer's, a unique violation
/// reaching a caller, a short-waiting call failing with anything but `LockTimeout`, or a
/// waiting call not answering `Existing` once the writer commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_that_bypasses_the_lock_holds_the_key_uncommitted() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 8).await;
    let writer_pool = test_db.connect(1).await;
    for pr_id in 1..=5i64 {
        let writer = writer_pool.begin().await.unwrap();
        PullRequest::insert(PullRequest::new_active_model(&pr_id, new_pr(pr_id)))
            .exec(&writer)
            .await
            .unwrap();
        // Short waits first: the key is held by the writer, so LockTimeout is the answer.
        for wait in [Wait::No, Wait::Timeout(Duration::from_millis(50))] {
            let started = std::time::Instant::now();
            match PullRequest::once(pr_id, new_pr(pr_id))
                .wait(wait)
                .exec(&rc)
                .await
            {
                Err(Error::LockTimeout { .. } | Error::LockBusy { .. }) => {}
                other => panic!("pr_id {pr_id}, {wait:?} while the writer holds: {other:?}"),
            }
            // Bounded as asked (MariaDB rounds a timeout up to whole seconds).
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "pr_id {pr_id}, {wait:?}: {:?}",
                started.elapsed()
            );
        }
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let db = rc.clone();
                tokio::spawn(
                    async move { PullRequest::create_once(&db, pr_id, new_pr(pr_id)).await },
                )
            })
            .collect();
        // Until a waiter's insert waits on the writer's row (from the process list: InnoDB's
        // INNODB_TRX is a cache that a poller keeps stale).
        let admin = test_db.connect(1).await;
        let mut polls = 0;
        while number(
            &admin,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND ID <> CONNECTION_ID() \
               AND INFO LIKE 'INSERT INTO `pull_requests`%'",
        )
        .await
            == 0
        {
            polls += 1;
            assert!(polls < 10_000, "no waiter reached the writer's row");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.commit().await.unwrap();
        for waiter in waiters {
            let outcome = waiter.await.unwrap();
            match outcome {
                Ok(outcome) => assert!(!outcome.is_created(), "pr_id {pr_id}: Created"),
                Err(err) => panic!("pr_id {pr_id}: {err:?}"),
            }
        }
        assert_eq!(rows_for(&rc, pr_id).await, 1, "pr_id {pr_id}");
    }
    // Every call ended: no statement of the pool still runs (none was left waiting; a
    // connection closing may show for a moment, a waiter would for 50 s).
    let mut running = Vec::new();
    for _ in 0..200 {
        running = writer_pool
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::MySql,
                "SELECT CONCAT_WS(' | ', ID, COMMAND, STATE, INFO) AS d \
                 FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND <> 'Sleep'",
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String>("", "d").unwrap())
            .collect::<Vec<String>>();
        if running.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running.is_empty(), "{running:#?}");
}

/// One pooled connection's session switched to REPEATABLE READ after the pool learnt that its
/// sessions are READ COMMITTED, while calls of its keys race another READ COMMITTED pool's.
/// The statement's `WHERE @@tx_isolation` keeps it from inserting in the REPEATABLE READ
/// session, and the call takes the locked path. Catches: a one statement run at REPEATABLE
/// READ (gap locks and the AUTO-INC lock, a deadlock), two `Created` for a key, a row missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_switched_to_repeatable_read_after_the_pool_learnt_its_level() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    // One connection: the SET reaches the connection later calls use.
    let switched = read_committed_pool(&test_db, 1).await;
    let other = read_committed_pool(&test_db, 4).await;
    assert!(
        PullRequest::create_once(&switched, 1, new_pr(1))
            .await
            .unwrap()
            .is_created()
    );
    switched
        .execute_unprepared("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    for pr_id in 2..=40i64 {
        let a = PullRequest::create_once(&switched, pr_id, new_pr(pr_id));
        let b = PullRequest::once(pr_id, new_pr(pr_id))
            .wait(Wait::Timeout(Duration::from_secs(3)))
            .exec(&other);
        let (a, b) = tokio::join!(a, b);
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_created() ^ b.is_created(), "pr_id {pr_id}");
    }
    let committed = test_db.connect(1).await;
    for pr_id in 1..=40 {
        assert_eq!(rows_for(&committed, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// A pooled session with `autocommit = 0` (a pool whose `after_connect` sets it, or a
/// `SET autocommit = 0` left on a connection), before the pool's first call and after it.
/// The locked path either commits its own transaction there or fails whole (MariaDB 10.11: its
/// `SET TRANSACTION ISOLATION LEVEL` meets the session's implicit transaction, error 1568, and
/// nothing is written); the one statement is not taken there (it asks `@@autocommit` with the
/// pool's isolation, and its `WHERE` checks the session). Catches: the one statement's implicit
/// transaction left open on the idle pooled connection: a `Created` answer for a row never
/// committed (invisible to every other session, and rolled back when the connection closes),
/// the key's slot still locked, so another pool's call of the key times out. It did, before
/// the statement checked autocommit: "the one statement's Created row: 0 committed rows, 2
/// open transactions; another pool's call of the key: Err(LockTimeout { .. })".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_with_autocommit_off() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let committed = test_db.connect(1).await;
    let other = read_committed_pool(&test_db, 2).await;
    // The locked path (a REPEATABLE READ pool), a READ COMMITTED pool switched before its
    // first call, and one switched after it.
    let locked = test_db.connect(1).await;
    let before = read_committed_pool(&test_db, 1).await;
    let after = read_committed_pool(&test_db, 1).await;
    assert!(
        PullRequest::create_once(&after, 100, new_pr(100))
            .await
            .unwrap()
            .is_created()
    );
    for (pr_id, db) in [(1, &locked), (2, &before), (3, &after)] {
        db.execute_unprepared("SET SESSION autocommit = 0")
            .await
            .unwrap();
        // Committed, or refused whole.
        let outcome = PullRequest::create_once(db, pr_id, new_pr(pr_id)).await;
        let rows = rows_for(&committed, pr_id).await;
        match &outcome {
            Ok(outcome) => assert!(
                outcome.is_created() && rows == 1,
                "pr_id {pr_id}: {outcome:?} with {rows} committed rows"
            ),
            Err(_) => assert_eq!(rows, 0, "pr_id {pr_id}: {outcome:?}"),
        }
        // The key is free for another pool's call, which finds what committed.
        let again = PullRequest::once(pr_id, new_pr(pr_id))
            .wait(Wait::Timeout(Duration::from_secs(2)))
            .exec(&other)
            .await
            .unwrap_or_else(|err| panic!("pr_id {pr_id}: another pool's call: {err:?}"));
        assert_eq!(again.is_created(), outcome.is_err(), "pr_id {pr_id}");
        assert_eq!(rows_for(&committed, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// Connections of the one-statement pool killed (`KILL CONNECTION`) by an admin while calls
/// of new and stored keys run. A call may fail with the lost connection; then its retry
/// answers. Catches: a key stored twice, two `Created` for one key (a `Created` beside a
/// retry's `Created`), a unique violation reaching a caller, a pooled connection left in a
/// transaction holding a slot (later calls of the slot's keys then hang: bounded here by a
/// 10 s `Wait::Timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_during_one_statement_calls() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 6).await;
    let admin = test_db.connect(1).await;
    let me = number(&admin, "SELECT CAST(CONNECTION_ID() AS SIGNED)").await;
    const KEYS: i64 = 150;
    let created = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6i64)
        .map(|task| {
            let (db, created, failed, done) =
                (rc.clone(), created.clone(), failed.clone(), done.clone());
            tokio::spawn(async move {
                for n in 0..KEYS {
                    // Each key by two neighbouring tasks.
                    let pr_id = (task / 2) * KEYS + n + 1;
                    loop {
                        match PullRequest::once(pr_id, new_pr(pr_id))
                            .wait(Wait::Timeout(Duration::from_secs(10)))
                            .exec(&db)
                            .await
                        {
                            Ok(outcome) => {
                                if outcome.is_created() {
                                    created.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            Err(Error::LockTimeout { .. }) => {
                                panic!("pr_id {pr_id}: the lock held 10 s")
                            }
                            Err(err) => {
                                let text = format!("{err:?}");
                                assert!(
                                    !text.contains("1062") && !text.contains("Duplicate"),
                                    "pr_id {pr_id}: {text}"
                                );
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut kills = 0;
    while done.load(Ordering::Relaxed) < (6 * KEYS) as usize - 20 && kills < 60 {
        let ids = admin
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::MySql,
                format!(
                    "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
                     WHERE DB = DATABASE() AND ID <> {me} AND INFO LIKE 'INSERT%'"
                ),
            ))
            .await
            .unwrap();
        for row in ids {
            let id: i64 = row.try_get("", "id").unwrap();
            if admin
                .execute_unprepared(&format!("KILL CONNECTION {id}"))
                .await
                .is_ok()
            {
                kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut panics = Vec::new();
    for task in tasks {
        if let Err(err) = task.await {
            panics.push(err.to_string());
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
    assert!(kills > 0, "no statement was killed");
    eprintln!(
        "kills {kills}, failed calls {}",
        failed.load(Ordering::Relaxed)
    );
    let keys = 3 * KEYS;
    assert_eq!(total_rows(&admin).await, keys as u64);
    for pr_id in 1..=keys {
        assert_eq!(rows_for(&admin, pr_id).await, 1, "pr_id {pr_id}");
    }
    assert!(
        created.load(Ordering::Relaxed) <= keys as usize,
        "{} Created for {keys} keys",
        created.load(Ordering::Relaxed)
    );
}

/// Whether a call on `db` (one connection) took the one statement: its session committed
/// nothing (the locked path commits its transaction; the statement runs in autocommit).
async fn commits(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SHOW SESSION STATUS LIKE 'Com_commit'",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<String>(1).unwrap().parse().unwrap()
}

/// Entities whose keys the path must or must not take.
mod shapes {
    macro_rules! shape {
        ($module:ident, $table:literal, $key:ty, $data:ty, $col:ident, ( $($field:ident: $ty:ty),* ), $new:expr) => {
            #[allow(unreachable_pub, dead_code)]
            pub(crate) mod $module {
                use sea_orm::ActiveValue::Set;
                use sea_orm::entity::prelude::*;

                #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
                #[sea_orm(table_name = $table)]
                pub struct Model {
                    #[sea_orm(primary_key)]
                    pub id: i64,
                    $(pub $field: $ty,)*
                }

                #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
                pub enum Relation {}

                impl ActiveModelBehavior for ActiveModel {}

                impl sea_orm_idempotent::IdempotentCreate for Entity {
                    type Key = $key;
                    type Data = $data;

                    fn key_column() -> Column {
                        Column::$col
                    }

                    fn new_active_model(_: &$key, v: $data) -> ActiveModel {
                        #[allow(clippy::redundant_closure_call)]
                        ($new)(v)
                    }
                }
            }
        };
    }

    shape!(plain, "plain", i64, String, K, (k: i64, v: String), |v| ActiveModel {
        v: Set(v),
        ..Default::default()
    });
    shape!(narrow, "narrow", i64, String, K, (k: i64, v: String), |v| ActiveModel {
        v: Set(v),
        ..Default::default()
    });
    shape!(with_other, "with_other", i64, String, K, (k: i64, v: String), |v| ActiveModel {
        v: Set(v),
        ..Default::default()
    });

    /// A composite integer key `(a, b)`.
    #[allow(unreachable_pub, dead_code)]
    pub(crate) mod pair {
        use sea_orm::ActiveValue::Set;
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "pair")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub a: i64,
            pub b: i64,
            pub v: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}

        impl sea_orm_idempotent::IdempotentCreate for Entity {
            type Key = (i64, i64);
            type Data = String;

            fn key_column() -> Column {
                Column::A
            }

            fn key_columns() -> Vec<Column> {
                vec![Column::A, Column::B]
            }

            fn new_active_model(_: &(i64, i64), v: String) -> ActiveModel {
                ActiveModel {
                    v: Set(v),
                    ..Default::default()
                }
            }
        }
    }
}

/// Which entities take the path: `plain` (bigint `k`, unique) and `pair` (bigint `(a, b)`,
/// unique over both) do; `with_other` (unique over `(k, v)`: not the key alone) and `narrow`
/// (an `int` column for an `i64` key) do not. Then a race of each on two pools: one row and
/// one creator per key. Catches: the path taken where no index covers exactly the key (the
/// `Com_commit` of the call's one connection unchanged), or not taken where one does, and
/// any second row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn which_keys_take_the_path_and_their_races() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let admin = test_db.connect(1).await;
    admin
        .execute_unprepared(
            "CREATE TABLE plain (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
               k bigint NOT NULL UNIQUE, v varchar(40) NOT NULL) ENGINE=InnoDB; \
             CREATE TABLE narrow (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
               k int NOT NULL UNIQUE, v varchar(40) NOT NULL) ENGINE=InnoDB; \
             CREATE TABLE with_other (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
               k bigint NOT NULL, v varchar(40) NOT NULL, UNIQUE KEY (k, v)) ENGINE=InnoDB; \
             CREATE TABLE pair (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
               a bigint NOT NULL, b bigint NOT NULL, v varchar(40) NOT NULL, \
               UNIQUE KEY (a, b)) ENGINE=InnoDB",
        )
        .await
        .unwrap();
    let one = read_committed_pool(&test_db, 1).await;
    macro_rules! took_path {
        ($entity:ty, $key:expr) => {{
            let before = commits(&one).await;
            let outcome = <$entity>::create_once(&one, $key, "v".to_owned())
                .await
                .unwrap();
            assert!(outcome.is_created());
            commits(&one).await == before
        }};
    }
    let took = [
        ("plain", took_path!(shapes::plain::Entity, 1)),
        ("pair", took_path!(shapes::pair::Entity, (1, 1))),
        ("with_other", took_path!(shapes::with_other::Entity, 1)),
        ("narrow", took_path!(shapes::narrow::Entity, 1)),
    ];
    assert_eq!(
        took,
        [
            ("plain", true),
            ("pair", true),
            ("with_other", false),
            ("narrow", false)
        ]
    );
    // The races: each key by 6 callers over two pools (one statement and locked path).
    let pools = [
        read_committed_pool(&test_db, 4).await,
        read_committed_pool(&test_db, 4).await,
    ];
    let created = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let tasks: Vec<_> = (0..6usize)
        .map(|task| {
            let (db, created, barrier) =
                (pools[task % 2].clone(), created.clone(), barrier.clone());
            tokio::spawn(async move {
                for k in 2..=21i64 {
                    barrier.wait().await;
                    let made = match task % 3 {
                        0 => shapes::pair::Entity::create_once(&db, (k, k % 3), "v".to_owned())
                            .await
                            .unwrap()
                            .is_created(),
                        1 => shapes::with_other::Entity::create_once(&db, k, "v".to_owned())
                            .await
                            .unwrap()
                            .is_created(),
                        _ => shapes::narrow::Entity::create_once(&db, k, "v".to_owned())
                            .await
                            .unwrap()
                            .is_created(),
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
    assert_eq!(created.load(Ordering::Relaxed), 3 * 20, "creators");
    for table in ["pair", "with_other", "narrow"] {
        assert_eq!(
            number(&admin, &format!("SELECT COUNT(*) FROM {table}")).await,
            21,
            "{table}"
        );
    }
}

/// The cause of the busy answers above, pinned: an `INSERT ... SELECT` of other keys (three
/// rows, a second apart: `SLEEP` in its `WHERE`) holds the table's AUTO-INC lock
/// (`innodb_autoinc_lock_mode` 1) from its first row to its end. Meanwhile a `Wait::No` call
/// of a key nobody holds (its slot free) answers `LockBusy` (`Error::LockBusy`'s docs: a lock
/// the row's insert needs on the entity table) and writes nothing, the same on a READ
/// COMMITTED pool (the one statement fails at once, `NOWAIT`, then the locked path's guarded
/// insert with a 0 s bound) as on a REPEATABLE READ one (the locked path only); a 3 s
/// `Wait::Timeout` call waits the bulk insert out and creates its row. Catches: the one
/// statement answering otherwise than the locked path (an error of its own, a row written by
/// a busy call), a wait not bounded as asked (a `Wait::Timeout` call that fails before its
/// bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_insert_holding_the_auto_inc_lock_busies_wait_no_alike_on_both_paths() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 2).await;
    let rr = test_db.connect(2).await;
    let bulk = test_db.connect(1).await;
    let bulk_id = number(&bulk, "SELECT CAST(CONNECTION_ID() AS SIGNED)").await;
    let slow = tokio::spawn(async move {
        bulk.execute_unprepared(
            "INSERT INTO pull_requests (pr_id, repository, number, title, author, state, \
               head_sha, first_delivery_id) \
             SELECT 5000000 + seq, 'r', 1, 't', 'a', 'open', 'h', 'd' FROM seq_1_to_3 \
             WHERE SLEEP(1) = 0",
        )
        .await
        .unwrap();
    });
    // Until its first row is in (the AUTO-INC lock taken): a second after it starts.
    let admin = test_db.connect(1).await;
    let mut polls = 0;
    while number(
        &admin,
        &format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID = {bulk_id} AND TIME_MS >= 1300"
        ),
    )
    .await
        == 0
    {
        polls += 1;
        assert!(polls < 10_000, "the bulk insert never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answers = Vec::new();
    for (name, db, pr_id) in [("read committed", &rc, 1i64), ("repeatable read", &rr, 2)] {
        let answer = PullRequest::once(pr_id, new_pr(pr_id))
            .wait(Wait::No)
            .exec(db)
            .await;
        let busy = matches!(answer, Err(Error::LockBusy { .. }));
        answers.push(format!(
            "{name}: busy {busy}, rows {}",
            rows_for(&admin, pr_id).await
        ));
    }
    assert_eq!(
        answers,
        [
            "read committed: busy true, rows 0",
            "repeatable read: busy true, rows 0"
        ]
    );
    let waited = PullRequest::once(3, new_pr(3))
        .wait(Wait::Timeout(Duration::from_secs(3)))
        .exec(&rc)
        .await;
    assert!(matches!(waited, Ok(ref o) if o.is_created()), "{waited:?}");
    slow.await.unwrap();
}

/// Writers that bypass the lock (a plain autocommit `INSERT` of the key, no lock, no look)
/// race one-statement calls (two READ COMMITTED pools) and the locked path of the same keys.
/// A writer may meet a unique violation (its own affair); a call never does. Catches: a
/// call's 1062 reaching the caller (the statement's duplicate not deferred, or the locked
/// path's retry not finding the row), a `Created` beside a writer's row, a second row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_that_bypass_the_lock_race_the_one_statement() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = [
        read_committed_pool(&test_db, 4).await,
        read_committed_pool(&test_db, 4).await,
    ];
    let writers = test_db.connect(4).await;
    const KEYS: i64 = 60;
    const TASKS: usize = 8;
    let created = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let db = match task % 4 {
                0 => rc[0].clone(),
                1 => rc[1].clone(),
                2 => rc[0].clone(),
                _ => writers.clone(),
            };
            let (created, written, barrier) = (created.clone(), written.clone(), barrier.clone());
            tokio::spawn(async move {
                for pr_id in 1..=KEYS {
                    barrier.wait().await;
                    match task % 4 {
                        3 => {
                            let row = PullRequest::new_active_model(&pr_id, new_pr(pr_id));
                            match PullRequest::insert(row).exec(&db).await {
                                Ok(_) => {
                                    written.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(err) if is_unique_violation(&err) => {}
                                Err(err) => panic!("writer, pr_id {pr_id}: {err}"),
                            }
                        }
                        2 => {
                            let made = PullRequest::create_once_with(&db, pr_id, || async move {
                                Ok::<_, std::io::Error>(new_pr(pr_id))
                            })
                            .await
                            .unwrap_or_else(|err| panic!("locked path, pr_id {pr_id}: {err:?}"));
                            if made.is_created() {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            let made = PullRequest::create_once(&db, pr_id, new_pr(pr_id))
                                .await
                                .unwrap_or_else(|err| panic!("pr_id {pr_id}: {err:?}"));
                            if made.is_created() {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        created.load(Ordering::Relaxed) + written.load(Ordering::Relaxed),
        KEYS as usize,
        "creators and writers"
    );
    assert_eq!(total_rows(&writers).await, KEYS as u64);
    for pr_id in 1..=KEYS {
        assert_eq!(rows_for(&writers, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// A session holds the entity table's metadata lock (`LOCK TABLES pull_requests READ`: reads
/// go on, writes wait) while `Wait::Timeout(1 s)` calls of new keys run, on a READ COMMITTED
/// pool (the one statement: `NOWAIT` ends its metadata wait at once, and the call takes the
/// locked path) and on a REPEATABLE READ one (the locked path). Catches: a wait not bounded
/// as the caller asked. Seen: on both pools the locked path's guarded insert (`SET STATEMENT
/// innodb_lock_wait_timeout = 1, max_statement_time = 0 FOR INSERT INTO pull_requests ...`)
/// waits "Waiting for table metadata lock" past 5 s, bounded only by `lock_wait_timeout`
/// (MariaDB's default: a year), which the call does not set, while its transaction holds the
/// key's slot (every other caller of the slot's keys waits too). The locked path's, not the
/// one statement's, which fails at once and defers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metadata_lock_on_the_table_bounds_no_wait_past_the_callers() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let rc = read_committed_pool(&test_db, 2).await;
    let rr = test_db.connect(2).await;
    // The pools have looked at the catalog and the lock table before the table is locked.
    for (db, pr_id) in [(&rc, 1i64), (&rr, 2)] {
        assert!(
            PullRequest::create_once(db, pr_id, new_pr(pr_id))
                .await
                .unwrap()
                .is_created()
        );
    }
    let holder = test_db.connect(1).await;
    holder
        .execute_unprepared("LOCK TABLES pull_requests READ")
        .await
        .unwrap();
    let mut answers = Vec::new();
    for (name, db, pr_id) in [("read committed", &rc, 3i64), ("repeatable read", &rr, 4)] {
        let started = std::time::Instant::now();
        let call = PullRequest::once(pr_id, new_pr(pr_id))
            .wait(Wait::Timeout(Duration::from_secs(1)))
            .exec(db);
        let answer = tokio::time::timeout(Duration::from_secs(5), call).await;
        // What waits, and for what.
        let waiting: Vec<String> = holder
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::MySql,
                "SELECT CONCAT_WS(' | ', STATE, LEFT(INFO, 150)) AS d \
                 FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND <> 'Sleep'",
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String>("", "d").unwrap())
            .collect();
        answers.push(format!(
            "{name}: {} after {:?}: {answer:?}; waiting: {waiting:?}",
            if answer.is_ok() {
                "answered"
            } else {
                "still waiting"
            },
            started.elapsed()
        ));
    }
    holder.execute_unprepared("UNLOCK TABLES").await.unwrap();
    assert!(
        answers.iter().all(|a| !a.contains("still waiting")),
        "{answers:#?}"
    );
}
