//! The text of every statement that tries, prepares or waits for a PostgreSQL advisory lock,
//! and of the `DO` block that waits; [`lock`](super::lock) sends them in order. Fixed text:
//! the key and the bound are bound parameters (or settings), never formatted in, except the
//! key's integers in [`try_sql_with_literal_key`].

use std::time::Duration;

use sea_orm::{DbBackend, QueryResult, Statement, Value};

use super::SESSION_COLUMNS;
use super::engine::DETECTION_COLUMNS;
use crate::LockKey;
use crate::backend::mode::Mode;

/// The PostgreSQL function for a mode, waiting or not. Fixed text, never user input.
pub(super) fn function(mode: Mode, waiting: bool) -> &'static str {
    match (mode, waiting) {
        (Mode::Exclusive, false) => "pg_try_advisory_xact_lock",
        (Mode::Exclusive, true) => "pg_advisory_xact_lock",
        (Mode::Shared, false) => "pg_try_advisory_xact_lock_shared",
        (Mode::Shared, true) => "pg_advisory_xact_lock_shared",
    }
}

/// The key as bound parameters, and their placeholders (`$1, $2` or `$1`).
pub(super) fn key_parameters(key: LockKey) -> (Vec<Value>, String) {
    let values: Vec<Value> = match key {
        LockKey::Pair(namespace, key) => vec![namespace.into(), key.into()],
        LockKey::BigInt(key) => vec![key.into()],
    };
    let placeholders = (1..=values.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (values, placeholders)
}

/// The call that tries the exclusive lock on `key` without waiting, with the key bound as
/// parameters numbered from `first` (`pg_try_advisory_xact_lock($7, $8)`): for the
/// one-statement path ([`one_statement`](super::one_statement)), whose insert binds the
/// placeholders before.
pub(crate) fn try_lock_call(key: LockKey, first: usize) -> (String, Vec<Value>) {
    let (values, _) = key_parameters(key);
    let placeholders = (first..first + values.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let function = function(Mode::Exclusive, false);
    (format!("{function}({placeholders})"), values)
}

/// Step 1: isolation check, then a try-lock (`CASE` evaluates its branches in order, so the
/// lock is not touched under an unsafe level). Its answer is read by [`read_attempt`](super::lock::read_attempt).
pub(super) fn try_statement(key: LockKey, mode: Mode) -> Statement {
    let (values, placeholders) = key_parameters(key);
    Statement::from_sql_and_values(DbBackend::Postgres, try_sql(mode, &placeholders), values)
}

/// [`try_statement`]'s text with the key written as integer literals, for a simple-protocol
/// message, which binds nothing (src/backend/postgres/fast_path.rs sends it after `BEGIN` in one message).
///
/// The only values ever formatted into SQL by this crate: a [`LockKey`] is one or two
/// integers (`i32`, `i64`), computed by the crate from crc32 for entity keys, and an integer's
/// decimal text can hold nothing but digits and a minus sign. Nothing the user supplies (key,
/// data) reaches this text.
#[cfg(feature = "postgres")]
pub(crate) fn try_sql_with_literal_key(key: LockKey) -> String {
    let literals = match key {
        LockKey::Pair(namespace, key) => format!("{namespace}, {key}"),
        LockKey::BigInt(key) => key.to_string(),
    };
    try_sql(Mode::Exclusive, &literals)
}

/// The text of step 1 with `arguments` (placeholders, or the key's integers) for the try.
pub(super) fn try_sql(mode: Mode, arguments: &str) -> String {
    let try_lock = function(mode, false);
    format!(
        "SELECT CASE \
         WHEN current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN NULL \
         ELSE {try_lock}({arguments}) END AS acquired, \
         current_setting('transaction_isolation') AS isolation, {DETECTION_COLUMNS}, \
         {SESSION_COLUMNS}"
    )
}

/// How the server applies `statement_timeout` to a message of several statements, which
/// decides where the wait turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeouts {
    /// PostgreSQL 13 and later: to each statement of the message on its own, with the value
    /// in force when that statement starts. The wait's message turns `statement_timeout` off
    /// in its first statement and the `DO` block that follows restores it: the setting is off
    /// only while the server runs that one message, which it runs to the end even if its
    /// caller goes away, so a dropped call never leaves it off.
    PerStatement,
    /// Older servers: to the whole message, from its start. `statement_timeout` is turned off
    /// by a statement of its own before the wait ([`prepare_statement`], and
    /// [`outcome_statement`] before another slice); a call dropped between that statement and
    /// the wait leaves it off for the rest of the transaction.
    PerMessage,
}

impl Timeouts {
    /// From the server's version, in the row of the statement that tried the lock.
    pub(super) fn of(attempt: &QueryResult) -> Timeouts {
        let version = attempt
            .try_get::<String>("", "server_version_num")
            .ok()
            .and_then(|version| version.trim().parse::<i32>().ok());
        match version {
            Some(version) if version >= 130_000 => Timeouts::PerStatement,
            _ => Timeouts::PerMessage,
        }
    }
}

/// Step 2: save both timeouts, and store the key and the bound (a [`Wait::Timeout`](crate::Wait::Timeout) in whole
/// milliseconds, or one slice of [`Wait::Forever`](crate::Wait::Forever)) where [`WAIT_BLOCK`] reads them; on an
/// older server ([`Timeouts::PerMessage`]) also turn `statement_timeout` off for the wait.
/// Every value is bound; the settings are local to the transaction (`set_config(..., true)`),
/// so they end with it.
pub(super) fn prepare_statement(
    key: LockKey,
    bound: Option<Duration>,
    timeouts: Timeouts,
) -> Statement {
    let key_text = match key {
        LockKey::Pair(namespace, key) => format!("{namespace},{key}"),
        LockKey::BigInt(key) => key.to_string(),
    };
    let bound: Option<String> = bound.map(timeout_setting);
    let sql = "SELECT \
         set_config('sea_orm_idempotent.key', $1, true), \
         set_config('sea_orm_idempotent.bound', coalesce($2, \
             greatest(1000, least(2147483647, ceil(extract(epoch FROM \
             current_setting('deadlock_timeout')::interval) * 2000)))::bigint || 'ms'), true), \
         set_config('sea_orm_idempotent.lock_timeout', current_setting('lock_timeout'), true), \
         set_config('sea_orm_idempotent.statement_timeout', current_setting('statement_timeout'), true)";
    let sql = match timeouts {
        Timeouts::PerStatement => sql.to_owned(),
        Timeouts::PerMessage => format!("{sql}, set_config('statement_timeout', '0', true)"),
    };
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [Value::from(key_text), Value::from(bound)],
    )
}

