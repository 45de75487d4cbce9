//! Which server answers: PostgreSQL, or an engine that only speaks its protocol and whose
//! advisory locks must not be trusted.
//!
//! Some PostgreSQL-compatible engines define the advisory-lock functions without locking
//! anything. On such a server this crate would return `Created` twice for one key, silently.
//! So every lock the crate takes reports the server's identity in the same statement that
//! tries the lock ([`DETECTION_COLUMNS`], folded into [`lock`](super::lock)'s first statement: no extra
//! round trip, so no per-pool cache to keep right), and [`Server::check`] refuses, before
//! anything is written, an engine whose locks are known to be fake or unsafe to wait on.
//!
//! The engines and what the crate does with each are in [`ServerRefusal`]'s docs.
//!
//! Only PostgreSQL itself is tested (Debian's PostgreSQL 15). Services that run PostgreSQL's
//! own lock manager are PostgreSQL for this purpose. Citus: locks are per node, so take them
//! through the coordinator (the one node the application talks to).
//!
//! # CockroachDB v26.2
//!
//! v26.2 has real transaction-level advisory locks, but a lock taken inside a savepoint is not
//! released by `ROLLBACK TO SAVEPOINT`. Every bounded wait of this crate ([`Wait::Timeout`],
//! and the slices of [`Wait::Forever`]) runs in a subtransaction (a PL/pgSQL exception block)
//! that is rolled back when the wait fails, and the crate promises that the transaction is
//! then as it was before the wait; on v26.2 whatever the wait took inside it would stay, and
//! the bounds themselves rely on PostgreSQL's `lock_timeout` and `deadlock_timeout`, untested
//! there. Waiting without a subtransaction is no way out: a timeout would then abort a caller's
//! whole transaction. So on
//! CockroachDB the crate only tries once ([`Wait::No`], one statement, no savepoint) and
//! refuses waits with [`ServerRefusal::SavepointKeepsLocks`], up front, whether or not the key
//! is free, so the answer does not depend on contention. Inside a caller's transaction a
//! `create_once` runs in a savepoint too; there, after an error, the key stays locked until
//! the caller's transaction ends (longer than on PostgreSQL, never shorter: exclusion holds).

use sea_orm::{DbErr, QueryResult};

use crate::classify::is_undefined_function;
use crate::{Error, ServerRefusal, Wait};

/// The oldest `server_version_num` whose SQL this crate's statements use: transaction-scoped
/// advisory locks (9.1) and `current_setting(name, missing_ok)` (9.6).
pub(crate) const MINIMUM_VERSION_NUM: i32 = 90_600;

/// The first CockroachDB release whose `pg_advisory_xact_lock` locks: (major, minor).
const COCKROACH_REAL_LOCKS: (u32, u32) = (26, 2);

/// The first YugabyteDB releases with real advisory locks: 2.25 (preview series) and the
/// stable series named by year from 2025.1.
const YUGABYTE_REAL_LOCKS: (u32, u32) = (2, 25);
const YUGABYTE_REAL_LOCKS_STABLE: (u32, u32) = (2025, 1);

/// The columns that identify the server, appended to the statement that first tries a lock.
/// Fixed text; every function exists since PostgreSQL 9.6 and in the engines named above, and
/// `current_setting(name, true)` is NULL where a setting does not exist.
pub(crate) const DETECTION_COLUMNS: &str = "version() AS server_version, \
     current_setting('server_version_num') AS server_version_num, \
     current_setting('crdb_version', true) AS crdb_version, \
     current_setting('yb_silence_advisory_locks_not_supported_error', true) AS yb_silence";

/// What the server said about itself, from [`DETECTION_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// `version()`.
    pub(crate) version: String,
    /// `server_version_num` (CockroachDB reports the PostgreSQL version it emulates).
    pub(crate) version_num: i32,
    /// CockroachDB's `crdb_version` setting; `None` elsewhere.
    pub(crate) crdb_version: Option<String>,
    /// YugabyteDB's `yb_silence_advisory_locks_not_supported_error`; `None` elsewhere.
    pub(crate) yb_silence: Option<String>,
}

