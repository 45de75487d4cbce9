//! Opening the places: the PostgreSQL server (a throwaway cluster with the durability asked
//! for, or `DATABASE_URL`'s), its database, the delay proxy in front of it, the SQLite file,
//! the MariaDB server (a throwaway one, or `MYSQL_DATABASE_URL`'s) and its database; and a line
//! describing each, measured rather than assumed (settings read from the server, the round
//! trip timed).

use std::net::ToSocketAddrs;
use std::str::FromStr;
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, Database, Executor, IntoArguments, MySqlPool, PgPool, Pool, SqlitePool};
use test_support::{MYSQL_URL, MySqlServer, Server, TempDir, TestDb};

use crate::POOL;
use crate::cli::Options;
use crate::place::{Db, Place, Raw};
use crate::proxy::DelayProxy;
use crate::strategy::BoxError;

/// SQLite's wait for its write lock: long enough that no strategy fails for waiting.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The places asked for, and what must outlive them.
pub(crate) struct Opened {
    /// Each place's handles and its description.
    pub(crate) places: Vec<(Db, String)>,
    /// Kept alive while the places are used: the SQLite file's directory, the MariaDB
    /// database, the PostgreSQL database and the cluster (dropped in this order: fields drop
    /// top to bottom; the throwaway MariaDB lives until the process exits).
    _dir: Option<TempDir>,
    _mysql_db: Option<TestDb>,
    _test_db: Option<TestDb>,
    _server: Option<Server>,
}

impl Opened {
    /// Closes every place's pool.
    pub(crate) async fn close(&self) -> Result<(), sea_orm::DbErr> {
        for (db, _) in &self.places {
            db.orm.clone().close().await?;
        }
        Ok(())
    }
}

pub(crate) async fn open(options: &Options) -> Result<Opened, BoxError> {
    let mut places = Vec::new();
    let (mut server, mut test_db, mut dir, mut mysql_db) = (None, None, None, None);
    if options
        .places
        .iter()
        .any(|&p| matches!(p, Place::Loopback | Place::Hop))
    {
        let own = std::env::var("DATABASE_URL")
            .map_or(true, |url| url.is_empty())
            .then(|| {
                if options.durable {
                    Server::private_durable()
                } else {
                    Server::private()
                }
            });
        let label = if options.quick {
            "bench_strategies_quick"
        } else {
            "bench_strategies"
        };
        let on: &Server = match &own {
            Some(own) => own,
            None => test_support::server(),
        };
        let db = on.database(label).await;
        let settings = postgres_settings(&db.url, own.is_some(), options.durable).await?;
        for &place in &options.places {
            let orm = match place {
                Place::Loopback => test_support::connect(&db.url, POOL).await,
                Place::Hop => through_proxy(&db.url, options.delay).await?,
                Place::Sqlite | Place::MariaDb => continue,
            };
            let db = Db::new(place, orm);
            let Raw::Pg(pool) = &db.raw else {
                unreachable!("a PostgreSQL place")
            };
            let how = match place {
                Place::Hop => format!(
                    "through the delay proxy adding {:.2} ms each way",
                    options.delay.as_secs_f64() * 1e3
                ),
                _ => "TCP on 127.0.0.1".to_owned(),
            };
            let (held, pooled) = round_trips(pool).await?;
            places.push((
                db,
                format!(
                    "{settings}; {how}; `SELECT 1` median {held:.3} ms on a held connection, \
                     {pooled:.3} ms through the pool (acquire, sqlx's ping, statement)"
                ),
            ));
        }
        (server, test_db) = (own, Some(db));
    }
    if options.places.contains(&Place::Sqlite) {
        let temp = TempDir::new("bench-sqlite");
        let (db, described) = sqlite(&temp, options.durable).await?;
        places.push((db, described));
        dir = Some(temp);
    }
    if options.places.contains(&Place::MariaDb) {
        let (db, described, database) = mariadb(options).await?;
        places.push((db, described));
        mysql_db = Some(database);
    }
    Ok(Opened {
        places,
        _dir: dir,
        _mysql_db: mysql_db,
        _test_db: test_db,
        _server: server,
    })
}

/// A migrated database (`pull_requests` and the crate's lock table) on `MYSQL_DATABASE_URL`'s
/// server, or on the test support's throwaway MariaDB, which it starts with the tests'
/// `innodb_flush_log_at_trx_commit=0`: set here to 1, InnoDB's default (every commit
/// flushed), unless `--fsync off`; its default isolation is set as `--mariadb-isolation` says
/// (before any of the places' pools connects).
async fn mariadb(options: &Options) -> Result<(Db, String, TestDb), BoxError> {
    let own = std::env::var(MYSQL_URL).map_or(true, |url| url.is_empty());
    let server = MySqlServer::get().ok_or(
        "no MariaDB for the MariaDB place: install mariadb-server, set MYSQL_DATABASE_URL, \
         or pass --no-mariadb",
    )?;
    let label = if options.quick {
        "bench_strategies_quick"
    } else {
        "bench_strategies"
    };
    let database = server.database(label).await;
    let admin = MySqlPool::connect(&database.url).await?;
    if own {
        let sql = if options.durable {
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1"
        } else {
            "SET GLOBAL innodb_flush_log_at_trx_commit = 0"
        };
        sqlx::raw_sql(sql).execute(&admin).await?;
        let isolation = if options.mariadb_read_committed {
            "SET GLOBAL tx_isolation = 'READ-COMMITTED'"
        } else {
            "SET GLOBAL tx_isolation = 'REPEATABLE-READ'"
        };
        sqlx::raw_sql(isolation).execute(&admin).await?;
    }
    let (version, flush, log_bin, buffer_pool, isolation): (String, String, String, i64, String) =
        sqlx::query_as(
            "SELECT @@version, CAST(@@innodb_flush_log_at_trx_commit AS CHAR), \
             CAST(@@log_bin AS CHAR), CAST(@@innodb_buffer_pool_size AS SIGNED), @@GLOBAL.tx_isolation",
        )
        .fetch_one(&admin)
        .await?;
    admin.close().await;
    let whose = match (own, options.durable) {
        (true, true) => "a throwaway server, InnoDB's default durability",
        (true, false) => "a throwaway server with the tests' setting (--fsync off)",
        (false, _) => "MYSQL_DATABASE_URL's server, its own settings",
    };
    let orm = test_support::connect(&database.url, POOL).await;
    let db = Db::new(Place::MariaDb, orm);
    let Raw::MySql(pool) = &db.raw else {
        unreachable!("the MariaDB place")
    };
    let (held, pooled) = round_trips(pool).await?;
    let described = format!(
        "MariaDB {version} (innodb_flush_log_at_trx_commit={flush}, log_bin={log_bin}, \
         innodb_buffer_pool_size={}M, default isolation {isolation}; {whose}); TCP on \
         127.0.0.1; `SELECT 1` median {held:.3} ms on a held connection, {pooled:.3} ms \
         through the pool (acquire, sqlx's ping, statement)",
        buffer_pool / 1024 / 1024
    );
    Ok((db, described, database))
}

