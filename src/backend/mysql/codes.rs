//! The MySQL and MariaDB error numbers the crate reacts to ([`classify`](crate::classify) says
//! what each means to it). Numbers, not SQLSTATEs: MySQL gives many errors one
//! SQLSTATE.

/// `ER_DUP_ENTRY` and `ER_DUP_ENTRY_WITH_KEY_NAME`: a duplicate key.
pub(crate) const DUP_ENTRY: u16 = 1062;
pub(crate) const DUP_ENTRY_WITH_KEY_NAME: u16 = 1586;
/// `ER_OPTION_PREVENTS_STATEMENT` (a write on a `read_only` server),
/// `ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION` and `ER_READ_ONLY_MODE`.
pub(crate) const OPTION_PREVENTS_STATEMENT: u16 = 1290;
pub(crate) const READ_ONLY_TRANSACTION: u16 = 1792;
pub(crate) const READ_ONLY_MODE: u16 = 1836;
/// `ER_LOCK_WAIT_TIMEOUT`: `innodb_lock_wait_timeout` (or MariaDB's `WAIT n`, `NOWAIT`) ran
/// out.
pub(crate) const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`: InnoDB chose this transaction as a deadlock's victim and rolled it back.
pub(crate) const LOCK_DEADLOCK: u16 = 1213;
/// `ER_AUTOINC_READ_FAILED` ("Failed to read auto-increment value from storage engine"):
/// InnoDB reports so an insert's wait for the table's AUTO-INC lock that failed, behind an
/// `INSERT ... SELECT` that holds it while it waits for a row or gap lock
/// (`innodb_autoinc_lock_mode = 1`): the wait ran out (`innodb_lock_wait_timeout`), or closed
/// a deadlock whose victim InnoDB rolled back whole. A lock wait timeout or a deadlock by
/// another number, so a retry can get past it (`tests/mysql_entity_waits.rs`).
pub(crate) const AUTOINC_READ_FAILED: u16 = 1467;
/// MySQL 8 `ER_LOCK_NOWAIT`: `NOWAIT` found the row locked (MariaDB reports 1205).
pub(crate) const LOCK_NOWAIT: u16 = 3572;
/// `ER_USER_LOCK_DEADLOCK`: a `GET_LOCK` deadlock (the crate takes no named locks, but a
/// caller's transaction may).
pub(crate) const USER_LOCK_DEADLOCK: u16 = 3058;
/// `ER_NO_SUCH_TABLE`.
pub(crate) const NO_SUCH_TABLE: u16 = 1146;
/// `ER_PARSE_ERROR`: a server without the syntax a statement uses.
pub(crate) const PARSE_ERROR: u16 = 1064;
/// `ER_SERVER_SHUTDOWN`: the server is shutting down.
pub(crate) const SERVER_SHUTDOWN: u16 = 1053;
/// MariaDB `ER_CONNECTION_KILLED`: `KILL CONNECTION` ended this session.
pub(crate) const CONNECTION_KILLED: u16 = 1927;
/// MySQL 8 `ER_CLIENT_INTERACTION_TIMEOUT`: the server closed an idle session.
pub(crate) const CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
/// `CR_SERVER_GONE_ERROR` and `CR_SERVER_LOST`: client-side codes of C clients for a lost
/// server; sqlx reports these as I/O errors, but a proxy may send them.
pub(crate) const SERVER_GONE: u16 = 2006;
pub(crate) const SERVER_LOST: u16 = 2013;
/// MariaDB `ER_CHECKREAD` ("record has changed since last read"): with
/// `innodb_snapshot_isolation`, a REPEATABLE READ transaction's locking read of a row changed
/// after its snapshot; the transaction must start again.
pub(crate) const CHECKREAD: u16 = 1020;

/// Whether a retry can get past an error with this number.
pub(crate) fn is_transient(number: u16) -> bool {
    matches!(
        number,
        LOCK_WAIT_TIMEOUT
            | AUTOINC_READ_FAILED
            | LOCK_DEADLOCK
            | LOCK_NOWAIT
            | USER_LOCK_DEADLOCK
            | SERVER_SHUTDOWN
            | CONNECTION_KILLED
            | CLIENT_INTERACTION_TIMEOUT
            | SERVER_GONE
            | SERVER_LOST
            | CHECKREAD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_and_connection_errors_are_transient_and_data_errors_are_not() {
        for number in [
            1205, 1467, 1213, 3572, 3058, 1053, 1927, 4031, 2006, 2013, 1020,
        ] {
            assert!(is_transient(number), "{number}");
        }
        // Duplicate key, no such table, syntax, data too long, check constraint.
        for number in [1062, 1146, 1064, 1406, 4025] {
            assert!(!is_transient(number), "{number}");
        }
    }
}
