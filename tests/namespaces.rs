//! Lock namespaces and calls made inside `make_data`: equal natural keys of two schemas' tables
//! of one name never wait for each other, and a call that would wait for a lock its own
//! enclosing call holds fails at once instead of hanging.
//!
//! These failed before the fixes:
//! - `equal_keys_of_two_schemas_do_not_wait_for_each_other`: the namespace was the table name
//!   without its schema, so `app.events` 42 and `audit.events` 42 shared a lock and the
//!   `Wait::No` create of the second got `LockBusy`;
//! - `a_call_inside_make_data_for_the_held_key_fails_fast` (same pool) and
//!   `..._through_another_pool`: the inner call waited for the turn (or the database lock) its
//!   own outer call held, forever: the test's 30 s bound turned the hang into a failure.
//!
//! Nothing here coordinates with sleeps: `make_data` reports that it runs and waits for a
//! channel.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait};
use test_support::TestDb;
use tokio::sync::oneshot;

/// `events` tables in two schemas, the same shape.
macro_rules! events_entity {
    ($module:ident, $schema:literal) => {
        // SeaORM's derives make public items; the module is private to this test.
        #[allow(unreachable_pub)]
        mod $module {
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(schema_name = $schema, table_name = "events")]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                #[sea_orm(unique)]
                pub event_id: i64,
                pub body: String,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}

            impl sea_orm_idempotent::IdempotentCreate for Entity {
                type Key = i64;
                type Data = String;

                fn key_column() -> Column {
                    Column::EventId
                }

                fn new_active_model(event_id: &i64, body: String) -> ActiveModel {
                    ActiveModel {
                        event_id: sea_orm::ActiveValue::Set(*event_id),
                        body: sea_orm::ActiveValue::Set(body),
                        ..Default::default()
                    }
                }
            }
        }
    };
}

events_entity!(app_events, "app");
events_entity!(audit_events, "audit");

/// The schemas and tables of these tests.
async fn schemas(test_db: &TestDb) -> DatabaseConnection {
    let db = test_db.connect(4).await;
    for schema in ["app", "audit"] {
        db.execute_unprepared(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.events \
             (id bigserial PRIMARY KEY, event_id bigint NOT NULL UNIQUE, body text NOT NULL)"
        ))
        .await
        .unwrap();
    }
    db
}

fn body(n: i64) -> String {
    format!("event {n}")
}

#[test]
fn the_default_namespace_includes_the_schema_when_there_is_one() {
    assert_eq!(app_events::Entity::lock_namespace(), "app.events");
    assert_eq!(audit_events::Entity::lock_namespace(), "audit.events");
    // Without a schema, exactly the shipped derivation: the table name.
    assert_eq!(entity::PullRequest::lock_namespace(), "pull_requests");
    // Python: zlib.crc32(b"app.events") == 4238074197, zlib.crc32(b"42") == 841265288
    assert_eq!(
        LockKey::for_entity(app_events::Entity::lock_namespace(), &42_i64),
        LockKey::Pair(4_238_074_197_u32 as i32, 841_265_288),
    );
}

#[tokio::test]
async fn equal_keys_of_two_schemas_do_not_wait_for_each_other() {
    let test_db = TestDb::new().await;
    let db = schemas(&test_db).await;
    let (inside_tx, inside_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let app = tokio::spawn({
        let db = db.clone();
        async move {
            app_events::Entity::create_once_with(&db, 42, || async move {
                inside_tx.send(()).unwrap();
                go_rx.await.unwrap();
                Ok::<_, std::convert::Infallible>(body(42))
            })
            .await
        }
    });
    inside_rx.await.unwrap(); // app.events 42 is locked now
    let audit = audit_events::Entity::once(42, body(42))
        .wait(Wait::No)
        .exec(&db)
        .await
        .expect("audit.events 42 is another lock");
    assert!(audit.is_created());
    go_tx.send(()).unwrap();
    assert!(app.await.unwrap().unwrap().is_created());
}

/// The probe's pattern: writing the audit row while creating the event, on the same pool.
#[tokio::test]
async fn a_create_inside_make_data_of_another_table_works() {
    let test_db = TestDb::new().await;
    let db = schemas(&test_db).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        app_events::Entity::create_once_with(&db, 7, || async {
            let audit = audit_events::Entity::create_once(&db, 7, body(7)).await?;
            assert!(audit.is_created());
            Ok::<_, Error>(body(7))
        }),
    )
    .await
    .expect("no hang")
    .unwrap();
    assert!(outcome.is_created());
    assert_eq!(audit_events::Entity::find().count(&db).await.unwrap(), 1);
}

