//! The crate on its locked path, on the same table: an entity of `pull_requests` whose
//! `ids_without_gaps()` is `true`, so every call takes the transaction and the lock, never the
//! one statement (what any table without a unique index over its key gets).

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::entity::prelude::*;
use sea_orm_idempotent::IdempotentCreate;
use test_support::new_pr;

use crate::strategy::{Answer, BoxError};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pull_requests")]
pub(crate) struct Model {
    #[sea_orm(primary_key)]
    pub(crate) id: i64,
    pub(crate) pr_id: i64,
    pub(crate) repository: String,
    pub(crate) number: i32,
    #[sea_orm(column_type = "Text")]
    pub(crate) title: String,
    pub(crate) author: String,
    pub(crate) state: String,
    pub(crate) head_sha: String,
    pub(crate) first_delivery_id: String,
    pub(crate) created_at: DateTimeWithTimeZone,
    pub(crate) updated_at: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl IdempotentCreate for Entity {
    type Key = i64;
    type Data = entity::NewPullRequest;

    fn key_column() -> Column {
        Column::PrId
    }

    fn new_active_model(pr_id: &i64, data: entity::NewPullRequest) -> ActiveModel {
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

    fn ids_without_gaps() -> bool {
        true
    }
}

/// One delivery of pull request `key` on the locked path.
pub(crate) async fn deliver(db: &DatabaseConnection, key: i64) -> Result<Answer, BoxError> {
    Ok(Entity::create_once(db, key, new_pr(key)).await?.into())
}
