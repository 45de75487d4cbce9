//! The checker's tables: one-column keys with and without a unique index (the two share a lock
//! namespace with the sample schema, so the known colliding lock keys of `pull_requests` collide
//! here too), and a composite key with a nullable part whose values hold separators.

use std::fmt;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Value};

/// A key part that may be missing (NULL): SeaORM matches it with `IS NULL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub Option<String>);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("(none)"))
    }
}

impl From<Tag> for Value {
    fn from(tag: Tag) -> Value {
        Value::String(tag.0)
    }
}

macro_rules! one_column_rows {
    ($module:ident, $table:literal) => {
        /// Rows keyed by `k`, versioned by `v`.
        #[allow(missing_docs)]
        pub mod $module {
            use sea_orm::ActiveValue::Set;
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                pub k: i64,
                pub v: i64,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}

            impl sea_orm_idempotent::IdempotentCreate for Entity {
                type Key = i64;
                type Data = i64;

                fn key_column() -> Column {
                    Column::K
                }

                fn new_active_model(_: &i64, v: i64) -> ActiveModel {
                    ActiveModel {
                        v: Set(v),
                        ..Default::default()
                    }
                }

                /// The sample schema's namespace: its colliding keys collide here too, and the
                /// two tables' equal keys share a lock.
                fn lock_namespace() -> &'static str {
                    "pull_requests"
                }
            }
        }
    };
}

one_column_rows!(unique_rows, "chk_unique");
one_column_rows!(loose_rows, "chk_loose");

/// Rows keyed by `(k, tag)`, `tag` nullable, versioned by `v`; no unique index.
#[allow(missing_docs)]
pub mod pair_rows {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    use super::Tag;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "chk_pairs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub k: i64,
        pub tag: Option<String>,
        pub v: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (i64, Tag);
        type Data = i64;

        fn key_column() -> Column {
            Column::K
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::K, Column::Tag]
        }

        fn new_active_model(_: &(i64, Tag), v: i64) -> ActiveModel {
            ActiveModel {
                v: Set(v),
                ..Default::default()
            }
        }
    }
}

/// Creates the checker's tables on `db` (dropping them first).
pub async fn create_tables(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let (id, text) = match backend {
        DbBackend::Postgres => ("id bigserial PRIMARY KEY", "text"),
        DbBackend::MySql => ("id BIGINT AUTO_INCREMENT PRIMARY KEY", "VARCHAR(32)"),
        _ => ("id INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
    };
    for table in TABLES {
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
            .await?;
    }
    db.execute_unprepared(&format!(
        "CREATE TABLE chk_unique ({id}, k BIGINT NOT NULL, v BIGINT NOT NULL, UNIQUE (k))"
    ))
    .await?;
    db.execute_unprepared(&format!(
        "CREATE TABLE chk_loose ({id}, k BIGINT NOT NULL, v BIGINT NOT NULL)"
    ))
    .await?;
    db.execute_unprepared(&format!(
        "CREATE TABLE chk_pairs ({id}, k BIGINT NOT NULL, tag {text} NULL, v BIGINT NOT NULL)"
    ))
    .await?;
    Ok(())
}

/// The checker's tables.
pub const TABLES: [&str; 3] = ["chk_unique", "chk_loose", "chk_pairs"];

/// Empties the checker's tables between histories.
pub async fn empty_tables(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    for table in TABLES {
        db.execute_unprepared(&format!("DELETE FROM {table}"))
            .await?;
    }
    Ok(())
}
