//! The pools a race runs over.

use sea_orm::{DatabaseConnection, TransactionTrait};

/// `count` pools of `size` connections each to `url`, every connection already open, so that
/// connecting does not stagger the callers of a race (which would let one pool's caller commit
/// before the other pool's looks, and hide a missing lock).
///
/// Races run over several pools because callers of one pool on the same key take turns in the
/// crate's waiting room (`src/turns.rs`) before they reach the database: over one pool a race
/// would pass without the lock.
pub(crate) async fn open_pools(url: &str, count: usize, size: u32) -> Vec<DatabaseConnection> {
    let mut pools = Vec::with_capacity(count);
    for _ in 0..count {
        let pool = test_support::connect(url, size).await;
        let mut open = Vec::with_capacity(size as usize);
        for _ in 0..size {
            open.push(pool.begin().await.unwrap()); // each one holds a connection of its own
        }
        for txn in open {
            txn.rollback().await.unwrap();
        }
        pools.push(pool);
    }
    pools
}
