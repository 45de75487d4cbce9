//! How a lock is held: exclusive or shared.

/// Exclusive or shared, as PostgreSQL's advisory locks come (MySQL: `FOR UPDATE` or `LOCK IN
/// SHARE MODE` on the key's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
}
