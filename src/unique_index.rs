//! Which entities' tables have a unique index over exactly their key columns, per pool: what
//! the one-statement path ([`call::one_statement`](crate::call)) relies on. Known, never
//! guessed: the catalog is asked once per pool and entity
//! ([`Backend::key_is_unique_indexed`](crate::backend::Backend::key_is_unique_indexed)), and
//! the answer is forgotten when the statement finds the index gone, so the next call asks
//! again.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use crate::source::PoolId;

/// What the catalog said, per pool and entity.
static KNOWN: LazyLock<RwLock<HashMap<(PoolId, TypeId), bool>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Whether entity `T`'s key is guarded by a unique index on `pool`'s database, if asked.
pub(crate) fn known<T: 'static>(pool: PoolId) -> Option<bool> {
    KNOWN
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(pool, TypeId::of::<T>()))
        .copied()
}

/// Keeps what the catalog said about entity `T` on `pool`.
pub(crate) fn learn<T: 'static>(pool: PoolId, guarded: bool) {
    KNOWN
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((pool, TypeId::of::<T>()), guarded);
}

/// Forgets it: the index was not there when a statement relied on it.
pub(crate) fn forget<T: 'static>(pool: PoolId) {
    KNOWN
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(pool, TypeId::of::<T>()));
}
