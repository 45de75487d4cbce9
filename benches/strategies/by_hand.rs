//! Strategy 6 of the benchmark: the statements `create_once` sends on `pull_requests`, whose
//! unique `pr_id` gives it the one-statement path (`src/backend/postgres/one_statement.rs`,
//! then, contended, `src/backend/postgres/lock_statements.rs`), written by hand on sqlx, without SeaORM: the same SQL text, the same bound
//! values, the same transaction shape, decoding the same model. "crate / sqlx" in the results is
//! then the price of SeaORM and of the crate's code around the same statements.
//!
//! Nothing in the compiler ties this copy to the crate, so `tests/bench_statements.rs` includes
//! this file, runs it and `create_once` against a real server, and asserts that both send the
//! same statements: a change to the crate's SQL fails that test until this copy follows.

use entity::{NewPullRequest, pull_requests};
use sea_orm::sqlx::{self, PgPool, Row};
use sea_orm_idempotent::Outcome;

use crate::row::{model, with_values};

/// Any error of the hand-written path.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FIND: &str = r#"SELECT "pull_requests"."id", "pull_requests"."pr_id", "pull_requests"."repository", "pull_requests"."number", "pull_requests"."title", "pull_requests"."author", "pull_requests"."state", "pull_requests"."head_sha", "pull_requests"."first_delivery_id", "pull_requests"."created_at", "pull_requests"."updated_at" FROM "pull_requests" WHERE "pull_requests"."pr_id" = $1"#;

/// The isolation check, a try-lock and which server answers, in one statement (uncontended:
/// the only lock round trip).
const TRY_LOCK: &str = "SELECT CASE WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL ELSE pg_try_advisory_xact_lock($1, $2) END AS acquired, current_setting('transaction_isolation') AS isolation, version() AS server_version, current_setting('server_version_num') AS server_version_num, current_setting('crdb_version', true) AS crdb_version, current_setting('yb_silence_advisory_locks_not_supported_error', true) AS yb_silence, pg_backend_pid()::int8 AS session_pid, current_database()::text AS session_database, current_setting('port', true) AS session_port, current_setting('cluster_name', true) AS session_cluster";

/// Contended: save both timeouts, turn `statement_timeout` off, store the key (`$1`) and the
/// bound (`$2`, NULL for a `Wait::Forever` slice of twice `deadlock_timeout`).
const PREPARE_WAIT: &str = "SELECT set_config('sea_orm_idempotent.key', $1, true), set_config('sea_orm_idempotent.bound', coalesce($2, greatest(1000, least(2147483647, ceil(extract(epoch FROM current_setting('deadlock_timeout')::interval) * 2000)))::bigint || 'ms'), true), set_config('sea_orm_idempotent.lock_timeout', current_setting('lock_timeout'), true), set_config('sea_orm_idempotent.statement_timeout', current_setting('statement_timeout'), true)";

/// One wait that never fails: its exception block records why it ended.
const WAIT_LOCK: &str = "SELECT set_config('statement_timeout', '0', true); DO $wait$ BEGIN PERFORM set_config('sea_orm_idempotent.missed', '', true); PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.bound'), true); BEGIN PERFORM pg_advisory_xact_lock(split_part(current_setting('sea_orm_idempotent.key'), ',', 1)::int4, split_part(current_setting('sea_orm_idempotent.key'), ',', 2)::int4); EXCEPTION WHEN lock_not_available OR deadlock_detected OR query_canceled THEN PERFORM set_config('sea_orm_idempotent.missed', SQLSTATE, true); END; PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.lock_timeout'), true); PERFORM set_config('statement_timeout', current_setting('sea_orm_idempotent.statement_timeout'), true); END $wait$";

/// What the wait recorded (`''`: granted); `statement_timeout` off again for another slice.
const WAIT_OUTCOME: &str = "SELECT current_setting('sea_orm_idempotent.missed') AS missed, set_config('statement_timeout', CASE WHEN $1 AND current_setting('sea_orm_idempotent.missed') = '55P03' THEN '0' ELSE current_setting('sea_orm_idempotent.statement_timeout') END, true)";

/// Where the unique index on `pr_id` covers the key: the try for the lock and the insert under
/// it, in one statement in autocommit (src/backend/postgres/one_statement.rs).
const ONE_STATEMENT: &str = r#"WITH sea_orm_idempotent_lock AS (SELECT pg_try_advisory_xact_lock($10, $11) AS locked), sea_orm_idempotent_row AS (INSERT INTO "pull_requests" ("pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id", "updated_at") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE (SELECT locked FROM sea_orm_idempotent_lock) ON CONFLICT ("pr_id") DO NOTHING RETURNING "id", "pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id", "created_at", "updated_at") SELECT (SELECT locked FROM sea_orm_idempotent_lock) AS sea_orm_idempotent_locked, (SELECT count(*) FROM sea_orm_idempotent_row) > 0 AS sea_orm_idempotent_inserted, r.* FROM (SELECT 1) AS sea_orm_idempotent_one LEFT JOIN sea_orm_idempotent_row AS r ON true"#;

