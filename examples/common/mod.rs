//! Shared by the examples: which database to use, how to connect to it, and migrating it
//! safely when several processes start at once.

use std::str::FromStr;
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};
use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
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

/// How long the first connection to a server may take (an address that drops packets instead
/// of refusing them) before the example gives up and says so.
const FIRST_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a process starting on MySQL/MariaDB waits for another one's migration (the named
/// lock `migrate` takes) before it gives up with an error.
const MYSQL_MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60 * 60);

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
/// A server is first reached on one connection of its own ([`first_connection`]), so a wrong
/// address fails within seconds with its cause ("Connection refused") and the address tried.
/// SQLite files are switched to WAL mode once, before the pool opens ([`switch_to_wal`]:
/// readers never wait for the writer), and opened with `synchronous = NORMAL` (durable across
/// application crashes, the usual WAL setting) and a `busy_timeout` of
/// [`SQLITE_BUSY_TIMEOUT`], which bounds every wait for the write lock.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, BoxError> {
    if url.starts_with("sqlite:") {
        switch_to_wal(url).await?;
    } else {
        first_connection(url).await?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(60))
        .sqlx_logging(false)
        // No `journal_mode` here: WAL is a property of the file, set once above. A pragma on
        // every new connection would race other processes' (see `switch_to_wal`).
        .map_sqlx_sqlite_opts(|o| {
            o.synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    let db = Database::connect(options).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Opens one connection to the server at `url` and closes it, failing with the cause and the
/// address tried (host and port, never the password). sqlx's pool treats a refused connection
/// as a server still starting and retries it until its acquire timeout, then reports only
/// "pool timed out": an unreachable database would cost a minute and hide why.
async fn first_connection(url: &str) -> Result<(), BoxError> {
    if url.starts_with("mysql:") {
        let options = MySqlConnectOptions::from_str(url)?;
        let address = address(options.get_socket(), options.get_host(), options.get_port());
        try_connect(options, &address).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PgConnectOptions::from_str(url)?;
        let address = address(options.get_socket(), options.get_host(), options.get_port());
        try_connect(options, &address).await
    } else {
        Ok(()) // SeaORM says what it makes of any other URL
    }
}

/// `host:port`, or the Unix socket's path.
fn address(socket: Option<&std::path::PathBuf>, host: &str, port: u16) -> String {
    match socket {
        Some(path) => path.display().to_string(),
        None if host.contains(':') => format!("[{host}]:{port}"),
        None => format!("{host}:{port}"),
    }
}

/// One connection with `options`, within [`FIRST_CONNECTION_TIMEOUT`].
async fn try_connect<O>(options: O, address: &str) -> Result<(), BoxError>
where
    O: sea_orm::sqlx::ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(FIRST_CONNECTION_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => Ok(connection.close().await?),
        Ok(Err(err)) => Err(format!(
            "cannot connect to {address}: {err}{}",
            missing_database_hint(&err)
        )
        .into()),
        Err(_) => Err(format!(
            "cannot connect to {address}: no answer within {} s",
            FIRST_CONNECTION_TIMEOUT.as_secs()
        )
        .into()),
    }
}

/// PostgreSQL's SQLSTATE `invalid_catalog_name`: the database does not exist.
const PG_INVALID_CATALOG_NAME: &str = "3D000";
/// MySQL's and MariaDB's `ER_BAD_DB_ERROR`: unknown database.
const MYSQL_BAD_DB_ERROR: u16 = 1049;

/// What to do when the server is up but the URL's database is not there: the examples migrate
/// a database, they do not create one.
fn missing_database_hint(err: &sea_orm::sqlx::Error) -> &'static str {
    let Some(db_err) = err.as_database_error() else {
        return "";
    };
    let missing = db_err.code().as_deref() == Some(PG_INVALID_CATALOG_NAME)
        || db_err
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == MYSQL_BAD_DB_ERROR);
    if missing {
        " (create the database first, e.g. `createdb app` or `CREATE DATABASE app`; the \
         example creates and migrates the tables)"
    } else {
        ""
    }
}

/// SQLite's primary result code `SQLITE_BUSY` (extended codes add bits above the low byte).
const SQLITE_BUSY: i64 = 5;

/// Switches the SQLite file at `url` (created if missing) to WAL mode, on one connection of its
/// own; the mode is stored in the file, so every later connection, of any process, opens it in
/// WAL mode, and the switch is a no-op once made.
///
/// The switch needs the file's exclusive lock while holding its read lock. When two
/// processes make it on a new file at the same moment, waiting could deadlock, so SQLite
/// answers `SQLITE_BUSY` at once, without waiting out `busy_timeout`: processes started
/// together would die at start-up now and then ("database is locked"). So the switch is
/// retried on `SQLITE_BUSY`, with short pauses, for at most [`SQLITE_BUSY_TIMEOUT`]. (It
/// cannot go under the migration's lock: SQLite refuses to change the journal mode inside a
/// transaction.) A file system without WAL support keeps its journal mode, as SQLite decides.
async fn switch_to_wal(url: &str) -> Result<(), BoxError> {
    let mut connection = SqliteConnectOptions::from_str(url)?
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .connect()
        .await?;
    let deadline = Instant::now() + SQLITE_BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        let switched = sea_orm::sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut connection)
            .await;
        match switched {
            Ok(_) => break,
            Err(err) if is_sqlite_busy(&err) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(err) => return Err(err.into()),
        }
    }
    sea_orm::sqlx::Connection::close(connection).await?;
    Ok(())
}

/// Whether `err` is SQLite's `SQLITE_BUSY` (any extended code), read from its result code.
fn is_sqlite_busy(err: &sea_orm::sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db_err| db_err.code())
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_BUSY)
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
            // connection the transaction pins, released after the migration (or when the
            // connection closes, if the process dies).
            let txn = db.begin().await?;
            let name = "sea-orm-idempotent:migrate";
            // A positive bound: MariaDB refuses a negative one (NULL and a warning, no lock),
            // unlike MySQL 5.7+, where it means forever.
            let wait = MYSQL_MIGRATION_LOCK_WAIT.as_secs();
            let got: Option<i64> = txn
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    DbBackend::MySql,
                    "SELECT GET_LOCK(?, ?) AS got",
                    [name.into(), wait.into()],
                ))
                .await?
                .ok_or("GET_LOCK returned no row")?
                .try_get("", "got")?;
            // 1: ours; 0: timed out; NULL: an error (e.g. the wait was killed).
            if got != Some(1) {
                return Err(format!(
                    "could not take the migration lock `{name}` (GET_LOCK answered {}): another \
                     process has been migrating this database for {wait} s, or the wait failed",
                    got.map_or("NULL".to_owned(), |got| got.to_string())
                )
                .into());
            }
            let migrated = Migrator::up(&txn, None).await;
            txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT RELEASE_LOCK(?)",
                [name.into()],
            ))
            .await?;
            migrated?;
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
