//! Turns: callers in this process that must not overlap take turns at a [`Place`].
//!
//! There are three kinds of place:
//!
//! - **A key of a connection pool** (the waiting room). Without it, a burst of callers on one
//!   key (a webhook redelivered hundreds of times at once) all miss the row, all begin a
//!   transaction and all wait for the advisory lock on the server, each holding a pooled
//!   connection while it waits: the pool is full of waiters and callers of every other key
//!   queue behind them. With it, only the first caller of a key goes to the database; the
//!   others wait here, holding nothing, and then usually find the row with one statement. So a
//!   key never holds more than one of a pool's connections at a time. It is only an
//!   optimisation in front of the advisory lock, never a replacement: other pools and other
//!   processes do not see it, and the database lock still decides. It is per pool, not per
//!   process, because the pool is what waiters exhaust, and so that two pools never wait for
//!   each other here where the database would not make them. Keys are [`LockKey`]s, the same
//!   numbers the database locks, so two natural keys whose hashes collide take turns here as
//!   they do on the server.
//! - **A caller's session**: a caller's transaction and every transaction nested in it
//!   (`txn.begin()`), which share its connection ([`SessionId`], named by the server). Each
//!   call works in a savepoint of its own, and savepoints nest: two calls interleaved on one
//!   session would roll back each other's work. So calls on one session take turns, in full.
//!   A call made inside the `make_data` of a call on the same session takes its turn one level
//!   down (`depth`): it runs while the enclosing call waits for it, and its siblings still
//!   take turns with it. A call waits for its turn here whatever its [`Wait`]: a bound is
//!   about other transactions holding the key.
//!
//! - **SQLite's write lock, among the callers of one pool.** A call on a SQLite connection
//!   begins an IMMEDIATE transaction, which takes the database's one write lock. Callers that
//!   meet at SQLite's lock do not queue: the one that finds it taken sleeps in SQLite's busy
//!   handler (up to 100 ms at a time) and tries again, so the lock can sit free while the next
//!   writer sleeps, and who gets it next is luck (a caller can wait hundreds of milliseconds
//!   behind callers that came after it). Callers of one pool take turns here instead, in
//!   arrival order, from just before `BEGIN IMMEDIATE` to `COMMIT` or `ROLLBACK`; each
//!   finds the lock free, unless another pool, another process or the application's own
//!   transaction holds it (the busy handler then waits for that one, as before). A caller
//!   that waited [`WRITER_WAIT`] goes on without a turn, so a writer that never ends (a
//!   `make_data` that spawns another call on the same pool and waits for it) costs the
//!   others at most `WRITER_WAIT` more than without the queue: then SQLite's busy timeout
//!   ends their wait, as before.
//!
//! Callers are served in arrival order (tokio's mutex is fair). A place lives while someone
//! holds or waits for its turn and is removed by the last one to leave, including a caller
//! whose future is dropped while it waits.
//!
//! **A row passed on.** In the waiting room, a caller that found or created the row leaves it
//! at the place ([`Turn::pass_on`]), with its natural key, for the callers that were already
//! waiting when it looked under the lock: they take it ([`Turn::passed_on`]) and return
//! without a statement, so a burst of duplicates costs the database what one caller costs.
//! Only callers that arrived before that look may take the row: it was the stored row at a
//! moment during their call, which is what their own look would have seen. A caller that
//! arrives later looks itself. Only callers of the same natural key may take it: a place is a
//! lock key, and two natural keys whose lock keys collide (crc32 is 32 bits) share it; a
//! caller of the other key looks itself.

#[cfg(all(test, shuttle))]
mod model_check;
mod sync;
#[cfg(all(test, not(shuttle)))]
mod tests;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::PoisonError;
use std::time::Duration;

use self::sync::{Arc, AsyncMutex, Mutex, OwnedGuard, Weak};
use crate::source::{PoolId, SessionId};
use crate::{LockKey, Wait};

/// Where callers take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    /// One lock key among the callers of one pool.
    Key { pool: PoolId, key: LockKey },
    /// One caller's session, at a depth of nested calls (0: calls made directly on it).
    Transaction { session: SessionId, depth: usize },
    /// SQLite's write lock among the callers of one pool.
    Writer { pool: PoolId },
}

/// How long a caller waits for the turn at a [`Place::Writer`] before it goes on without one.
pub(crate) const WRITER_WAIT: Duration = Duration::from_secs(5);

/// Every place some caller of this process holds or waits for.
static PLACES: Places = Places::new();

/// Waits for the turn at `place` as `wait` allows; `None` when the bound ran out (with
/// [`Wait::No`]: when the turn is taken).
///
/// # Cancel Safety
///
/// Dropping the future gives up the place in the queue and leaves nothing behind.
pub(crate) async fn take(place: Place, wait: Wait) -> Option<Turn<'static>> {
    PLACES.take(place, wait).await
}

/// The places that callers hold or wait for: one per process ([`PLACES`]), and a fresh one for
/// each execution the model checker explores.
#[derive(Debug)]
struct Places(Mutex<Option<HashMap<Place, Weak<Room>>>>);

/// One place: its turn, and what its callers pass on.
#[derive(Debug)]
struct Room {
    turn: Arc<AsyncMutex>,
    notes: Mutex<Notes>,
}

/// How many callers have come to a place, and the row the last one passed on.
#[derive(Debug, Default)]
struct Notes {
    arrivals: Arrivals,
    row: Option<PassedOn>,
}

