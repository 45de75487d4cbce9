//! The waiting room: callers of one connection pool that want the same lock key take turns
//! here, before they take a pooled connection.
//!
//! Without it, a burst of callers on one key (a webhook redelivered hundreds of times at once)
//! all miss the row, all begin a transaction and all wait for the advisory lock on the server,
//! each holding a pooled connection while it waits: the pool is full of waiters and callers of
//! every other key queue behind them. With it, only the first caller of a key goes to the
//! database; the others wait here, holding nothing, and then usually find the row with one
//! statement. So a key never holds more than one of a pool's connections at a time.
//!
//! It is only an optimisation in front of the advisory lock, never a replacement: other pools
//! and other processes do not see it, and the database lock still decides. The room is per
//! pool, not per process, because the pool is what waiters exhaust, and so that two pools
//! (two databases, or two "processes" in one test) never wait for each other here where the
//! database would not make them. Its effects on a caller:
//!
//! - [`Wait::Forever`]: waits here for its turn, then as before.
//! - [`Wait::No`]: never waits here. If the key's turn is free it takes it; if not it goes on
//!   without one, exactly as it would without the waiting room (its look may find the row;
//!   otherwise the database says whether the lock is busy).
//! - [`Wait::Timeout`]: waits here at most the whole bound, and the database lock gets what
//!   is left of it (at least a millisecond, so a caller whose turn came late can still find
//!   an existing row or a free lock), and a timeout is reported with the caller's own bound.
//!   If the bound runs out here the caller goes on without a turn, as with [`Wait::No`].
//!
//! Keys are [`LockKey`]s, the same numbers the database locks, so two natural keys whose
//! hashes collide take turns here as they do on the server. Callers are served in arrival
//! order (tokio's mutex is fair). An entry lives while someone holds or waits for its key and
//! is removed by the last one to leave, including a caller whose future is dropped while it
//! waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as Turnstile, OwnedMutexGuard};

use crate::{Error, LockKey, TransactionSource, Wait};

/// Where callers take turns: a pool's identity and a lock key.
type Place = (usize, LockKey);

/// Every place some caller of this process holds or waits for.
static ROOM: Mutex<Option<HashMap<Place, Weak<Turnstile<()>>>>> = Mutex::new(None);

/// The least the database lock is given after a wait here (`lock_timeout` counts whole
/// milliseconds; a zero bound would mean "do not wait" and change the error a caller sees).
const LEAST_DATABASE_WAIT: Duration = Duration::from_millis(1);

/// A caller's place after the waiting room: its turn on the key (if it got one) and the wait
/// left for the database. Hold it until the transaction has ended: dropping it lets the next
/// caller of the key in.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Held, never read: dropping it lets the next caller of the key in.
    _turn: Option<Turn>,
    asked: Wait,
    waited: Duration,
}

/// The key's turn. Field order matters: the guard is dropped (and the next caller let in)
/// before the entry checks whether it was the last one.
#[derive(Debug)]
struct Turn {
    _guard: OwnedMutexGuard<()>,
    _entry: Entry,
}

/// A counted reference to one key's turnstile; the last one dropped removes the key.
#[derive(Debug)]
struct Entry {
    key: Place,
    /// `Some` until dropped: [`Drop`] releases it while holding the room's lock.
    turnstile: Option<Arc<Turnstile<()>>>,
}

impl Entry {
    fn of(key: Place) -> Entry {
        let mut room = ROOM.lock().unwrap_or_else(PoisonError::into_inner);
        let room = room.get_or_insert_with(HashMap::new);
        let turnstile = match room.get(&key).and_then(Weak::upgrade) {
            Some(turnstile) => turnstile,
            None => {
                let turnstile = Arc::new(Turnstile::new(()));
                room.insert(key, Arc::downgrade(&turnstile));
                turnstile
            }
        };
        Entry {
            key,
            turnstile: Some(turnstile),
        }
    }

    fn turnstile(&self) -> Arc<Turnstile<()>> {
        self.turnstile
            .clone()
            .expect("an entry holds its turnstile until dropped")
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut room = ROOM.lock().unwrap_or_else(PoisonError::into_inner);
        // Release our reference under the lock: every other entry does the same and every
        // upgrade happens under it, so the last entry to leave sees no strong reference left
        // (the guards and clones of a caller are released before its entry) and removes the
        // key. Checking a count and releasing afterwards would let two entries leaving at
        // once each see the other and both keep a dead key.
        drop(self.turnstile.take());
        if let Some(room) = room.as_mut()
            && room
                .get(&self.key)
                .is_some_and(|weak| weak.strong_count() == 0)
        {
            room.remove(&self.key);
        }
    }
}

