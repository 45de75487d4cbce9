//! The PostgreSQL server the tests run against: `DATABASE_URL`'s, or a cluster of our own.
//! (Its databases, [`Server::database`], are made in [`database`](crate::database).)

use std::sync::OnceLock;

use crate::cluster::{Cluster, Durability};

/// The PostgreSQL server tests run against.
#[derive(Debug)]
pub struct Server {
    /// `postgres://user@host:port` without a database name.
    base_url: String,
    /// Query string of `DATABASE_URL` (e.g. `?sslmode=disable`), kept for every database.
    query: String,
    /// The cluster this process started, if it started one.
    cluster: Option<Cluster>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The server of this test process, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server::external(&url),
        _ => Server::private(),
    })
}

impl Server {
    fn external(url: &str) -> Server {
        assert!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "DATABASE_URL must be a PostgreSQL URL for the tests (got {url:?})"
        );
        let (without_query, query) = match url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (url, String::new()),
        };
        // Strip the database name: each test gets its own.
        let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
        let base_url = match without_query[scheme_end..].find('/') {
            Some(slash) => without_query[..scheme_end + slash].to_owned(),
            None => without_query.to_owned(),
        };
        Server {
            base_url,
            query,
            cluster: None,
        }
    }

    /// A throwaway cluster of the caller's own, started now from the installed binaries even
    /// when `DATABASE_URL` is set: for tests that restart the server, kill its connections or
    /// put a proxy in front of it. It is stopped and its files removed when the returned
    /// `Server` is dropped (a panicking test too), or at the latest when the process exits.
    ///
    /// # Panics
    ///
    /// When PostgreSQL's server binaries are not installed (the message says what to install).
    pub fn private() -> Server {
        Server::of(Cluster::start())
    }

    /// As [`Server::private`], but with PostgreSQL's default durability (`fsync`,
    /// `synchronous_commit` and `full_page_writes` on) instead of the tests' `off`: every
    /// commit waits for its WAL flush, as it does in production. For the benchmark's headline
    /// numbers, where the price of a durable commit is part of what is measured.
    ///
    /// # Panics
    ///
    /// As [`Server::private`].
    pub fn private_durable() -> Server {
        Server::of(Cluster::start_with(Durability::Default))
    }

    fn of(cluster: Cluster) -> Server {
        Server {
            base_url: format!("postgres://postgres@127.0.0.1:{}", cluster.port),
            query: String::new(),
            cluster: Some(cluster),
        }
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}{}", self.base_url, self.query)
    }

    /// The cluster this process started, or `None` when `DATABASE_URL` was given.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_urls_lose_their_database_but_keep_options() {
        let server = Server::external("postgres://u:p@db:5432/app?sslmode=disable");
        assert_eq!(
            server.url("t_x"),
            "postgres://u:p@db:5432/t_x?sslmode=disable"
        );
        let server = Server::external("postgres://u@db");
        assert_eq!(server.url("t_x"), "postgres://u@db/t_x");
    }
}
