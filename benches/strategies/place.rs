//! Where the strategies run: PostgreSQL over loopback, PostgreSQL through the delay proxy (a
//! network hop), an embedded SQLite file, and MariaDB over loopback; and the handles a strategy
//! uses there.

use sea_orm::DatabaseConnection;
use sea_orm::sqlx::{MySqlPool, PgPool, SqlitePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    /// PostgreSQL on this machine, over TCP on 127.0.0.1: round trips cost almost nothing,
    /// CPU per statement decides.
    Loopback,
    /// The same server through the delay proxy: every round trip costs the delay twice.
    Hop,
    /// One SQLite file, in process.
    Sqlite,
    /// MariaDB on this machine, over TCP on 127.0.0.1 (the crate's MySQL backend: row locks
    /// in its lock table).
    MariaDb,
}

/// Which database engine a place runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Postgres,
    Sqlite,
    MySql,
}

impl Place {
    pub(crate) fn engine(self) -> Engine {
        match self {
            Place::Loopback | Place::Hop => Engine::Postgres,
            Place::Sqlite => Engine::Sqlite,
            Place::MariaDb => Engine::MySql,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Place::Loopback => "PostgreSQL, loopback",
            Place::Hop => "PostgreSQL, through the delay proxy",
            Place::Sqlite => "SQLite file",
            Place::MariaDb => "MariaDB, loopback",
        }
    }

    /// A short label, for the chart and the progress lines.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Place::Loopback => "pg loopback",
            Place::Hop => "pg proxy",
            Place::Sqlite => "sqlite",
            Place::MariaDb => "mariadb",
        }
    }
}

/// The pool of a place, seen through SeaORM (the crate, and the bench's own bookkeeping) and
/// directly through sqlx (the hand-written strategies): one pool, so every strategy has the
/// same connections.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) place: Place,
    pub(crate) orm: DatabaseConnection,
    pub(crate) raw: Raw,
}

/// The sqlx pool under [`Db::orm`].
#[derive(Clone)]
pub(crate) enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

impl Db {
    /// `orm`'s own sqlx pool, wrapped.
    pub(crate) fn new(place: Place, orm: DatabaseConnection) -> Db {
        let raw = match place.engine() {
            Engine::Postgres => Raw::Pg(orm.get_postgres_connection_pool().clone()),
            Engine::Sqlite => Raw::Sqlite(orm.get_sqlite_connection_pool().clone()),
            Engine::MySql => Raw::MySql(orm.get_mysql_connection_pool().clone()),
        };
        Db { place, orm, raw }
    }
}
