//! The call chain: the calls in progress in one task, outermost first, so that a call made
//! inside another call's `make_data` knows what its enclosing calls hold.
//!
//! While `make_data` runs, its call holds a lock and, on a connection, a pooled connection in
//! an open transaction. A call made from inside it (writing an audit row while creating an
//! event, say) that needs the same lock in the same database on another session would wait
//! for its own caller: a deadlock inside one process that the server cannot see. The chain
//! lets such a call refuse at once with [`Error::Reentrant`](crate::Error::Reentrant), and
//! lets calls on one caller's session nest (see [`turns`](crate::turns)).
//!
//! So each frame says where its lock is held: the database and session
//! ([`SessionId`]) of a caller's transaction, asked when the call began; for the crate's own
//! transaction, its pool (whose waiting room the call holds a turn in) and the session named
//! by the statement that took the lock ([`Learning`], [`learnt`]); on SQLite, the file. The
//! same key in another database is another lock: a call for it runs.
//!
//! The chain is a tokio task-local value, set around each `make_data`. It follows the code
//! `make_data` awaits, not tasks it spawns: a call in a spawned task does not see its parent.
//!
//! A lock is compared as the call's backend takes it ([`Lock`]): by its key, and on a
//! MySQL/MariaDB database that locks slots by the key's slot, which is every key of the slot's
//! lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use crate::LockKey;
use crate::backend::mysql::slots::mysql_lock_slot;
use crate::source::{DbId, PoolId, SessionId};
use crate::wait::CallId;

tokio::task_local! {
    static CHAIN: Chain;
}

/// What an enclosing call holds while its `make_data` runs, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// PostgreSQL, MySQL/MariaDB: the lock on `key`, in the database and session `at` says.
    Key { key: LockKey, at: At },
    /// SQLite: the write lock of a file (an IMMEDIATE transaction of the crate's own on a
    /// connection of `pool`); `file` is `None` for an in-memory database, which only that
    /// pool's connections share.
    SqliteWriteLock {
        pool: Option<PoolId>,
        file: Option<DbId>,
    },
}

/// A call's lock, as compared with what its enclosing calls hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// The key's own lock (PostgreSQL; MySQL/MariaDB on the per-key table).
    Key(LockKey),
    /// MySQL/MariaDB on the slots: the row of the key's slot, which every key of the slot
    /// locks ([`mysql_lock_slot`]).
    SlotOf(LockKey),
}

impl Lock {
    /// Whether an enclosing call that holds `held` holds this lock.
    fn is_held_by(self, held: LockKey) -> bool {
        match self {
            Lock::Key(key) => held == key,
            Lock::SlotOf(key) => held == key || mysql_lock_slot(held) == mysql_lock_slot(key),
        }
    }
}

impl From<LockKey> for Lock {
    fn from(key: LockKey) -> Lock {
        Lock::Key(key)
    }
}

/// Where an enclosing call holds its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// A caller's transaction, on this session (asked when the call began).
    Session(SessionId),
    /// The crate's own transaction on a connection of `pool`: its session is learnt when the
    /// lock is taken ([`learnt`]), from the statement that takes it.
    Own { pool: Option<PoolId>, call: CallId },
}

impl At {
    /// The session, if known: a caller's, or the one learnt for the crate's own transaction.
    fn session(self) -> Option<SessionId> {
        match self {
            At::Session(session) => Some(session),
            At::Own { call, .. } => learnt_session(call),
        }
    }
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    /// Its own transaction, on a connection of a pool.
    Connection,
    /// A savepoint in a caller's transaction, on this session.
    Transaction(SessionId),
}

/// One call in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// What it holds, if the crate knows (on SQLite a caller's transaction may or may not
    /// hold the write lock yet).
    pub(crate) held: Option<Held>,
    pub(crate) on: On,
}

/// The calls in progress around the current one, outermost first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chain(Vec<Frame>);

impl Chain {
    /// The chain of the code running now (empty outside any `make_data`).
    pub(crate) fn current() -> Chain {
        CHAIN.try_with(Chain::clone).unwrap_or_default()
    }

