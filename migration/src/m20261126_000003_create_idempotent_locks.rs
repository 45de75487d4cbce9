//! `sea_orm_idempotent_locks`: the table MySQL and MariaDB lock keys in (one row per key, locked
//! with `SELECT ... FOR UPDATE` inside the creating transaction). Created only on MySQL: the
//! other backends lock without a table.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Creates the lock table on MySQL/MariaDB (and drops it on `down`); nothing elsewhere.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .create_table(sea_orm_idempotent::mysql_lock_table())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .drop_table(
                    Table::drop()
                        .table(sea_orm_idempotent::MYSQL_LOCK_TABLE)
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
