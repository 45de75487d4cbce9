//! A natural key that does not fit its table, named before anything is written (issue 26,
//! item 2), and the warning for a key no unique index covers.
//!
//! - `type Key = String` on a `BIGINT` column whose field is `i64`: before the check,
//!   PostgreSQL answered "operator does not exist: bigint = text" (an untyped
//!   `Error::Database`) and SQLite and MariaDB "Type Error: Value type mismatch", naming
//!   neither the entity nor the column. Now every backend returns `Error::KeyType` naming the
//!   table, the column, its type and the key's, and nothing is written.
//! - The same key on a field that says `String` while the column is `BIGINT` (the entity
//!   drifted from the schema): before, PostgreSQL's operator error, and on SQLite and MariaDB
//!   `"7"` converted to `7` and a `ColumnDecode` error ("mismatched types; ... not compatible
//!   with SQL type `INTEGER`"/`BIGINT`) when the row was read back; now `Error::KeyType`.
//! - A key column the table does not have: before, "column absent.pr does not exist"
//!   (PostgreSQL), "Unknown column 'absent.pr'" (MariaDB), "no such column: absent.pr"
//!   (SQLite); now `Error::KeyType` with `column_type: None`.
//! - The first call per pool warns once when no unique index covers the key columns, not for
//!   a table with one, nor for an entity that opts out.
//! - `verify` reports the same without a call.

#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::fmt;
use std::sync::{Arc, Mutex};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// An entity of table `$table`: `id`, the key column `pr` (field type `$field`), `v`; its key
/// type `$key`; whether it warns without a unique index.
macro_rules! keyed_entity {
    ($module:ident, $table:literal, $key:ty, $field:ty, $warn:expr) => {
        #[allow(unreachable_pub)]
        mod $module {
            use sea_orm::ActiveValue::Set;
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                pub pr: $field,
                pub v: String,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}

            impl sea_orm_idempotent::IdempotentCreate for Entity {
                type Key = $key;
                type Data = String;

                fn key_column() -> Column {
                    Column::Pr
                }

                fn new_active_model(_: &$key, v: String) -> ActiveModel {
                    ActiveModel {
                        v: Set(v),
                        ..Default::default()
                    }
                }

                fn warn_without_unique_index() -> bool {
                    $warn
                }
            }
        }
    };
}

// The case: the key says String, the field and the column say BIGINT.
keyed_entity!(stringly, "stringly", String, i64, true);
// The entity drifted from the schema: field and key say String, the column BIGINT.
keyed_entity!(drifted, "drifted", String, String, true);
// The table has no `pr` column.
keyed_entity!(absent, "absent", i64, i64, true);
// Fine, with a unique index on `pr`.
keyed_entity!(keyed, "keyed", i64, i64, true);
// Fine, without a unique index on `pr`.
keyed_entity!(unindexed, "unindexed", i64, i64, true);
// Fine, without a unique index, and opted out of the warning.
keyed_entity!(quiet, "quiet", i64, i64, false);

/// The SQL of each backend.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    Postgres,
    MariaDb,
    Sqlite,
}

impl Dialect {
    /// `CREATE TABLE table (id, pr BIGINT, v)`, or without `pr`.
    fn create(self, table: &str, with_pr: bool) -> String {
        let id = match self {
            Dialect::Postgres => "id bigserial PRIMARY KEY",
            Dialect::MariaDb => "id BIGINT AUTO_INCREMENT PRIMARY KEY",
            Dialect::Sqlite => "id INTEGER PRIMARY KEY",
        };
        let pr = if with_pr { ", pr BIGINT NOT NULL" } else { "" };
        format!("CREATE TABLE {table} ({id}{pr}, v TEXT NOT NULL)")
    }

