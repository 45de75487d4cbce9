//! The MySQL/MariaDB baselines: what a user writes by hand with sqlx to store a pull request
//! once on MySQL, instead of calling the crate. Plain SQL text, every value bound, every
//! strategy returning the full row (`SELECT *`, decoded by column name,
//! [`crate::row::mysql_model`]). MySQL has no `RETURNING` (MariaDB 10.5+ has, MySQL 8 not; the
//! crate does not use it either), so a strategy that inserts reads the row back with a `SELECT`.
//! Every statement runs in autocommit, as such code does: each write is its own durable commit.
//!
//! - [`insert_ignore`]: `INSERT IGNORE`, then `SELECT` the row; created when the insert
//!   affected a row. Correct without a lock, thanks to the unique key (but `IGNORE` also turns
//!   other errors, a value too long, into warnings).
//! - [`on_duplicate_key`]: `INSERT ... ON DUPLICATE KEY UPDATE id = id` (the no-op update),
//!   then `SELECT`; created when the insert's id is the row's (sqlx asks for found rows, so
//!   the affected-rows count is 1 both for an insert and for a duplicate left unchanged).
//! - [`lock_tables`]: `LOCK TABLES pull_requests WRITE`; `SELECT`; `INSERT` and `SELECT` if
//!   missing; `UNLOCK TABLES`. Serialises every writer (and reader) of the table, whatever the
//!   key. In autocommit: `LOCK TABLES` commits an open transaction, and InnoDB's table locks
//!   inside one are the classic deadlock trap.
//! - [`get_lock`]: `SELECT GET_LOCK(name, timeout)` with the key in the name; `SELECT`;
//!   `INSERT` and `SELECT` if missing; `SELECT RELEASE_LOCK(name)`. Serialises callers of the
//!   same key only. The lock belongs to the session, not a transaction: it is released by hand,
//!   also when a statement fails (a dropped future would leave it held on a pooled connection;
//!   the bench drops none).
//! - [`naive`]: `SELECT`; `INSERT` and `SELECT` if missing, with no lock: two callers of one
//!   key at once both miss, both insert, and one fails with a duplicate-key error (1062), which
//!   the bench counts as an error.
//! - [`insert`] and [`select`]: the floor. `insert` is one plain `INSERT` (no de-duplication),
//!   then a `SELECT` of the row by its new id; `select` is one plain `SELECT` by key, the floor
//!   of late redeliveries.

use entity::{NewPullRequest, pull_requests::Model};
use sea_orm::prelude::DateTimeUtc;
use sea_orm::sqlx::mysql::{MySql, MySqlArguments};
use sea_orm::sqlx::query::Query;
use sea_orm::sqlx::{self, MySqlPool};
use sea_orm_idempotent::Outcome;

use crate::row::mysql_model;
use crate::strategy::BoxError;

const SELECT: &str = "SELECT * FROM pull_requests WHERE pr_id = ?";

const SELECT_BY_ID: &str = "SELECT * FROM pull_requests WHERE id = ?";

const INSERT: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

const INSERT_IGNORE: &str = "INSERT IGNORE INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

const INSERT_ON_DUPLICATE_KEY: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id";

/// How long [`get_lock`] waits for the key's named lock, in seconds: long enough that no
/// delivery fails for waiting.
const GET_LOCK_TIMEOUT_SECS: i64 = 60;

/// `INSERT IGNORE`, then `SELECT`.
pub(crate) async fn insert_ignore(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let inserted = with_values(sqlx::query(INSERT_IGNORE), key, data)
        .execute(pool)
        .await?
        .rows_affected();
    let row = select(pool, key)
        .await?
        .ok_or("ignored, then found nothing")?;
    Ok(if inserted == 1 {
        Outcome::Created(row)
    } else {
        Outcome::Existing(row)
    })
}

