//! Who holds a key: the advisory locks held and awaited on the server, read back from
//! `pg_locks` into [`LockKey`]s and joined with `pg_stat_activity`.
//!
//! PostgreSQL shows an advisory lock in `pg_locks` with `locktype = 'advisory'` and its key in
//! three columns: `objsubid` names the key space (1: one `int8`, 2: two `int4`s) and `classid`
//! and `objid` (both `oid`, unsigned 32-bit) hold the numbers: for `BigInt(k)` the high and low
//! 32 bits of `k`, for `Pair(a, b)` `a` and `b` bit-cast to unsigned, so a negative `int4`
//! (a crc32 above `i32::MAX`) shows as a number above 2³¹. (PostgreSQL's `SET_LOCKTAG_INT64`
//! and `SET_LOCKTAG_INT32` in `src/backend/utils/adt/lockfuncs.c`.)

use std::fmt;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};

use crate::{Error, LockKey};

/// Exclusive or shared, as `pg_locks.mode` says (`ExclusiveLock` / `ShareLock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `pg_advisory_xact_lock` and friends: one holder at a time.
    Exclusive,
    /// `pg_advisory_xact_lock_shared`: any number of shared holders, no exclusive one.
    Shared,
}

/// One session holding or waiting for one advisory lock (one row of `pg_locks`), with what
/// `pg_stat_activity` says about that session.
///
/// Transaction- and session-scoped advisory locks look the same in `pg_locks`; both are shown.
/// A session sees other roles' `query` only with the `pg_read_all_stats` role (or as a
/// superuser); otherwise PostgreSQL puts `<insufficient privilege>` there.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The key, decoded from `classid`, `objid` and `objsubid`.
    pub key: LockKey,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// `true`: the session holds the lock; `false`: it waits for it.
    pub granted: bool,
    /// The server process of the session (`pg_backend_pid()` there; `pg_cancel_backend` and
    /// `pg_terminate_backend` take it).
    pub pid: i32,
    /// `pg_stat_activity.state`: `active` (running a statement, e.g. waiting for this lock),
    /// `idle in transaction` (holding the lock between statements), ...
    pub state: Option<String>,
    /// How long the session's transaction has been open (`pg_stat_activity.xact_start`): a
    /// holder has held the lock, and a waiter has waited for it, at most that long.
    ///
    /// For a waiter that asked for the lock first thing in its transaction, as the crate's own
    /// calls do (`create_once`'s transaction begins by taking the key), this is its whole wait.
    /// A caller's transaction that asked later shows its transaction's age, more than its
    /// wait. PostgreSQL keeps no start of a wait that spans statements: `pg_locks.waitstart`
    /// and `pg_stat_activity.query_start` restart with each statement, and
    /// [`Wait::Forever`](crate::Wait::Forever) waits in slices of a few seconds, one statement
    /// each, so they would show only the current slice. `None` for a session-scoped lock held
    /// outside a transaction, or a session not visible in `pg_stat_activity`.
    pub since: Option<Duration>,
    /// The `application_name` the session set (sqlx leaves it empty unless told:
    /// `PgConnectOptions::application_name`).
    pub application_name: Option<String>,
    /// The session's current or last statement.
    pub query: Option<String>,
    /// For a waiter, the sessions it waits for (`pg_blocking_pids`); empty for a holder.
    pub blocked_by: Vec<i32>,
}

/// The advisory locks of the current database, holders first, then waiters, each in key order
/// (then oldest transaction first); see [`LockHolders::all`] and [`LockHolders::of`]. Its
/// [`Display`](fmt::Display) is a table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LockHolders(pub Vec<LockHolder>);

impl LockHolders {
    /// Every advisory lock held or awaited in the connection's database (advisory keys are
    /// per database: the same numbers in another database are another lock).
    ///
    /// One statement on `pg_locks` and `pg_stat_activity` (PostgreSQL 9.6 or later, for
    /// `pg_blocking_pids`). Reading `pg_locks` briefly takes every lock-manager partition
    /// lock; fine for diagnosis, not for a hot loop.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedBackend`] when `db` is not PostgreSQL (SQLite has no advisory
    /// locks); [`Error::Database`] when the statement fails.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: one read-only statement; dropping the future leaves nothing behind.
    pub async fn all<C: ConnectionTrait>(db: &C) -> Result<LockHolders, Error> {
        query(db, None).await
    }