/// Creates `app_events` `key` with a `make_data` that calls `inner` (which must fail fast);
/// returns the inner call's error.
async fn inner_call_error<Fut>(
    db: &DatabaseConnection,
    key: i64,
    inner: impl FnOnce() -> Fut + Send,
) -> Error
where
    Fut: std::future::Future<Output = Result<sea_orm_idempotent::Outcome<app_events::Model>, Error>>
        + Send,
{
    let (err_tx, err_rx) = oneshot::channel();
    let outer = tokio::time::timeout(
        Duration::from_secs(30),
        app_events::Entity::create_once_with(db, key, || async move {
            let err = inner().await.expect_err("the inner call must fail fast");
            err_tx.send(err).unwrap();
            Ok::<_, Error>(body(key))
        }),
    )
    .await
    .expect("a re-entrant wait must fail fast, not hang")
    .unwrap();
    assert!(outer.is_created(), "the outer call goes on");
    err_rx.await.unwrap()
}

#[tokio::test]
async fn a_call_inside_make_data_for_the_held_key_fails_fast() {
    let test_db = TestDb::new().await;
    let db = schemas(&test_db).await;
    let err = inner_call_error(&db, 7, || app_events::Entity::create_once(&db, 7, body(7))).await;
    assert!(
        matches!(err, Error::Reentrant { key, .. } if key == LockKey::for_entity("app.events", &7_i64)),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_call_inside_make_data_for_the_held_key_fails_fast_through_another_pool() {
    let test_db = TestDb::new().await;
    let db = schemas(&test_db).await;
    let other_pool = test_db.connect(2).await;
    let err = inner_call_error(&db, 7, || {
        app_events::Entity::create_once(&other_pool, 7, body(7))
    })
    .await;
    assert!(matches!(err, Error::Reentrant { .. }), "{err:?}");
    // And on a caller's transaction of another connection: it would wait on the server.
    let txn = other_pool.begin().await.unwrap();
    let err = inner_call_error(&db, 8, || app_events::Entity::create_once(&txn, 8, body(8))).await;
    assert!(matches!(err, Error::Reentrant { .. }), "{err:?}");
    txn.rollback().await.unwrap();
}

/// Two tasks whose `make_data`s each create the key the other's enclosing call holds wait for
/// each other, and nothing can break the cycle for them: it runs through their code, so the
/// database sees two transactions idle, not a deadlock. What the docs of `IdempotentCreate`
/// ("Calls inside `make_data`") tell them to do instead works: a bound on the inner call ends
/// the wait (`LockTimeout`, then the enclosing call rolls back and the other goes on).
/// Without `.wait(..)` on the inner calls this test hangs until its 30 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_inside_make_data_on_crossed_keys_end_when_the_inner_call_is_bounded() {
    use std::sync::Arc;
    use tokio::sync::Barrier;

    let test_db = TestDb::new().await;
    let db = schemas(&test_db).await;
    let both_hold = Arc::new(Barrier::new(2));
    let crossed = |outer: i64, inner: i64| {
        let (db, inner_db, both_hold) = (db.clone(), db.clone(), both_hold.clone());
        tokio::spawn(async move {
            app_events::Entity::create_once_with(&db, outer, || async move {
                both_hold.wait().await; // both outer calls hold their key's lock and turn
                app_events::Entity::once(inner, body(inner))
                    .wait(Wait::Timeout(Duration::from_millis(500)))
                    .exec(&inner_db)
                    .await?;
                Ok::<_, Error>(body(outer))
            })
            .await
        })
    };
    let (one, two) = (crossed(1, 2), crossed(2, 1));
    let (one, two) = tokio::time::timeout(Duration::from_secs(30), async {
        (one.await.unwrap(), two.await.unwrap())
    })
    .await
    .expect("bounded inner calls end the crossed wait");
    let timed_out = |result: &Result<_, Error>| {
        matches!(result, Err(Error::MakeData(inner))
            if matches!(inner.downcast_ref::<Error>(), Some(Error::LockTimeout { .. })))
    };
    assert!(
        timed_out(&one) || timed_out(&two),
        "an inner call's bound ended the wait: {one:?} / {two:?}"
    );
    for result in [one, two] {
        assert!(
            timed_out(&result) || result.as_ref().is_ok_and(|outcome| outcome.is_created()),
            "{result:?}"
        );
    }
}
