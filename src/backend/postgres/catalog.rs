//! What PostgreSQL's catalog says about an entity's table: whether a unique index covers
//! exactly the key's columns, so that the one-statement path
//! ([`one_statement`](super::one_statement)) may rely on it. Asked once per pool and entity
//! ([`unique_index`](crate::unique_index)).

use sea_orm::{DbBackend, DbErr, QueryResult, Statement, Value};

use super::engine::{DETECTION_COLUMNS, Server};
use crate::Wait;
use crate::backend::key_columns::{KeyColumns, KeyPart};

/// The statement: `guarded`, whether a unique index that is valid, immediate (not
/// deferrable: `ON CONFLICT` cannot use a deferrable one), without a predicate or expressions,
/// has exactly the key columns as its key columns; `types`, each key column's type, in the
/// order given; and which server answers. Everything is bound: the table's schema (or NULL for
/// the search path), its name, and each column's name.
pub(crate) fn statement(schema: Option<&str>, table: &str, columns: &[&str]) -> Statement {
    let names = (3..3 + columns.len())
        .map(|n| format!("${n}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH t AS (SELECT to_regclass(CASE WHEN $1::text IS NULL THEN quote_ident($2::text) \
             ELSE quote_ident($1::text) || '.' || quote_ident($2::text) END) AS oid), \
         k AS (SELECT ARRAY[{names}] AS names) \
         SELECT EXISTS (SELECT 1 FROM pg_index i, t, k \
             WHERE i.indrelid = t.oid AND i.indisunique AND i.indimmediate AND i.indisvalid \
             AND i.indpred IS NULL AND i.indexprs IS NULL \
             AND i.indnkeyatts = cardinality(k.names) \
             AND (SELECT count(DISTINCT a.attname) FROM pg_attribute a \
                  WHERE a.attrelid = i.indrelid \
                  AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
                  AND a.attname = ANY (k.names)) = cardinality(k.names)) AS guarded, \
         (SELECT array_to_string(array_agg(format_type(a.atttypid, a.atttypmod) \
                  ORDER BY array_position(k.names, a.attname::text)), ',') \
             FROM pg_attribute a, t, k \
             WHERE a.attrelid = t.oid AND a.attname = ANY (k.names) AND NOT a.attisdropped) \
             AS types, \
         {DETECTION_COLUMNS}"
    );
    let mut values: Vec<Value> = vec![schema.map(str::to_owned).into(), table.into()];
    values.extend(columns.iter().map(|column| Value::from(*column)));
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Whether the answer shows a unique index over exactly the key columns, each column of a type
/// that stores its part of the key exactly (`exact(i, type)`), on a server whose advisory
/// locks are real.
pub(crate) fn read(row: &QueryResult, exact: impl Fn(usize, &str) -> bool) -> Result<bool, DbErr> {
    if Server::from_row(row)
        .map_err(|_| ())
        .and_then(|server| server.check(Wait::Forever).map_err(|_| ()))
        .is_err()
    {
        return Ok(false);
    }
    if !row.try_get::<bool>("", "guarded")? {
        return Ok(false);
    }
    let types: Option<String> = row.try_get("", "types")?;
    Ok(types.is_some_and(|types| {
        types
            .split(',')
            .enumerate()
            .all(|(part, column_type)| exact(part, column_type))
    }))
}

/// Whether a PostgreSQL column of `column_type` (as `format_type` writes it) stores a key
/// part bound as `value` exactly: integers in integer columns, text in `text` or `character
/// varying` (a value too long fails; it is never cut), UUIDs and booleans in their own types.
/// Timestamps (nanoseconds in Rust, microseconds in PostgreSQL), floats and numerics are not:
/// their keys take the locked path, which refuses a key the column rounds.
pub(crate) fn stores_exactly(value: &Value, column_type: &str) -> bool {
    let integer = matches!(column_type, "smallint" | "integer" | "bigint");
    match KeyPart::of(value) {
        KeyPart::Integer | KeyPart::BigUnsigned => integer,
        KeyPart::String => column_type == "text" || column_type.starts_with("character varying"),
        KeyPart::Bool => column_type == "boolean",
        _ => false,
    }
}

