//! The derive of [`IdempotentCreate`](https://docs.rs/sea-orm-idempotent) for a SeaORM entity
//! keyed by one or more of its columns. Use it through `sea-orm-idempotent` (its `derive`
//! feature, on by default), which re-exports it beside the trait of the same name.

mod expand;

use proc_macro::TokenStream;

/// Implements `IdempotentCreate` for the entity of a `DeriveEntityModel` `Model`, keyed by the
/// columns `#[idempotent(key = ..)]` names, with the new row itself as the data
/// (`type Data = ActiveModel`).
///
/// ```
/// mod pull_requests {
///     use sea_orm::entity::prelude::*;
///     use sea_orm_idempotent::IdempotentCreate;
///
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
///     #[sea_orm(table_name = "pull_requests")]
///     #[idempotent(key = "pr_id")] // UNIQUE (pr_id)
///     pub struct Model {
///         #[sea_orm(primary_key)]
///         pub id: i64,
///         #[sea_orm(unique)]
///         pub pr_id: i64,
///         pub title: String,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
/// }
///
/// mod members {
///     use sea_orm::entity::prelude::*;
///     use sea_orm_idempotent::IdempotentCreate;
///
///     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, IdempotentCreate)]
///     #[sea_orm(table_name = "members")]
///     #[idempotent(key(org_id, login))] // UNIQUE (org_id, login)
///     pub struct Model {
///         #[sea_orm(primary_key)]
///         pub id: i64,
///         pub org_id: i64,
///         pub login: String,
///         pub role: String,
///     }
///
///     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
///     pub enum Relation {}
///
///     impl ActiveModelBehavior for ActiveModel {}
/// }
///
/// use sea_orm::ActiveValue::Set;
/// use sea_orm_idempotent::IdempotentCreate;
///
/// # async fn calls(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm_idempotent::Error> {
/// let title = Set("Fix the flaky test".to_owned());
/// let new_pr = pull_requests::ActiveModel { title, ..Default::default() };
/// pull_requests::Entity::create_once(db, 1001, new_pr).await?;
///
/// let role = Set("maintainer".to_owned());
/// let new_member = members::ActiveModel { role, ..Default::default() };
/// members::Entity::create_once(db, (42, "mona".to_owned()), new_member).await?;
/// # Ok(())
/// # }
/// assert_eq!(format!("{:?}", members::Entity::key_columns()), "[OrgId, Login]");
/// ```
///
/// It writes the impl you would write by hand:
///
/// ```text
/// impl IdempotentCreate for Entity {
///     type Key = (i64, String);      // the key fields' types, in the attribute's order
///     type Data = ActiveModel;       // the rest of the row
///     fn key_column() -> Column { Column::OrgId }
///     fn key_columns() -> Vec<Column> { vec![Column::OrgId, Column::Login] } // 2+ columns
///     fn new_active_model(_: &Self::Key, row: ActiveModel) -> ActiveModel { row }
/// }
/// ```
///
/// The crate sets the key columns of the row from the key, whatever the row holds there. The
/// lock namespace is the default (the table name, `schema.table` with a schema), so the lock
/// keys are those of the hand-written impl: a derived entity and a hand-written one of the
/// same table exclude each other, and switching one to the other changes no lock during a
/// deploy.
///
/// # The attribute
///
/// - `#[idempotent(key = "field")]` (or `key(field)`): a one-column key, of the field's type;
/// - `#[idempotent(key(field_a, field_b))]`: a composite key, the tuple of the fields' types
///   (two to six), in that order. Give those columns a composite UNIQUE index.
///
/// A key field cannot be an `Option` (a natural key has no NULL parts) or
/// `#[sea_orm(ignore)]`. `#[sea_orm(enum_name = "..")]` on a key field is followed. Mistakes
/// in the attribute are compile errors that point at it.
///
/// # What it does not do
///
/// Anything else is the hand-written impl: data of another type than `ActiveModel` (a
/// payload the row is built from), a `lock_namespace` shared with other tables, `look_first`
/// or `log_key` other than the defaults. Derive or write the impl, not both.
///
/// # Paths
///
/// The impl names `::sea_orm_idempotent::IdempotentCreate` and the `Entity`, `Column` and
/// `ActiveModel` that `DeriveEntityModel` writes beside the struct: derive both on the same
/// struct, in a crate that depends on `sea-orm-idempotent` under that name (not renamed).
#[proc_macro_derive(IdempotentCreate, attributes(idempotent))]
pub fn derive_idempotent_create(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
