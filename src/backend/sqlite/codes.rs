//! The SQLite result codes the crate reacts to ([`classify`](crate::classify) says what each
//! means to it). An extended code's lowest byte is its primary code.

/// `SQLITE_ERROR`: the generic error (a statement SQLite refused).
pub(crate) const ERROR: i64 = 1;
/// `SQLITE_BUSY` and its extended codes (`SQLITE_BUSY_SNAPSHOT` = 517, ...).
pub(crate) const BUSY: i64 = 5;
/// `SQLITE_LOCKED`.
pub(crate) const LOCKED: i64 = 6;
/// `SQLITE_READONLY` (primary code; its extended codes share the lowest byte).
pub(crate) const READONLY: i64 = 8;
/// `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY`.
pub(crate) const CONSTRAINT_UNIQUE: i64 = 2067;
pub(crate) const CONSTRAINT_PRIMARYKEY: i64 = 1555;

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