/// The engine behind the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    PostgreSql,
    /// (major, minor) of CockroachDB, `None` when the version could not be read.
    Cockroach(Option<(u32, u32)>),
    /// (major, minor) of YugabyteDB.
    Yugabyte(Option<(u32, u32)>),
}

impl Server {
    /// Reads the detection columns of a row.
    pub(crate) fn from_row(row: &QueryResult) -> Result<Server, DbErr> {
        let version_num: String = row.try_get("", "server_version_num")?;
        Ok(Server {
            version: row.try_get("", "server_version")?,
            // Unparsable (an engine that reports something odd) counts as too old: refused.
            version_num: version_num.trim().parse().unwrap_or(0),
            crdb_version: row.try_get("", "crdb_version")?,
            yb_silence: row.try_get("", "yb_silence")?,
        })
    }

    fn engine(&self) -> Engine {
        if let Some(crdb) = &self.crdb_version {
            return Engine::Cockroach(
                version_after(crdb, " v").or_else(|| version_after(crdb, "v")),
            );
        }
        if self.version.starts_with("CockroachDB") {
            return Engine::Cockroach(version_after(&self.version, " v"));
        }
        if self.yb_silence.is_some() || self.version.contains("-YB-") {
            return Engine::Yugabyte(version_after(&self.version, "-YB-"));
        }
        Engine::PostgreSql
    }

    /// Refuses this server for a lock taken with `wait`, or accepts it.
    pub(crate) fn check(&self, wait: Wait) -> Result<(), Error> {
        let refusal = match self.engine() {
            Engine::Cockroach(Some(version)) if version >= COCKROACH_REAL_LOCKS => match wait {
                Wait::No => None,
                Wait::Forever | Wait::Timeout(_) => Some(ServerRefusal::SavepointKeepsLocks),
            },
            Engine::Cockroach(_) => Some(ServerRefusal::FakeAdvisoryLocks),
            Engine::Yugabyte(version) => {
                let silenced = self.yb_silence.as_deref().is_some_and(is_on);
                let real = version.is_some_and(|v| {
                    v >= YUGABYTE_REAL_LOCKS_STABLE
                        || (v.0 == YUGABYTE_REAL_LOCKS.0 && v >= YUGABYTE_REAL_LOCKS)
                });
                (silenced || !real).then_some(ServerRefusal::FakeAdvisoryLocks)
            }
            Engine::PostgreSql => {
                (self.version_num < MINIMUM_VERSION_NUM).then_some(ServerRefusal::TooOld)
            }
        };
        match refusal {
            None => Ok(()),
            Some(reason) => Err(Error::UnsupportedServer {
                server: Some(self.version.clone()),
                reason,
                source: None,
            }),
        }
    }
}

/// The error of the statement that tries the lock (and detects the server): a function it
/// calls does not exist on a server too old (or too foreign) for it.
pub(crate) fn from_try_error(err: DbErr) -> Error {
    if is_undefined_function(&err) {
        Error::UnsupportedServer {
            server: None,
            reason: ServerRefusal::TooOld,
            source: Some(err),
        }
    } else {
        Error::Database(err)
    }
}

