//! Shared by the integration tests: sample data and small assertions.

#![allow(dead_code)] // each test binary uses its own subset

use entity::{NewPullRequest, PullRequest, pull_requests};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

/// A plausible new pull request for `pr_id`.
pub(crate) fn new_pr(pr_id: i64) -> NewPullRequest {
    NewPullRequest {
        repository: "octo-org/octo-repo".into(),
        number: i32::try_from(pr_id.rem_euclid(100_000) + 1).unwrap(),
        title: format!("Pull request {pr_id}"),
        author: "mona".into(),
        state: "open".into(),
        head_sha: format!("{:040x}", pr_id),
        delivery_id: format!("delivery-{pr_id}"),
    }
}

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
