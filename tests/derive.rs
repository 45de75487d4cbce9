//! `#[derive(IdempotentCreate)]` end to end, on PostgreSQL and MariaDB (`name::postgres`,
//! `name::mariadb`) and SQLite on a file: an entity keyed by one column (`pull_requests` by
//! `pr_id`, the sample schema) and one keyed by two (`members` by `(org_id, login)`), each
//! created once and then found; and each locks exactly the pinned key that the hand-written
//! impl of its table (`entity::PullRequest`, `common::composite::members`) locks, so moving an
//! entity from its impl to the derive changes no lock key during a deploy.
//!
//! The lock tests can fail: with the derive made to write a `lock_namespace` of its own,
//! `derived_entities_lock_the_keys_of_the_hand_written_impls` failed on both servers (the
//! derived call was not busy on the pinned key: `Ok(())`) and
//! `derived_impls_say_what_the_hand_written_ones_say` with `"mutated" != "pull_requests"`.
//! The derive's compile errors are `macros/tests/ui` (trybuild).

#![cfg(feature = "derive")]

mod common;

use common::composite::{MYSQL_TABLES, POSTGRES_TABLES, member_row, members};
use common::{Server, new_pr, on_each_server};
use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait};
use sea_orm_idempotent::{Error, IdempotentCreate, LockKey, Wait, acquire_advisory_lock};

