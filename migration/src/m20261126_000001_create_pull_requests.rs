//! `pull_requests`: one row per GitHub pull request, keyed by GitHub's global pull-request id.
//!
//! Types are chosen to mean the same on PostgreSQL and SQLite: integers, strings and a
//! timestamp with time zone (TEXT on SQLite). `pr_id` is UNIQUE: the database's last line of
//! defence, which `create_once` is built never to hit.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `pull_requests` (and drops it on `down`).
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PullRequests::Table)
                    .col(big_pk_auto(PullRequests::Id))
                    .col(big_integer_uniq(PullRequests::PrId))
                    .col(string(PullRequests::Repository))
                    .col(integer(PullRequests::Number).check(Expr::col(PullRequests::Number).gt(0)))
                    .col(text(PullRequests::Title))
                    .col(string(PullRequests::Author))
                    .col(string_len(PullRequests::State, 16))
                    .col(string_len(PullRequests::HeadSha, 40))
                    .col(string(PullRequests::FirstDeliveryId))
                    .col(
                        timestamp_with_time_zone(PullRequests::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PullRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PullRequests {
    Table,
    Id,
    PrId,
    Repository,
    Number,
    Title,
    Author,
    State,
    HeadSha,
    FirstDeliveryId,
    CreatedAt,
}
