//! PostgreSQL's one-statement path: where a unique index covers exactly the key's columns
//! ([`catalog`](super::catalog) knows), a new key is one statement in autocommit that tries the
//! key's advisory lock and, only if it is granted, inserts with `ON CONFLICT (key columns) DO
//! NOTHING`:
//!
//! ```sql
//! WITH sea_orm_idempotent_lock AS (SELECT pg_try_advisory_xact_lock($7, $8) AS locked),
//!      sea_orm_idempotent_row AS (
//!        INSERT INTO t (cols) SELECT $1, ... WHERE (SELECT locked FROM sea_orm_idempotent_lock)
//!        ON CONFLICT (k) DO NOTHING RETURNING cols)
//! SELECT (SELECT locked FROM sea_orm_idempotent_lock) AS sea_orm_idempotent_locked, r.*
//! FROM (SELECT 1) AS sea_orm_idempotent_one LEFT JOIN sea_orm_idempotent_row AS r ON true
//! ```
//!
//! The index makes the row unique by itself; the lock is still taken so that every other
//! taker of the key (the update form, a caller's transaction, an older version of the service
//! during a deploy, the Python recipe) is excluded while the row is written, and never meets
//! the unique violation this crate exists to remove. The lock is the statement's own
//! transaction's: it ends with the statement. A CTE that calls a volatile function is
//! evaluated once, before the insert that reads it. The statement runs at the server's default
//! isolation: under REPEATABLE READ a conflict with a row committed after its snapshot is a
//! serialization failure (40001), after which the call takes the locked path.

#[cfg(feature = "postgres")]
use sea_orm::sqlx::{self, AssertSqlSafe, PgPool};
use sea_orm::{DbBackend, DbErr, QueryResult, Statement, Value};
#[cfg(feature = "postgres")]
use sea_query_sqlx::SqlxValues;

#[cfg(feature = "postgres")]
use super::fast_path::{acquire_error, query_error};
use super::lock_statements::{key_parameters, try_lock_call};
use crate::LockKey;
use crate::backend::inserted::Answer;

/// The condition the insert's `SELECT` carries: the lock was granted.
pub(crate) const LOCK_GRANTED: &str = "(SELECT locked FROM sea_orm_idempotent_lock)";

/// `insert` (built with [`LOCK_GRANTED`] as its condition, its values bound as `$1..$n`)
/// wrapped with the try for `key`'s lock, whose integers are bound after them; with `bound`
/// (a call's bounded wait), the lock's CTE also sets `lock_timeout` to it, bound last, so that
/// the insert's wait behind a writer that bypasses the lock ends in time
/// ([`entity_waits`](super::entity_waits)).
pub(crate) fn wrap(insert: Statement, key: LockKey, bound: Option<String>) -> Statement {
    let mut values = insert.values.map(|values| values.0).unwrap_or_default();
    let (try_lock, key_values) = try_lock_call(key, values.len() + 1);
    values.extend(key_values);
    let set_bound = match bound {
        Some(bound) => {
            values.push(Value::from(bound));
            format!(
                ", set_config('lock_timeout', ${}, true) AS bound",
                values.len()
            )
        }
        None => String::new(),
    };
    let sql = format!(
        "WITH sea_orm_idempotent_lock AS (SELECT {try_lock} AS locked{set_bound}), \
         sea_orm_idempotent_row AS ({insert}) \
         SELECT (SELECT locked FROM sea_orm_idempotent_lock) AS sea_orm_idempotent_locked, \
         (SELECT count(*) FROM sea_orm_idempotent_row) > 0 AS sea_orm_idempotent_inserted, r.* \
         FROM (SELECT 1) AS sea_orm_idempotent_one \
         LEFT JOIN sea_orm_idempotent_row AS r ON true",
        insert = insert.sql
    );
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The values [`wrap`] binds after the insert's: the key's integers, then the `bound`.
pub(crate) fn lock_values(key: LockKey, bound: Option<String>) -> Vec<Value> {
    let mut values = key_parameters(key).0;
    values.extend(bound.map(Value::from));
    values
}

/// Runs the statement on a connection of `pool`, as SeaORM would, and after an error waits
/// until the connection is ready again (one more round trip, on errors only): PostgreSQL sends
/// a statement's error before it ends the statement's transaction, which releases the lock, so
/// a caller told of the error at once could still find the key held.
///
/// # Cancel Safety
///
/// Dropped, the statement's own transaction commits or rolls back on the server, and the
/// connection goes back to the pool (sqlx waits for it to be ready before its next use).
#[cfg(feature = "postgres")]
pub(crate) async fn run(pool: &PgPool, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
    let mut conn = pool.acquire().await.map_err(acquire_error)?;
    let values = statement.values.unwrap_or(sea_orm::Values(Vec::new()));
    match sqlx::query_with(AssertSqlSafe(statement.sql), SqlxValues(values))
        .fetch_optional(&mut *conn)
        .await
    {
        Ok(row) => Ok(row.map(QueryResult::from)),
        Err(err) => Err(after_error(conn, err).await),
    }
}

/// [`run`] for a statement of many rows (a batch's chunk,
/// [`chunk_statement`](super::chunk_statement)): all of them.
///
/// # Cancel Safety
///
/// As [`run`].
#[cfg(feature = "postgres")]
pub(crate) async fn run_all(
    pool: &PgPool,
    statement: Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    let mut conn = pool.acquire().await.map_err(acquire_error)?;
    let values = statement.values.unwrap_or(sea_orm::Values(Vec::new()));
    match sqlx::query_with(AssertSqlSafe(statement.sql), SqlxValues(values))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => Ok(rows.into_iter().map(QueryResult::from).collect()),
        Err(err) => Err(after_error(conn, err).await),
    }
}

/// After a statement's error: waits until the connection is ready again (its transaction
/// ended, the locks released), or has it closed when it does not answer.
#[cfg(feature = "postgres")]
async fn after_error(
    mut conn: sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Postgres>,
    err: sqlx::Error,
) -> DbErr {
    if sea_orm::sqlx::Connection::ping(&mut *conn).await.is_err() {
        conn.close_on_drop();
    }
    query_error(err)
}

/// What the statement's one row says.
pub(crate) fn read(row: Option<QueryResult>) -> Result<Answer, DbErr> {
    let row = row.ok_or_else(|| {
        DbErr::RecordNotFound("the one-statement insert returned no row".to_owned())
    })?;
    if !row.try_get::<bool>("", "sea_orm_idempotent_locked")? {
        return Ok(Answer::KeyHeld);
    }
    Ok(
        match row.try_get::<bool>("", "sea_orm_idempotent_inserted")? {
            true => Answer::Inserted(row),
            false => Answer::Nothing,
        },
    )
}
