//! The naive find-then-insert: what most code does, and the race `create_once` closes. The
//! tests race it to prove their workloads can fail, the benchmark measures it, and the demo's
//! `--naive` shows it: one copy, so all of them race the same code.

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, IntoActiveModel,
    QueryFilter,
};
use sea_orm_idempotent::IdempotentCreate;

/// Looks for `key`'s row, and inserts it from `data` if there was none, with no lock and no
/// transaction: two callers at once both find nothing and both insert, and one fails on the
/// unique constraint. Returns whether it inserted.
///
/// # Errors
///
/// Whatever the database returns: a unique violation when another caller inserted the key
/// between the look and the insert.
pub async fn naive_find_then_insert<E, C>(db: &C, key: E::Key, data: E::Data) -> Result<bool, DbErr>
where
    E: IdempotentCreate,
    E::Key: Into<sea_orm::Value>,
    E::ActiveModel: ActiveModelBehavior + Send,
    E::Model: IntoActiveModel<E::ActiveModel>,
    C: ConnectionTrait,
{
    let found = E::find()
        .filter(E::key_column().eq(key.clone()))
        .one(db)
        .await?;
    if found.is_some() {
        return Ok(false);
    }
    E::new_active_model(&key, data).insert(db).await?;
    Ok(true)
}