    /// Whether the database's name of the `pr` column's type is BIGINT's (`bigint`,
    /// `bigint(20)`, `BIGINT`).
    fn is_bigint(column_type: Option<&str>) -> bool {
        column_type.is_some_and(|t| t.to_ascii_lowercase().starts_with("bigint"))
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

/// `err` is `Error::KeyType` for `table.pr`, whose type passes `column_type`, for a key of a
/// type named like `key_type`.
fn assert_key_type(
    err: &Error,
    table: &str,
    column_type: impl Fn(Option<&str>) -> bool,
    key_type: &str,
    case: &str,
) {
    match err {
        Error::KeyType {
            table: t,
            column,
            column_type: c,
            key_type: k,
            ..
        } => {
            assert_eq!((*t, column.as_str()), (table, "pr"), "{case}: {err}");
            assert!(column_type(c.as_deref()), "{case}: {err}");
            assert!(k.contains(key_type), "{case}: {err}");
        }
        other => panic!("{case}: not KeyType: {other:?} ({other})"),
    }
    assert!(!err.is_retryable(), "{case}");
    assert_eq!(err.kind(), "key_type", "{case}");
    assert!(
        err.to_string().contains("change `type Key`"),
        "{case}: {err}"
    );
}

/// The three mismatches, each twice through a call and once through `verify`; nothing is
/// written. On a caller's transaction the entity's side is checked without the catalog.
async fn mismatched_keys_are_named(db: &DatabaseConnection, dialect: Dialect) {
    // Not asserted on: see [`Warnings::installed`].
    let _warnings = Warnings::installed();
    run(db, &dialect.create("stringly", true)).await;
    run(db, &dialect.create("drifted", true)).await;
    run(db, &dialect.create("absent", false)).await;
    let bigint = |t: Option<&str>| Dialect::is_bigint(t);
    let missing = |t: Option<&str>| t.is_none();
    for delivery in 0..2 {
        let case = format!("{dialect:?}, delivery {delivery}");
        let err = stringly::Entity::create_once(db, "7".to_owned(), "v".to_owned())
            .await
            .expect_err(&case);
        assert_key_type(
            &err,
            "stringly",
            bigint,
            "String",
            &format!("{case}, stringly"),
        );
        let err = drifted::Entity::create_once(db, "7".to_owned(), "v".to_owned())
            .await
            .expect_err(&case);
        assert_key_type(
            &err,
            "drifted",
            bigint,
            "String",
            &format!("{case}, drifted"),
        );
        let err = absent::Entity::create_once(db, 7, "v".to_owned())
            .await
            .expect_err(&case);
        assert_key_type(&err, "absent", missing, "i64", &format!("{case}, absent"));
        // The batch form checks the key as the call does (before, it sent the statements and
        // met the database's own type error, or on SQLite and MariaDB a converted key).
        let err = stringly::Entity::create_many_once(db, [("7".to_owned(), "v".to_owned())])
            .await
            .expect_err(&case);
        let source = batch_source(&err, &case);
        assert_key_type(
            source,
            "stringly",
            bigint,
            "String",
            &format!("{case}, stringly batch"),
        );
        let err = absent::Entity::create_many_once(db, [(7, "v".to_owned())])
            .await
            .expect_err(&case);
        let source = batch_source(&err, &case);
        assert_key_type(
            source,
            "absent",
            missing,
            "i64",
            &format!("{case}, absent batch"),
        );
    }
    assert_eq!(count(db, "stringly").await, 0, "{dialect:?}");
    assert_eq!(count(db, "drifted").await, 0, "{dialect:?}");
    assert_eq!(count(db, "absent").await, 0, "{dialect:?}");

    let case = format!("{dialect:?}, verify");
    let err = stringly::Entity::verify(db).await.expect_err(&case);
    assert_key_type(&err, "stringly", bigint, "String", &case);
    let err = drifted::Entity::verify(db).await.expect_err(&case);
    assert_key_type(&err, "drifted", bigint, "String", &case);
    let err = absent::Entity::verify(db).await.expect_err(&case);
    assert_key_type(&err, "absent", missing, "i64", &case);

    // A caller's transaction: the field's side, named as the entity declares the column.
    let case = format!("{dialect:?}, caller's transaction");
    let txn = db.begin().await.unwrap();
    let err = stringly::Entity::create_once(&txn, "7".to_owned(), "v".to_owned())
        .await
        .expect_err(&case);
    assert_key_type(
        &err,
        "stringly",
        |t| t == Some("BigInteger"),
        "String",
        &case,
    );
    let err = stringly::Entity::create_many_once(&txn, [("7".to_owned(), "v".to_owned())])
        .await
        .expect_err(&case);
    assert_key_type(
        batch_source(&err, &case),
        "stringly",
        |t| t == Some("BigInteger"),
        "String",
        &format!("{case}, batch"),
    );
    txn.rollback().await.unwrap();
    assert_eq!(count(db, "stringly").await, 0, "{case}");
}

/// The error of a batch's first chunk, which wrote nothing.
fn batch_source<'a>(err: &'a Error, case: &str) -> &'a Error {
    match err {
        Error::Batch {
            chunk: 0,
            done: 0,
            source,
            ..
        } => source,
        other => panic!("{case}: not the first chunk's error: {other:?}"),
    }
}

