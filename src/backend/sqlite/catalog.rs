//! What SQLite says about an entity's table: whether a unique index covers exactly the key's
//! columns, so that the one-statement path ([`one_statement`](super::one_statement)) may rely
//! on it. Asked once per pool and entity ([`unique_index`](crate::unique_index)).

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

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
    let declared = declared_type.to_ascii_uppercase();
    let integer = declared.contains("INT");
    let text = !integer
        && (declared.contains("CHAR") || declared.contains("CLOB") || declared.contains("TEXT"));
    match value {
        Value::TinyInt(_)
        | Value::SmallInt(_)
        | Value::Int(_)
        | Value::BigInt(_)
        | Value::TinyUnsigned(_)
        | Value::SmallUnsigned(_)
        | Value::Unsigned(_) => integer,
        Value::String(_) => text,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
