//! The bench's own, untimed statements on `pull_requests`: empty it before a run, fill it for
//! late redeliveries, count it after. Each in the dialect of the place's engine.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::place::{Db, Engine};

/// Empties the table and restarts its ids, so every run starts alike; then flushes what the
/// last run left to disk (PostgreSQL `CHECKPOINT`, SQLite's WAL checkpoint), so no run pays
/// for its predecessor's writes.
pub(crate) async fn empty(db: &Db) -> Result<(), DbErr> {
    let statements: &[&str] = match db.place.engine() {
        Engine::Postgres => &["TRUNCATE pull_requests RESTART IDENTITY"],
        Engine::Sqlite => &[
            "DELETE FROM pull_requests",
            "DELETE FROM sqlite_sequence WHERE name = 'pull_requests'",
        ],
    };
    for sql in statements {
        db.orm.execute_unprepared(sql).await?;
    }
    checkpoint(db).await;
    Ok(())
}

/// A checkpoint, if the server lets us (PostgreSQL: superusers and `pg_checkpoint` only; on
/// another's server without that right the runs just go without).
async fn checkpoint(db: &Db) {
    let sql = match db.place.engine() {
        Engine::Postgres => "CHECKPOINT",
        Engine::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let _ = db.orm.execute_unprepared(sql).await;
}

/// Stores rows for keys `1..=keys` in one statement, like the strategies' rows.
pub(crate) async fn fill(db: &Db, keys: usize) -> Result<(), DbErr> {
    let (backend, sql) = match db.place.engine() {
        Engine::Postgres => (
            DbBackend::Postgres,
            "INSERT INTO pull_requests \
             (pr_id, repository, number, title, author, state, head_sha, first_delivery_id) \
             SELECT g, 'octo-org/octo-repo', g % 100000 + 1, 'Pull request ' || g, 'mona', \
             'open', lpad(to_hex(g), 40, '0'), 'delivery-' || g \
             FROM generate_series(1::bigint, $1::bigint) AS g",
        ),
        Engine::Sqlite => (
            DbBackend::Sqlite,
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) \
             INSERT INTO pull_requests \
             (pr_id, repository, number, title, author, state, head_sha, first_delivery_id) \
             SELECT n, 'octo-org/octo-repo', n % 100000 + 1, 'Pull request ' || n, 'mona', \
             'open', printf('%040x', n), 'delivery-' || n FROM g",
        ),
    };
    db.orm
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [(keys as i64).into()],
        ))
        .await?;
    db.orm.execute_unprepared("ANALYZE pull_requests").await?;
    checkpoint(db).await;
    Ok(())
}

/// Rows in the table, and distinct keys among them.
pub(crate) async fn count(db: &Db) -> Result<(i64, i64), DbErr> {
    let backend = match db.place.engine() {
        Engine::Postgres => DbBackend::Postgres,
        Engine::Sqlite => DbBackend::Sqlite,
    };
    let row = db
        .orm
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT count(*) AS rows, count(DISTINCT pr_id) AS keys FROM pull_requests",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("count(*)".into()))?;
    Ok((row.try_get("", "rows")?, row.try_get("", "keys")?))
}