    /// The sessions holding or waiting for `key` in the connection's database. For an
    /// entity's natural key,
    /// [`IdempotentCreate::lock_holders`](crate::IdempotentCreate::lock_holders) derives the
    /// key for you.
    ///
    /// # Errors
    ///
    /// As [`LockHolders::all`].
    ///
    /// # Cancel Safety
    ///
    /// As [`LockHolders::all`].
    pub async fn of<C: ConnectionTrait>(db: &C, key: LockKey) -> Result<LockHolders, Error> {
        query(db, Some(key)).await
    }

    /// The sessions holding a lock.
    pub fn holders(&self) -> impl Iterator<Item = &LockHolder> {
        self.0.iter().filter(|h| h.granted)
    }

    /// The sessions waiting for a lock.
    pub fn waiters(&self) -> impl Iterator<Item = &LockHolder> {
        self.0.iter().filter(|h| !h.granted)
    }

    /// Whether no session holds or waits for any lock asked about.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for LockHolders {
    type Item = LockHolder;
    type IntoIter = std::vec::IntoIter<LockHolder>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The advisory locks of this database, optionally of one key (bound, never formatted).
const HOLDERS: &str = "SELECT l.classid::bigint AS classid, l.objid::bigint AS objid, \
       l.objsubid::int AS objsubid, l.mode, l.granted, l.pid, a.state, \
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS since_s, \
       a.application_name, a.query, \
       CASE WHEN l.granted THEN '' \
           ELSE array_to_string(pg_blocking_pids(l.pid), ',') END AS blocked_by \
     FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' \
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND ($1::bigint IS NULL OR (l.classid::bigint = $1 AND l.objid::bigint = $2 \
           AND l.objsubid = $3)) \
     ORDER BY l.granted DESC, l.objsubid, l.classid::bigint, l.objid::bigint, \
       a.xact_start, l.pid";

async fn query<C: ConnectionTrait>(db: &C, key: Option<LockKey>) -> Result<LockHolders, Error> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        return Err(Error::UnsupportedBackend {
            backend,
            what: "list lock holders: they are read from PostgreSQL's pg_locks",
        });
    }
    let (classid, objid, objsubid) = match key.map(encode) {
        Some((classid, objid, objsubid)) => (Some(classid), Some(objid), Some(objsubid)),
        None => (None, None, None),
    };
    let values: [Value; 3] = [classid.into(), objid.into(), objsubid.into()];
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            HOLDERS,
            values,
        ))
        .await?;
    rows.iter()
        .map(holder)
        .collect::<Result<Vec<_>, DbErr>>()
        .map(LockHolders)
        .map_err(Error::from)
}

fn holder(row: &QueryResult) -> Result<LockHolder, DbErr> {
    let key = decode(
        row.try_get("", "classid")?,
        row.try_get("", "objid")?,
        row.try_get("", "objsubid")?,
    )
    .ok_or_else(|| DbErr::Type("pg_locks: an advisory lock with an unknown key space".into()))?;
    let mode: String = row.try_get("", "mode")?;
    let blocked_by: Option<String> = row.try_get("", "blocked_by")?;
    let since: Option<f64> = row.try_get("", "since_s")?;
    Ok(LockHolder {
        key,
        mode: if mode == "ShareLock" {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        },
        granted: row.try_get("", "granted")?,
        pid: row.try_get("", "pid")?,
        state: row.try_get("", "state")?,
        since: since.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
        application_name: row.try_get("", "application_name")?,
        query: row.try_get("", "query")?,
        blocked_by: blocked_by
            .unwrap_or_default()
            .split(',')
            .filter_map(|pid| pid.trim().parse().ok())
            .collect(),
    })
}

/// `(classid, objid, objsubid)` of a key, as `pg_locks` shows it (the `oid`s widened to
/// `i64`, so they compare exactly with `classid::bigint`).
fn encode(key: LockKey) -> (i64, i64, i32) {
    match key {
        LockKey::BigInt(k) => (i64::from((k >> 32) as u32), i64::from(k as u32), 1),
        LockKey::Pair(a, b) => (i64::from(a as u32), i64::from(b as u32), 2),
    }
}

