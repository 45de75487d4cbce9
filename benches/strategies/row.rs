//! A `pull_requests` row by hand with sqlx, on any backend: a new row's values bound in
//! column order, and a row decoded every column by name, as `#[derive(sqlx::FromRow)]` would,
//! into the same model SeaORM returns. Every strategy returns the full row, so none of them is
//! faster for decoding less.

use entity::{NewPullRequest, pull_requests::Model};
use sea_orm::prelude::{DateTimeUtc, DateTimeWithTimeZone};
use sea_orm::sqlx::mysql::MySqlRow;
use sea_orm::sqlx::query::Query;
use sea_orm::sqlx::{self, ColumnIndex, Database, Decode, Encode, Row, Type};

/// Binds a new row's nine values to `query`, in column order: `key` (`pr_id`), then `data`.
/// (MySQL's baselines bind their own: sqlx's MySQL driver binds a timestamp as UTC only.)
pub(crate) fn with_values<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    key: i64,
    data: NewPullRequest,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<DateTimeWithTimeZone>: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(key)
        .bind(data.repository)
        .bind(data.number)
        .bind(data.title)
        .bind(data.author)
        .bind(data.state)
        .bind(data.head_sha)
        .bind(data.delivery_id)
        .bind(data.updated_at)
}

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
