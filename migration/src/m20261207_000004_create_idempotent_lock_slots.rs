//! `sea_orm_idempotent_lock_slots`: the table MySQL and MariaDB lock keys in from 0.3, a fixed
//! number of rows that never grows ([`mysql_lock_slots`](sea_orm_idempotent::mysql_lock_slots)),
//! and the end of the per-key table of 0.1 and 0.2, which grew by a row for every key. Created
//! only on MySQL: the other backends lock without a table.
//!
//! This sample has no older version running beside it, so it makes the slots and drops the
//! per-key table in one migration. A service that upgrades while 0.1 or 0.2 still runs
//! splits it in two: the slots now, the drop once no older version runs (the drop is the
//! switch: see `mysql_lock_slots`, "Upgrading").

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates and fills the slots and drops the per-key lock table on MySQL/MariaDB (`down`
/// puts the per-key table back and drops the slots); nothing elsewhere.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .create_table(sea_orm_idempotent::mysql_lock_slots())
                .await?;
            manager
                .get_connection()
                .execute_raw(sea_orm_idempotent::mysql_lock_slots_fill())
                .await?;
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            manager
                .create_table(sea_orm_idempotent::mysql_lock_table())
                .await?;
            manager
                .drop_table(
                    Table::drop()
                        .table(sea_orm_idempotent::MYSQL_LOCK_SLOTS_TABLE)
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