/// Waits for `key`'s turn among the callers of `db`'s pool, when `db` is a PostgreSQL pool;
/// anything else (a caller's transaction, SQLite) is admitted at once, without a turn.
///
/// # Cancel Safety
///
/// As [`enter`].
pub(crate) async fn admit<C: TransactionSource>(db: &C, key: LockKey, wait: Wait) -> Admission {
    match db.pool_identity() {
        Some(pool) => enter(pool, key, wait).await,
        None => Admission {
            _turn: None,
            asked: wait,
            waited: Duration::ZERO,
        },
    }
}

/// Waits for `key`'s turn among the callers of the pool `pool` (a
/// [`TransactionSource::pool_identity`](crate::TransactionSource::pool_identity)) as `wait`
/// allows (see the module docs).
///
/// # Cancel Safety
///
/// Dropping the future gives up the place in the queue and leaves nothing behind.
pub(crate) async fn enter(pool: usize, key: LockKey, wait: Wait) -> Admission {
    let entry = Entry::of((pool, key));
    let turnstile = entry.turnstile();
    let started = Instant::now();
    let guard = match wait {
        Wait::Forever => Some(turnstile.lock_owned().await),
        Wait::No => turnstile.try_lock_owned().ok(),
        Wait::Timeout(bound) => tokio::time::timeout(bound, turnstile.lock_owned())
            .await
            .ok(),
    };
    Admission {
        _turn: guard.map(|guard| Turn {
            _guard: guard,
            _entry: entry,
        }),
        asked: wait,
        waited: started.elapsed(),
    }
}

impl Admission {
    /// How long the caller waited here.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }

    /// Whether the caller holds its key's turn (false: it went on without one).
    #[cfg(test)]
    fn has_turn(&self) -> bool {
        self._turn.is_some()
    }

    /// The bound of [`database_wait`](Self::database_wait), for tests of bounded waits.
    #[cfg(test)]
    fn database_wait_bound(&self) -> Duration {
        match self.database_wait() {
            Wait::Timeout(bound) => bound,
            other => panic!("not a bounded wait: {other:?}"),
        }
    }

    /// What is left of the caller's wait for the database lock.
    pub(crate) fn database_wait(&self) -> Wait {
        left_after(self.asked, self.waited)
    }
}

/// Reports a lock timeout against the bound the caller asked for (`asked`), not against what
/// was left of it after the waiting room.
pub(crate) fn restore_bound(err: Error, asked: Wait) -> Error {
    match (err, asked) {
        (
            Error::LockTimeout {
                key,
                timeout: Some(_),
                source,
            },
            Wait::Timeout(asked),
        ) => Error::LockTimeout {
            key,
            timeout: Some(asked),
            source,
        },
        (err, _) => err,
    }
}

