//! What SQLite says about an entity's table: whether a unique index covers exactly the key's
//! columns, so that the one-statement path ([`one_statement`](super::one_statement)) may rely
//! on it. Asked once per pool and entity ([`unique_index`](crate::unique_index)).

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use crate::backend::key_columns::{KeyColumns, KeyPart};

/// Whether `table` has a unique index, without a predicate or expressions, over exactly
/// `columns`, each of a declared type that stores its part of the key exactly
/// (`exact(i, declared type)`). Two statements: the unique indexes with their columns, then
/// the columns' declared types. Every name is bound.
pub(crate) async fn unique_index_covers<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
    exact: impl Fn(usize, &str) -> bool,
) -> Result<bool, DbErr> {
    let indexes = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT il.name AS idx, ii.name AS col FROM pragma_index_list(?) AS il \
             JOIN pragma_index_info(il.name) AS ii \
             WHERE il.\"unique\" = 1 AND il.partial = 0",
            [Value::from(table)],
        ))
        .await?;
    let mut by_index: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for row in &indexes {
        let index: String = row.try_get("", "idx")?;
        let column: Option<String> = row.try_get("", "col")?;
        by_index.entry(index).or_default().push(column);
    }
    let covered = by_index.values().any(|indexed| {
        indexed.len() == columns.len()
            && indexed.iter().all(|column| {
                // An expression (no name) never matches.
                column
                    .as_deref()
                    .is_some_and(|column| columns.contains(&column))
            })
    });
    if !covered {
        return Ok(false);
    }
    let declared = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name, type FROM pragma_table_info(?)",
            [Value::from(table)],
        ))
        .await?;
    let mut types = BTreeMap::new();
    for row in &declared {
        let name: String = row.try_get("", "name")?;
        let declared_type: String = row.try_get("", "type")?;
        types.insert(name, declared_type);
    }
    Ok(columns.iter().enumerate().all(|(part, column)| {
        types
            .get(*column)
            .is_some_and(|declared_type| exact(part, declared_type))
    }))
}

/// Whether a SQLite column declared `declared_type` stores a key part bound as `value`
/// exactly, by SQLite's type affinity: integers in an INTEGER column (a declared type with
/// "INT"), text in a TEXT column ("CHAR", "CLOB" or "TEXT", without "INT"). Anything else
/// (a NUMERIC or REAL column converts text and floats) takes the locked path.
pub(crate) fn stores_exactly(value: &Value, declared_type: &str) -> bool {
    let (integer, text) = affinity(declared_type);
    match KeyPart::of(value) {
        KeyPart::Integer => integer,
        KeyPart::String => text,
        _ => false,
    }
}

/// What SQLite says about the key columns of `table`: each one's declared type, in the order
/// of `columns` (`None`: the table has no such column), and whether a unique index without a
/// predicate or expressions, or the primary key, has only key columns (then no two rows share
/// a key); `None` when the table is not found. Two statements (the columns, the unique
/// indexes); every name is bound.
pub(crate) async fn key_columns<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
) -> Result<Option<KeyColumns>, DbErr> {
    let declared = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name, type, pk FROM pragma_table_info(?)",
            [Value::from(table)],
        ))
        .await?;
    if declared.is_empty() {
        return Ok(None);
    }
    let mut types = BTreeMap::new();
    let mut primary_key = Vec::new();
    for row in &declared {
        let name: String = row.try_get("", "name")?;
        let declared_type: String = row.try_get("", "type")?;
        if row.try_get::<i64>("", "pk")? > 0 {
            primary_key.push((name.clone(), declared_type.clone()));
        }
        types.insert(name, declared_type);
    }
    // `INTEGER PRIMARY KEY` is the rowid itself, with no index of its own to list.
    let rowid_key = matches!(primary_key.as_slice(), [(name, declared_type)]
        if declared_type.eq_ignore_ascii_case("INTEGER") && columns.contains(&name.as_str()));
    let indexes = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT il.name AS idx, ii.name AS col FROM pragma_index_list(?) AS il \
             JOIN pragma_index_info(il.name) AS ii \
             WHERE il.\"unique\" = 1 AND il.partial = 0",
            [Value::from(table)],
        ))
        .await?;
    let mut by_index: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for row in &indexes {
        let index: String = row.try_get("", "idx")?;
        let column: Option<String> = row.try_get("", "col")?;
        by_index.entry(index).or_default().push(column);
    }
    let covered = rowid_key
        || by_index.values().any(|indexed| {
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

/// Whether a SQLite column declared `declared_type` holds a key part bound as `value`, by
/// SQLite's type affinity: `false` only for text in an INTEGER column and an integer in a TEXT
/// column (each is converted or compared as the other type, so the key found is not the key
/// given). Any other affinity (NUMERIC, REAL, BLOB) fits.
pub(crate) fn fits(value: &Value, declared_type: &str) -> bool {
    let (integer, text) = affinity(declared_type);
    match KeyPart::of(value) {
        KeyPart::Integer | KeyPart::BigUnsigned => !text,
        KeyPart::String | KeyPart::Char => !integer,
        _ => true,
    }
}

/// Whether a declared type has INTEGER affinity (it contains "INT") or TEXT affinity ("CHAR",
/// "CLOB" or "TEXT", without "INT"), by the rules of SQLite.
fn affinity(declared_type: &str) -> (bool, bool) {
    let declared = declared_type.to_ascii_uppercase();
    let integer = declared.contains("INT");
    let text = !integer
        && (declared.contains("CHAR") || declared.contains("CLOB") || declared.contains("TEXT"));
    (integer, text)
}

#[cfg(test)]
mod tests {
    use super::fits;
    use sea_orm::Value;

    #[test]
    fn text_and_integers_fit_their_own_affinity_and_any_other() {
        let text = Value::from("7");
        let int = Value::from(7_i64);
        assert!(!fits(&text, "BIGINT") && !fits(&text, "integer"));
        assert!(!fits(&int, "TEXT") && !fits(&int, "varchar(40)"));
        for declared in ["TEXT", "NUMERIC", "DATETIME", "REAL", "BLOB", ""] {
            assert!(fits(&text, declared), "{declared}");
        }
        for declared in ["INTEGER", "NUMERIC", "BOOLEAN", "REAL", ""] {
            assert!(fits(&int, declared), "{declared}");
        }
    }
}
