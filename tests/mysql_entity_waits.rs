//! MariaDB only: a call's wait on the *entity* table is bounded by its `Wait` and comes back
//! typed (found by the randomized checker, CHANGELOG "Known issues").
//!
//! Under READ COMMITTED, InnoDB's duplicate check on a UNIQUE index that meets delete-marked
//! records of the same key (a row of that key deleted and not yet purged) takes *shared
//! next-key* locks on them and on the next record: the inserting transaction then holds the
//! gap up to the next key until it ends. Here a caller's transaction inserts key 10 over the
//! deleted rows 10 and 20, and holds the gap (10, 20). A call for key 15 waits for that gap
//! with its guarded insert, and while it waits that `INSERT ... SELECT` holds the table's
//! AUTO-INC lock (`innodb_autoinc_lock_mode = 1`), so inserts of every other key of the table
//! wait too, and time out with error 1467 ("Failed to read auto-increment value from storage
//! engine"), not 1205. Before the fix the entity table's statements were not bounded at all:
//! whatever its `Wait`, a call waited for `innodb_lock_wait_timeout` (50 s), then failed with
//! a raw `Error::Database` 1205 or 1467.
#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use common::new_pr;
use entity::PullRequest;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, Statement,
    TransactionTrait,
};
use sea_orm_idempotent::{Error, IdempotentCreate, Wait};
use test_support::TestDb;

/// How long a call may take here: far below `innodb_lock_wait_timeout` (50 s), far above the
/// bounds asked for (whole seconds on MariaDB, plus slack).
const PATIENCE: Duration = Duration::from_secs(15);

/// A caller's transaction holding the gap (10, 20) of `pull_requests`' unique index on
/// `pr_id`, and what keeps it there.
struct Gap {
    test_db: TestDb,
    /// An old read view: purge cannot remove the deleted rows' index records meanwhile.
    purge_blocker: DatabaseTransaction,
    holder: DatabaseTransaction,
}

impl Gap {
    async fn open() -> Option<Gap> {
        let test_db = TestDb::mysql().await?;
        let pool = test_db.connect(2).await;
        let purge_blocker = test_db.connect(1).await.begin().await.unwrap();
        purge_blocker
            .execute_unprepared("SELECT COUNT(*) FROM pull_requests")
            .await
            .unwrap();
        for key in [10, 20] {
            PullRequest::create_once(&pool, key, new_pr(key))
                .await
                .unwrap();
        }
        pool.execute_unprepared("DELETE FROM pull_requests")
            .await
            .unwrap();
        let holder = read_committed(&test_db.connect(1).await).await;
        let outcome = PullRequest::create_once(&holder, 10, new_pr(10))
            .await
            .unwrap();
        assert!(outcome.is_created());
        Some(Gap {
            test_db,
            purge_blocker,
            holder,
        })
    }

    async fn close(self) {
        self.holder.rollback().await.unwrap();
        self.purge_blocker.rollback().await.unwrap();
    }
}

async fn read_committed(db: &DatabaseConnection) -> DatabaseTransaction {
    db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await
        .unwrap()
}

/// Runs a call, failing the test if it is not over within [`PATIENCE`]; its result and how
/// long it took.
async fn timed<T>(what: &str, call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(PATIENCE, call).await {
        Ok(result) => (result, started.elapsed()),
        Err(_) => panic!("{what}: still waiting after {PATIENCE:?}: its wait is not bounded"),
    }
}

