//! The bench's own, untimed statements on `pull_requests`: empty it before a run, fill it for
//! late redeliveries, count it after. Each in the dialect of the place's engine.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::place::{Db, Engine};

/// Empties the table and restarts its ids, so every run starts alike; then flushes what the
/// last run left to disk (PostgreSQL `CHECKPOINT`, SQLite's WAL checkpoint; MariaDB has no
/// checkpoint statement, InnoDB flushes in the background), so no run pays for its
/// predecessor's writes. MariaDB's lock table is the crate's fixed slots (the sample's
/// migrations make them): every run finds every row there, as a service does.
pub(crate) async fn empty(db: &Db) -> Result<(), DbErr> {
    let statements: Vec<&str> = match db.place.engine() {
        Engine::Postgres => vec!["TRUNCATE pull_requests RESTART IDENTITY"],
        Engine::Sqlite => vec![
            "DELETE FROM pull_requests",
            "DELETE FROM sqlite_sequence WHERE name = 'pull_requests'",
        ],
        Engine::MySql => vec!["TRUNCATE pull_requests"],
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
        Engine::MySql => return,
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
        Engine::MySql => (
            DbBackend::MySql,
            "SET STATEMENT max_recursive_iterations = 4294967295 FOR INSERT INTO pull_requests \
             (pr_id, repository, number, title, author, state, head_sha, first_delivery_id) \
             SELECT n, 'octo-org/octo-repo', n % 100000 + 1, CONCAT('Pull request ', n), \
             'mona', 'open', LOWER(LPAD(HEX(n), 40, '0')), CONCAT('delivery-', n) \
             FROM (WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) \
             SELECT n FROM g) AS g",
        ),
    };
    db.orm
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [(keys as i64).into()],
        ))
        .await?;
    let analyze = match db.place.engine() {
        Engine::MySql => "ANALYZE TABLE pull_requests",
        _ => "ANALYZE pull_requests",
    };
    db.orm.execute_unprepared(analyze).await?;
    checkpoint(db).await;
    Ok(())
}

/// Rows in the table, and distinct keys among them.
pub(crate) async fn count(db: &Db) -> Result<(i64, i64), DbErr> {
    let backend = match db.place.engine() {
        Engine::Postgres => DbBackend::Postgres,
        Engine::Sqlite => DbBackend::Sqlite,
        Engine::MySql => DbBackend::MySql,
    };
    // `rows` and `keys` are reserved words in MySQL.
    let row = db
        .orm
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT count(*) AS row_count, count(DISTINCT pr_id) AS key_count \
             FROM pull_requests",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("count(*)".into()))?;
    Ok((row.try_get("", "row_count")?, row.try_get("", "key_count")?))
}
