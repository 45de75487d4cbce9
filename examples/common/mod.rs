//! Shared by the examples: which database to use, how to connect to it, and migrating it
//! safely when several processes start at once.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_idempotent::{LockKey, Wait, acquire_advisory_lock};

/// Any error, boxed: the examples report errors and exit.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a SQLite connection waits for the database's write lock before giving up (sqlx's
/// default is 5 s; a burst of creators on one file queues longer than that on a slow disk).
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The database an example runs on, and how it was chosen.
pub(crate) struct Target {
    /// The URL to connect to.
    pub(crate) url: String,
    /// One line for the user: which database, and why.
    pub(crate) description: String,
}

/// `--database-url`, else `DATABASE_URL`, else an embedded SQLite file `default_file` in the
/// current directory.
pub(crate) fn target(flag: Option<String>, default_file: &str) -> Result<Target, String> {
    let from_env = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let (url, description) = match (flag, from_env) {
        (Some(url), _) => {
            let description = format!("database: {} (--database-url)", redact(&url));
            (url, description)
        }
        (None, Some(url)) => {
            let description = format!("database: {} (DATABASE_URL)", redact(&url));
            (url, description)
        }
        (None, None) => (
            format!("sqlite://{default_file}?mode=rwc"),
            format!(
                "database: embedded SQLite file ./{default_file} (created and migrated \
                 automatically; set DATABASE_URL=postgres://... or mysql://..., or --database-url)"
            ),
        ),
    };
    if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
        return Err(format!(
            "{url}: an in-memory SQLite database is private to one connection, so concurrent \
             workers would not share it; use a file (sqlite://demo.db?mode=rwc)"
        ));
    }
    Ok(Target { url, description })
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => {
                format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A pool of at most `max_connections` to `url`, its schema migrated.
///
/// SQLite files are opened in WAL mode (readers never wait for the writer) with
/// `synchronous = NORMAL` (durable across application crashes, the usual WAL setting) and a
/// `busy_timeout` of [`SQLITE_BUSY_TIMEOUT`], which bounds every wait for the write lock.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, BoxError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(60))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    let db = Database::connect(options).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Applies pending migrations, one process at a time: sea-orm-migration does not guard against
/// two processes migrating the same database at once, so hold a lock while migrating
/// (PostgreSQL: this crate's advisory lock; SQLite: the write lock of an IMMEDIATE
/// transaction; MySQL: a named lock, see below). Whoever comes second finds nothing left to do.
async fn migrate(db: &DatabaseConnection) -> Result<(), BoxError> {
    let txn = match db.get_database_backend() {
        DbBackend::MySql => {
            // MySQL commits implicitly at every DDL statement, and the crate's lock table is
            // one of the tables migrated: so a session-scoped named lock, held on the one
            // connection the transaction pins and released when it closes.
            let txn = db.begin().await?;
            let name = "sea-orm-idempotent:migrate";
            let lock = |sql: &str| {
                sea_orm::Statement::from_sql_and_values(DbBackend::MySql, sql, [name.into()])
            };
            txn.execute_raw(lock("SELECT GET_LOCK(?, -1)")).await?;
            Migrator::up(&txn, None).await?;
            txn.execute_raw(lock("SELECT RELEASE_LOCK(?)")).await?;
            txn.commit().await?;
            return Ok(());
        }
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            })
            .await?
        }
        _ => {
            let txn = db.begin().await?;
            let key = LockKey::crc32("sea-orm-idempotent:migrate");
            acquire_advisory_lock(&txn, key, Wait::Forever).await?;
            txn
        }
    };
    Migrator::up(&txn, None).await?;
    txn.commit().await?;
    Ok(())
}