/// The key of a `pg_locks` advisory row; `None` for any other key space (PostgreSQL's SQL
/// functions only use 1 and 2) or a value that is not an `oid`.
fn decode(classid: i64, objid: i64, objsubid: i32) -> Option<LockKey> {
    let (high, low) = (u32::try_from(classid).ok()?, u32::try_from(objid).ok()?);
    match objsubid {
        1 => Some(LockKey::BigInt(
            ((u64::from(high) << 32) | u64::from(low)) as i64,
        )),
        2 => Some(LockKey::Pair(high as i32, low as i32)),
        _ => None,
    }
}

impl fmt::Display for LockHolders {
    /// A table: one line per session and lock, holders first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no advisory locks held or awaited");
        }
        writeln!(
            f,
            "{:<28} {:<9} {:<7} {:>7} {:<19} {:>9} {:<16} {:<10} query",
            "key", "mode", "status", "pid", "state", "for", "application", "blocked by"
        )?;
        for h in &self.0 {
            let mode = match h.mode {
                LockMode::Exclusive => "exclusive",
                LockMode::Shared => "shared",
            };
            let since = h
                .since
                .map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64()));
            let blocked_by = h
                .blocked_by
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            writeln!(
                f,
                "{:<28} {:<9} {:<7} {:>7} {:<19} {:>9} {:<16} {:<10} {}",
                h.key.to_string(),
                mode,
                if h.granted { "held" } else { "waiting" },
                h.pid,
                h.state.as_deref().unwrap_or("-"),
                since,
                shorten(h.application_name.as_deref().unwrap_or(""), 16),
                if blocked_by.is_empty() {
                    "-"
                } else {
                    &blocked_by
                },
                shorten(h.query.as_deref().unwrap_or(""), 60),
            )?;
        }
        Ok(())
    }
}

/// One line of at most `max` characters.
fn shorten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        line
    } else {
        let mut short: String = line.chars().take(max - 1).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the pgsql-docs report that documented the encoding (2011):
    /// `pg_advisory_lock(1111, 2222)` shows `1111 | 2222 | 2`, and
    /// `pg_advisory_lock(3333 * 2^32 + 4444)` shows `3333 | 4444 | 1`.
    #[test]
    fn decodes_both_key_spaces() {
        assert_eq!(decode(1111, 2222, 2), Some(LockKey::Pair(1111, 2222)));
        assert_eq!(
            decode(3333, 4444, 1),
            Some(LockKey::BigInt(3333 * (1 << 32) + 4444))
        );
        assert_eq!(decode(1, 2, 3), None);
        assert_eq!(decode(-1, 2, 1), None);
        assert_eq!(decode(1 << 32, 2, 1), None);
    }

    #[test]
    fn negative_halves_are_large_oids_and_round_trip() {
        let keys = [
            LockKey::Pair(-1, i32::MIN),
            LockKey::Pair(i32::MAX, -2_008_521_774),
            LockKey::for_entity("pull_requests", &123_i64),
            LockKey::BigInt(-1),
            LockKey::BigInt(i64::MIN),
            LockKey::BigInt(i64::MAX),
            LockKey::crc32("PR-123"),
            LockKey::BigInt(0),
        ];
        for key in keys {
            let (classid, objid, objsubid) = encode(key);
            assert!((0..=i64::from(u32::MAX)).contains(&classid), "{key}");
            assert!((0..=i64::from(u32::MAX)).contains(&objid), "{key}");
            assert_eq!(decode(classid, objid, objsubid), Some(key));
        }
        assert_eq!(encode(LockKey::Pair(-1, 5)), (4_294_967_295, 5, 2));
        assert_eq!(
            encode(LockKey::BigInt(-1)),
            (4_294_967_295, 4_294_967_295, 1)
        );
    }

    #[test]
    fn the_table_is_one_line_per_session() {
        let holders = LockHolders(vec![LockHolder {
            key: LockKey::Pair(1, -2),
            mode: LockMode::Exclusive,
            granted: false,
            pid: 42,
            state: Some("active".into()),
            since: Some(Duration::from_millis(1500)),
            application_name: Some("worker".into()),
            query: Some("SELECT\n  pg_advisory_xact_lock($1, $2)".into()),
            blocked_by: vec![7, 8],
        }]);
        let table = holders.to_string();
        assert_eq!(table.lines().count(), 2, "{table}");
        let line = table.lines().nth(1).unwrap();
        for part in [
            "(1, -2)",
            "waiting",
            "42",
            "1.500s",
            "worker",
            "7,8",
            "SELECT pg_advisory",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        assert_eq!(
            LockHolders::default().to_string(),
            "no advisory locks held or awaited\n"
        );
    }
}