    /// The places where enclosing calls hold `lock`.
    fn holding(&self, lock: impl Into<Lock>) -> impl Iterator<Item = At> + '_ {
        let lock = lock.into();
        self.0.iter().filter_map(move |frame| match frame.held {
            Some(Held::Key { key: held, at }) if lock.is_held_by(held) => Some(at),
            _ => None,
        })
    }

    /// Whether an enclosing call holds `lock` (in any database).
    pub(crate) fn holds(&self, lock: impl Into<Lock>) -> bool {
        self.holding(lock).next().is_some()
    }

    /// Whether a call for `key` on a connection of `pool` would wait for an enclosing call
    /// in this process before reaching the database: one holds the key's turn among `pool`'s
    /// callers (src/turns.rs), on a connection of the same pool.
    pub(crate) fn holds_turn_on(&self, key: LockKey, pool: Option<PoolId>) -> bool {
        pool.is_some()
            && self
                .holding(key)
                .any(|at| matches!(at, At::Own { pool: held_on, .. } if held_on == pool))
    }

    /// Whether a call that takes `key` in `session` would wait for an enclosing call: one
    /// holds the key in the same database, in another session. (In the same session the lock
    /// is already this session's, and the server grants it again at once.) An enclosing
    /// call whose session is not known counts as one that would be waited for.
    pub(crate) fn would_wait_for_itself(&self, lock: impl Into<Lock>, session: SessionId) -> bool {
        self.holding(lock).any(|at| match at.session() {
            Some(held) => held.db == session.db && held != session,
            None => true,
        })
    }

    /// SQLite: whether a call that writes `file` (from a connection of `pool`, or a caller's
    /// transaction on a connection of no pool the crate knows) would wait for an enclosing
    /// call's own transaction, which holds the file's write lock on a connection of its own.
    pub(crate) fn holds_sqlite_file(&self, pool: Option<PoolId>, file: Option<DbId>) -> bool {
        self.0.iter().any(|frame| match frame.held {
            Some(Held::SqliteWriteLock {
                pool: held_pool,
                file: held_file,
            }) => (pool.is_some() && held_pool == pool) || (file.is_some() && held_file == file),
            _ => false,
        })
    }

    /// Whether an enclosing call's own SQLite transaction holds a write lock.
    pub(crate) fn holds_a_sqlite_write_lock(&self) -> bool {
        self.0
            .iter()
            .any(|frame| matches!(frame.held, Some(Held::SqliteWriteLock { .. })))
    }

    /// How many enclosing calls run on the caller's session `session`: the depth at which a
    /// call on it takes its turn.
    pub(crate) fn depth_on(&self, session: SessionId) -> usize {
        self.0
            .iter()
            .filter(|frame| frame.on == On::Transaction(session))
            .count()
    }

    /// Runs `future` (a `make_data`) with `frame` added to the chain.
    pub(crate) async fn run_inside<F: Future>(&self, frame: Frame, future: F) -> F::Output {
        let mut inner = self.clone();
        inner.0.push(frame);
        CHAIN.scope(inner, future).await
    }
}

/// The sessions of calls on a connection, learnt when they took their lock, for the calls
/// that may run a `make_data` (only those can enclose another call): registered by
/// [`Learning`] when the call begins, filled by [`learnt`], removed when the call ends.
static SESSIONS: Mutex<Option<HashMap<CallId, Option<SessionId>>>> = Mutex::new(None);

/// A call on a connection whose `make_data` may run: while it lives, the session in which
/// the call takes its lock is kept for the calls made inside that `make_data`.
#[derive(Debug)]
pub(crate) struct Learning(CallId);

impl Learning {
    pub(crate) fn start(call: CallId) -> Learning {
        let mut sessions = SESSIONS.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get_or_insert_with(HashMap::new).insert(call, None);
        Learning(call)
    }
}

impl Drop for Learning {
    fn drop(&mut self) {
        let mut sessions = SESSIONS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sessions) = sessions.as_mut() {
            sessions.remove(&self.0);
        }
    }
}

