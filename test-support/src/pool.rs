//! The one pool builder of the tests and the benchmark.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

/// How long a caller waits for a pooled connection before the pool reports
/// `DbErr::ConnectionAcquire`: long enough for a loaded CI machine, short enough that a
/// connection that is never given back (the bug the cancellation and hot-key tests look for)
/// fails the test instead of hanging it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The options of every pool the tests and the benchmark open: at most `max_connections`
/// connections to `url`, opened on demand and never reaped, [`ACQUIRE_TIMEOUT`], and no
/// statement logging.
/// Adjust them (SQLite's journal mode, statement logging) and open the pool with
/// [`connect_with`].
pub fn pool_options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No idle timeout and no lifetime: sqlx then starts no maintenance task. sqlx-core
        // 0.9.0's task loops `0..num_idle()` over an atomic count that a release racing an
        // acquire can take below zero for a moment; read then, it is near `usize::MAX`, and the
        // task spins without yielding. A test's runtime then never finishes shutting down
        // (seen once: `bad_input.rs` hung after its last assertion, its worker in that loop).
        .idle_timeout(None)
        .max_lifetime(None)
        .sqlx_logging(false);
    options
}

/// A pool to `url` with at most `max_connections` connections ([`pool_options`]).
///
/// # Panics
///
/// When the database cannot be reached (the URL is in the message).
pub async fn connect(url: &str, max_connections: u32) -> DatabaseConnection {
    connect_with(pool_options(url, max_connections)).await
}

/// A pool with `options` (start from [`pool_options`]).
///
/// # Panics
///
/// When the database cannot be reached (the URL is in the message).
pub async fn connect_with(options: ConnectOptions) -> DatabaseConnection {
    let url = options.get_url().to_owned();
    Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A pool of at most `max_connections` to the MySQL/MariaDB `url` whose sessions are READ
/// COMMITTED, set by sqlx as each connection opens (SeaORM's own `after_connect` runs once per
/// pool, on one connection). On such sessions MariaDB's one statement applies; on the
/// throwaway server's default, REPEATABLE READ, every call takes the locked path.
///
/// # Panics
///
/// When the database cannot be reached.
pub async fn connect_read_committed(url: &str, max_connections: u32) -> DatabaseConnection {
    use sea_orm::sqlx::Executor;

    let mut options = pool_options(url, max_connections);
    options.map_sqlx_mysql_pool_opts(|pool| {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map(drop)
            })
        })
    });
    connect_with(options).await
}
