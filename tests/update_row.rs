//! The update function's view of the new data (issue 26): `Once::update_row` hands it the row
//! the call would insert, an active model whatever the entity's `Data` type, and SeaORM's
//! `try_as_ref` reads a field the data did not set as `None` instead of panicking (`as_ref`,
//! which the README used to show, panics with "Cannot borrow ActiveValue::NotSet").

#![cfg(feature = "sqlite")]

mod common;

#[allow(unreachable_pub)]
mod versions {
    use sea_orm::ActiveValue::{NotSet, Set};
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "versions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        pub version: i32,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// A custom data type: the version, and a note only some events carry.
    pub struct Edit {
        pub version: i32,
        pub note: Option<String>,
    }

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = String;
        type Data = Edit;

        fn key_column() -> Column {
            Column::Name
        }

        fn new_active_model(_: &String, edit: Edit) -> ActiveModel {
            ActiveModel {
                id: NotSet,
                name: NotSet,
                version: Set(edit.version),
                // Only an edit that carries a note sets it.
                note: match edit.note {
                    Some(note) => Set(Some(note)),
                    None => NotSet,
                },
            }
        }
    }
}

use sea_orm::ConnectionTrait;
use sea_orm_idempotent::{Change, IdempotentCreate, UpsertOutcome};
use versions::Edit;

#[tokio::test]
async fn the_update_function_reads_the_new_row_of_a_custom_data_type() {
    let dir = common::TempDir::new("update-row");
    let db = test_support::connect(&dir.sqlite_url("rows.db"), 2).await;
    db.execute_unprepared(
        "CREATE TABLE versions (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, \
         version INTEGER NOT NULL, note TEXT)",
    )
    .await
    .unwrap();
    let edit = |version: i32, note: Option<&str>| Edit {
        version,
        note: note.map(str::to_owned),
    };
    let apply = |version: i32, note: Option<&'static str>| {
        versions::Entity::once("a".to_owned(), edit(version, note))
            .update_row(|existing, new_row| {
                // The key column is set in the new row; a note the edit did not carry reads
                // as `None`, where `as_ref` would panic.
                assert_eq!(new_row.name.try_as_ref().map(String::as_str), Some("a"));
                let newer = new_row
                    .version
                    .try_as_ref()
                    .is_some_and(|version| *version > existing.version);
                let _note: Option<&Option<String>> = new_row.note.try_as_ref();
                if newer {
                    Change::Update(new_row)
                } else {
                    Change::Keep
                }
            })
            .exec(&db)
    };
    assert!(matches!(
        apply(1, Some("first")).await.unwrap(),
        UpsertOutcome::Created(_)
    ));
    // Newer, without a note: updated, and the stored note stays (the field was not set).
    match apply(2, None).await.unwrap() {
        UpsertOutcome::Updated(row) => {
            assert_eq!(row.version, 2);
            assert_eq!(row.note.as_deref(), Some("first"));
        }
        other => panic!("{other:?}"),
    }
    // Older: kept.
    assert!(matches!(
        apply(1, Some("late")).await.unwrap(),
        UpsertOutcome::Unchanged(_)
    ));
}
