//! The SQLite result codes the crate reacts to, and what each means to it
//! ([`classify`](crate::classify) asks). An extended code's lowest byte is its primary code.

use crate::classify::ErrorClass;

/// `SQLITE_BUSY` and its extended codes (`SQLITE_BUSY_SNAPSHOT` = 517, ...).
const BUSY: i64 = 5;
/// `SQLITE_LOCKED`.
const LOCKED: i64 = 6;
/// `SQLITE_READONLY` (primary code; its extended codes share the lowest byte).
const READONLY: i64 = 8;
/// `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY`.
const CONSTRAINT_UNIQUE: i64 = 2067;
const CONSTRAINT_PRIMARYKEY: i64 = 1555;

/// What a result code means to the crate.
pub(crate) fn class(code: i64) -> ErrorClass {
    match code {
        code if is_busy(code) => ErrorClass::SqliteBusy,
        code if code & 0xff == READONLY => ErrorClass::ReadOnly,
        CONSTRAINT_UNIQUE | CONSTRAINT_PRIMARYKEY => ErrorClass::UniqueViolation,
        _ => ErrorClass::Other,
    }
}

/// Whether the database file was locked by another connection (a retry can get past it).
pub(crate) fn is_busy(code: i64) -> bool {
    matches!(code & 0xff, BUSY | LOCKED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_busy_codes_count_as_busy() {
        assert!(is_busy(5));
        assert!(is_busy(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(is_busy(6));
        assert!(!is_busy(19)); // SQLITE_CONSTRAINT
    }
}
