//! How a pull request is created exactly once: keyed by GitHub's global pull-request id.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::prelude::DateTimeWithTimeZone;
use sea_orm_idempotent::IdempotentCreate;

use crate::pull_requests::{ActiveModel, Column, Entity};

/// What a new `pull_requests` row needs besides its key (`pr_id`): the fields of a GitHub
/// `pull_request` webhook, and the `X-GitHub-Delivery` id of the delivery that creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPullRequest {
    /// `owner/name` of the repository.
    pub repository: String,
    /// The pull request's number within its repository (positive).
    pub number: i32,
    /// The title.
    pub title: String,
    /// The author's login.
    pub author: String,
    /// `open` or `closed`.
    pub state: String,
    /// The 40-hex-digit SHA of the head commit.
    pub head_sha: String,
    /// The `X-GitHub-Delivery` header of the delivery that creates the row.
    pub delivery_id: String,
    /// GitHub's `updated_at` of the pull request as of this data, if known (`None` is stored
    /// as NULL: older than any known time).
    pub updated_at: Option<DateTimeWithTimeZone>,
}

impl IdempotentCreate for Entity {
    type Key = i64;
    type Data = NewPullRequest;

    fn key_column() -> Column {
        Column::PrId
    }

    fn new_active_model(pr_id: &i64, data: NewPullRequest) -> ActiveModel {
        ActiveModel {
            id: NotSet,
            pr_id: Set(*pr_id),
            repository: Set(data.repository),
            number: Set(data.number),
            title: Set(data.title),
            author: Set(data.author),
            state: Set(data.state),
            head_sha: Set(data.head_sha),
            first_delivery_id: Set(data.delivery_id),
            created_at: NotSet,
            updated_at: Set(data.updated_at),
        }
    }
}