/// The statement that reads what the catalog says about the key columns of `table` (in
/// `schema`, or on the search path): one row per key column, in the order of `columns`, with
/// `column_type` (as `format_type` writes it; NULL when the table has no such column) and
/// `covered` (whether a valid unique index without a predicate or expressions, the primary key
/// included, has only key columns: then no two rows share a key). No row when the table is not
/// found. Everything is bound; nothing in it can fail on a table that exists or not.
pub(crate) fn key_columns_statement(
    schema: Option<&str>,
    table: &str,
    columns: &[&str],
) -> Statement {
    let names = (3..3 + columns.len())
        .map(|n| format!("${n}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH t AS (SELECT to_regclass(CASE WHEN $1::text IS NULL THEN quote_ident($2::text) \
             ELSE quote_ident($1::text) || '.' || quote_ident($2::text) END) AS oid), \
         k AS (SELECT name, n FROM unnest(ARRAY[{names}]) WITH ORDINALITY AS k(name, n)) \
         SELECT format_type(a.atttypid, a.atttypmod) AS column_type, \
             EXISTS (SELECT 1 FROM pg_index i \
                 WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid \
                 AND i.indpred IS NULL AND i.indexprs IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM pg_attribute b \
                     WHERE b.attrelid = i.indrelid \
                     AND b.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
                     AND b.attname::text <> ALL (SELECT name FROM k))) AS covered \
         FROM t CROSS JOIN k \
         LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname::text = k.name \
             AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE t.oid IS NOT NULL \
         ORDER BY k.n"
    );
    let mut values: Vec<Value> = vec![schema.map(str::to_owned).into(), table.into()];
    values.extend(columns.iter().map(|column| Value::from(*column)));
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The answer to [`key_columns_statement`]: each key column's type (`None`: no such column)
/// and whether a unique index covers the key; `None` when the table is not found.
pub(crate) fn read_key_columns(rows: &[QueryResult]) -> Result<Option<KeyColumns>, DbErr> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let covered: bool = first.try_get("", "covered")?;
    let types = rows
        .iter()
        .map(|row| row.try_get::<Option<String>>("", "column_type"))
        .collect::<Result<_, _>>()?;
    Ok(Some(KeyColumns { types, covered }))
}

/// Whether a PostgreSQL column of `column_type` (as `format_type` writes it) can hold a key
/// part bound as `value`: `false` only where PostgreSQL has no operator between the two (a
/// text key on an integer column: "operator does not exist: bigint = text"). A type the crate
/// does not know (an enum, a domain, an extension's) fits.
pub(crate) fn fits(value: &Value, column_type: &str) -> bool {
    let column = column_type.split('(').next().unwrap_or(column_type).trim();
    let number = matches!(
        column,
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision"
    );
    let text = matches!(
        column,
        "text" | "character varying" | "character" | "\"char\"" | "name" | "citext"
    );
    let known = number
        || text
        || matches!(
            column,
            "boolean" | "uuid" | "bytea" | "json" | "jsonb" | "date"
        )
        || column.starts_with("timestamp")
        || column.starts_with("time ");
    if !known {
        return true;
    }
    match KeyPart::of(value) {
        KeyPart::Integer | KeyPart::BigUnsigned | KeyPart::Float => number,
        KeyPart::String | KeyPart::Char => text,
        KeyPart::Bool => column == "boolean",
        KeyPart::Bytes => column == "bytea",
        KeyPart::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::fits;
    use sea_orm::Value;

    #[test]
    fn only_pairs_without_an_operator_do_not_fit() {
        let text = Value::from("7");
        let int = Value::from(7_i64);
        for column in [
            "bigint",
            "integer",
            "numeric(10,2)",
            "uuid",
            "boolean",
            "jsonb",
            "date",
        ] {
            assert!(!fits(&text, column), "{column}");
        }
        for column in [
            "text",
            "character varying(40)",
            "character(3)",
            "citext",
            "my_enum",
        ] {
            assert!(fits(&text, column), "{column}");
        }
        for column in [
            "bigint",
            "smallint",
            "numeric",
            "double precision",
            "int8range",
        ] {
            assert!(fits(&int, column), "{column}");
        }
        for column in ["text", "uuid", "boolean", "timestamp(0) without time zone"] {
            assert!(!fits(&int, column), "{column}");
        }
        // A type the crate does not name is the database's to judge.
        assert!(fits(&Value::Double(Some(1.5)), "numeric(10,2)"));
    }
}