const INSERT_UNLESS_EXISTS: &str = r#"INSERT INTO "pull_requests" ("pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id", "updated_at") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS(SELECT 1 FROM "pull_requests" WHERE "pull_requests"."pr_id" = $10) ON CONFLICT  DO NOTHING RETURNING "id", "pr_id", "repository", "number", "title", "author", "state", "head_sha", "first_delivery_id", "created_at", "updated_at""#;

pub(crate) async fn create_once(
    pool: &PgPool,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<pull_requests::Model>, BoxError> {
    let found = sqlx::query(FIND).bind(key).fetch_optional(pool).await?;
    if let Some(row) = found {
        return Ok(Outcome::Existing(model(&row)?));
    }
    // As the crate's one-statement path (the unique index on pr_id covers the key): the try
    // for the lock and the insert under it in one statement.
    let (namespace, hashed) = lock_key(key);
    let answer = with_values(sqlx::query(ONE_STATEMENT), key, data.clone())
        .bind(namespace)
        .bind(hashed)
        .fetch_one(pool)
        .await?;
    if answer.try_get::<bool, _>("sea_orm_idempotent_locked")? {
        if answer.try_get::<bool, _>("sea_orm_idempotent_inserted")? {
            return Ok(Outcome::Created(model(&answer)?));
        }
        let row = sqlx::query(FIND)
            .bind(key)
            .fetch_optional(pool)
            .await?
            .ok_or("the insert found a row that is no longer there")?;
        return Ok(Outcome::Existing(model(&row)?));
    }
    // Held elsewhere: as the crate, a plain BEGIN (the try-lock statement checks the isolation
    // level) and the wait.
    let mut txn = pool.begin().await?;
    match lock_then_insert(&mut txn, key, data).await {
        Ok(outcome) => {
            txn.commit().await?;
            Ok(outcome)
        }
        Err(err) => {
            // As the crate does: roll back now, so the lock is free when the caller sees
            // the error.
            let _ = txn.rollback().await;
            Err(err)
        }
    }
}

async fn lock_then_insert(
    txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<pull_requests::Model>, BoxError> {
    let (namespace, hashed) = lock_key(key);
    let attempt = sqlx::query(TRY_LOCK)
        .bind(namespace)
        .bind(hashed)
        .fetch_one(&mut **txn)
        .await?;
    match attempt.try_get::<Option<bool>, _>("acquired")? {
        Some(true) => {}
        Some(false) => {
            sqlx::query(PREPARE_WAIT)
                .bind(format!("{namespace},{hashed}"))
                .bind(None::<String>)
                .execute(&mut **txn)
                .await?;
            loop {
                sqlx::raw_sql(WAIT_LOCK).execute(&mut **txn).await?;
                let missed: String = sqlx::query(WAIT_OUTCOME)
                    .bind(true)
                    .fetch_one(&mut **txn)
                    .await?
                    .try_get("missed")?;
                match missed.as_str() {
                    "" => break,
                    // lock_not_available: only this slice ran out; wait again.
                    "55P03" => {}
                    other => return Err(format!("the wait ended with {other}").into()),
                }
            }
        }
        None => return Err("unsafe isolation level".into()),
    }
    insert_unless_exists(txn, key, data).await
}

/// The key's lock key: `(crc32(namespace), crc32(key))`, as the crate derives it.
fn lock_key(key: i64) -> (i32, i32) {
    (
        crc32fast::hash(b"pull_requests") as i32,
        crc32fast::hash(key.to_string().as_bytes()) as i32,
    )
}

/// The guarded insert, and the read of the row when the guard found it.
async fn insert_unless_exists(
    conn: &mut sqlx::PgConnection,
    key: i64,
    data: NewPullRequest,
) -> Result<Outcome<pull_requests::Model>, BoxError> {
    let inserted = with_values(sqlx::query(INSERT_UNLESS_EXISTS), key, data)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match inserted {
        Some(row) => Outcome::Created(model(&row)?),
        None => {
            let row = sqlx::query(FIND)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or("the insert found a row that is no longer there")?;
            Outcome::Existing(model(&row)?)
        }
    })
}
