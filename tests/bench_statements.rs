//! The benchmark's strategy 6 (`benches/strategies/by_hand.rs`) claims to send exactly the
//! statements `create_once` sends, written by hand on sqlx, so that "crate / sqlx" measures
//! only the cost of SeaORM and the crate's code. Nothing in the compiler ties the two: this
//! test runs both against a real server, captures the statements each sends (sqlx's statement
//! log, read from its `sqlx::query` tracing events), and asserts they are the same, for a new
//! key, an existing key and a contended key.
//!
//! Catches: any change to the crate's SQL (text, order, round trips, transaction shape) that the
//! benchmark's copy did not follow. The fix is to update `by_hand.rs`, not this test.

#![cfg(feature = "postgres")]

#[path = "../benches/strategies/by_hand.rs"]
mod by_hand;
// by_hand.rs binds and decodes rows with the bench's `row.rs` (its MySQL decoder unused here).
mod common;
#[allow(dead_code)]
#[path = "../benches/strategies/row.rs"]
mod row;

use std::future::Future;
use std::sync::{Arc, Mutex};

use common::{key_of, new_pr, until_someone_waits};
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use sea_orm_idempotent::{IdempotentCreate, Outcome, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The statements sqlx logged, in order (`summary` is the first words; `db.statement` the
/// whole text when it is longer).
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct Statement {
    summary: String,
    full: String,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.full = value.trim().to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for Sent {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut statement = Statement::default();
            event.record(&mut statement);
            let sql = if statement.full.is_empty() {
                statement.summary
            } else {
                statement.full
            };
            self.0.lock().unwrap().push(sql);
        }
    }
}

/// Runs `call` and returns what it returned and the statements it sent, savepoint names
/// left out (sqlx and SeaORM name them differently; the shape is what must match), the lock
/// key's integers where they are written into the SQL left out (the two calls lock different
/// keys; see [`key_literals_left_out`]), and the
/// wait slices that ran out (a wait and its outcome, repeated) counted once, since how many
/// run out depends on the machine's speed.
async fn sent_by<T>(call: impl Future<Output = T>) -> (T, Vec<String>) {
    let sent = Sent::default();
    let out = {
        let _capture =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(sent.clone()));
        call.await
    };
    let mut statements: Vec<String> = Vec::new();
    for sql in sent.0.lock().unwrap().drain(..) {
        let sql = match sql.split_once("SAVEPOINT ") {
            Some((verb, _name)) => format!("{verb}SAVEPOINT"),
            None => key_literals_left_out(sql),
        };
        if sql == "ROLLBACK TO SAVEPOINT" {
            statements.truncate(statements.len().saturating_sub(2));
        } else {
            statements.push(sql);
        }
    }
    // A slice that ran out is followed by the same wait and outcome again: keep one.
    let mut i = 0;
    while i + 4 <= statements.len() {
        if statements[i..i + 2] == statements[i + 2..i + 4] && statements[i].starts_with("DO ") {
            statements.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
    (out, statements)
}

/// `pg_try_advisory_xact_lock(724609916, -2082672713)` (the key written out, in the
/// three-round-trip path's simple-protocol message) as `pg_try_advisory_xact_lock(<key>)`;
/// bound keys (`$1, $2`) stay as they are.
fn key_literals_left_out(sql: String) -> String {
    const CALL: &str = "pg_try_advisory_xact_lock(";
    let Some(start) = sql.find(CALL).map(|at| at + CALL.len()) else {
        return sql;
    };
    let Some(length) = sql[start..].find(')') else {
        return sql;
    };
    let arguments = &sql[start..start + length];
    if arguments.starts_with('$') {
        return sql;
    }
    format!("{}<key>{}", &sql[..start], &sql[start + length..])
}

/// A pool of one connection that logs its statements, already connected (connecting sends
/// statements of its own).
async fn logging_pool(test_db: &TestDb) -> DatabaseConnection {
    let mut options = test_support::pool_options(&test_db.url, 1);
    options.sqlx_logging(true);
    let db = test_support::connect_with(options).await;
    db.execute_unprepared("SELECT 1").await.unwrap();
    db
}

/// `create_once` and the benchmark's copy, each on a key of its own: their outcomes and the
/// statements they sent.
async fn both(
    db: &DatabaseConnection,
    crate_key: i64,
    by_hand_key: i64,
) -> ((bool, Vec<String>), (bool, Vec<String>)) {
    let (crate_outcome, crate_sent) =
        sent_by(PullRequest::create_once(db, crate_key, new_pr(crate_key))).await;
    let pool = db.get_postgres_connection_pool().clone();
    let (by_hand_outcome, by_hand_sent) = sent_by(by_hand::create_once(
        &pool,
        by_hand_key,
        new_pr(by_hand_key),
    ))
    .await;
    (
        (crate_outcome.unwrap().is_created(), crate_sent),
        (by_hand_outcome.unwrap().is_created(), by_hand_sent),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn the_benchmarks_sqlx_copy_sends_what_create_once_sends() {
    let test_db = TestDb::new().await;
    let db = logging_pool(&test_db).await;
    // The crate asks the catalog about the table's unique index once per pool and entity: that
    // first call is not compared.
    PullRequest::create_once(&db, 1_000_000, new_pr(1_000_000))
        .await
        .unwrap();

    // A new key: look, then the one statement that tries the lock and inserts under it.
    let (by_crate, by_hand) = both(&db, 1, 2).await;
    assert_eq!(by_crate, by_hand, "a new key");
    let (created, sent) = by_crate;
    assert!(created);
    assert!(
        sent.len() >= 2
            && sent.iter().any(|s| s.contains("pg_try_advisory_xact_lock"))
            && sent.iter().any(|s| s.contains("INSERT INTO")),
        "the capture must see the whole call: {sent:#?}"
    );

    // An existing key: one look.
    let (by_crate, by_hand) = both(&db, 1, 2).await;
    assert_eq!(by_crate, by_hand, "an existing key");
    assert_eq!(by_crate.1.len(), 1, "{:#?}", by_crate.1);

    // A contended key: the try-lock fails, the wait (a `DO` block) runs until the holder
    // commits.
    let holder = test_db.connect(2).await;
    let mut contended = Vec::new();
    for key in [3, 4] {
        let held = holder.begin().await.unwrap();
        acquire_advisory_lock(&held, key_of(key), Wait::Forever)
            .await
            .unwrap();
        let call = async {
            if key == 3 {
                let (outcome, sent) =
                    sent_by(PullRequest::create_once(&db, key, new_pr(key))).await;
                (matches!(outcome.unwrap(), Outcome::Created(_)), sent)
            } else {
                let pool = db.get_postgres_connection_pool().clone();
                let (outcome, sent) = sent_by(by_hand::create_once(&pool, key, new_pr(key))).await;
                (matches!(outcome.unwrap(), Outcome::Created(_)), sent)
            }
        };
        let release = async {
            until_someone_waits(&holder, key_of(key)).await;
            held.commit().await.unwrap();
        };
        let (result, ()) = tokio::join!(call, release);
        contended.push(result);
    }
    assert_eq!(contended[0], contended[1], "a contended key");
    assert!(
        contended[0]
            .1
            .iter()
            .any(|s| s.contains("PERFORM pg_advisory_xact_lock(")),
        "the contended call waits: {:#?}",
        contended[0].1
    );
}
