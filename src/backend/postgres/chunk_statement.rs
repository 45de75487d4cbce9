//! PostgreSQL: a batch's chunk of new keys in one statement, where a unique index covers
//! exactly the key's columns: the batch's form of the [one-statement path](super::one_statement).
//! In autocommit, one statement tries every key's advisory lock (in sorted order, never
//! waiting) and, only if all are granted, inserts the chunk's rows with `ON CONFLICT (key
//! columns) DO NOTHING RETURNING`:
//!
//! ```sql
//! WITH sea_orm_idempotent_lock AS (
//!        SELECT bool_and(pg_try_advisory_xact_lock(n, k)) AS locked FROM (sorted keys)),
//!      sea_orm_idempotent_row AS (
//!        INSERT INTO t (cols) SELECT * FROM (VALUES ($1, ...), ...) AS sea_orm_idempotent_values
//!        WHERE (SELECT locked FROM sea_orm_idempotent_lock)
//!        ON CONFLICT (k) DO NOTHING RETURNING cols)
//! SELECT (SELECT locked FROM sea_orm_idempotent_lock) AS sea_orm_idempotent_locked,
//!        (SELECT count(*) FROM sea_orm_idempotent_row) AS sea_orm_idempotent_inserted, r.*
//! FROM (SELECT 1) AS sea_orm_idempotent_one LEFT JOIN sea_orm_idempotent_row AS r ON true
//! ```
//!
//! Why the locks are taken although the index makes each row unique, why a CTE with a
//! volatile function is evaluated before the insert that reads it, and what a server whose
//! default isolation is REPEATABLE READ does: as for a single call, in
//! [`one_statement`](super::one_statement). The locks are the statement's own transaction's:
//! they end with it, after its commit. Keys not all granted: nothing is inserted, and the chunk
//! takes the locked path, which waits.
//!
//! The insert is the one SeaORM builds for one row of the chunk (its text split where its
//! values are, so the table, columns, conflict target and `RETURNING` are SeaORM's own); a row
//! whose columns SeaORM writes other than as plain placeholders (a cast, for an enum) does not
//! take this path. Every value is bound, and the keys as two texts of integers, as the locked
//! path binds them ([`batch`](super::batch)).

use std::fmt::Write;

use sea_orm::{DbBackend, Statement, Value};
#[cfg(feature = "postgres")]
use sea_orm::{DbErr, QueryResult};

use super::batch::{key_texts, sorted_keys};
use crate::LockKey;
#[cfg(feature = "postgres")]
use crate::backend::inserted::ChunkAnswer;

/// The chunk's statement, from `one_row` (SeaORM's insert of the chunk's first row, `width`
/// values bound as `$1..$width`, with its `ON CONFLICT` and `RETURNING`), for `rows` rows of
/// `width` values: `values` (all the rows', in order) and the `keys` (sorted, distinct); with
/// `bound` (a bounded wait) the lock's CTE also sets `lock_timeout` for the insert's waits
/// behind a writer that bypasses the lock ([`entity_waits`](super::entity_waits)). `None`
/// when `one_row`'s values are not plain placeholders.
pub(crate) fn statement(
    one_row: &Statement,
    width: usize,
    rows: usize,
    mut values: Vec<Value>,
    keys: &[LockKey],
    bound: Option<String>,
) -> Option<Statement> {
    let placeholders: Vec<String> = (1..=width).map(|i| format!("${i}")).collect();
    let row_of_one = format!(" VALUES ({}) ", placeholders.join(", "));
    let (head, tail) = one_row.sql.split_once(&row_of_one)?;
    if tail.contains(" VALUES (") || values.len() != width * rows || width == 0 {
        return None;
    }
    let mut list = String::with_capacity(rows * width * 7);
    for row in 0..rows {
        list.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            let separator = if column > 0 { ", " } else { "" };
            // Writing to a String cannot fail.
            let _ = write!(list, "{separator}${}", row * width + column + 1);
        }
        list.push(')');
    }
    let sorted = sorted_keys(width * rows + 1);
    let set_bound = match bound {
        Some(_) => format!(
            ", (SELECT set_config('lock_timeout', ${}, true)) AS bound",
            width * rows + 3
        ),
        None => String::new(),
    };
    let sql = format!(
        "WITH sea_orm_idempotent_lock AS \
         (SELECT bool_and(pg_try_advisory_xact_lock(n, k)) AS locked{set_bound} FROM {sorted}), \
         sea_orm_idempotent_row AS ({head} SELECT * FROM (VALUES {list}) AS sea_orm_idempotent_values \
         WHERE (SELECT locked FROM sea_orm_idempotent_lock) {tail}) \
         SELECT (SELECT locked FROM sea_orm_idempotent_lock) AS sea_orm_idempotent_locked, \
         (SELECT count(*) FROM sea_orm_idempotent_row) AS sea_orm_idempotent_inserted, r.* \
         FROM (SELECT 1) AS sea_orm_idempotent_one \
         LEFT JOIN sea_orm_idempotent_row AS r ON true"
    );
    let (namespaces, rest) = key_texts(keys);
    values.push(namespaces);
    values.push(rest);
    values.extend(bound.map(Value::from));
    Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}

/// What the statement's rows say.
#[cfg(feature = "postgres")]
pub(crate) fn read(rows: Vec<QueryResult>) -> Result<ChunkAnswer, DbErr> {
    let first = rows.first().ok_or_else(|| {
        DbErr::RecordNotFound("the chunk's one statement returned no row".to_owned())
    })?;
    if !first.try_get::<bool>("", "sea_orm_idempotent_locked")? {
        return Ok(ChunkAnswer::KeysHeld);
    }
    let inserted: i64 = first.try_get("", "sea_orm_idempotent_inserted")?;
    Ok(ChunkAnswer::Inserted(if inserted == 0 {
        Vec::new()
    } else {
        rows
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_row() -> Statement {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"INSERT INTO "t" ("a", "b") VALUES ($1, $2) ON CONFLICT ("a") DO NOTHING RETURNING "id", "a", "b""#,
            [Value::from(1_i64), Value::from("x".to_owned())],
        )
    }

    #[test]
    fn every_value_and_key_is_bound_never_formatted() {
        let values = vec![
            Value::from(1_i64),
            Value::from("x".to_owned()),
            Value::from(2_i64),
            Value::from("y".to_owned()),
        ];
        let keys = [LockKey::Pair(-3, 7), LockKey::Pair(-3, 9)];
        let statement = statement(&one_row(), 2, 2, values, &keys, None).unwrap();
        assert!(statement.sql.contains(
            r#"INSERT INTO "t" ("a", "b") SELECT * FROM (VALUES ($1, $2), ($3, $4)) AS sea_orm_idempotent_values WHERE (SELECT locked FROM sea_orm_idempotent_lock) ON CONFLICT ("a") DO NOTHING RETURNING "id", "a", "b")"#
        ));
        assert!(statement.sql.contains("string_to_array($5, ',')"));
        assert!(statement.sql.contains("string_to_array($6, ',')"));
        assert!(!statement.sql.contains("-3"));
        assert_eq!(statement.values.unwrap().0.len(), 6);
    }

    #[test]
    fn a_row_with_casts_does_not_take_the_path() {
        let cast = Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"INSERT INTO "t" ("a", "b") VALUES ($1, CAST($2 AS "mood")) RETURNING "id""#,
            [Value::from(1_i64), Value::from("x".to_owned())],
        );
        let values = vec![Value::from(1_i64), Value::from("x".to_owned())];
        assert!(statement(&cast, 2, 1, values, &[LockKey::Pair(1, 2)], None).is_none());
    }
}