/// Step 3, one wait: a `DO` block of fixed text (the key and the bound come from the settings
/// [`prepare_statement`] made). Its inner block runs in a subtransaction: when the wait fails
/// PostgreSQL rolls that back by itself and the handler records the SQLSTATE; when it succeeds
/// the lock passes to the transaction. Both timeouts are restored before it ends, whatever
/// happened, so even a wait whose caller went away leaves them as they were.
pub(super) const WAIT_BLOCK: &str = "DO $wait$ BEGIN \
     PERFORM set_config('sea_orm_idempotent.missed', '', true); \
     PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.bound'), true); \
     BEGIN \
         PERFORM {function}({arguments}); \
     EXCEPTION WHEN lock_not_available OR deadlock_detected OR query_canceled THEN \
         PERFORM set_config('sea_orm_idempotent.missed', SQLSTATE, true); \
     END; \
     PERFORM set_config('lock_timeout', current_setting('sea_orm_idempotent.lock_timeout'), true); \
     PERFORM set_config('statement_timeout', current_setting('sea_orm_idempotent.statement_timeout'), true); \
     END $wait$";

/// [`WAIT_BLOCK`] for a mode and a key space. Fixed text only.
pub(super) fn wait_block(key: LockKey, mode: Mode) -> String {
    let arguments = match key {
        LockKey::Pair(..) => {
            "split_part(current_setting('sea_orm_idempotent.key'), ',', 1)::int4, \
             split_part(current_setting('sea_orm_idempotent.key'), ',', 2)::int4"
        }
        LockKey::BigInt(_) => "current_setting('sea_orm_idempotent.key')::int8",
    };
    WAIT_BLOCK
        .replace("{function}", function(mode, true))
        .replace("{arguments}", arguments)
}

