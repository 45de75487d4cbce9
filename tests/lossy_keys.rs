//! Keys that do not survive storage, and keys the database treats as equal.
//!
//! - A key column that keeps less than the key's value (`timestamp(0)`, MariaDB's `DATETIME`):
//!   before the fix PostgreSQL answered `Created` and then a non-retryable 23505 for every
//!   redelivery (with a unique index), or a new row and `Created` for every delivery (without
//!   one); MariaDB failed every delivery with "the row inserted by this transaction is not found
//!   by its key" and stored nothing. Now every delivery is refused with the typed
//!   `KeyNotStorable`, naming the column, and nothing is written.
//! - A float NaN: SQLite stored it as NULL, so 3 deliveries of `(7, NaN)` gave 3 rows and 3
//!   `Created`. Now refused, before anything is sent.
//! - `-0.0` and `0.0`, and one instant given with two offsets, are one key to the database but
//!   had two `Display` texts, so two locks: two callers both missed the row and both inserted
//!   (without a unique index, two rows). Now they take one lock. The race is forced: the first
//!   caller's `make_data` goes on only once the second waits for the same lock (`pg_locks`) or
//!   has entered its own `make_data`, which only a second lock allows.

// Each backend feature alone builds only its part of this file; the shared helpers, imports
// and entities of the other parts are then unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey};

#[allow(unreachable_pub)]
mod stamped {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stamped")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTime,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = DateTime;
        type Data = String;

        fn key_column() -> Column {
            Column::At
        }

        fn new_active_model(_: &DateTime, v: String) -> ActiveModel {
            ActiveModel {
                v: Set(v),
                ..Default::default()
            }
        }
    }
}

#[allow(unreachable_pub)]
mod measured {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "measured")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub k: i64,
        pub x: Option<f64>,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (i64, f64);
        type Data = String;

        fn key_column() -> Column {
            Column::K
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::K, Column::X]
        }

        fn new_active_model(_: &(i64, f64), v: String) -> ActiveModel {
            ActiveModel {
                v: Set(v),
                ..Default::default()
            }
        }
    }
}

#[allow(unreachable_pub)]
mod moments {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "moments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTimeWithTimeZone,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = DateTimeWithTimeZone;
        type Data = String;

        fn key_column() -> Column {
            Column::At
        }

        fn new_active_model(_: &DateTimeWithTimeZone, v: String) -> ActiveModel {
            ActiveModel {
                v: Set(v),
                ..Default::default()
            }
        }
    }
}

async fn run(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.unwrap();
}

async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

fn assert_not_storable(err: &Error, column: &str, case: &str) {
    assert!(
        matches!(err, Error::KeyNotStorable { column: c, .. } if c == column),
        "{case}: {err:?}"
    );
    assert!(!err.is_retryable(), "{case}");
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use super::common::{Server, on_each_server};
    use super::*;
    use sea_orm::prelude::DateTime;

    on_each_server! {
        /// A timestamp with microseconds, as a key of a column that keeps whole seconds: every
        /// delivery refused, nothing stored, with and without a unique index. A key of whole
        /// seconds is created once, then found.
        #[tokio::test]
        async fn a_key_the_column_rounds_is_refused_every_time_and_nothing_is_stored(
            server: Server,
        ) {
            for unique in [true, false] {
                let part = if unique { "unique" } else { "plain" };
                let Some(test_db) = server.database_part(part).await else {
                    return;
                };
                let db = test_db.connect(2).await;
                run(
                    &db,
                    server.sql(
                        "CREATE TABLE stamped (id bigserial PRIMARY KEY, \
                         at timestamp(0) NOT NULL, v text NOT NULL)",
                        "CREATE TABLE stamped (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                         at DATETIME NOT NULL, v TEXT NOT NULL)",
                    ),
                )
                .await;
                if unique {
                    run(&db, "CREATE UNIQUE INDEX stamped_at ON stamped (at)").await;
                }
                let at = |text: &str| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
                let precise = at("2026-12-07 10:00:00.123456");
                for delivery in 0..3 {
                    let case = format!("{server:?}, unique index: {unique}, delivery {delivery}");
                    let err = stamped::Entity::create_once(&db, precise, "v".to_owned())
                        .await
                        .expect_err(&case);
                    assert_not_storable(&err, "at", &case);
                    assert_eq!(count(&db, "stamped").await, 0, "{case}");
                }
                let whole = at("2026-12-07 10:00:01.0");
                let first = stamped::Entity::create_once(&db, whole, "v".to_owned()).await.unwrap();
                let again = stamped::Entity::create_once(&db, whole, "v".to_owned()).await.unwrap();
                assert!(first.is_created() && !again.is_created(), "{server:?} {unique}");
                assert_eq!(count(&db, "stamped").await, 1);
            }
        }
    }
}

/// `(7, NaN)` on SQLite, whose REAL column stores NaN as NULL: refused every time.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_nan_key_part_is_refused_on_sqlite() {
    let dir = common::TempDir::new("lossy-keys");
    let db = test_support::connect(&dir.sqlite_url("nan.db"), 2).await;
    run(
        &db,
        "CREATE TABLE measured (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, x REAL, v TEXT NOT NULL)",
    )
    .await;
    for delivery in 0..3 {
        let case = format!("delivery {delivery}");
        let err = measured::Entity::create_once(&db, (7, f64::NAN), "v".to_owned())
            .await
            .expect_err(&case);
        assert_not_storable(&err, "x", &case);
    }
    assert_eq!(count(&db, "measured").await, 0);
}