fn assert_timeout<T: std::fmt::Debug>(
    what: &str,
    result: &Result<T, Error>,
    expected: Option<Duration>,
) {
    match result {
        Err(err @ Error::LockTimeout { timeout, .. }) => {
            assert_eq!(*timeout, expected, "{what}: {err:?}");
            assert!(err.is_retryable(), "{what}: {err:?}");
        }
        other => panic!("{what}: expected Error::LockTimeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_another_transactions_gap_lock_honours_its_bound() {
    let Some(gap) = Gap::open().await else {
        return;
    };
    let pool = gap.test_db.connect(2).await;

    let (busy, _) = timed(
        "key 15 with Wait::No",
        PullRequest::once(15, new_pr(15)).wait(Wait::No).exec(&pool),
    )
    .await;
    assert!(
        matches!(busy, Err(Error::LockBusy { .. })),
        "key 15 with Wait::No: {busy:?}"
    );

    let second = Duration::from_secs(1);
    let (bounded, took) = timed(
        "key 15 with a 1 s bound",
        PullRequest::once(15, new_pr(15))
            .wait(Wait::Timeout(second))
            .exec(&pool),
    )
    .await;
    assert_timeout("key 15 with a 1 s bound", &bounded, Some(second));
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // In a caller's transaction: typed too, and the transaction goes on (1205 undid only the
    // statement).
    let txn = read_committed(&pool).await;
    let (bounded, _) = timed(
        "key 15 with a 1 s bound in a caller's transaction",
        PullRequest::once(15, new_pr(15))
            .wait(Wait::Timeout(second))
            .exec(&txn),
    )
    .await;
    assert_timeout("key 15 in a caller's transaction", &bounded, Some(second));
    let outside = PullRequest::create_once(&txn, 30, new_pr(30)).await;
    assert!(
        outside.as_ref().is_ok_and(|o| o.is_created()),
        "key 30 after the timeout, in the same transaction: {outside:?}"
    );
    txn.commit().await.unwrap();
    gap.close().await;
}

/// While a call waits for the gap, its `INSERT ... SELECT` holds the table's AUTO-INC lock:
/// a call for a key outside the gap waits for that, and its timeout is error 1467.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_the_auto_increment_lock_honours_its_bound() {
    let Some(gap) = Gap::open().await else {
        return;
    };
    let pool = gap.test_db.connect(3).await;
    let observer = gap.test_db.connect(1).await;
    let in_the_gap = tokio::spawn({
        let pool = pool.clone();
        async move {
            PullRequest::once(15, new_pr(15))
                .wait(Wait::Timeout(Duration::from_secs(6)))
                .exec(&pool)
                .await
        }
    });
    // Until key 15's insert runs, i.e. waits (PROCESSLIST: InnoDB's INNODB_TRX is a cache
    // that a poller keeps stale, see tests/common/mysql.rs).
    until_an_insert_waits(&observer, "key 15").await;

    let second = Duration::from_secs(1);
    let (bounded, took) = timed(
        "key 40 with a 1 s bound",
        PullRequest::once(40, new_pr(40))
            .wait(Wait::Timeout(second))
            .exec(&pool),
    )
    .await;
    assert_timeout("key 40 behind the AUTO-INC lock", &bounded, Some(second));
    assert!(took < Duration::from_secs(4), "took {took:?}");

    let (in_the_gap, _) = timed("key 15 with a 6 s bound", in_the_gap).await;
    assert_timeout(
        "key 15 with a 6 s bound",
        &in_the_gap.unwrap(),
        Some(Duration::from_secs(6)),
    );
    gap.close().await;
}

/// `Wait::Forever` on the entity table: the server's own `innodb_lock_wait_timeout` (the
/// session's here: 1 s) ends the wait, as `Error::LockTimeout` without a bound of the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_bound_times_out_typed_at_the_servers_bound() {
    let Some(gap) = Gap::open().await else {
        return;
    };
    // One connection, so the session setting stays with every statement of the call.
    let pool = gap.test_db.connect(1).await;
    pool.execute_unprepared("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let (forever, _) = timed(
        "key 15 with Wait::Forever",
        PullRequest::create_once(&pool, 15, new_pr(15)),
    )
    .await;
    assert_timeout("key 15 with Wait::Forever", &forever, None);
    gap.close().await;
}