/// Step 3's message: on a server that times each statement of a message on its own
/// ([`Timeouts::PerStatement`]), `statement_timeout` turned off by the message's first
/// statement, for the `DO` block, which restores it; fixed text only.
pub(super) fn wait_message(key: LockKey, mode: Mode, timeouts: Timeouts) -> String {
    match timeouts {
        Timeouts::PerStatement => format!(
            "SELECT set_config('statement_timeout', '0', true); {}",
            wait_block(key, mode)
        ),
        Timeouts::PerMessage => wait_block(key, mode),
    }
}

/// Step 4: what the wait recorded (`''`: granted), and, on a server older than PostgreSQL 13
/// ([`Timeouts::PerMessage`]), `statement_timeout` off again when another slice follows.
pub(super) fn outcome_statement(another_slice: bool) -> Statement {
    let sql = "SELECT current_setting('sea_orm_idempotent.missed') AS missed, \
         set_config('statement_timeout', CASE \
             WHEN $1 AND current_setting('sea_orm_idempotent.missed') = '55P03' THEN '0' \
             ELSE current_setting('sea_orm_idempotent.statement_timeout') END, true)";
    Statement::from_sql_and_values(DbBackend::Postgres, sql, [Value::from(another_slice)])
}

/// `lock_timeout` in whole milliseconds, rounded up so a sub-millisecond bound still bounds,
/// and at most PostgreSQL's largest (`i32::MAX` ms, about 24.8 days), which it would otherwise
/// refuse as an invalid setting.
pub(super) fn timeout_setting(timeout: Duration) -> String {
    let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::lock::normalize;
    use crate::Wait;

    #[test]
    fn keys_and_bounds_are_bound_not_formatted() {
        let statement = prepare_statement(
            LockKey::Pair(31337, -90210),
            Some(Duration::from_millis(4321)),
            Timeouts::PerStatement,
        );
        for number in ["31337", "90210", "4321"] {
            assert!(!statement.sql.contains(number), "{}", statement.sql);
        }
        let values = statement.values.expect("bound values").0;
        assert_eq!(
            values,
            vec![
                Value::from("31337,-90210"),
                Value::from(Some("4321ms".to_owned()))
            ]
        );
        let forever = prepare_statement(LockKey::BigInt(-3), None, Timeouts::PerMessage);
        assert!(forever.sql.contains("current_setting('deadlock_timeout')"));
        assert_eq!(
            forever.values.expect("bound values").0,
            vec![Value::from("-3"), Value::from(None::<String>)]
        );
    }

    #[test]
    fn the_wait_block_is_fixed_text() {
        for key in [LockKey::Pair(123, -456), LockKey::BigInt(987_654)] {
            for mode in [Mode::Exclusive, Mode::Shared] {
                let block = wait_block(key, mode);
                assert!(!block.contains('{'), "{block}");
                assert!(!block.contains("123") && !block.contains("987654"));
                assert!(block.contains(&format!("PERFORM {}(", function(mode, true))));
            }
        }
        assert!(wait_block(LockKey::BigInt(1), Mode::Shared).contains("::int8)"));
    }

    #[test]
    fn the_first_attempt_never_waits() {
        let sql = try_statement(LockKey::BigInt(1), Mode::Shared).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock_shared($1)"));
        let sql = try_statement(LockKey::Pair(1, 2), Mode::Exclusive).sql;
        assert!(sql.contains("pg_try_advisory_xact_lock($1, $2)"));
        assert!(!sql.contains("set_config"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn the_literal_try_is_the_bound_try_with_the_key_written_out() {
        for (key, written) in [
            (LockKey::Pair(-7, 2_147_483_647), "-7, 2147483647"),
            (LockKey::BigInt(-9_000_000_000), "-9000000000"),
        ] {
            let bound = try_statement(key, Mode::Exclusive);
            let placeholders = key_parameters(key).1;
            assert_eq!(
                try_sql_with_literal_key(key),
                bound.sql.replace(&placeholders, written)
            );
        }
    }

    #[test]
    fn zero_timeout_means_do_not_wait() {
        assert_eq!(normalize(Wait::Timeout(Duration::ZERO)), Wait::No);
        assert_eq!(timeout_setting(Duration::from_micros(1)), "1ms");
        assert_eq!(timeout_setting(Duration::from_millis(1500)), "1500ms");
        assert_eq!(timeout_setting(Duration::MAX), "2147483647ms");
    }
}