#[cfg(feature = "postgres")]
mod equal_keys {
    use super::*;
    use sea_orm::prelude::DateTimeWithTimeZone;
    use std::future::Future;
    use std::sync::Arc;
    use test_support::TestDb;
    use tokio::sync::{Notify, oneshot};

    /// What the first caller's `make_data` needs: to say it is in, to hear the second is in
    /// its own, and a connection to watch `pg_locks` with.
    struct First {
        /// The lock key both callers take (with the fix): the second is seen waiting for it.
        key: LockKey,
        inside: oneshot::Sender<()>,
        second_inside: Arc<Notify>,
        observer: DatabaseConnection,
    }

    /// Two calls: the first (`first`) holds its lock, inside its `make_data`, until the second
    /// (`second`, started only then) either waits for the same lock or enters its own
    /// `make_data`; returns both outcomes' `is_created`.
    async fn race<Fut1, Fut2>(
        db: &DatabaseConnection,
        key: LockKey,
        first: impl FnOnce(First) -> Fut1,
        second: impl FnOnce(Arc<Notify>) -> Fut2,
    ) -> (bool, bool)
    where
        Fut1: Future<Output = bool> + Send + 'static,
        Fut2: Future<Output = bool> + Send + 'static,
    {
        let second_inside = Arc::new(Notify::new());
        let (inside, first_inside) = oneshot::channel();
        let first = tokio::spawn(first(First {
            inside,
            key,
            second_inside: second_inside.clone(),
            observer: db.clone(),
        }));
        first_inside.await.unwrap();
        let second = tokio::spawn(second(second_inside));
        (first.await.unwrap(), second.await.unwrap())
    }

    /// `make_data` of the first caller: says it is in, then waits until the second waits for
    /// the lock or is in its own `make_data`.
    async fn hold_until_the_second_arrives(first: First) {
        let First {
            key,
            inside,
            second_inside,
            observer,
        } = first;
        inside.send(()).unwrap();
        tokio::select! {
            () = common::until_someone_waits(&observer, key) => {}
            () = second_inside.notified() => {}
        }
    }

    /// A database with the table `sql` creates, and two pools on it: callers of one pool
    /// with one lock key take turns in the process, so the second caller, on the second pool,
    /// is seen waiting for the lock in `pg_locks`.
    async fn fresh(sql: &str) -> (TestDb, DatabaseConnection, DatabaseConnection) {
        let test_db = TestDb::new().await;
        let db = test_db.connect(4).await;
        run(&db, sql).await;
        let other = test_db.connect(4).await;
        (test_db, db, other)
    }

    #[tokio::test]
    async fn minus_zero_and_zero_take_one_lock() {
        let (_test_db, db, other) = fresh(
            "CREATE TABLE measured (id bigserial PRIMARY KEY, k bigint NOT NULL, \
             x double precision, v text NOT NULL)",
        )
        .await;
        for k in 0..3_i64 {
            let (a, b) = race(
                &db,
                LockKey::for_composite("measured", &[&k, &0.0_f64]),
                |first| {
                    let db = first.observer.clone();
                    async move {
                        measured::Entity::create_once_with(&db, (k, 0.0), || async move {
                            hold_until_the_second_arrives(first).await;
                            Ok::<_, std::io::Error>("v".to_owned())
                        })
                        .await
                        .unwrap()
                        .is_created()
                    }
                },
                |inside| {
                    let db = other.clone();
                    async move {
                        measured::Entity::create_once_with(&db, (k, -0.0), || async move {
                            inside.notify_one();
                            Ok::<_, std::io::Error>("v".to_owned())
                        })
                        .await
                        .unwrap()
                        .is_created()
                    }
                },
            )
            .await;
            assert_eq!((a, b), (true, false), "key {k}: one creation");
        }
        assert_eq!(count(&db, "measured").await, 3, "one row per key");
    }

    #[tokio::test]
    async fn one_instant_with_two_offsets_takes_one_lock() {
        let (_test_db, db, other) = fresh(
            "CREATE TABLE moments (id bigserial PRIMARY KEY, at timestamptz NOT NULL, v text NOT NULL)",
        )
        .await;
        let at = |text: &str| DateTimeWithTimeZone::parse_from_rfc3339(text).unwrap();
        for hour in 0..3 {
            let local = at(&format!("2026-12-07T1{hour}:00:00+02:00"));
            let utc = at(&format!("2026-12-07T{:02}:00:00+00:00", 8 + hour));
            assert_eq!(local, utc);
            let (a, b) = race(
                &db,
                LockKey::for_entity("moments", &utc),
                |first| {
                    let db = first.observer.clone();
                    async move {
                        moments::Entity::create_once_with(&db, local, || async move {
                            hold_until_the_second_arrives(first).await;
                            Ok::<_, std::io::Error>("v".to_owned())
                        })
                        .await
                        .unwrap()
                        .is_created()
                    }
                },
                |inside| {
                    let db = other.clone();
                    async move {
                        moments::Entity::create_once_with(&db, utc, || async move {
                            inside.notify_one();
                            Ok::<_, std::io::Error>("v".to_owned())
                        })
                        .await
                        .unwrap()
                        .is_created()
                    }
                },
            )
            .await;
            assert_eq!((a, b), (true, false), "hour {hour}: one creation");
        }
        assert_eq!(count(&db, "moments").await, 3, "one row per instant");
    }
}