/// `major.minor` of the first version number after `marker` (`"... v26.2.0 ..."`,
/// `"11.2-YB-2.25.1.0-b0 ..."`).
fn version_after(text: &str, marker: &str) -> Option<(u32, u32)> {
    let start = text.find(marker)? + marker.len();
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// PostgreSQL's spellings of a true boolean setting.
fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "yes" | "1"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn server(version: &str, crdb: Option<&str>, yb: Option<&str>) -> Server {
        Server {
            version: version.into(),
            version_num: 150_014,
            crdb_version: crdb.map(Into::into),
            yb_silence: yb.map(Into::into),
        }
    }

    fn refusal(server: &Server, wait: Wait) -> Option<ServerRefusal> {
        match server.check(wait) {
            Ok(()) => None,
            Err(Error::UnsupportedServer { reason, .. }) => Some(reason),
            Err(other) => panic!("{other:?}"),
        }
    }

    const WAITS: [Wait; 3] = [
        Wait::Forever,
        Wait::No,
        Wait::Timeout(Duration::from_secs(1)),
    ];

    #[test]
    fn postgres_and_services_that_run_it_are_used() {
        for version in [
            "PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc",
            "PostgreSQL 16.4 on aarch64-unknown-linux-gnu, compiled by aarch64-unknown-linux-gnu-gcc (GCC) 9.5.0, 64-bit",
            "PostgreSQL 17.2 (Neon) on x86_64-pc-linux-gnu",
        ] {
            for wait in WAITS {
                assert_eq!(
                    refusal(&server(version, None, None), wait),
                    None,
                    "{version}"
                );
            }
        }
    }

    #[test]
    fn old_postgres_is_refused() {
        let mut old = server("PostgreSQL 9.5.25 on x86_64-pc-linux-gnu", None, None);
        old.version_num = 90_525;
        assert_eq!(refusal(&old, Wait::No), Some(ServerRefusal::TooOld));
        old.version_num = 90_600;
        assert_eq!(refusal(&old, Wait::No), None);
    }

    #[test]
    fn cockroach_before_26_2_is_refused_whatever_the_wait() {
        let version =
            "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 01:53:43, go1.19.10)";
        for crdb in [None, Some(version)] {
            for wait in WAITS {
                assert_eq!(
                    refusal(&server(version, crdb, None), wait),
                    Some(ServerRefusal::FakeAdvisoryLocks)
                );
            }
        }
        // Reported only by the setting (version() overridden or unusual): still refused.
        let hidden = server("PostgreSQL 13.0", Some("CockroachDB OSS v25.4.1"), None);
        assert_eq!(
            refusal(&hidden, Wait::No),
            Some(ServerRefusal::FakeAdvisoryLocks)
        );
        // Unreadable version: refused.
        let odd = server("CockroachDB", None, None);
        assert_eq!(
            refusal(&odd, Wait::No),
            Some(ServerRefusal::FakeAdvisoryLocks)
        );
    }

    #[test]
    fn cockroach_26_2_may_try_but_not_wait() {
        for version in [
            "CockroachDB CCL v26.2.0 (x86_64)",
            "CockroachDB CCL v27.1.3",
        ] {
            let s = server(version, Some(version), None);
            assert_eq!(refusal(&s, Wait::No), None);
            assert_eq!(
                refusal(&s, Wait::Forever),
                Some(ServerRefusal::SavepointKeepsLocks)
            );
            assert_eq!(
                refusal(&s, Wait::Timeout(Duration::from_millis(5))),
                Some(ServerRefusal::SavepointKeepsLocks)
            );
        }
    }

    #[test]
    fn yugabyte_needs_real_locks_and_no_silenced_error() {
        let old = "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu";
        let stable_2024 = "PostgreSQL 11.2-YB-2024.2.0.0-b145 on x86_64-pc-linux-gnu";
        let new = "PostgreSQL 15.2-YB-2.25.1.0-b0 on x86_64-pc-linux-gnu";
        let stable_2025 = "PostgreSQL 15.2-YB-2025.1.0.0-b168 on x86_64-pc-linux-gnu";
        for version in [old, stable_2024] {
            assert_eq!(
                refusal(&server(version, None, Some("off")), Wait::No),
                Some(ServerRefusal::FakeAdvisoryLocks),
                "{version}"
            );
        }
        for version in [new, stable_2025] {
            assert_eq!(
                refusal(&server(version, None, Some("off")), Wait::Forever),
                None
            );
            assert_eq!(
                refusal(&server(version, None, Some("on")), Wait::Forever),
                Some(ServerRefusal::FakeAdvisoryLocks),
                "{version}"
            );
        }
    }

    #[test]
    fn refusals_are_not_retryable_and_say_why() {
        let err = server("CockroachDB CCL v23.1.0", None, None)
            .check(Wait::Forever)
            .unwrap_err();
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("CockroachDB CCL v23.1.0"), "{text}");
        assert!(text.contains("do not lock"), "{text}");
    }

    #[test]
    fn versions_are_read_from_each_engines_format() {
        assert_eq!(
            version_after("CockroachDB CCL v26.2.0 (x)", " v"),
            Some((26, 2))
        );
        assert_eq!(version_after("11.2-YB-2.25.1.0-b0", "-YB-"), Some((2, 25)));
        assert_eq!(version_after("v26", "v"), None);
        assert_eq!(version_after("nothing", " v"), None);
    }
}
