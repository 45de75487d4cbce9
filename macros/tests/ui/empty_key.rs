use sea_orm::entity::prelude::*;
use sea_orm_idempotent::IdempotentCreate;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
#[sea_orm(table_name = "members")]
#[idempotent(key())]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub org_id: i64,
    pub login: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn main() {}
