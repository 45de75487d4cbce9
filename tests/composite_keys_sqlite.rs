//! Composite natural keys on SQLite, on a file database: keys of two columns (`(org_id,
//! login)`) and three (`(tenant, repo_id, number)`), each created exactly once and `Created`
//! exactly once by many connections of one pool and by several OS processes; and a key with a
//! missing (NULL) part. The entities and
//! the race are `tests/common/composite.rs`, shared with the PostgreSQL tests.
//!
//! The race tests can fail, and were seen to: with the IMMEDIATE begin of `Backend::begin`
//! (`src/backend/mod.rs`) made a plain (DEFERRED) begin, all four fail: callers of one key look
//! at once, `make_data` runs for keys another caller creates (332 runs for 45 rows made in
//! one run), and writers whose snapshot went stale get `SQLITE_BUSY` (287 errors). Half the
//! callers pass a `make_data` for this reason: with the data given up front, the guarded
//! insert (`INSERT ... SELECT ... WHERE NOT EXISTS`, one statement under SQLite's write lock)
//! alone keeps out duplicates, and a race of `create_once` only would pass without the
//! IMMEDIATE begin.

#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::composite::{KEYS, Race, SQLITE_TABLES, assert_one_row_per_key, race_both};
use common::{TempDir, worker_process};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{ConnectionTrait, DatabaseConnection};

const POOL: u32 = 8;
const PROCESSES: usize = 4;

/// A pool on `url` in `journal` mode, each connection waiting up to 30 s for the write lock.
async fn connect(url: &str, journal: SqliteJournalMode) -> DatabaseConnection {
    let mut options = test_support::pool_options(url, POOL);
    options.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(journal)
            .busy_timeout(Duration::from_secs(30))
    });
    test_support::connect_with(options).await
}

/// The composite tables in a new file of `dir`.
async fn with_tables(dir: &TempDir, journal: SqliteJournalMode) -> (String, DatabaseConnection) {
    let url = dir.sqlite_url("composite.db");
    let db = connect(&url, journal).await;
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    (url, db)
}

async fn many_connections(journal: SqliteJournalMode) {
    let dir = TempDir::new("sqlite-composite");
    let (_, db) = with_tables(&dir, journal).await;
    race_both(std::slice::from_ref(&db))
        .await
        .assert_exactly_once(2 * KEYS, 1);
    assert_one_row_per_key(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_composite_key_once_in_wal_mode() {
    many_connections(SqliteJournalMode::Wal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_create_each_composite_key_once_in_rollback_journal_mode() {
    many_connections(SqliteJournalMode::Delete).await;
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_SQLITE_COMPOSITE_WORKER_URL";

/// One racing process of `several_processes_create_each_composite_key_once`; run plainly, it
/// races alone on a file of its own and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_composite_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let db = connect(&url, SqliteJournalMode::Wal).await;
            race_both(std::slice::from_ref(&db))
                .await
                .print_for_parent();
        }
        Err(_) => {
            let dir = TempDir::new("sqlite-composite-worker");
            let (_, db) = with_tables(&dir, SqliteJournalMode::Wal).await;
            race_both(std::slice::from_ref(&db))
                .await
                .assert_exactly_once(2 * KEYS, 1);
        }
    }
}

/// Four OS processes race on the same composite keys of one file: each key is created once
/// in all, `Created` once, no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_create_each_composite_key_once() {
    let dir = TempDir::new("sqlite-composite-processes");
    let (url, db) = with_tables(&dir, SqliteJournalMode::Wal).await;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            worker_process("sqlite_composite_race_worker_process")
                .env(WORKER_URL, &url)
                .output()
        })
        .collect();
    let mut total = Race::default();
    for child in children {
        total.add(Race::of_worker(&child.await.expect("run a worker process")));
    }
    total.assert_exactly_once(2 * KEYS, PROCESSES);
    assert_one_row_per_key(&db).await;
}

/// Accounts keyed by `(org_id, login)`, where `login` may be missing (a newtype over
/// `Option<String>`: SeaORM matches a missing part with `IS NULL`, which has no placeholder).
mod accounts {
    use std::fmt;

    use sea_orm::ActiveValue::{NotSet, Set};
    use sea_orm::Value;
    use sea_orm::entity::prelude::*;
    use sea_orm_idempotent::IdempotentCreate;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub(crate) id: i64,
        pub(crate) org_id: i64,
        pub(crate) login: Option<String>,
        pub(crate) note: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// A login, or none.
    #[derive(Clone, Debug)]
    pub(crate) struct Login(pub(crate) Option<String>);

    impl fmt::Display for Login {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0.as_deref().unwrap_or("(none)"))
        }
    }

    impl From<Login> for Value {
        fn from(login: Login) -> Value {
            login.0.into()
        }
    }

    impl IdempotentCreate for Entity {
        type Key = (i64, Login);
        type Data = String;

        fn key_column() -> Column {
            Column::OrgId
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::OrgId, Column::Login]
        }

        fn new_active_model(_: &(i64, Login), note: String) -> ActiveModel {
            ActiveModel {
                id: NotSet,
                org_id: NotSet,
                login: NotSet,
                note: Set(note),
            }
        }
    }
}

/// A key with a missing part is found again whatever keys the process used before. The SQL
/// text of the look and the guarded insert is kept per entity after its first call; a key part
/// that is NULL is matched by `IS NULL`, another text. Before such keys bypassed the kept text,
/// a process whose first call had every part was left with `login = ?`, which never matches a
/// NULL: every delivery of `(1, none)` was `Created` again, a duplicate row each time (the
/// second came back `Created(Model { id: 3, org_id: 1, login: None, .. })`).
#[tokio::test]
async fn a_key_with_a_missing_part_is_created_once_after_keys_with_every_part() {
    use accounts::Login;
    use sea_orm::{EntityTrait, PaginatorTrait};
    use sea_orm_idempotent::IdempotentCreate;

    let dir = TempDir::new("null-key-part");
    let db = connect(&dir.sqlite_url("accounts.db"), SqliteJournalMode::Wal).await;
    db.execute_unprepared(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL, login TEXT, \
         note TEXT NOT NULL, UNIQUE (org_id, login))",
    )
    .await
    .unwrap();
    let call = |login: Option<&str>| {
        let key = (1, Login(login.map(str::to_owned)));
        accounts::Entity::create_once(&db, key, "note".to_owned())
    };
    assert!(call(Some("mona")).await.unwrap().is_created());
    assert!(!call(Some("mona")).await.unwrap().is_created());
    let first = call(None).await.unwrap();
    assert!(first.is_created(), "{first:?}");
    for _ in 0..2 {
        let again = call(None).await.unwrap();
        assert!(!again.is_created(), "{again:?}");
        assert_eq!(again.model(), first.model());
    }
    assert_eq!(accounts::Entity::find().count(&db).await.unwrap(), 2);
}
