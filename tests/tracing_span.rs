//! Every `create_once` call leaves one `create_once` span with the entity, the natural key,
//! the lock key, the lock wait and the outcome: what an operator needs to see duplicates being
//! absorbed; an entity whose keys are personal data (`log_key() -> false`) keeps them out of
//! the span and of lock errors. A small recording subscriber stands in for a real one.

#![cfg(feature = "postgres")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::new_pr;
use entity::PullRequest;
use sea_orm::{ConnectionTrait, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock};
use test_support::TestDb;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

/// Records the name and fields of every span.
#[derive(Clone, Default)]
struct Recorder {
    next_id: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, (String, Fields)>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .insert(id, (span.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Recorder {
    /// A recorder, as this thread's subscriber. Every test of this binary runs under one,
    /// even a test that looks at no span: tracing caches whether a callsite is wanted when it
    /// is first reached, and while only one thread-local subscriber exists it asks the
    /// subscriber of the thread that got there first. A test thread without one would have
    /// `create_once`'s callsite cached as unwanted, and the tests that read spans would find
    /// none (CI did, with two test threads: `left: 0, right: 2`).
    fn installed() -> (Self, tracing::subscriber::DefaultGuard) {
        let recorder = Self::default();
        let guard = tracing::subscriber::set_default(recorder.clone());
        (recorder, guard)
    }

    fn create_once_spans(&self) -> Vec<Fields> {
        let spans = self.spans.lock().unwrap();
        let mut ids: Vec<_> = spans
            .iter()
            .filter(|(_, (name, _))| name == "create_once")
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.iter().map(|id| spans[id].1.clone()).collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_call_records_one_span_with_its_story() {
    let (recorder, _guard) = Recorder::installed();
    let test_db = TestDb::new().await;
    let db = test_db.connect(1).await;

    PullRequest::create_once(&db, 42, new_pr(42)).await.unwrap();
    PullRequest::create_once(&db, 42, new_pr(42)).await.unwrap();

    let spans = recorder.create_once_spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let lock_key = LockKey::for_entity("pull_requests", &42_i64).to_string();
    for span in &spans {
        assert_eq!(span["entity"], "pull_requests");
        assert_eq!(span["natural_key"], "42");
        assert_eq!(span["lock_key"], lock_key);
    }
    assert_eq!(spans[0]["outcome"], "created");
    assert!(
        spans[0]["lock_wait_us"].parse::<u64>().is_ok(),
        "{:?}",
        spans[0]
    );
    // The duplicate was absorbed by the first look: no lock, so no wait recorded.
    assert_eq!(spans[1]["outcome"], "existing");
    assert!(!spans[1].contains_key("lock_wait_us"), "{:?}", spans[1]);
}

/// Newsletter subscribers, keyed by email address: personal data, kept out of logs.
#[allow(unreachable_pub)]
mod subscribers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub email: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = String;
        type Data = ActiveModel;

        fn key_column() -> Column {
            Column::Email
        }

        fn new_active_model(_: &String, row: ActiveModel) -> ActiveModel {
            row
        }

        fn log_key() -> bool {
            false
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn keys_kept_out_of_logs_appear_in_no_span_field_and_no_error() {
    const EMAIL: &str = "mona@example.com";
    let (recorder, _guard) = Recorder::installed();
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    db.execute_unprepared(
        "CREATE TABLE subscribers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE)",
    )
    .await
    .unwrap();

    let created = subscribers::Entity::create_once(&db, EMAIL.to_owned(), Default::default())
        .await
        .unwrap();
    assert!(created.is_created());

    let again = subscribers::Entity::create_once(&db, EMAIL.to_owned(), Default::default())
        .await
        .unwrap();
    assert!(!again.is_created());

    // A lock error names the table, not the key.
    let missing = "nobody@example.com";
    let held = db.begin().await.unwrap();
    acquire_advisory_lock(
        &held,
        LockKey::for_entity("subscribers", &missing),
        Wait::Forever,
    )
    .await
    .unwrap();
    let err = subscribers::Entity::once(missing.to_owned(), Default::default())
        .wait(Wait::No)
        .exec(&db)
        .await
        .expect_err("held");
    assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("subscribers (key not logged)"),
        "{message}"
    );
    assert!(!message.contains("example.com"), "{message}");
    held.rollback().await.unwrap();

    let spans = recorder.create_once_spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for span in &spans {
        assert_eq!(span["entity"], "subscribers");
        assert_eq!(span["natural_key"], "<redacted>");
        assert!(
            span.values().all(|value| !value.contains("example.com")),
            "{span:?}"
        );
    }
    // The lock key (a hash) is still recorded: it is what pg_locks shows.
    assert_eq!(
        spans[0]["lock_key"],
        LockKey::for_entity("subscribers", &EMAIL).to_string()
    );
}

/// A database error of an entity that keeps keys out of logs: PostgreSQL's DETAIL ("Failing
/// row contains (1, mona-...@example.com)") was kept inside `Error::Database`, so its `Debug`
/// output, the one most error reporters print, held the key. Now the server's text is left
/// out; the SQLSTATE, the constraint and the classification stay.
#[tokio::test(flavor = "current_thread")]
async fn a_database_error_of_a_key_kept_out_of_logs_holds_no_key() {
    const EMAIL: &str = "mona-has-a-long-address@example.com";
    // Not read: see [`Recorder::installed`].
    let _recorder = Recorder::installed();
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    db.execute_unprepared(
        "CREATE TABLE subscribers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE \
         CONSTRAINT short_email CHECK (length(email) < 20))",
    )
    .await
    .unwrap();
    let err = subscribers::Entity::create_once(&db, EMAIL.to_owned(), Default::default())
        .await
        .expect_err("the check constraint refuses the row");
    let shown = format!("{err:?} / {err}");
    assert!(!shown.contains("example.com"), "{shown}");
    assert!(
        shown.contains("23514") && shown.contains("short_email"),
        "{shown}"
    );
    assert!(
        matches!(err, Error::Database(_)) && !err.is_retryable(),
        "{shown}"
    );
}
