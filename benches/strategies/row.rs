//! Decoding a `pull_requests` row read by hand with sqlx, on any backend: every column by
//! name, as `#[derive(sqlx::FromRow)]` would, into the same model SeaORM returns. Every
//! strategy returns the full row, so none of them is faster for decoding less.

use entity::pull_requests::Model;
use sea_orm::prelude::{DateTimeUtc, DateTimeWithTimeZone};
use sea_orm::sqlx::mysql::MySqlRow;
use sea_orm::sqlx::{self, ColumnIndex, Decode, Row, Type};

/// The model of `row`.
pub(crate) fn model<'r, R>(row: &'r R) -> Result<Model, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTimeWithTimeZone: Decode<'r, R::Database> + Type<R::Database>,
    Option<DateTimeWithTimeZone>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Model {
        id: row.try_get("id")?,
        pr_id: row.try_get("pr_id")?,
        repository: row.try_get("repository")?,
        number: row.try_get("number")?,
        title: row.try_get("title")?,
        author: row.try_get("author")?,
        state: row.try_get("state")?,
        head_sha: row.try_get("head_sha")?,
        first_delivery_id: row.try_get("first_delivery_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// [`model`] of a MySQL row: sqlx's MySQL driver decodes a `TIMESTAMP` as UTC only (no
/// `DateTime<FixedOffset>`), so the two timestamps are read as UTC and given their offset, as
/// SeaORM does.
pub(crate) fn mysql_model(row: &MySqlRow) -> Result<Model, sqlx::Error> {
    Ok(Model {
        id: row.try_get("id")?,
        pr_id: row.try_get("pr_id")?,
        repository: row.try_get("repository")?,
        number: row.try_get("number")?,
        title: row.try_get("title")?,
        author: row.try_get("author")?,
        state: row.try_get("state")?,
        head_sha: row.try_get("head_sha")?,
        first_delivery_id: row.try_get("first_delivery_id")?,
        created_at: row.try_get::<DateTimeUtc, _>("created_at")?.fixed_offset(),
        updated_at: row
            .try_get::<Option<DateTimeUtc>, _>("updated_at")?
            .map(|at| at.fixed_offset()),
    })
}
