//! The seam for what the schema says about an entity's key
//! ([`key_schema`](crate::key_schema)).

use sea_orm::{ConnectionTrait, DbErr};

use super::key_columns::KeyColumns;
use super::{Backend, mysql, postgres, sqlite};

/// What the schema says about an entity's key ([`key_schema`](crate::key_schema)): read from
/// each backend's catalog, every name bound.
impl Backend {
    /// The key columns of `table` (in `schema`) as the catalog has them: each one's type as
    /// the database writes it (`None`: the table has no such column), in the order of
    /// `columns`, and whether a unique index (or the primary key) has only key columns, so
    /// that no two rows share a key. `None` when the table is not found (on SQLite, in an
    /// attached database: not looked up). One or two round trips (SQLite: pragmas).
    pub(crate) async fn key_columns<C: ConnectionTrait>(
        self,
        db: &C,
        schema: Option<&str>,
        table: &str,
        columns: &[&str],
    ) -> Result<Option<KeyColumns>, DbErr> {
        match self {
            Backend::Postgres => {
                let statement = postgres::catalog::key_columns_statement(schema, table, columns);
                postgres::catalog::read_key_columns(&db.query_all_raw(statement).await?)
            }
            Backend::Sqlite if schema.is_some() => Ok(None),
            Backend::Sqlite => sqlite::catalog::key_columns(db, table, columns).await,
            Backend::MySql => mysql::catalog::key_columns(db, schema, table, columns).await,
        }
    }

    /// Whether a column of `column_type` (as [`key_columns`](Backend::key_columns) wrote it)
    /// holds a key part bound as `value`: `false` only for pairs the backend is known to
    /// refuse or to compare as another type (text and integers); a type it does not know
    /// fits.
    pub(crate) fn key_part_fits(self, value: &sea_orm::Value, column_type: &str) -> bool {
        match self {
            Backend::Postgres => postgres::catalog::fits(value, column_type),
            Backend::Sqlite => sqlite::catalog::fits(value, column_type),
            Backend::MySql => mysql::catalog::fits(value, column_type),
        }
    }

    /// MySQL/MariaDB: whether the crate's lock table exists (`None` on backends without one).
    pub(crate) async fn lock_table_exists<C: ConnectionTrait>(
        self,
        db: &C,
    ) -> Result<Option<bool>, DbErr> {
        match self {
            Backend::MySql => Ok(Some(mysql::lock_tables::present(db).await?.is_some())),
            Backend::Postgres | Backend::Sqlite => Ok(None),
        }
    }
}
