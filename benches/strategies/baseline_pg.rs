//! The PostgreSQL baselines: what a user writes by hand with sqlx to store a pull request once,
//! instead of calling the crate. Plain SQL text, every value bound, every strategy returning the
//! full row (`RETURNING *`, `SELECT *`), decoded by column name ([`crate::row::model`]).
//!
//! - [`transaction`]: the five-statement transaction of the usual recipe: `BEGIN`;
//!   `SELECT pg_advisory_xact_lock($1, $2)`; `SELECT` the row; `INSERT ... RETURNING *` if it
//!   is missing; `COMMIT`. Correct under any concurrency (READ COMMITTED, the server default:
//!   the `SELECT` after the lock sees the previous holder's row).
//! - [`look_then_transaction`]: the same, after a plain `SELECT` outside the transaction that
//!   returns the row when it exists (a redelivery then costs one statement).
//! - [`on_conflict`]: `INSERT ... ON CONFLICT (pr_id) DO NOTHING RETURNING *`, then a `SELECT`
//!   when nothing came back. Correct without a lock, thanks to the unique index.
//! - [`insert`] and [`select`]: one plain statement, the floor. `insert` does not de-duplicate
//!   (a duplicate is a unique violation), so it is the floor of new keys only; `select` is the
//!   floor of late redeliveries, where every row exists.
//!
//! The lock key is the crate's derivation for a one-column key (two crc32s, bound as two
//! integers), so a service moving from this recipe to the crate keeps excluding the old code.

use entity::{NewPullRequest, pull_requests::Model};
use sea_orm::sqlx::{self, PgPool};
use sea_orm_idempotent::Outcome;

use crate::row::{model, with_values};
use crate::strategy::BoxError;

const SELECT: &str = "SELECT * FROM pull_requests WHERE pr_id = $1";

const INSERT: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *";

const INSERT_ON_CONFLICT: &str = "INSERT INTO pull_requests \
     (pr_id, repository, number, title, author, state, head_sha, first_delivery_id, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (pr_id) DO NOTHING RETURNING *";

const LOCK: &str = "SELECT pg_advisory_xact_lock($1, $2)";

/// `BEGIN`; lock; `SELECT`; `INSERT` if missing; `COMMIT`.
pub(crate) async fn transaction(
    pool: &PgPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<Model>, BoxError> {
    let (namespace, hashed) = lock_key(key);
    let mut txn = pool.begin().await?;
    sqlx::query(LOCK)
        .bind(namespace)
        .bind(hashed)
        .execute(&mut *txn)
        .await?;
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
    pool: &PgPool,
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
    pool: &PgPool,
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
    pool: &PgPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Model, BoxError> {
    let row = with_values(sqlx::query(INSERT), key, data)
        .fetch_one(pool)
        .await?;
    Ok(model(&row)?)
}

/// One plain `SELECT * ... WHERE pr_id = $1`.
pub(crate) async fn select(pool: &PgPool, key: i64) -> Result<Option<Model>, BoxError> {
    let found = sqlx::query(SELECT).bind(key).fetch_optional(pool).await?;
    Ok(found.as_ref().map(model).transpose()?)
}

/// The crate's lock key of `key` (`LockKey` for a one-column key), computed by hand.
fn lock_key(key: i64) -> (i32, i32) {
    (
        crc32fast::hash(b"pull_requests") as i32,
        crc32fast::hash(key.to_string().as_bytes()) as i32,
    )
}
