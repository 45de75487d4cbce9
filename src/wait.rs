//! `Wait`: how long a caller waits for a lock another transaction holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long to wait for a lock another transaction holds.
///
/// On SQLite (which has no advisory locks, see [`IdempotentCreate`](crate::IdempotentCreate))
/// the lock is the database file's write lock. `Forever` waits as long as the connection's
/// `busy_timeout` (sqlx's default: 5 s; `ConnectOptions::map_sqlx_sqlite_opts(|o|
/// o.busy_timeout(d))`), then fails with [`Error::LockTimeout`](crate::Error::LockTimeout)
/// with `timeout: None`. `Timeout` bounds the wait for the pool's other writers in the process
/// and, as the connection's `busy_timeout` for the one statement that takes the lock (given
/// back afterwards, also when the call is dropped), the wait for other connections and
/// processes: a bound of 300 ms ends in about 300 ms whatever the pool's `busy_timeout`.
/// `No` waits for neither. Inside a caller's transaction SQLite answers at once: a transaction
/// that has read never waits for the write lock.
///
/// On MySQL/MariaDB the server bounds a wait in whole seconds (`innodb_lock_wait_timeout`, set
/// for the one statement): `Timeout` is rounded *up* to whole seconds, so it never ends before
/// the bound and may end up to a second after it; `Forever` waits in slices of 2 s; `No` is a
/// bound of 0. On a server with `innodb_rollback_on_timeout` a timeout rolls the whole
/// transaction back, so `Forever` stops with [`Error::LockTimeout`](crate::Error::LockTimeout)
/// at its first slice there. The details are in the repository's `docs/backends.md` ("The backends side by side").
///
/// A bound is about other transactions holding the key. Calls on one caller's transaction
/// take turns (see [`IdempotentCreate`](crate::IdempotentCreate#on-a-callers-transaction)),
/// and a call's wait for the turn of a sibling call on the same transaction is not bounded by
/// its `Wait`: its bound counts from when its turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Wait until the holder commits or rolls back. On the server the wait runs in bounded
    /// slices (twice `deadlock_timeout`, at least a second), so a caller that goes away stops
    /// waiting within a slice; to the caller it is one wait with no end: neither a server- or
    /// role-wide `lock_timeout` nor `statement_timeout` ends it (both are restored
    /// afterwards). What that costs: each new slice queues again behind the waiters that
    /// arrived meanwhile, so waiters are not served strictly first come, first served, and an
    /// exclusive waiter can be overtaken by a stream of overlapping shared holders.
    #[default]
    Forever,
    /// Wait at most this long, bounded by the server (`lock_timeout` set for the wait only,
    /// with `statement_timeout` off for it; both are restored), not by client polling; then
    /// fail with [`Error::LockTimeout`](crate::Error::LockTimeout), leaving the transaction usable. Durations are rounded
    /// up to whole milliseconds and capped at PostgreSQL's largest `lock_timeout` (about 24.8
    /// days); a zero duration is [`Wait::No`].
    Timeout(Duration),
    /// Try once; fail with [`Error::LockBusy`](crate::Error::LockBusy) if another transaction holds the key.
    No,
}

/// A caller's wait, counted from when its call began: what the caller asked for (what errors
/// report) and what is left of it (what the database is given after the call waited for its
/// turn). The one deadline a call passes down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// The call the deadline is of.
    call: CallId,
    asked: Wait,
    /// When the call began: what [`elapsed`](Self::elapsed) counts from.
    started: Instant,
    /// What the bound counts from: the call's start, or the moment it was granted its turn on
    /// a caller's transaction ([`counting_from_now`](Self::counting_from_now)).
    counted_from: Instant,
}

impl Deadline {
    pub(crate) fn starting_now(asked: Wait) -> Deadline {
        let now = Instant::now();
        Deadline {
            call: CallId(NEXT_CALL.fetch_add(1, Ordering::Relaxed)),
            asked,
            started: now,
            counted_from: now,
        }
    }

    /// The same wait, its bound counted from now: for a call on a caller's transaction once
    /// its turn there is granted. A bound is about other transactions holding the key; the
    /// wait for a sibling call's turn on the same transaction does not count against it.
    pub(crate) fn counting_from_now(self) -> Deadline {
        Deadline {
            counted_from: Instant::now(),
            ..self
        }
    }

    /// The call this deadline is of: one id per call, from its start to its end.
    pub(crate) fn call(&self) -> CallId {
        self.call
    }

    /// The wait the caller asked for.
    pub(crate) fn asked(&self) -> Wait {
        self.asked
    }

    /// What is left of it now.
    pub(crate) fn left(&self) -> Wait {
        self.asked.after(self.counted_from.elapsed())
    }

    /// How long the call has waited so far (its turns included).
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The bound a timeout reports: the caller's own, or `None` for a wait without one.
    pub(crate) fn reported_bound(&self) -> Option<Duration> {
        match self.asked {
            Wait::Timeout(bound) if !bound.is_zero() => Some(bound),
            _ => None,
        }
    }
}

/// One call in progress (of `create_once`, or one lock taken by
/// [`acquire_advisory_lock`](crate::acquire_advisory_lock)), unique in the process: what
/// the call chain knows an enclosing call by (src/call_chain.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallId(u64);

/// Numbers calls.
static NEXT_CALL: AtomicU64 = AtomicU64::new(0);

impl Wait {
    /// What is left of this wait after `waited` (for its turn, say). A bound that ran
    /// out leaves a millisecond, not zero: a zero bound would mean "do not wait" and change the
    /// error the caller sees, and a caller whose turn came late can still find a free lock.
    fn after(self, waited: Duration) -> Wait {
        match self {
            Wait::Timeout(bound) if !bound.is_zero() => {
                Wait::Timeout(bound.saturating_sub(waited).max(Duration::from_millis(1)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_left_after_waiting_for_a_turn() {
        let ms = Duration::from_millis;
        assert_eq!(Wait::Forever.after(ms(50)), Wait::Forever);
        assert_eq!(Wait::No.after(ms(50)), Wait::No);
        assert_eq!(Wait::Timeout(ms(80)).after(ms(30)), Wait::Timeout(ms(50)));
        assert_eq!(Wait::Timeout(ms(80)).after(ms(90)), Wait::Timeout(ms(1)));
        // A zero bound means "do not wait" (normalised below): keep it so.
        assert_eq!(Wait::Timeout(ms(0)).after(ms(0)), Wait::Timeout(ms(0)));
    }
}