/// `pull_requests` (the sample schema), derived, keyed by `pr_id`.
#[allow(unreachable_pub)]
mod derived_prs {
    use sea_orm::entity::prelude::*;
    use sea_orm_idempotent::IdempotentCreate;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
    #[sea_orm(table_name = "pull_requests")]
    #[idempotent(key = "pr_id")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub pr_id: i64,
        pub repository: String,
        pub number: i32,
        #[sea_orm(column_type = "Text")]
        pub title: String,
        pub author: String,
        pub state: String,
        pub head_sha: String,
        pub first_delivery_id: String,
        pub created_at: DateTimeWithTimeZone,
        pub updated_at: Option<DateTimeWithTimeZone>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `members` (`common::composite`'s table), derived, keyed by `(org_id, login)`.
#[allow(unreachable_pub)]
mod derived_members {
    use sea_orm::entity::prelude::*;
    use sea_orm_idempotent::IdempotentCreate;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
    #[sea_orm(table_name = "members")]
    #[idempotent(key(org_id, login))]
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
}

/// Key fields whose `Column` variants DeriveEntityModel names unusually: a raw identifier, a
/// name that becomes a keyword, a digit, `enum_name`. (No table: only the impl is checked.)
#[allow(unreachable_pub)]
mod odd_names {
    use sea_orm::entity::prelude::*;
    use sea_orm_idempotent::IdempotentCreate;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
    #[sea_orm(table_name = "odd_names")]
    #[idempotent(key(r#type, self_, a_1, renamed))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub r#type: String,
        pub self_: i32,
        pub a_1: i16,
        #[sea_orm(column_name = "other", enum_name = "Other")]
        pub renamed: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A new pull request's row: everything but the key, which the crate sets.
fn pr_row(pr_id: i64) -> derived_prs::ActiveModel {
    let pr = new_pr(pr_id);
    derived_prs::ActiveModel {
        repository: Set(pr.repository),
        number: Set(pr.number),
        title: Set(pr.title),
        author: Set(pr.author),
        state: Set(pr.state),
        head_sha: Set(pr.head_sha),
        first_delivery_id: Set(pr.delivery_id),
        updated_at: Set(pr.updated_at),
        ..Default::default()
    }
}

fn member(role: &str) -> derived_members::ActiveModel {
    derived_members::ActiveModel {
        role: Set(role.to_owned()),
        ..Default::default()
    }
}

/// The derive writes what the hand-written impls of these tables say: the key's type, the row
/// as the data, the key columns in order, the table as the lock namespace.
#[test]
fn derived_impls_say_what_the_hand_written_ones_say() {
    fn implements<E: IdempotentCreate<Key = K, Data = D>, K, D>() {}
    implements::<derived_prs::Entity, i64, derived_prs::ActiveModel>();
    implements::<derived_members::Entity, (i64, String), derived_members::ActiveModel>();

    fn columns(columns: Vec<impl std::fmt::Debug>) -> String {
        format!("{columns:?}")
    }
    assert_eq!(
        columns(derived_prs::Entity::key_columns()),
        columns(entity::PullRequest::key_columns())
    );
    assert_eq!(
        columns(derived_members::Entity::key_columns()),
        columns(members::Entity::key_columns())
    );
    assert_eq!(
        columns(derived_members::Entity::key_columns()),
        "[OrgId, Login]"
    );
    assert_eq!(
        format!("{:?}", derived_members::Entity::key_column()),
        "OrgId"
    );
    implements::<odd_names::Entity, (String, i32, i16, i64), odd_names::ActiveModel>();
    assert_eq!(
        columns(odd_names::Entity::key_columns()),
        "[Type, Self_, A1, Other]"
    );
    assert_eq!(
        derived_prs::Entity::lock_namespace(),
        entity::PullRequest::lock_namespace()
    );
    assert_eq!(
        derived_members::Entity::lock_namespace(),
        members::Entity::lock_namespace()
    );
}

/// Each derived entity's key is created once, `Created`, then found, `Existing`, with the row
/// the first call stored and the key set from the key.
async fn created_once_then_found(db: &DatabaseConnection) {
    let first = derived_prs::Entity::create_once(db, 1001, pr_row(1001))
        .await
        .unwrap();
    assert!(first.is_created());
    assert_eq!(first.model().pr_id, 1001);
    assert_eq!(first.model().first_delivery_id, new_pr(1001).delivery_id);
    let mut again = pr_row(1001);
    again.title = Set("another title".to_owned());
    let second = derived_prs::Entity::create_once(db, 1001, again)
        .await
        .unwrap();
    assert!(!second.is_created());
    assert_eq!(second.model(), first.model());
    assert_eq!(derived_prs::Entity::find().count(db).await.unwrap(), 1);

    let key = (42_i64, "mona".to_owned());
    let first = derived_members::Entity::create_once(db, key.clone(), member("maintainer"))
        .await
        .unwrap();
    assert!(first.is_created());
    assert_eq!(
        (first.model().org_id, first.model().login.as_str()),
        (42, "mona")
    );
    let second = derived_members::Entity::create_once(db, key, member("member"))
        .await
        .unwrap();
    assert!(!second.is_created());
    assert_eq!(second.model(), first.model());
    assert_eq!(second.model().role, "maintainer");
    // Another login of the same org is another key.
    let other = derived_members::Entity::create_once(db, (42, "hubot".to_owned()), member("bot"))
        .await
        .unwrap();
    assert!(other.is_created());
    assert_eq!(derived_members::Entity::find().count(db).await.unwrap(), 2);
}

on_each_server! {
    #[tokio::test]
    async fn derived_entities_create_once_then_find(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        db.execute_unprepared(server.sql(POSTGRES_TABLES, MYSQL_TABLES))
            .await
            .unwrap();
        created_once_then_found(&db).await;
    }

    /// While the pinned lock key of a key is held (the Python-computed vectors of
    /// `LockKey::for_entity` and `LockKey::for_composite`), a `Wait::No` call of that key is
    /// busy on it, through the derived impl and the hand-written one alike; a key next to it
    /// is not.
    #[tokio::test]
    async fn derived_entities_lock_the_keys_of_the_hand_written_impls(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        db.execute_unprepared(server.sql(POSTGRES_TABLES, MYSQL_TABLES))
            .await
            .unwrap();

        // Python: zlib.crc32(b"pull_requests") == 724609916, zlib.crc32(b"123") == 2286445522
        let pinned = LockKey::Pair(724_609_916, 2_286_445_522_u32 as i32);
        let holder = db.begin().await.unwrap();
        acquire_advisory_lock(&holder, pinned, Wait::Forever).await.unwrap();
        let derived = derived_prs::Entity::once(123, pr_row(123))
            .wait(Wait::No)
            .exec(&db)
            .await;
        let by_hand = entity::PullRequest::once(123, new_pr(123))
            .wait(Wait::No)
            .exec(&db)
            .await;
        for outcome in [derived.map(|_| ()), by_hand.map(|_| ())] {
            assert!(
                matches!(&outcome, Err(Error::LockBusy { key, .. }) if *key == pinned),
                "{outcome:?}: not busy on the pinned {pinned:?}"
            );
        }
        let next = derived_prs::Entity::once(124, pr_row(124))
            .wait(Wait::No)
            .exec(&db)
            .await
            .unwrap();
        assert!(next.is_created());
        holder.rollback().await.unwrap();

        // Python: enc = lambda *p: "".join(f"{len(str(s).encode())}:{s}" for s in p)
        // zlib.crc32(b"members") == 1168167679, zlib.crc32(enc(7, "Mona").encode()) == 969861840
        let pinned = LockKey::Pair(1_168_167_679, 969_861_840);
        let key = (7_i64, "Mona".to_owned());
        let holder = db.begin().await.unwrap();
        acquire_advisory_lock(&holder, pinned, Wait::Forever).await.unwrap();
        let derived = derived_members::Entity::once(key.clone(), member("member"))
            .wait(Wait::No)
            .exec(&db)
            .await;
        let by_hand = members::Entity::once(key.clone(), member_row(&key))
            .wait(Wait::No)
            .exec(&db)
            .await;
        for outcome in [derived.map(|_| ()), by_hand.map(|_| ())] {
            assert!(
                matches!(&outcome, Err(Error::LockBusy { key, .. }) if *key == pinned),
                "{outcome:?}: not busy on the pinned {pinned:?}"
            );
        }
        let next = derived_members::Entity::once((7, "Monalisa".to_owned()), member("member"))
            .wait(Wait::No)
            .exec(&db)
            .await
            .unwrap();
        assert!(next.is_created());
        holder.rollback().await.unwrap();

        // Free again: the derived call creates the row, the hand-written one finds it.
        assert!(derived_members::Entity::create_once(&db, key.clone(), member("member"))
            .await
            .unwrap()
            .is_created());
        assert!(!members::Entity::create_once(&db, key.clone(), member_row(&key))
            .await
            .unwrap()
            .is_created());
    }
}

/// The same on SQLite, on a file: the sample schema migrated, and the `members` table.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn derived_entities_create_once_then_find_on_sqlite() {
    use common::TempDir;
    use common::composite::SQLITE_TABLES;
    use migration::{Migrator, MigratorTrait};

    let dir = TempDir::new("derive");
    let db = test_support::connect(&dir.sqlite_url("derive.db"), 2).await;
    Migrator::up(&db, None).await.expect("migrate");
    db.execute_unprepared(SQLITE_TABLES).await.unwrap();
    created_once_then_found(&db).await;
}