/// A pool of [`POOL`] connections to `url` through a new delay proxy.
async fn through_proxy(
    url: &str,
    delay: Duration,
) -> Result<sea_orm::DatabaseConnection, BoxError> {
    let target = PgConnectOptions::from_str(url)?;
    if target.get_host().starts_with('/') {
        return Err(
            "the delay proxy relays TCP: give DATABASE_URL a host and port, not a socket".into(),
        );
    }
    let upstream = (target.get_host(), target.get_port())
        .to_socket_addrs()?
        .next()
        .ok_or("DATABASE_URL's host has no address")?;
    let proxy = DelayProxy::start(upstream, delay)?;
    let mut options = test_support::pool_options(url, POOL);
    options.map_sqlx_postgres_opts(move |o| o.host("127.0.0.1").port(proxy.port));
    Ok(test_support::connect_with(options).await)
}

/// The server's version and durability settings, and whose server it is.
async fn postgres_settings(url: &str, own: bool, durable: bool) -> Result<String, BoxError> {
    let pool = PgPool::connect(url).await?;
    let (version, fsync, sync_commit, fpw, buffers): (String, String, String, String, String) =
        sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('fsync'), \
             current_setting('synchronous_commit'), current_setting('full_page_writes'), \
             current_setting('shared_buffers')",
        )
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let whose = match (own, durable) {
        (true, true) => "a throwaway cluster with PostgreSQL's default durability",
        (true, false) => "a throwaway cluster with the tests' settings (--fsync off)",
        (false, _) => "DATABASE_URL's server, its own settings",
    };
    Ok(format!(
        "PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync_commit}, \
         full_page_writes={fpw}, shared_buffers={buffers}; {whose})"
    ))
}

/// The median time of `SELECT 1`, in ms: on one held connection (one round trip), and through
/// the pool, acquiring a connection each time as every strategy does (sqlx's pools ping a
/// connection when it is acquired, `test_before_acquire`, on by default in sqlx and SeaORM: one
/// more round trip per acquire, for every strategy).
async fn round_trips<DB: Database>(pool: &Pool<DB>) -> Result<(f64, f64), BoxError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut held = Vec::new();
    let mut conn = pool.acquire().await?;
    for _ in 0..200 {
        let t0 = Instant::now();
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        held.push(t0.elapsed());
    }
    drop(conn);
    let mut pooled = Vec::new();
    for _ in 0..200 {
        let t0 = Instant::now();
        sqlx::query("SELECT 1").execute(pool).await?;
        pooled.push(t0.elapsed());
    }
    Ok((median_ms(held), median_ms(pooled)))
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// A migrated SQLite file in `dir`: WAL (readers never wait for the writer), `synchronous`
/// FULL when durable (every commit flushed, SQLite's default) or OFF.
async fn sqlite(dir: &TempDir, durable: bool) -> Result<(Db, String), BoxError> {
    let synchronous = if durable {
        SqliteSynchronous::Full
    } else {
        SqliteSynchronous::Off
    };
    let mut options = test_support::pool_options(&dir.sqlite_url("bench.db"), POOL);
    options.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
    });
    let orm = test_support::connect_with(options).await;
    Migrator::up(&orm, None).await?;
    let db = Db::new(Place::Sqlite, orm);
    let Raw::Sqlite(pool) = &db.raw else {
        unreachable!("the SQLite place")
    };
    let described = sqlite_settings(pool).await?;
    Ok((db, described))
}

async fn sqlite_settings(pool: &SqlitePool) -> Result<String, BoxError> {
    let mut conn = pool.acquire().await?;
    let (version,): (String,) = sqlx::query_as("SELECT sqlite_version()")
        .fetch_one(&mut *conn)
        .await?;
    let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await?;
    let synchronous = match synchronous {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        _ => "EXTRA",
    };
    Ok(format!(
        "SQLite {version}, one file on the local disk, journal_mode={journal}, \
         synchronous={synchronous}, busy_timeout {} s, in process",
        SQLITE_BUSY_TIMEOUT.as_secs()
    ))
}

/// The machine the run measured: CPU model, cores, memory (from `/proc` on Linux).
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: f64 = info
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".to_owned());
    format!("{cpu}, {cores} cores, {memory}")
}

/// The machine's 1-minute load average (`/proc/loadavg`), to show in the report how busy the
/// machine was while a place was measured: on a shared machine, others' work is noise.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
