//! Composite natural keys on PostgreSQL and MariaDB, the same tests on both (`name::postgres`,
//! `name::mariadb`: `common::on_each_server!`): keys of two columns (`(org_id, login)`: integer and
//! string) and three (`(tenant, repo_id, number)`: string, integer, integer), each created
//! exactly once and `Created` exactly once by many tasks over two pools and by several OS
//! processes released together; the lock is the pinned `LockKey::for_composite`; tuples a
//! comma-join would confuse are two keys that do not wait for each other; a key whose parts
//! do not match `key_columns()` is refused before anything is sent.
//!
//! The race tests can fail, and were seen to: with `Backend::lock` in `src/backend/mod.rs` made a
//! no-op for PostgreSQL, `many_tasks_create_each_composite_key_once` failed with 5 unique
//! violations and 7 `make_data` runs for keys others created, and
//! `several_processes_create_each_composite_key_once` with 23 and 27 (the two pools' callers
//! of one key both find nothing and both insert). On MariaDB, with the MySQL arm of
//! `Backend::lock` made a no-op, `many_tasks_create_each_composite_key_once::mariadb` failed
//! with 36 and 31 unique violations (and 87 `make_data` runs for 60 rows), and
//! `several_processes_create_each_composite_key_once::mariadb` with 59 and 63. They run over
//! TWO pools
//! because callers of one pool on the same key take turns in the crate's waiting room first
//! (`tests/common/race.rs`), and over one pool would pass without the lock. With
//! `LockKey::for_composite` made a comma-join, `tuples_a_comma_join_would_confuse_...` failed
//! with `LockBusy`.

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use common::composite::{
    KEYS, MYSQL_TABLES, POSTGRES_TABLES, Race, assert_one_row_per_key, member_row, members,
    race_both,
};
use common::{Server, on_each_server, open_pools, run_gated_outputs, wait_at_gate, worker_process};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock};
use tokio::sync::oneshot;

/// The pair table on PostgreSQL (the composite tables are `POSTGRES_TABLES`).
const POSTGRES_PAIRS: &str = "CREATE TABLE pairs (id bigserial PRIMARY KEY, a text NOT NULL,
    b text NOT NULL, UNIQUE (a, b));";
/// The pair table on MariaDB (`varchar`, which a unique index takes whole).
const MYSQL_PAIRS: &str = "CREATE TABLE pairs (id BIGINT AUTO_INCREMENT PRIMARY KEY,
    a VARCHAR(191) NOT NULL, b VARCHAR(191) NOT NULL, UNIQUE (a, b)) ENGINE=InnoDB;";

const POOL: u32 = 8;
const PROCESSES: usize = 4;

/// Creates the composite tables and the pair table on `server`.
async fn tables(server: Server, db: &DatabaseConnection) {
    for sql in [
        server.sql(POSTGRES_TABLES, MYSQL_TABLES),
        server.sql(POSTGRES_PAIRS, MYSQL_PAIRS),
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
}

/// Two text columns: tuples a naive comma-join would confuse.
#[allow(unreachable_pub)]
mod pairs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pairs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub a: String,
        pub b: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (String, String);
        type Data = ();

        fn key_column() -> Column {
            Column::A
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::A, Column::B]
        }

        fn new_active_model(_: &(String, String), (): ()) -> ActiveModel {
            <ActiveModel as Default>::default()
        }
    }
}

/// `members` again, with a two-part key but `key_columns()` left at its one-column default.
#[allow(unreachable_pub)]
mod members_without_columns {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub org_id: i64,
        pub login: String,
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (i64, String);
        type Data = ActiveModel;

        fn key_column() -> Column {
            Column::OrgId
        }

        fn new_active_model(_: &(i64, String), row: ActiveModel) -> ActiveModel {
            row
        }
    }
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_COMPOSITE_WORKER_URL";

/// One racing process of `several_processes_create_each_composite_key_once`: waits at the
/// parent's gate, races both tables (on either server: the URL says which), reports what its
/// calls returned. Run plainly, it races alone on a PostgreSQL database of its own and checks
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn composite_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let pools = open_pools(&url, 2, POOL).await;
            wait_at_gate(&pools[0]).await;
            race_both(&pools).await.print_for_parent();
        }
        Err(_) if cfg!(feature = "postgres") => {
            let test_db = test_support::TestDb::new().await;
            let pools = open_pools(&test_db.url, 2, POOL).await;
            tables(Server::Postgres, &pools[0]).await;
            race_both(&pools).await.assert_exactly_once(2 * KEYS, 1);
        }
        Err(_) => {}
    }
}

