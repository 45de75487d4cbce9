//! One test body on each server: [`Server`] (PostgreSQL or MariaDB), what differs between them
//! (a fresh database, a connection's id, how to kill a connection, the text of a `CREATE
//! TABLE`), and [`on_each_server!`], which turns `async fn name(server: Server)` into the tests
//! `name::postgres` and `name::mariadb`.
//!
//! `name::postgres` is built with the `postgres` feature, `name::mariadb` with `mysql`, so each
//! feature alone still builds and runs its half. MariaDB is the test process's throwaway server
//! (or `MYSQL_DATABASE_URL`'s); without either, `name::mariadb` prints a loud SKIPPED line and
//! passes without running, except in CI (`CI=true`), where it fails
//! ([`test_support::MySqlServer::get`]).

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::LockKey;
use test_support::TestDb;

/// The server a test body runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// The test process's PostgreSQL (`DATABASE_URL`'s, or a throwaway cluster).
    Postgres,
    /// The test process's MariaDB (`MYSQL_DATABASE_URL`'s, or a throwaway server).
    MariaDb,
}

impl Server {
    /// A fresh database for the running test on this server, migrated; `None` when there is no
    /// MariaDB outside CI (a loud line says so): the body then returns without running.
    ///
    /// # Panics
    ///
    /// As [`TestDb::new`] and [`TestDb::mysql`].
    pub(crate) async fn database(self) -> Option<TestDb> {
        match self {
            Server::Postgres => Some(TestDb::new().await),
            Server::MariaDb => TestDb::mysql().await,
        }
    }

    /// [`Server::database`] for a second database of the same test, named after `part`.
    pub(crate) async fn database_part(self, part: &str) -> Option<TestDb> {
        match self {
            Server::Postgres => Some(TestDb::new_part(part).await),
            Server::MariaDb => TestDb::mysql_part(part).await,
        }
    }

    /// The text of a statement on this server: `postgres`'s or `mariadb`'s (e.g. the
    /// `CREATE TABLE`s of a test's own tables).
    pub(crate) fn sql<'a>(self, postgres: &'a str, mariadb: &'a str) -> &'a str {
        match self {
            Server::Postgres => postgres,
            Server::MariaDb => mariadb,
        }
    }

    fn backend(self) -> DbBackend {
        match self {
            Server::Postgres => DbBackend::Postgres,
            Server::MariaDb => DbBackend::MySql,
        }
    }

    /// The id of the connection `db` runs on (`pg_backend_pid()`, `CONNECTION_ID()`). On a
    /// pool of one it is the id of the connection every later call of the pool uses, until
    /// that connection is killed.
    pub(crate) async fn connection_id(self, db: &impl ConnectionTrait) -> i64 {
        let sql = self.sql(
            "SELECT pg_backend_pid()::bigint AS id",
            "SELECT CAST(CONNECTION_ID() AS SIGNED) AS id",
        );
        db.query_one_raw(Statement::from_string(self.backend(), sql))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "id")
            .unwrap()
    }

    /// Kills connection `id` from `admin`, as an operator or a failover does
    /// (`pg_terminate_backend`, `KILL CONNECTION`): its transaction is rolled back and its
    /// client's next statement fails.
    pub(crate) async fn kill_connection(self, admin: &DatabaseConnection, id: i64) {
        let sql = self.sql(
            "SELECT pg_terminate_backend($1::integer) AS killed",
            "KILL CONNECTION ?",
        );
        let statement = Statement::from_sql_and_values(self.backend(), sql, [id.into()]);
        match self {
            Server::Postgres => {
                let killed = admin
                    .query_one_raw(statement)
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get::<bool>("", "killed")
                    .unwrap();
                assert!(killed, "no backend {id} to terminate");
            }
            Server::MariaDb => {
                admin.execute_raw(statement).await.unwrap();
            }
        }
    }

    /// Ids of every other connection to `admin`'s database (`pg_stat_activity`,
    /// `information_schema.PROCESSLIST`).
    pub(crate) async fn other_connections(self, admin: &DatabaseConnection) -> Vec<i64> {
        let sql = self.sql(
            "SELECT pid::bigint AS id FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid",
            "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND ID <> CONNECTION_ID() ORDER BY ID",
        );
        admin
            .query_all_raw(Statement::from_string(self.backend(), sql))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<i64>("", "id").unwrap())
            .collect()
    }

    /// The connections holding `key`, where the server lists them: PostgreSQL's `pg_locks`
    /// (`Some`). InnoDB shows a row lock's holder only in a cache, and only while someone
    /// waits for it (`None`): probe MariaDB with `lock_is_free` instead.
    pub(crate) async fn lock_holders(
        self,
        observer: &DatabaseConnection,
        key: LockKey,
    ) -> Option<Vec<i64>> {
        match self {
            Server::Postgres => Some(
                super::lock_pids(observer, key, true)
                    .await
                    .into_iter()
                    .map(i64::from)
                    .collect(),
            ),
            Server::MariaDb => None,
        }
    }
}

/// `async fn name(server: Server) { .. }`, preceded by its doc comment and its
/// `#[tokio::test(..)]` attribute, becomes that function and the tests `name::postgres`
/// (feature `postgres`) and `name::mariadb` (feature `mysql`), each running it on its server
/// with that attribute:
///
/// ```ignore
/// on_each_server! {
///     /// What it shows.
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async fn a_dropped_waiter_leaves_no_lock(server: Server) {
///         let Some(test_db) = server.database().await else { return };
///         ..
///     }
/// }
/// ```
macro_rules! on_each_server {
    ($(
        $(#[doc = $doc:expr])*
        #[tokio::test $(($($args:tt)*))?]
        async fn $name:ident($server:ident: Server $(,)?) $body:block
    )*) => {$(
        $(#[doc = $doc])*
        async fn $name($server: Server) $body

        #[doc = concat!("`", stringify!($name), "` on each server.")]
        mod $name {
            #[cfg(feature = "postgres")]
            #[tokio::test $(($($args)*))?]
            async fn postgres() {
                super::$name(super::Server::Postgres).await
            }

            #[cfg(feature = "mysql")]
            #[tokio::test $(($($args)*))?]
            async fn mariadb() {
                super::$name(super::Server::MariaDb).await
            }
        }
    )*};
}
pub(crate) use on_each_server;
