//! The statements' texts are kept after the first call (src/statements.rs).

use sea_orm::{DatabaseBackend, MockDatabase};

use crate::natural_key::Key;

use super::*;

#[allow(unreachable_pub)]
mod rows {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rows")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub org: i64,
        pub login: String,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl crate::IdempotentCreate for Entity {
        type Key = (i64, String);
        type Data = ActiveModel;

        fn key_column() -> Column {
            Column::Org
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::Org, Column::Login]
        }

        fn new_active_model(_: &(i64, String), row: ActiveModel) -> ActiveModel {
            row
        }
    }
}

/// The crate's own statements bind their values in the order [`statements`] expects, so
/// their texts are kept after the first call: the look, and the insert for each set of
/// columns.
#[tokio::test]
pub(super) async fn the_look_and_the_insert_are_built_once() {
    let key = (7_i64, "mona".to_owned());
    let natural = Key::new(&key);
    let call_key = CallKey::<rows::Entity> {
        values: natural.values(),
        key,
        columns: vec![rows::Column::Org, rows::Column::Login],
        shown: None,
    };
    for backend in [DatabaseBackend::Postgres, DatabaseBackend::Sqlite] {
        let db = MockDatabase::new(backend)
            .append_query_results([Vec::<rows::Model>::new()])
            .into_connection();
        assert_eq!(find::<rows::Entity, _>(&db, &call_key).await.unwrap(), None);
        assert!(statements::is_kept::<rows::Entity>(backend, Kind::Find));

        for note in [None, Some(sea_orm::ActiveValue::Set(Some("hi".to_owned())))] {
            let mut row = <rows::ActiveModel as Default>::default();
            if let Some(note) = note {
                row.note = note;
            }
            let statement = |row| {
                RowValues::<rows::Entity>::of(&call_key, row)
                    .unwrap()
                    .insert_unless_exists(backend, &call_key, Conflicts::Absorb)
            };
            let first = statement(row.clone());
            let again = statement(row);
            assert_eq!((first.sql, first.values), (again.sql, again.values));
        }
        // Columns: id 0, org 1, login 2, note 3.
        for columns in [0b0110, 0b1110] {
            assert!(statements::is_kept::<rows::Entity>(
                backend,
                Kind::InsertUnlessExists { columns }
            ));
        }
    }
}