/// A count of the callers that came to a place: the first is number 0.
pub(crate) type Arrivals = u64;

/// A row left at a place, for the callers of its natural key that arrived before `arrivals`
/// was counted.
struct PassedOn {
    arrivals: Arrivals,
    /// The natural key and the row, `(K, M)` of [`Turn::pass_on`].
    keyed_row: Box<dyn Any + Send>,
}

impl fmt::Debug for PassedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassedOn")
            .field("arrivals", &self.arrivals)
            .finish_non_exhaustive()
    }
}

impl Places {
    const fn new() -> Places {
        Places(Mutex::new(None))
    }

    /// [`take`] at these places.
    async fn take(&self, place: Place, wait: Wait) -> Option<Turn<'_>> {
        let entry = Entry::of(self, place);
        let mutex = entry.mutex();
        let guard = match wait {
            Wait::Forever => Some(mutex.lock_owned().await),
            Wait::No => mutex.try_lock_owned().ok(),
            Wait::Timeout(bound) => tokio::time::timeout(bound, mutex.lock_owned()).await.ok(),
        };
        guard.map(|guard| Turn {
            _guard: guard,
            entry,
        })
    }

    #[cfg(test)]
    fn contains(&self, place: Place) -> bool {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|places| places.contains_key(&place))
    }
}

/// A caller's turn at a place. Hold it as long as the work must not overlap; dropping it lets
/// the next caller in. Field order matters: the guard is dropped (and the next caller let in)
/// before the entry checks whether it was the last one.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    _guard: OwnedGuard,
    entry: Entry<'a>,
}

impl Turn<'_> {
    /// How many callers have come to this place so far, this one included: count them just
    /// before the statement that finds or creates the row, then [`pass_on`](Self::pass_on) it.
    pub(crate) fn arrivals(&self) -> Arrivals {
        self.entry.notes().arrivals
    }

    /// Leaves `row`, the row of natural key `key`, for the callers counted in `arrivals` that
    /// still wait for this place (if any came after this one: most calls are alone, and copy
    /// nothing).
    pub(crate) fn pass_on<K, M>(&self, key: &K, row: &M, arrivals: Arrivals)
    where
        K: Clone + Send + 'static,
        M: Clone + Send + 'static,
    {
        if arrivals <= self.entry.arrival + 1 {
            return;
        }
        self.entry.notes().row = Some(PassedOn {
            arrivals,
            keyed_row: Box::new((key.clone(), row.clone())),
        });
    }

    /// The row a caller before this one passed on, if this caller had arrived by the time it
    /// was found or created, and it is the row of this caller's natural key `key`: a `K` equal
    /// to it, with an `M` (two natural keys, of one entity or of two, whose lock keys collide
    /// share a place).
    pub(crate) fn passed_on<K, M>(&self, key: &K) -> Option<M>
    where
        K: PartialEq + 'static,
        M: Clone + 'static,
    {
        let notes = self.entry.notes();
        let passed = notes.row.as_ref()?;
        if self.entry.arrival >= passed.arrivals {
            return None;
        }
        let (passed_key, row) = passed.keyed_row.downcast_ref::<(K, M)>()?;
        (passed_key == key).then(|| row.clone())
    }
}

/// A counted reference to one place's room; the last one dropped removes the place.
#[derive(Debug)]
struct Entry<'a> {
    places: &'a Places,
    place: Place,
    /// `Some` until dropped: [`Drop`] releases it while holding the lock of `places`.
    room: Option<Arc<Room>>,
    /// This caller's number among the place's arrivals.
    arrival: Arrivals,
}

impl Entry<'_> {
    fn of(places: &Places, place: Place) -> Entry<'_> {
        let mut map = places.0.lock().unwrap_or_else(PoisonError::into_inner);
        let map = map.get_or_insert_with(HashMap::new);
        let room = match map.get(&place).and_then(Weak::upgrade) {
            Some(room) => room,
            None => {
                let room = Arc::new(Room {
                    turn: Arc::new(AsyncMutex::default()),
                    notes: Mutex::new(Notes::default()),
                });
                map.insert(place, Arc::downgrade(&room));
                room
            }
        };
        let arrival = {
            let mut notes = room.notes.lock().unwrap_or_else(PoisonError::into_inner);
            notes.arrivals += 1;
            notes.arrivals - 1
        };
        Entry {
            places,
            place,
            room: Some(room),
            arrival,
        }
    }

    fn room(&self) -> &Room {
        self.room
            .as_ref()
            .expect("an entry holds its room until dropped")
    }

    fn mutex(&self) -> Arc<AsyncMutex> {
        self.room().turn.clone()
    }

    fn notes(&self) -> impl std::ops::DerefMut<Target = Notes> + '_ {
        self.room()
            .notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut map = self.places.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Release our reference under the lock: every other entry does the same and every
        // upgrade happens under it, so the last entry to leave sees no strong reference left
        // (the guards and clones of a caller are released before its entry) and removes the
        // place. Checking a count and releasing afterwards would let two entries leaving at
        // once each see the other and both keep a dead place.
        drop(self.room.take());
        if let Some(map) = map.as_mut()
            && map
                .get(&self.place)
                .is_some_and(|weak| weak.strong_count() == 0)
        {
            map.remove(&self.place);
        }
    }
}
