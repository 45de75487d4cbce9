//! Whether a call on a connection looks for the row before it takes the lock.
//!
//! The look is one statement with no transaction and no lock, and it is all a redelivery of a
//! stored row costs. For a new key it is wasted: the call looks again under the lock anyway,
//! so a new key costs one round trip more with the look than without. Which is cheaper depends
//! on the traffic, so by default ([`LookFirst::Adaptive`]) each entity remembers what its
//! recent calls found: after [`MISSES_BEFORE_SKIPPING`] looks in a row found nothing (a burst
//! of new keys), calls go straight to the lock; the first of them that finds the row already
//! there under the lock (redeliveries are back) turns the look on again. On SQLite the adaptive
//! choice always looks: there the look is no round trip, and without it a redelivery would wait
//! for the database's one write lock (the webhook demo ran about 12% slower).
//!
//! Correctness never depends on the look: under the lock a fresh statement decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{LazyLock, PoisonError, RwLock};

use crate::backend::Backend;

/// Whether a call on a connection looks for the row before it takes the lock: by default
/// [`LookFirst::Adaptive`]. Chosen per entity by
/// [`IdempotentCreate::look_first`](crate::IdempotentCreate::look_first).
///
/// | | new key | redelivery of a stored row |
/// |---|---|---|
/// | `Always` | look, `BEGIN` + lock, insert, `COMMIT`: 4 | look: 1 |
/// | `Never` | `BEGIN` + lock, insert, `COMMIT`: 3 | `BEGIN` + lock, insert (finds the row), read it, `COMMIT`: 4 |
/// | `Adaptive` | as `Never` during a run of new keys | as `Always` once redeliveries come |
///
/// (Round trips on a PostgreSQL pool, data in hand, no update function: `BEGIN` and the
/// try for the lock travel in one message. With `make_data`, an update function or a
/// contended key, the transaction is SeaORM's and `BEGIN` is a round trip of its own, after
/// which the try for the lock follows; a key held by another caller costs two round trips
/// more than that, for the try that found it busy and its `ROLLBACK`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookFirst {
    /// Look unless the entity's last [`MISSES_BEFORE_SKIPPING`] looks found nothing; look
    /// again once a call finds the row under the lock. On SQLite, always look.
    #[default]
    Adaptive,
    /// Always look first: for traffic that is mostly redeliveries.
    Always,
    /// Never look first: for traffic that is mostly new keys. Redeliveries then take the lock
    /// and wait behind a creator of the same key.
    Never,
}

/// After this many looks in a row found nothing, an adaptive entity stops looking first.
pub const MISSES_BEFORE_SKIPPING: u8 = 4;

/// What recent calls found, per entity (by lock namespace, so one entity's traffic never
/// changes another's behaviour): looks in a row that found nothing, saturating. One counter
/// per namespace, made at its first call and kept for the life of the process (there are as
/// many as the program has entities).
static MISSES: LazyLock<RwLock<HashMap<&'static str, &'static AtomicU8>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

fn slot(namespace: &'static str) -> &'static AtomicU8 {
    let known = MISSES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(namespace)
        .copied();
    known.unwrap_or_else(|| {
        MISSES
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(namespace)
            .or_insert_with(|| Box::leak(Box::new(AtomicU8::new(0))))
    })
}

impl LookFirst {
    /// Whether a call of the entity with lock namespace `namespace` on `backend` looks first.
    pub(crate) fn looks(self, namespace: &'static str, backend: Backend) -> bool {
        match (self, backend) {
            (LookFirst::Always, _) => true,
            (LookFirst::Never, _) => false,
            // SQLite's look is a call into the library, not a round trip, and skipping it
            // would send a redelivery for the database's one write lock.
            (LookFirst::Adaptive, Backend::Sqlite) => true,
            (LookFirst::Adaptive, Backend::Postgres | Backend::MySql) => {
                slot(namespace).load(Ordering::Relaxed) < MISSES_BEFORE_SKIPPING
            }
        }
    }

    /// Records what a call found, by a look or under the lock: the row `existed` or not.
    pub(crate) fn found(self, namespace: &'static str, existed: bool) {
        if self != LookFirst::Adaptive {
            return;
        }
        let misses = slot(namespace);
        if existed {
            misses.store(0, Ordering::Relaxed);
        } else {
            // Saturating: no more is learnt past the threshold. (An `Err` is that no-op.)
            let _ = misses.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                (m < MISSES_BEFORE_SKIPPING).then_some(m + 1)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_stops_looking_after_misses_and_starts_again_on_a_hit() {
        // A namespace of its own, so no other test shares the counter.
        let key = "look::tests::adaptive";
        let adaptive = LookFirst::Adaptive;
        let looks = |look: LookFirst| look.looks(key, Backend::Postgres);
        assert!(looks(adaptive));
        for _ in 0..MISSES_BEFORE_SKIPPING {
            assert!(looks(adaptive));
            adaptive.found(key, false);
        }
        assert!(!looks(adaptive));
        assert!(adaptive.looks(key, Backend::Sqlite), "SQLite always looks");
        adaptive.found(key, false);
        assert!(!looks(adaptive));
        adaptive.found(key, true);
        assert!(looks(adaptive));

        assert!(looks(LookFirst::Always));
        assert!(!looks(LookFirst::Never));
    }

    /// Two entities learn apart, however their namespaces hash (these two shared one of the
    /// 64 slots the counters used to live in: crc32 of both is 50 modulo 64).
    #[test]
    fn entities_learn_apart() {
        let (busy, quiet) = ("look::tests::busy", "look::tests::quiet_0");
        let adaptive = LookFirst::Adaptive;
        for _ in 0..MISSES_BEFORE_SKIPPING {
            adaptive.found(busy, false);
        }
        assert!(!adaptive.looks(busy, Backend::Postgres));
        assert!(adaptive.looks(quiet, Backend::Postgres));
    }
}