/// Whether `call` keeps its session for the calls inside its `make_data` ([`Learning`]).
pub(crate) fn is_learning(call: CallId) -> bool {
    SESSIONS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|sessions| sessions.contains_key(&call))
}

/// `call` took its lock in `session`: kept if the call is [`Learning`].
pub(crate) fn learnt(call: CallId, session: SessionId) {
    let mut sessions = SESSIONS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = sessions
        .as_mut()
        .and_then(|sessions| sessions.get_mut(&call))
    {
        *slot = Some(session);
    }
}

fn learnt_session(call: CallId) -> Option<SessionId> {
    SESSIONS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|sessions| sessions.get(&call).copied().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: LockKey = LockKey::Pair(1, 2);

    #[tokio::test]
    async fn a_call_inside_make_data_sees_its_enclosing_calls() {
        assert!(Chain::current().0.is_empty());
        let session = SessionId::for_tests(9);
        let outer = Frame {
            held: Some(Held::Key {
                key: KEY,
                at: At::Session(session),
            }),
            on: On::Transaction(session),
        };
        let chain = Chain::current()
            .run_inside(outer, async { Chain::current() })
            .await;
        assert_eq!(chain.depth_on(session), 1);
        assert_eq!(chain.depth_on(SessionId::for_tests(10)), 0);
        // Another session of the same database waits; the same session, another database,
        // or another key does not.
        assert!(chain.would_wait_for_itself(KEY, SessionId::for_tests(10)));
        assert!(!chain.would_wait_for_itself(KEY, session));
        assert!(!chain.would_wait_for_itself(KEY, SessionId::in_other_db_for_tests(10)));
        assert!(!chain.would_wait_for_itself(LockKey::Pair(1, 3), SessionId::for_tests(10)));
        // On MariaDB's slots another key of the slot is the same lock; of another slot not.
        let twin = (0..)
            .map(|k| LockKey::Pair(1, k))
            .find(|&k| k != KEY && mysql_lock_slot(k) == mysql_lock_slot(KEY))
            .expect("a key of the same slot");
        assert!(!chain.would_wait_for_itself(twin, SessionId::for_tests(10)));
        assert!(chain.would_wait_for_itself(Lock::SlotOf(twin), SessionId::for_tests(10)));
        assert!(!chain.would_wait_for_itself(Lock::SlotOf(twin), session));
        assert!(
            !chain
                .would_wait_for_itself(Lock::SlotOf(LockKey::Pair(1, 3)), SessionId::for_tests(10))
        );
        assert!(chain.holds(Lock::SlotOf(twin)) && !chain.holds(twin));
        assert!(
            Chain::current().0.is_empty(),
            "the frame ends with make_data"
        );
    }

    #[tokio::test]
    async fn an_enclosing_call_on_a_connection_is_known_by_its_pool_and_learnt_session() {
        let pool = Some(PoolId::for_tests(1));
        let call = crate::wait::Deadline::starting_now(crate::Wait::Forever).call();
        let learning = Learning::start(call);
        let outer = Frame {
            held: Some(Held::Key {
                key: KEY,
                at: At::Own { pool, call },
            }),
            on: On::Connection,
        };
        let chain = Chain::current()
            .run_inside(outer, async { Chain::current() })
            .await;
        assert!(chain.holds_turn_on(KEY, pool));
        assert!(!chain.holds_turn_on(KEY, Some(PoolId::for_tests(2))));
        assert!(!chain.holds_turn_on(KEY, None));
        // Its session not learnt yet: any session might wait for it.
        assert!(chain.would_wait_for_itself(KEY, SessionId::in_other_db_for_tests(3)));
        learnt(call, SessionId::for_tests(3));
        assert!(chain.would_wait_for_itself(KEY, SessionId::for_tests(4)));
        assert!(!chain.would_wait_for_itself(KEY, SessionId::in_other_db_for_tests(4)));
        drop(learning);
        assert!(!is_learning(call), "the session is forgotten with its call");
    }
}
