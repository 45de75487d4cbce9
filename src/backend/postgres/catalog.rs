//! What PostgreSQL's catalog says about an entity's table: whether a unique index covers
//! exactly the key's columns, so that the one-statement path
//! ([`one_statement`](super::one_statement)) may rely on it. Asked once per pool and entity
//! ([`unique_index`](crate::unique_index)).

use sea_orm::{DbBackend, DbErr, QueryResult, Statement, Value};

use super::engine::{DETECTION_COLUMNS, Server};
use crate::Wait;

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
    match value {
        Value::TinyInt(_)
        | Value::SmallInt(_)
        | Value::Int(_)
        | Value::BigInt(_)
        | Value::TinyUnsigned(_)
        | Value::SmallUnsigned(_)
        | Value::Unsigned(_)
        | Value::BigUnsigned(_) => integer,
        Value::String(_) => column_type == "text" || column_type.starts_with("character varying"),
        Value::Bool(_) => column_type == "boolean",
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
