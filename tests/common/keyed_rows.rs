//! `keyed_rows!`: an entity of keyed rows (`id`, a unique `k`, a text `v`) whose calls look
//! first as the caller says, for tests of the paths a call takes (`tests/round_trips.rs`,
//! `tests/drop_sweep.rs`). Each test creates its table.

/// `keyed_rows!(module, "table", Always | Never | Adaptive)`: module `module` holds the entity
/// of `table`, keyed by `k` (an `i64`), its data the text `v`, and its `look_first()` the
/// [`LookFirst`](sea_orm_idempotent::LookFirst) variant named; with
/// `, ids_without_gaps: true` its `ids_without_gaps()` too (`tests/one_statement.rs`).
macro_rules! keyed_rows {
    ($module:ident, $table:literal, $look:ident $(, ids_without_gaps: $gapless:literal)?) => {
        #[allow(unreachable_pub, dead_code)]
        mod $module {
            use sea_orm::ActiveValue::Set;
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                #[sea_orm(primary_key)]
                pub id: i64,
                #[sea_orm(unique)]
                pub k: i64,
                pub v: String,
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}

            impl sea_orm_idempotent::IdempotentCreate for Entity {
                type Key = i64;
                type Data = String;

                fn key_column() -> Column {
                    Column::K
                }

                fn new_active_model(_: &i64, v: String) -> ActiveModel {
                    ActiveModel {
                        v: Set(v),
                        ..Default::default()
                    }
                }

                fn look_first() -> sea_orm_idempotent::LookFirst {
                    sea_orm_idempotent::LookFirst::$look
                }

                $(
                    fn ids_without_gaps() -> bool {
                        $gapless
                    }
                )?
            }
        }
    };
}

pub(crate) use keyed_rows;
