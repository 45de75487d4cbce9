//! What taking a batch chunk's locks gave: the word the seam shares with the backends' batch
//! code.

/// What [`Backend::lock_many`](super::Backend::lock_many) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockedMany {
    /// Every key is held until the scope ends.
    Locked,
    /// Not yet, and nothing is held that the scope's rollback does not release: roll the scope
    /// back, begin it again, and call again with the next attempt (a contended try on
    /// PostgreSQL, a slice of [`Wait::Forever`](crate::Wait::Forever) that ran out).
    Again,
}