/// `INSERT ... ON DUPLICATE KEY UPDATE id = id`, then `SELECT`.
pub(crate) async fn on_duplicate_key(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let new_id = with_values(sqlx::query(INSERT_ON_DUPLICATE_KEY), key, data)
        .execute(pool)
        .await?
        .last_insert_id();
    let row = select(pool, key)
        .await?
        .ok_or("upserted, then found nothing")?;
    Ok(if u64::try_from(row.id).ok() == Some(new_id) {
        Outcome::Created(row)
    } else {
        Outcome::Existing(row)
    })
}

/// `LOCK TABLES pull_requests WRITE`; `SELECT`; `INSERT`, `SELECT` if missing;
/// `UNLOCK TABLES`, also when a statement failed.
pub(crate) async fn lock_tables(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("LOCK TABLES pull_requests WRITE")
        .execute(&mut *conn)
        .await?;
    let outcome = find_or_insert(&mut conn, key, data).await;
    sqlx::raw_sql("UNLOCK TABLES").execute(&mut *conn).await?;
    outcome
}

/// `GET_LOCK`; `SELECT`; `INSERT`, `SELECT` if missing; `RELEASE_LOCK`, also when a statement
/// failed.
pub(crate) async fn get_lock(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let name = format!("pull_requests:{key}");
    let mut conn = pool.acquire().await?;
    let (granted,): (Option<i64>,) = sqlx::query_as("SELECT GET_LOCK(?, ?)")
        .bind(&name)
        .bind(GET_LOCK_TIMEOUT_SECS)
        .fetch_one(&mut *conn)
        .await?;
    if granted != Some(1) {
        return Err(format!("GET_LOCK({name:?}) not granted: {granted:?}").into());
    }
    let outcome = find_or_insert(&mut conn, key, data).await;
    sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&name)
        .execute(&mut *conn)
        .await?;
    outcome
}

/// `SELECT`; `INSERT`, `SELECT` if missing, on one connection, with no lock.
pub(crate) async fn naive(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let mut conn = pool.acquire().await?;
    find_or_insert(&mut conn, key, data).await
}

/// The look, then the insert and its read-back if the look found nothing: the body of
/// [`lock_tables`], [`get_lock`] and [`naive`].
async fn find_or_insert(
    conn: &mut sqlx::MySqlConnection,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let found = sqlx::query(SELECT)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = found {
        return Ok(Outcome::Existing(mysql_model(&row)?));
    }
    let id = with_values(sqlx::query(INSERT), key, data)
        .execute(&mut *conn)
        .await?
        .last_insert_id();
    let row = sqlx::query(SELECT_BY_ID)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Outcome::Created(mysql_model(&row)?))
}

/// One plain `INSERT`, then a `SELECT` of the row by its new id: no de-duplication.
pub(crate) async fn insert(
    pool: &MySqlPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Model, BoxError> {
    let id = with_values(sqlx::query(INSERT), key, data)
        .execute(pool)
        .await?
        .last_insert_id();
    let row = sqlx::query(SELECT_BY_ID).bind(id).fetch_one(pool).await?;
    Ok(mysql_model(&row)?)
}

/// One plain `SELECT * ... WHERE pr_id = ?`.
pub(crate) async fn select(pool: &MySqlPool, key: i64) -> Result<Option<Model>, BoxError> {
    let found = sqlx::query(SELECT).bind(key).fetch_optional(pool).await?;
    Ok(found.as_ref().map(mysql_model).transpose()?)
}

/// Binds a new row's nine values, in column order (`updated_at` as UTC: sqlx's MySQL driver
/// binds no other offset, and `TIMESTAMP` stores the instant).
fn with_values(
    query: Query<'_, MySql, MySqlArguments>,
    key: i64,
    data: NewPullRequest,
) -> Query<'_, MySql, MySqlArguments> {
    query
        .bind(key)
        .bind(data.repository)
        .bind(data.number)
        .bind(data.title)
        .bind(data.author)
        .bind(data.state)
        .bind(data.head_sha)
        .bind(data.delivery_id)
        .bind(data.updated_at.map(DateTimeUtc::from))
}
