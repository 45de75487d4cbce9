//! [`ServerRefusal`]: why a server is refused, whichever backend found out (PostgreSQL's engine
//! check in [`postgres::engine`](crate::backend::postgres::engine), MySQL's syntax check in
//! [`mysql::lock`](crate::backend::mysql::lock)).

use std::fmt;

/// Why a server is refused: one that speaks PostgreSQL's protocol but whose advisory locks
/// cannot be relied on, or a MySQL server without MariaDB's syntax. See
/// [`Error::UnsupportedServer`](crate::Error::UnsupportedServer).
///
/// Every lock the crate takes reads the server's identity in the statement that tries the
/// lock (no extra round trip) and refuses, before anything is written:
///
/// | engine | what the crate does |
/// | --- | --- |
/// | PostgreSQL ≥ 9.6, and services that run it (Amazon RDS and Aurora PostgreSQL, Google Cloud SQL and AlloyDB, Azure Database for PostgreSQL, Neon, Supabase, Crunchy, a Citus coordinator) | used |
/// | PostgreSQL before 9.6, or a server missing a function the try-lock statement calls | refused: [`ServerRefusal::TooOld`] (not a syntax error) |
/// | CockroachDB before v26.2 | refused: [`ServerRefusal::FakeAdvisoryLocks`] (the functions are stubs that return at once without locking; cockroach#13546) |
/// | CockroachDB v26.2 and later | [`Wait::No`](crate::Wait::No) only; waits refused: [`ServerRefusal::SavepointKeepsLocks`] |
/// | YugabyteDB before 2.25 (and 2024.x), or any YugabyteDB with `yb_silence_advisory_locks_not_supported_error` on | refused: [`ServerRefusal::FakeAdvisoryLocks`] (older releases and the silenced error succeed without locking) |
/// | YugabyteDB 2.25 / 2025.1 and later | used, untested |
/// | anything else that answers like PostgreSQL | used, untested: run [`probe_advisory_locks`](crate::probe_advisory_locks) at start-up |
///
/// Only PostgreSQL itself is tested (Debian's PostgreSQL 15). On CockroachDB v26.2 a lock
/// taken in a savepoint survives `ROLLBACK TO SAVEPOINT`, and every bounded wait of this crate
/// ([`Wait::Timeout`](crate::Wait::Timeout), the slices of [`Wait::Forever`](crate::Wait::Forever)) runs in a subtransaction rolled back
/// when the wait runs out: so there the crate only tries once ([`Wait::No`](crate::Wait::No): one statement, no
/// savepoint). Inside a caller's transaction a `create_once` runs in a savepoint too; after an
/// error there the key stays locked until the caller's transaction ends (longer than on
/// PostgreSQL, never shorter, so exclusion holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerRefusal {
    /// Its advisory-lock functions return without locking (CockroachDB before v26.2,
    /// YugabyteDB before 2.25 or with its "not supported" error silenced): two callers of one
    /// key would both be let in.
    FakeAdvisoryLocks,
    /// Its advisory locks are real but a lock taken in a savepoint survives `ROLLBACK TO
    /// SAVEPOINT` (CockroachDB v26.2 and later), and every wait of this crate is bounded by
    /// rolling back to one: only [`Wait::No`](crate::Wait::No) is accepted there.
    SavepointKeepsLocks,
    /// Older than PostgreSQL 9.6, or lacks a function the crate's statements call (SQLSTATE
    /// 42883, `undefined_function`, from the statement that tries the lock).
    TooOld,
    /// [`probe_advisory_locks`](crate::probe_advisory_locks) took a key on one connection and
    /// another connection of the same pool could take it too, or could not take it once it
    /// was released.
    ProbeFailed,
    /// MySQL/MariaDB: the server rejects MariaDB's per-statement lock-wait bound (`SET
    /// STATEMENT innodb_lock_wait_timeout = n FOR ...`), with which the crate bounds every
    /// wait in its lock table; MySQL 8 (untested) is refused this way, before anything is
    /// written.
    NotMariaDb,
}

impl fmt::Display for ServerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerRefusal::FakeAdvisoryLocks => {
                "its advisory-lock functions do not lock (known no-op stubs), so creating once \
                 per key cannot be guaranteed"
            }
            ServerRefusal::SavepointKeepsLocks => {
                "ROLLBACK TO SAVEPOINT does not release an advisory lock there, and waiting for \
                 a lock relies on it; only Wait::No is accepted"
            }
            ServerRefusal::TooOld => {
                "it lacks SQL this crate sends (transaction-scoped advisory locks and \
                 current_setting(name, missing_ok)); PostgreSQL 9.6 or later is needed"
            }
            ServerRefusal::NotMariaDb => {
                "it rejects MariaDB's per-statement lock-wait bound (SET STATEMENT \
                 innodb_lock_wait_timeout = n FOR ...), which bounds every wait in the lock \
                 table; MySQL 8 is not supported yet"
            }
            ServerRefusal::ProbeFailed => {
                "an advisory lock held on one connection did not exclude another connection \
                 (or was not released at rollback)"
            }
        })
    }
}
