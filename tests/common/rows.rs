//! Rows of the sample table.

use entity::{PullRequest, pull_requests};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

/// Rows stored for `pr_id`.
pub(crate) async fn rows_for(db: &impl ConnectionTrait, pr_id: i64) -> u64 {
    PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .count(db)
        .await
        .unwrap()
}

/// Rows in the table.
pub(crate) async fn total_rows(db: &impl ConnectionTrait) -> u64 {
    PullRequest::find().count(db).await.unwrap()
}
