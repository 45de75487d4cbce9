//! The SQLite baselines: what a user writes by hand with sqlx to store a pull request once on
//! an embedded SQLite file. Plain SQL text, every value bound, every strategy returning the
//! full row (`RETURNING *`, `SELECT *`, SQLite 3.35+), decoded by column name
//! ([`crate::row::model`]).
//!
//! - [`transaction`]: `BEGIN IMMEDIATE` (takes the database's write lock first, so no other
//!   creator can commit between the look and the insert); `SELECT`; `INSERT ... RETURNING *` if
//!   missing; `COMMIT`. SQLite has no advisory locks: this is the recipe.
//! - [`look_then_transaction`]: the same after a plain `SELECT` that returns an existing row
//!   (readers never wait for the writer in WAL mode).
//! - [`on_conflict`]: `INSERT ... ON CONFLICT (pr_id) DO NOTHING RETURNING *`, then a `SELECT`
//!   when nothing came back.
//! - [`insert`] and [`select`]: one plain statement, the floor (`insert` of new keys only,
//!   `select` of late redeliveries).

use entity::{NewPullRequest, pull_requests::Model};
use sea_orm::sqlx::{self, SqlitePool};
use sea_orm_idempotent::Outcome;

use crate::row::{model, with_values};
use crate::strategy::BoxError;

const SELECT: &str = "SELECT * FROM pull_requests WHERE pr_id = ?";

const INSERT: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *";

const INSERT_ON_CONFLICT: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pr_id) DO NOTHING RETURNING *";

/// `BEGIN IMMEDIATE`; `SELECT`; `INSERT` if missing; `COMMIT`.
pub(crate) async fn transaction(
    pool: &SqlitePool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let mut txn = pool.begin_with("BEGIN IMMEDIATE").await?;
    let found = sqlx::query(SELECT)
        .bind(key)
        .fetch_optional(&mut *txn)
        .await?;
    let outcome = match found {
        Some(row) => Outcome::Existing(model(&row)?),
        None => {
            let row = with_values(sqlx::query(INSERT), key, data)
                .fetch_one(&mut *txn)
                .await?;
            Outcome::Created(model(&row)?)
        }
    };
    txn.commit().await?;
    Ok(outcome)
}

/// A plain `SELECT` first; the [`transaction`] only when it found nothing.
pub(crate) async fn look_then_transaction(
    pool: &SqlitePool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    match select(pool, key).await? {
        Some(found) => Ok(Outcome::Existing(found)),
        None => transaction(pool, key, data).await,
    }
}

/// `INSERT ... ON CONFLICT DO NOTHING RETURNING *`, then `SELECT` if nothing came back.
pub(crate) async fn on_conflict(
    pool: &SqlitePool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let inserted = with_values(sqlx::query(INSERT_ON_CONFLICT), key, data)
        .fetch_optional(pool)
        .await?;
    match inserted {
        Some(row) => Ok(Outcome::Created(model(&row)?)),
        None => Ok(Outcome::Existing(
            select(pool, key)
                .await?
                .ok_or("conflicted, then found nothing")?,
        )),
    }
}

/// One plain `INSERT ... RETURNING *`: no de-duplication.
pub(crate) async fn insert(
    pool: &SqlitePool,
    key: i64,
    data: NewPullRequest,
) -> Result<Model, BoxError> {
    let row = with_values(sqlx::query(INSERT), key, data)
        .fetch_one(pool)
        .await?;
    Ok(model(&row)?)
}

/// One plain `SELECT * ... WHERE pr_id = ?`.
pub(crate) async fn select(pool: &SqlitePool, key: i64) -> Result<Option<Model>, BoxError> {
    let found = sqlx::query(SELECT).bind(key).fetch_optional(pool).await?;
    Ok(found.as_ref().map(model).transpose()?)
}
