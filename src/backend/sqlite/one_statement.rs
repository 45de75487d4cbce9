//! SQLite's one-statement path: where a unique index covers exactly the key's columns
//! ([`catalog`](super::catalog) knows), a new key is `INSERT ... ON CONFLICT (key columns) DO
//! NOTHING RETURNING cols` in autocommit. The statement takes SQLite's write lock, which is the
//! key's lock there (every writer of the file waits for it), for as long as it runs.

use sea_orm::{DbBackend, DbErr, QueryResult, Statement, Value};

use crate::backend::inserted::Answer;

/// The condition the insert's `SELECT` carries: none, but SQLite needs a `WHERE` to parse an
/// `INSERT ... SELECT ... ON CONFLICT` (its documented parsing ambiguity).
pub(crate) const NO_CONDITION: &str = "1";

/// What the statement returned: the row it inserted, or nothing.
pub(crate) fn read(row: Option<QueryResult>) -> Result<Answer, DbErr> {
    Ok(match row {
        Some(row) => Answer::Inserted(row),
        None => Answer::Nothing,
    })
}

/// A batch's chunk of new keys in one statement: `one_row` (SeaORM's insert of the chunk's
/// first row, `width` values bound as `?`, with `ON CONFLICT (key columns) DO NOTHING
/// RETURNING`) for `rows` rows of `width` `values` each, every value bound. In autocommit it
/// takes the write lock, which is every key's lock, for as long as it runs; a key it skipped
/// has its row. `None` when `one_row`'s values are not plain placeholders.
pub(crate) fn chunk_statement(
    one_row: &Statement,
    width: usize,
    rows: usize,
    values: Vec<Value>,
) -> Option<Statement> {
    let row = format!("({})", vec!["?"; width].join(", "));
    let (head, tail) = one_row.sql.split_once(&format!(" VALUES {row} "))?;
    if tail.contains(" VALUES (") || values.len() != width * rows || width == 0 {
        return None;
    }
    let list = vec![row.as_str(); rows].join(", ");
    Some(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("{head} VALUES {list} {tail}"),
        values,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_repeats_the_row_of_one_with_every_value_bound() {
        let one_row = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            r#"INSERT INTO "t" ("a", "b") VALUES (?, ?) ON CONFLICT ("a") DO NOTHING RETURNING "id""#,
            [Value::from(1_i64), Value::from("x".to_owned())],
        );
        let values = vec![
            Value::from(1_i64),
            Value::from("x".to_owned()),
            Value::from(2_i64),
            Value::from("y".to_owned()),
        ];
        let statement = chunk_statement(&one_row, 2, 2, values).unwrap();
        assert_eq!(
            statement.sql,
            r#"INSERT INTO "t" ("a", "b") VALUES (?, ?), (?, ?) ON CONFLICT ("a") DO NOTHING RETURNING "id""#
        );
        assert_eq!(statement.values.unwrap().0.len(), 4);
        let cast = Statement::from_string(
            DbBackend::Sqlite,
            r#"INSERT INTO "t" ("a", "b") VALUES (?, CAST(? AS text)) RETURNING "id""#,
        );
        let values = vec![Value::from(1_i64), Value::from("x".to_owned())];
        assert!(chunk_statement(&cast, 2, 1, values).is_none());
    }
}