on_each_server! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_tasks_create_each_composite_key_once(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let pools = open_pools(&test_db.url, 2, POOL).await;
        tables(server, &pools[0]).await;

        race_both(&pools).await.assert_exactly_once(2 * KEYS, 1);
        assert_one_row_per_key(&pools[0]).await;
    }

    /// Four processes, released together by the start gate, race on the same composite keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_processes_create_each_composite_key_once(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let direct = test_db.connect(2).await;
        tables(server, &direct).await;
        let workers = (0..PROCESSES).map(|_| {
            let mut worker = worker_process("composite_race_worker_process");
            worker.env(WORKER_URL, &test_db.url);
            worker
        });
        let mut total = Race::default();
        for output in run_gated_outputs(&direct, workers).await {
            total.add(Race::of_worker(&output));
        }
        total.assert_exactly_once(2 * KEYS, PROCESSES);
        assert_one_row_per_key(&direct).await;
    }

    /// `("a,b", "c")` and `("a", "b,c")` join to the same text with commas; with the length
    /// prefixes they are two lock keys: two rows, and neither waits for the other.
    #[tokio::test]
    async fn tuples_a_comma_join_would_confuse_are_two_keys_that_do_not_wait(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(4).await;
        tables(server, &db).await;
        let first = ("a,b".to_owned(), "c".to_owned());
        let second = ("a".to_owned(), "b,c".to_owned());

        let (inside_tx, inside_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let (db, first) = (db.clone(), first.clone());
            async move {
                pairs::Entity::create_once_with(&db, first, || async move {
                    inside_tx.send(()).unwrap();
                    go_rx.await.unwrap();
                    Ok::<_, std::convert::Infallible>(())
                })
                .await
            }
        });
        inside_rx.await.unwrap(); // ("a,b", "c") is locked now
        let other = pairs::Entity::once(second.clone(), ())
            .wait(Wait::No)
            .exec(&db)
            .await
            .expect("(\"a\", \"b,c\") is another lock: no LockBusy");
        assert!(other.is_created());
        go_tx.send(()).unwrap();
        assert!(holder.await.unwrap().unwrap().is_created());

        assert_eq!(pairs::Entity::find().count(&db).await.unwrap(), 2);
        let again = pairs::Entity::create_once(&db, second, ()).await.unwrap();
        assert!(!again.is_created());
        assert_eq!(
            (again.model().a.as_str(), again.model().b.as_str()),
            ("a", "b,c")
        );
    }

    /// The lock `create_once` takes for a composite key is the pinned derivation: held by hand
    /// on the golden vector, it makes a `Wait::No` call busy, and the error names the row.
    #[tokio::test]
    async fn the_composite_lock_is_the_pinned_key(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        tables(server, &db).await;
        // Python: enc = lambda *p: "".join(f"{len(str(s).encode())}:{s}" for s in p)
        // zlib.crc32(b"members") == 1168167679, zlib.crc32(enc(7, "Mona").encode()) == 969861840
        let pinned = LockKey::Pair(1_168_167_679, 969_861_840);
        let key = (7_i64, "Mona".to_owned());

        let holder = db.begin().await.unwrap();
        acquire_advisory_lock(&holder, pinned, Wait::Forever)
            .await
            .unwrap();
        let err = members::Entity::once(key.clone(), member_row(&(7, String::new())))
            .wait(Wait::No)
            .exec(&db)
            .await
            .expect_err("the pinned key is held");
        assert!(
            matches!(&err, Error::LockBusy { key, .. } if *key == pinned),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the lock of members key (7, Mona) (lock key (1168167679, 969861840)) is held by another transaction"
        );
        holder.rollback().await.unwrap();

        let created = members::Entity::create_once(&db, key, member_row(&(7, String::new())))
            .await
            .unwrap();
        assert!(created.is_created());
        assert_eq!(
            (created.model().org_id, created.model().login.as_str()),
            (7, "Mona")
        );
    }

    /// A two-part key with `key_columns()` left at one column is a typed error naming the table,
    /// before anything is sent.
    #[tokio::test]
    async fn a_key_whose_parts_do_not_match_its_columns_is_refused(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(1).await;
        tables(server, &db).await;
        let err = members_without_columns::Entity::create_once(
            &db,
            (1, "mona".to_owned()),
            members_without_columns::ActiveModel {
                role: sea_orm::ActiveValue::Set("member".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect_err("one column for two parts");
        assert!(
            matches!(
                err,
                Error::KeyColumns {
                    table: "members",
                    columns: 1,
                    parts: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert_eq!(members::Entity::find().count(&db).await.unwrap(), 0);
    }
}
