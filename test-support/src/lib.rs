//! Dev-only test support: a throwaway PostgreSQL cluster (and MariaDB server) per test process,
//! a fresh migrated database per test, and the few things every test, the benchmark and the demo share.
//!
//! - `DATABASE_URL` set: that server is used; each test gets its own database on it, dropped
//!   when the test passes and kept (its name printed) when it fails.
//! - Otherwise: one cluster is created per test process from the installed PostgreSQL binaries
//!   (`PATH` or `/usr/lib/postgresql/*/bin`; as root they run as the `postgres` user, since
//!   PostgreSQL refuses to run as root). A reaper process stops it and removes its files when
//!   the test process exits, however it exits (a panicking test, Ctrl-C, a kill).
//! - Neither: the first test panics with a message saying what to install or set.
//!
//! Database names are derived from the test's name (the test harness names the thread that
//! runs it), so tests never share a database and no test picks names by hand; a thread that is
//! not a test's (a `tokio::spawn`ed task's worker) is refused, not given a shared name.
//!
//! Tests that break the server on purpose (restart it, kill connections wholesale) ask for a
//! cluster of their own with [`Server::private`]: it is always started from the installed
//! binaries, even when `DATABASE_URL` is set, so a user's server is never restarted. It is
//! stopped and removed when dropped (or when the process exits). [`PgBouncer`] starts Debian's
//! `pgbouncer` in front of such a cluster.
//!
//! MySQL tests ask for [`TestDb::mysql`]: a database on [`MYSQL_URL`]'s server, or on a
//! throwaway MariaDB started once per test process from the installed binaries (Debian's
//! `mariadb-server`; as root it runs as the `mysql` user), removed by the same reaper. Without
//! either a MySQL test prints a loud line and passes without running, except in CI
//! (`CI=true`), where it fails.
//!
//! Shared with the benchmark and the demo: [`connect`] (the one pool builder), [`new_pr`] (the
//! sample pull request), [`naive_find_then_insert`] (the race `create_once` closes) and
//! [`TempDir`].

mod cluster;
mod database;
mod mariadb;
mod naive;
mod os;
mod pgbouncer;
mod pool;
mod reaper;
mod sample;
mod server;
mod temp;

pub use cluster::Cluster;
pub use database::TestDb;
pub use mariadb::{MYSQL_URL, MariaDb, MySqlServer};
pub use naive::naive_find_then_insert;
pub use pgbouncer::{PgBouncer, PoolMode, REQUIRE_PGBOUNCER};
pub use pool::{ACQUIRE_TIMEOUT, connect, connect_read_committed, connect_with, pool_options};
pub use sample::new_pr;
pub use server::{Server, server};
pub use temp::TempDir;
