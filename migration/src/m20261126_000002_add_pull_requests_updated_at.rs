//! `pull_requests.updated_at`: GitHub's `updated_at` of the pull request as last stored, so a
//! receiver can apply a later event only when it is newer than the row
//! (`examples/github_webhook.rs`).
//!
//! The column is nullable, with no default. SQLite's `ALTER TABLE ADD COLUMN` refuses a
//! non-constant default (`CURRENT_TIMESTAMP`) and a NOT NULL column without a default, and a
//! constant default would be a made-up time. NULL says what is true of every row stored before
//! this migration, and of rows whose data has no timestamp: GitHub's `updated_at` is not known.
//! A receiver treats it as older than any event (in Rust, `None < Some(_)`), so the first
//! event that has one is applied.
//!
//! On MySQL/MariaDB the column is `DATETIME(6)`, not `TIMESTAMP` (what
//! `timestamp_with_time_zone` gives there): a `TIMESTAMP` ends at 2038-01-19 03:14:07 UTC
//! (before MariaDB 11.5), and GitHub's times will pass it. `DATETIME(6)` holds the years 1000
//! to 9999 to the microsecond, as PostgreSQL's `timestamptz` does; sqlx writes and reads it as
//! UTC (the zone its connections set), so it means the same instant on every backend.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

/// Adds `updated_at` to `pull_requests` (and drops it on `down`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let updated_at = match manager.get_database_backend() {
            DbBackend::MySql => ColumnDef::new(PullRequests::UpdatedAt)
                .custom(Alias::new("DATETIME(6)"))
                .null()
                .to_owned(),
            _ => timestamp_with_time_zone_null(PullRequests::UpdatedAt),
        };
        manager
            .alter_table(
                Table::alter()
                    .table(PullRequests::Table)
                    .add_column(updated_at)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite 3.35+ drops columns (the crate needs 3.35 for RETURNING already).
        manager
            .alter_table(
                Table::alter()
                    .table(PullRequests::Table)
                    .drop_column(PullRequests::UpdatedAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum PullRequests {
    Table,
    UpdatedAt,
}
