//! `create_once` on every SeaORM handle, including `DatabaseExecutor`, what a migration's
//! `SchemaManager::get_connection()` hands out: seeding data in a migration failed to compile
//! with "the trait bound `DatabaseExecutor<'_>: TransactionSource` is not satisfied" before.
//! A real migration seeds a row through the manager, and each of the executor's three kinds
//! (a borrowed connection, a borrowed transaction, an owned transaction) creates once and then
//! finds the row.

#![cfg(feature = "postgres")]

mod common;

use common::{new_pr, rows_for};
use entity::PullRequest;
use migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use sea_orm::{DatabaseExecutor, DbErr, TransactionTrait};
use sea_orm_idempotent::IdempotentCreate;
use test_support::TestDb;

/// Seeds pull request 1 once, as a data migration would.
struct SeedPullRequest;

impl MigrationName for SeedPullRequest {
    fn name(&self) -> &str {
        "m20261126_000099_seed_pull_request"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SeedPullRequest {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        PullRequest::create_once(manager.get_connection(), 1, new_pr(1))
            .await
            .map_err(|err| DbErr::Migration(err.to_string()))?;
        Ok(())
    }

    async fn down(&self, _: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// The sample schema's migrations, then the seed.
struct Seeded;

#[async_trait::async_trait]
impl MigratorTrait for Seeded {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = migration::Migrator::migrations();
        migrations.push(Box::new(SeedPullRequest));
        migrations
    }
}

#[tokio::test]
async fn a_migration_seeds_through_its_schema_manager() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;
    Seeded::up(&db, None)
        .await
        .expect("the seed migration runs");
    assert_eq!(rows_for(&db, 1).await, 1);
    // Run again (refresh): the seed finds its row instead of failing on the unique key.
    Seeded::refresh(&db).await.expect("migrations re-run");
    assert_eq!(rows_for(&db, 1).await, 1);
}

#[tokio::test]
async fn every_kind_of_executor_creates_once() {
    let test_db = TestDb::new().await;
    let db = test_db.connect(2).await;

    let on_connection = DatabaseExecutor::Connection(&db);
    assert!(
        PullRequest::create_once(&on_connection, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        !PullRequest::create_once(&on_connection, 10, new_pr(10))
            .await
            .unwrap()
            .is_created()
    );

    // A borrowed transaction: a savepoint in it; the caller's rollback undoes the row.
    let txn = db.begin().await.unwrap();
    let borrowed = DatabaseExecutor::Transaction(&txn);
    assert!(
        PullRequest::create_once(&borrowed, 11, new_pr(11))
            .await
            .unwrap()
            .is_created()
    );
    txn.rollback().await.unwrap();
    assert_eq!(rows_for(&db, 11).await, 0);

    // An owned transaction (the migration's kind): committed with it.
    let owned = DatabaseExecutor::OwnedTransaction(db.begin().await.unwrap());
    assert!(
        PullRequest::create_once(&owned, 12, new_pr(12))
            .await
            .unwrap()
            .is_created()
    );
    assert!(
        !PullRequest::create_once(&owned, 12, new_pr(12))
            .await
            .unwrap()
            .is_created()
    );
    let DatabaseExecutor::OwnedTransaction(txn) = owned else {
        unreachable!()
    };
    txn.commit().await.unwrap();
    assert_eq!(rows_for(&db, 12).await, 1);
}