/// Error 1467 is also InnoDB's report of a *deadlock* found when a wait for the AUTO-INC lock
/// begins, after which it has rolled the whole transaction back: C holds key 50 (inside its
/// `make_data`), H holds the gap and waits for key 50, B waits for H's gap holding the
/// AUTO-INC lock, and C's insert of key 50 then waits for B: a cycle, whose victim is C (the
/// lightest: H and B carry ballast rows). C must hear `Error::Deadlock`, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_on_the_auto_increment_lock_is_a_deadlock() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let pool = test_db.connect(3).await;
    let observer = test_db.connect(1).await;
    observer
        .execute_unprepared("CREATE TABLE ballast (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    let purge_blocker = test_db.connect(1).await.begin().await.unwrap();
    purge_blocker
        .execute_unprepared("SELECT COUNT(*) FROM pull_requests")
        .await
        .unwrap();
    for key in [10, 20] {
        PullRequest::create_once(&pool, key, new_pr(key))
            .await
            .unwrap();
    }
    pool.execute_unprepared("DELETE FROM pull_requests")
        .await
        .unwrap();
    // H: the gap (10, 20).
    let h = read_committed(&test_db.connect(1).await).await;
    ballast(&h, 0).await;
    assert!(
        PullRequest::create_once(&h, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );

    // C: holds key 50 until told to go on.
    let (holding_tx, holding) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let c = tokio::spawn({
        let pool = pool.clone();
        async move {
            PullRequest::create_once_with(&pool, 50, || async move {
                holding_tx.send(()).unwrap();
                go.await.unwrap();
                Ok::<_, std::convert::Infallible>(new_pr(50))
            })
            .await
        }
    });
    holding.await.unwrap();
    // H waits for key 50.
    let h_waits = tokio::spawn(async move {
        let result = PullRequest::create_once(&h, 50, new_pr(50)).await;
        (h, result)
    });
    common::until_someone_waits(&observer, common::key_of(50)).await;
    // B waits for H's gap, holding the AUTO-INC lock.
    let b = read_committed(&test_db.connect(1).await).await;
    ballast(&b, 1000).await;
    let b_waits = tokio::spawn(async move {
        let result = PullRequest::once(15, new_pr(15))
            .wait(Wait::Timeout(Duration::from_secs(20)))
            .exec(&b)
            .await;
        (b, result)
    });
    until_an_insert_waits(&observer, "key 15").await;

    go_tx.send(()).unwrap();
    let (c, _) = timed("C, key 50", c).await;
    let c = c.unwrap();
    assert!(
        matches!(c, Err(Error::Deadlock { .. })),
        "C, key 50, closing the cycle on the AUTO-INC lock: {c:?}"
    );
    // C rolled back: H gets key 50 and inserts it, waiting for B's AUTO-INC lock while B
    // waits for H's gap: another cycle, whose victim is B.
    let (h_waits, _) = timed("H, key 50", h_waits).await;
    let (h, h_result) = h_waits.unwrap();
    assert!(h_result.is_ok(), "H, key 50: {h_result:?}");
    h.rollback().await.unwrap();
    let (b_waits, _) = timed("B, key 15", b_waits).await;
    let (b, b_result) = b_waits.unwrap();
    assert!(
        matches!(b_result, Ok(_) | Err(Error::Deadlock { .. })),
        "B, key 15: {b_result:?}"
    );
    b.rollback().await.unwrap();
    purge_blocker.rollback().await.unwrap();
}

/// Polls the server until another session's insert into `pull_requests` is running (waiting
/// for a lock), failing the test after [`PATIENCE`].
async fn until_an_insert_waits(observer: &DatabaseConnection, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting = observer
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND ID <> CONNECTION_ID() \
                 AND INFO LIKE '%INSERT INTO `pull_requests`%'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{what}'s insert never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes `txn` heavier in InnoDB's eyes (200 rows written): not a deadlock's victim.
async fn ballast(txn: &DatabaseTransaction, from: i32) {
    let values: Vec<String> = (from..from + 200).map(|id| format!("({id})")).collect();
    let sql = format!("INSERT INTO ballast (id) VALUES {}", values.join(", "));
    txn.execute_unprepared(&sql).await.unwrap();
}
