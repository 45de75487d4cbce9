//! Migrations for the sample schema of `sea-orm-idempotent`: one `pull_requests` table, as a
//! GitHub integration stores pull requests it learns about from webhooks, and on MySQL the
//! crate's lock table (its slots, from `m20261207_000004`).
//!
//! Run them with the CLI (`cargo run -p migration -- up`, `down`, `fresh`, `refresh`, `reset`,
//! `status`) against `DATABASE_URL`, or from code with [`Migrator::up`](MigratorTrait::up).

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_pull_requests;
mod m20261126_000002_add_pull_requests_updated_at;
mod m20261126_000003_create_idempotent_locks;
mod m20261207_000004_create_idempotent_lock_slots;

/// Every migration of the sample schema, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_pull_requests::Migration),
            Box::new(m20261126_000002_add_pull_requests_updated_at::Migration),
            Box::new(m20261126_000003_create_idempotent_locks::Migration),
            Box::new(m20261207_000004_create_idempotent_lock_slots::Migration),
        ]
    }
}
