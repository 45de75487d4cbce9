//! What MySQL's and MariaDB's `information_schema` says about an entity's table (its key
//! columns, their types, the unique indexes over them): read once per pool and entity before a first call
//! ([`key_schema`](crate::key_schema)), and by `verify`.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use crate::backend::key_columns::{KeyColumns, KeyPart};

/// Each key column's type, in the order of `columns` (`COLUMN_TYPE`, e.g. `bigint(20)`;
/// `None`: the table has no such column), and whether a unique index (the primary key
/// included) has only key columns (then no two rows share a key); `None` when the table is not
/// found. The table is looked up in `schema`, or in the connection's database (`DATABASE()`).
/// Two statements; every name is bound.
pub(crate) async fn key_columns<C: ConnectionTrait>(
    db: &C,
    schema: Option<&str>,
    table: &str,
    columns: &[&str],
) -> Result<Option<KeyColumns>, DbErr> {
    let bind = || vec![Value::from(schema.map(str::to_owned)), Value::from(table)];
    let declared = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT COLUMN_NAME AS name, COLUMN_TYPE AS column_type \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            bind(),
        ))
        .await?;
    if declared.is_empty() {
        return Ok(None);
    }
    let mut types = BTreeMap::new();
    for row in &declared {
        let name: String = row.try_get("", "name")?;
        let column_type: String = row.try_get("", "column_type")?;
        types.insert(name, column_type);
    }
    let indexed = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT INDEX_NAME AS idx, COLUMN_NAME AS col FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0",
            bind(),
        ))
        .await?;
    let mut by_index: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for row in &indexed {
        let index: String = row.try_get("", "idx")?;
        let column: Option<String> = row.try_get("", "col")?;
        by_index.entry(index).or_default().push(column);
    }
    let covered = by_index.values().any(|indexed| {
        indexed.iter().all(|column| {
            column
                .as_deref()
                .is_some_and(|column| columns.contains(&column))
        })
    });
    let types = columns
        .iter()
        .map(|column| types.get(*column).cloned())
        .collect();
    Ok(Some(KeyColumns { types, covered }))
}

/// Whether a MySQL/MariaDB column of `column_type` (`COLUMN_TYPE`) holds a key part bound as
/// `value`: `false` only for text in an integer column and an integer in a text column (MySQL
/// converts one to the other when it compares them, so `'12abc'` finds the row of `12`).
/// Any other type fits.
pub(crate) fn fits(value: &Value, column_type: &str) -> bool {
    let column = column_type
        .split(['(', ' '])
        .next()
        .unwrap_or(column_type)
        .to_ascii_lowercase();
    let integer = matches!(
        column.as_str(),
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
    );
    let text = matches!(
        column.as_str(),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
    );
    match KeyPart::of(value) {
        KeyPart::Integer | KeyPart::BigUnsigned => !text,
        KeyPart::String | KeyPart::Char => !integer,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::fits;
    use sea_orm::Value;

    #[test]
    fn text_and_integers_fit_their_own_types_and_any_other() {
        let text = Value::from("7");
        let int = Value::from(7_i64);
        assert!(!fits(&text, "bigint(20)") && !fits(&text, "int(10) unsigned"));
        assert!(!fits(&int, "varchar(40)") && !fits(&int, "longtext"));
        for column in [
            "varchar(255)",
            "char(36)",
            "uuid",
            "enum('a','b')",
            "datetime",
        ] {
            assert!(fits(&text, column), "{column}");
        }
        for column in ["bigint(20)", "tinyint(1)", "decimal(10,2)", "double"] {
            assert!(fits(&int, column), "{column}");
        }
    }
}