/// The wait left of `asked` after `waited` in the waiting room.
fn left_after(asked: Wait, waited: Duration) -> Wait {
    match asked {
        Wait::Timeout(bound) if !bound.is_zero() => {
            Wait::Timeout(bound.saturating_sub(waited).max(LEAST_DATABASE_WAIT))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::sync::oneshot;

    /// The pool of these tests (no real pool: any number identifies one).
    const POOL: usize = 1;

    /// Keys of their own per test: the room is shared by every test of this binary.
    fn key(n: i32) -> LockKey {
        LockKey::Pair(0x5eed, n)
    }

    fn enter(key: LockKey, wait: Wait) -> impl Future<Output = Admission> {
        super::enter(POOL, key, wait)
    }

    fn in_room(key: LockKey) -> bool {
        ROOM.lock()
            .unwrap()
            .as_ref()
            .is_some_and(|room| room.contains_key(&(POOL, key)))
    }

    /// Lets every other task of a current-thread runtime run until it blocks.
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn same_key_callers_take_turns_in_arrival_order() {
        let first = enter(key(1), Wait::Forever).await;
        assert!(first.has_turn());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let tx = tx.clone();
            waiters.push(tokio::spawn(async move {
                let turn = enter(key(1), Wait::Forever).await;
                tx.send(n).unwrap();
                settle().await; // hold the turn while the others could run
                drop(turn);
            }));
            settle().await; // queue them in order
        }
        assert!(
            rx.try_recv().is_err(),
            "nobody passes while the key is held"
        );
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let order: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(!in_room(key(1)), "the last one out removes the key");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn other_keys_and_other_pools_do_not_wait() {
        let held = enter(key(2), Wait::Forever).await;
        let other_key = enter(key(3), Wait::No).await;
        assert!(other_key.has_turn());
        let other_pool = super::enter(POOL + 1, key(2), Wait::No).await;
        assert!(other_pool.has_turn());
        drop((held, other_key, other_pool));
        assert!(!in_room(key(2)) && !in_room(key(3)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn try_once_never_waits_and_goes_on_without_a_turn() {
        let held = enter(key(4), Wait::Forever).await;
        let busy = enter(key(4), Wait::No).await;
        assert!(!busy.has_turn());
        assert_eq!(busy.database_wait(), Wait::No);
        drop(busy);
        assert!(in_room(key(4)), "the holder still has it");
        drop(held);
        assert!(!in_room(key(4)));
        assert!(enter(key(4), Wait::No).await.has_turn());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_bound_that_runs_out_here_leaves_the_least_wait_for_the_database() {
        let held = enter(key(5), Wait::Forever).await;
        let bound = Duration::from_millis(20);
        let late = enter(key(5), Wait::Timeout(bound)).await;
        assert!(!late.has_turn());
        assert!(late.waited() >= bound);
        assert_eq!(late.database_wait(), Wait::Timeout(LEAST_DATABASE_WAIT));
        drop((held, late));
        assert!(!in_room(key(5)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_timeout_is_reported_with_the_callers_bound() {
        let asked = Duration::from_secs(2);
        let admission = Admission {
            _turn: None,
            asked: Wait::Timeout(asked),
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            admission.database_wait(),
            Wait::Timeout(Duration::from_millis(500))
        );
        let err = restore_bound(
            Error::LockTimeout {
                key: key(6),
                timeout: Some(admission.database_wait_bound()),
                source: sea_orm::DbErr::RecordNotFound("lock_timeout".into()),
            },
            admission.asked,
        );
        assert!(
            matches!(err, Error::LockTimeout { timeout: Some(t), .. } if t == asked),
            "{err:?}"
        );
        let busy = restore_bound(Error::LockBusy { key: key(6) }, admission.asked);
        assert!(matches!(busy, Error::LockBusy { .. }));
    }

    #[test]
    fn waits_left_for_the_database() {
        let ms = Duration::from_millis;
        assert_eq!(left_after(Wait::Forever, ms(50)), Wait::Forever);
        assert_eq!(left_after(Wait::No, ms(50)), Wait::No);
        assert_eq!(
            left_after(Wait::Timeout(ms(80)), ms(30)),
            Wait::Timeout(ms(50))
        );
        assert_eq!(
            left_after(Wait::Timeout(ms(80)), ms(90)),
            Wait::Timeout(LEAST_DATABASE_WAIT)
        );
        // A zero bound means "do not wait" (lock.rs normalises it): keep it so.
        assert_eq!(
            left_after(Wait::Timeout(Duration::ZERO), Duration::ZERO),
            Wait::Timeout(Duration::ZERO)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_dropped_mid_wait_leaves_nothing_behind() {
        let held = enter(key(7), Wait::Forever).await;
        let (tx, rx) = oneshot::channel::<()>();
        let waiter = tokio::spawn(async move {
            let _turn = enter(key(7), Wait::Forever).await;
            let _ = tx.send(());
        });
        settle().await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert!(rx.await.is_err(), "the aborted waiter never got a turn");
        drop(held);
        assert!(!in_room(key(7)));
        assert!(enter(key(7), Wait::No).await.has_turn());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_dropped_after_its_turn_came_leaves_nothing_behind() {
        let held = enter(key(8), Wait::Forever).await;
        let waiter = tokio::spawn(async move {
            let _turn = enter(key(8), Wait::Forever).await;
            std::future::pending::<()>().await;
        });
        settle().await;
        // The turn passes to the waiter, which is dropped before it runs again: it is the
        // last one to leave, still inside its wait.
        drop(held);
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert!(!in_room(key(8)));
        assert!(enter(key(8), Wait::No).await.has_turn());
    }
}
