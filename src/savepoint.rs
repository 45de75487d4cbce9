//! The crate's own savepoints in a caller's transaction.
//!
//! Not SeaORM's nested transactions (`txn.begin()`): sqlx names those by nesting depth
//! (`_sqlx_savepoint_1`, `_2`, ...) and counts the depth on the client, so two calls interleaved
//! on one transaction roll back each other's work, and a call dropped in the middle of a
//! `SAVEPOINT` or `RELEASE` leaves the count wrong: a later rollback then names a savepoint that
//! is not there, or rolls back the caller's whole transaction, and the caller's COMMIT of an
//! aborted transaction answers ROLLBACK without an error. Here every savepoint has a name of
//! its own, and is released or rolled back by that name; calls on one transaction take turns
//! ([`turns`](crate::turns)), so savepoints nest properly.
//!
//! On PostgreSQL nothing the crate sends inside a savepoint aborts the caller's transaction
//! when its caller goes away: a lock wait never fails on the server ([`lock`](crate::backend::postgres::lock)).
//! (On MySQL/MariaDB a deadlock, or a lock timeout under `innodb_rollback_on_timeout`, rolls
//! the whole transaction back: InnoDB's rule, see [`mysql`](crate::backend::mysql::lock).) The one exception
//! is an insert that fails (its data breaks a constraint) after its call was dropped: then the
//! transaction is aborted, and the caller's next call returns
//! [`crate::Error::TransactionAborted`].

use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{ConnectionTrait, DatabaseTransaction};

use crate::Error;

/// Names savepoints: a process-wide counter, so no two calls in progress share a name.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// An open savepoint of the crate's own in `txn`. Release or roll it back; if it is dropped
/// instead (the call was cancelled), it stays open and its work (a lock, perhaps a row) belongs
/// to the caller's transaction, which commits or rolls it back with everything else.
#[derive(Debug)]
pub(crate) struct Savepoint<'a> {
    txn: &'a DatabaseTransaction,
    name: String,
}

impl<'a> Savepoint<'a> {
    /// `SAVEPOINT sea_orm_idempotent_N`. Fails with [`Error::TransactionAborted`] when the
    /// caller's transaction is aborted already.
    ///
    /// # Cancel Safety
    ///
    /// Dropped before it returns, the savepoint may or may not exist; either way the caller's
    /// transaction is unharmed.
    pub(crate) async fn begin(txn: &'a DatabaseTransaction) -> Result<Savepoint<'a>, Error> {
        // The name is the crate's own: a fixed prefix and a counter, never user input.
        let name = format!(
            "sea_orm_idempotent_{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        txn.execute_unprepared(&format!("SAVEPOINT {name}"))
            .await
            .map_err(Error::from_first_statement)?;
        Ok(Savepoint { txn, name })
    }

    /// The caller's transaction the savepoint is in.
    pub(crate) fn txn(&self) -> &'a DatabaseTransaction {
        self.txn
    }

    /// `RELEASE SAVEPOINT`: the work stays in the caller's transaction. Borrowed, not
    /// consumed, so that after a failed release the savepoint can still be rolled back.
    ///
    /// # Cancel Safety
    ///
    /// Dropped before it returns, the savepoint may or may not be released; the work stays in
    /// the caller's transaction either way.
    pub(crate) async fn release(&self) -> Result<(), Error> {
        self.txn
            .execute_unprepared(&format!("RELEASE SAVEPOINT {}", self.name))
            .await?;
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT`, then `RELEASE SAVEPOINT`: the work and the locks taken since
    /// are undone, and the transaction is usable again even if a statement in it failed.
    ///
    /// # Cancel Safety
    ///
    /// Dropped before it returns, the work may not be undone yet (see [`Savepoint`]).
    pub(crate) async fn rollback(self) -> Result<(), Error> {
        self.txn
            .execute_unprepared(&format!(
                "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}",
                name = self.name
            ))
            .await?;
        Ok(())
    }
}
