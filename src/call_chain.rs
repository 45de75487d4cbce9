//! The call chain: the calls in progress in one task, outermost first, so that a call made
//! inside another call's `make_data` knows what its enclosing calls hold.
//!
//! While `make_data` runs, its call holds a lock and, on a connection, a pooled connection in
//! an open transaction. A call made from inside it (writing an audit row while creating an
//! event, say) that needs the same lock on another connection would wait for its own caller:
//! a deadlock inside one process that the server cannot see. The chain lets such a call refuse
//! at once with [`Error::Reentrant`](crate::Error::Reentrant), and lets calls on one caller's
//! transaction nest (see [`turns`](crate::turns)).
//!
//! The chain is a tokio task-local value, set around each `make_data`. It follows the code
//! `make_data` awaits, not tasks it spawns: a call in a spawned task does not see its parent.

use std::future::Future;

use crate::LockKey;
use crate::source::TxnId;

tokio::task_local! {
    static CHAIN: Chain;
}

/// What an enclosing call holds while its `make_data` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// PostgreSQL: the advisory lock on this key.
    Key(LockKey),
    /// SQLite: the database's write lock (an IMMEDIATE transaction of the crate's own).
    SqliteWriteLock,
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    /// Its own transaction, on a connection of a pool.
    Connection,
    /// A savepoint in a caller's transaction.
    Transaction(TxnId),
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

    /// Whether a call that needs `held`, on `on`, would wait for an enclosing call: one holds
    /// the same lock on another connection or transaction. (On the same caller's transaction
    /// the lock is already this session's, and PostgreSQL grants it again at once.)
    pub(crate) fn would_wait_for_itself(&self, held: Held, on: On) -> bool {
        self.0.iter().any(|frame| {
            frame.held == Some(held)
                && !matches!((frame.on, on), (On::Transaction(a), On::Transaction(b)) if a == b)
        })
    }

    /// How many enclosing calls run on the caller's transaction `txn`: the depth at which a
    /// call on it takes its turn.
    pub(crate) fn depth_on(&self, txn: TxnId) -> usize {
        self.0
            .iter()
            .filter(|frame| frame.on == On::Transaction(txn))
            .count()
    }

    /// Runs `future` (a `make_data`) with `frame` added to the chain.
    pub(crate) async fn run_inside<F: Future>(&self, frame: Frame, future: F) -> F::Output {
        let mut inner = self.clone();
        inner.0.push(frame);
        CHAIN.scope(inner, future).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Held = Held::Key(LockKey::Pair(1, 2));

    #[tokio::test]
    async fn a_call_inside_make_data_sees_its_enclosing_calls() {
        assert!(Chain::current().0.is_empty());
        let txn = TxnId::for_tests(9);
        let outer = Frame {
            held: Some(KEY),
            on: On::Transaction(txn),
        };
        let chain = Chain::current()
            .run_inside(outer, async { Chain::current() })
            .await;
        assert_eq!(chain.depth_on(txn), 1);
        assert_eq!(chain.depth_on(TxnId::for_tests(10)), 0);
        assert!(chain.would_wait_for_itself(KEY, On::Connection));
        assert!(chain.would_wait_for_itself(KEY, On::Transaction(TxnId::for_tests(10))));
        assert!(!chain.would_wait_for_itself(KEY, On::Transaction(txn)));
        assert!(!chain.would_wait_for_itself(Held::Key(LockKey::Pair(1, 3)), On::Connection));
        assert!(
            Chain::current().0.is_empty(),
            "the frame ends with make_data"
        );
    }
}