/// The warning once per pool for `unindexed`, never for `keyed` (unique index) or `quiet`
/// (opted out); every call still works; `verify` reports the index and the lock table.
async fn warns_once_without_a_unique_index(db: &DatabaseConnection, dialect: Dialect) {
    // Kept for the life of the process: the crate knows a pool by its address, and a pool the
    // other server's run of this test freed could be allocated at the same address, which the
    // crate would take for a pool it already warned about (seen once in a full run).
    std::mem::forget(db.clone());
    run(db, &dialect.create("keyed", true)).await;
    run(db, "CREATE UNIQUE INDEX keyed_pr ON keyed (pr)").await;
    run(db, &dialect.create("unindexed", true)).await;
    run(db, &dialect.create("quiet", true)).await;
    let (warnings, guard) = Warnings::installed();
    for delivery in 0..2 {
        let created = delivery == 0;
        let case = format!("{dialect:?}, delivery {delivery}");
        let data = || "v".to_owned();
        let outcome = keyed::Entity::create_once(db, 7, data())
            .await
            .expect(&case);
        assert_eq!(outcome.is_created(), created, "{case}");
        let outcome = unindexed::Entity::create_once(db, 7, data())
            .await
            .expect(&case);
        assert_eq!(outcome.is_created(), created, "{case}");
        let outcome = quiet::Entity::create_once(db, 7, data())
            .await
            .expect(&case);
        assert_eq!(outcome.is_created(), created, "{case}");
    }
    drop(guard);
    assert_eq!(
        warnings.entities(),
        vec!["unindexed".to_owned()],
        "{dialect:?}"
    );

    let lock_table = (dialect == Dialect::MariaDb).then_some(true);
    let verified = keyed::Entity::verify(db).await.unwrap();
    assert_eq!(verified.table, "keyed");
    assert!(verified.unique_index, "{dialect:?}: {verified:?}");
    assert_eq!(verified.lock_table, lock_table, "{dialect:?}");
    assert_eq!(verified.key_columns.len(), 1, "{dialect:?}: {verified:?}");
    assert_eq!(verified.key_columns[0].0, "pr");
    assert!(
        Dialect::is_bigint(Some(&verified.key_columns[0].1)),
        "{verified:?}"
    );
    let verified = unindexed::Entity::verify(db).await.unwrap();
    assert!(!verified.unique_index, "{dialect:?}: {verified:?}");
    let verified = quiet::Entity::verify(db).await.unwrap();
    assert!(!verified.unique_index, "{dialect:?}: {verified:?}");
}

/// Records the `entity` field of the crate's WARN events.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Every test of this binary runs under a subscriber of its own, even one that asserts
    /// nothing about warnings. tracing caches whether a callsite is wanted when it is first
    /// reached; while only one thread-local subscriber exists, it asks the subscriber of the
    /// thread that got there first. A test thread without one would have the warning's
    /// callsite cached as unwanted, and the test that counts warnings would count none.
    fn installed() -> (Self, tracing::subscriber::DefaultGuard) {
        let warnings = Self::default();
        let guard = tracing::subscriber::set_default(warnings.clone());
        (warnings, guard)
    }

    fn entities(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Entity<'a>(&'a mut Option<String>);

impl Visit for Entity<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "entity" {
            *self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "entity" {
            *self.0 = Some(value.to_owned());
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if *metadata.level() == Level::WARN && metadata.target().starts_with("sea_orm_idempotent") {
            let mut entity = None;
            event.record(&mut Entity(&mut entity));
            self.0
                .lock()
                .unwrap()
                .push(entity.unwrap_or_else(|| "(no entity)".to_owned()));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod on_servers {
    use super::common::{Server, on_each_server};
    use super::*;

    fn dialect(server: Server) -> Dialect {
        match server {
            Server::Postgres => Dialect::Postgres,
            Server::MariaDb => Dialect::MariaDb,
        }
    }

    on_each_server! {
        /// See [`mismatched_keys_are_named`].
        #[tokio::test]
        async fn a_key_that_does_not_fit_is_named_and_nothing_is_written(server: Server) {
            let Some(test_db) = server.database().await else { return };
            let db = test_db.connect(2).await;
            mismatched_keys_are_named(&db, dialect(server)).await;
        }

        /// See [`warns_once_without_a_unique_index`].
        #[tokio::test]
        async fn the_first_call_warns_once_without_a_unique_index(server: Server) {
            let Some(test_db) = server.database().await else { return };
            let db = test_db.connect(2).await;
            warns_once_without_a_unique_index(&db, dialect(server)).await;
        }
    }
}

#[cfg(feature = "sqlite")]
mod on_sqlite {
    use super::*;

    /// See [`mismatched_keys_are_named`].
    #[tokio::test]
    async fn a_key_that_does_not_fit_is_named_and_nothing_is_written() {
        let dir = common::TempDir::new("key-schema");
        let db = test_support::connect(&dir.sqlite_url("mismatch.db"), 2).await;
        mismatched_keys_are_named(&db, Dialect::Sqlite).await;
    }

    /// See [`warns_once_without_a_unique_index`].
    #[tokio::test]
    async fn the_first_call_warns_once_without_a_unique_index() {
        let dir = common::TempDir::new("key-schema");
        let db = test_support::connect(&dir.sqlite_url("warn.db"), 2).await;
        warns_once_without_a_unique_index(&db, Dialect::Sqlite).await;
    }
}
