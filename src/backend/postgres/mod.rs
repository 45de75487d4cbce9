//! PostgreSQL: a READ COMMITTED transaction and a transaction-scoped advisory lock on the key
//! ([`lock`]). Only callers with the same key wait for each other.
//!
//! - [`batch`]: the locks of a batch's chunk, in one statement, in sorted order;
//! - [`lock`]: taking an advisory lock, waiting as the caller said, and reading the answer;
//! - [`lock_statements`]: the text of every statement that takes, tries or waits for one;
//! - [`engine`]: which server answers (engines whose advisory locks do not lock are refused);
//! - [`one_statement`]: a new key in one statement where a unique index covers the key
//!   ([`catalog`] knows);
//! - [`fast_path`]: a new key in three round trips on a connection of the crate's own;
//! - [`entity_waits`]: the insert's and the update's waits behind a writer that bypasses the
//!   lock, bounded as the lock's;
//! - [`holders`]: who holds and who waits for a key ([`LockHolders`](crate::LockHolders));
//! - [`probe`]: a start-up check of another server's advisory locks;
//! - [`codes`]: the SQLSTATEs the crate reacts to.

pub(crate) mod batch;
pub(crate) mod catalog;
pub(crate) mod chunk_statement;
pub(crate) mod codes;
pub(crate) mod engine;
pub(crate) mod entity_waits;
#[cfg(feature = "postgres")]
pub(crate) mod fast_path;
pub(crate) mod holders;
pub(crate) mod lock;
pub(crate) mod lock_statements;
pub(crate) mod one_statement;
pub(crate) mod probe;

use sea_orm::{DatabaseConnection, IsolationLevel, QueryResult, TransactionTrait};

use crate::backend::mode::Mode;
use crate::source::{DbId, SessionId};
use crate::to_the_end::to_the_end;
use crate::transaction::{Own, Txn};
use crate::wait::Deadline;
use crate::{Error, LockKey};

/// The crate's own transaction: a plain `BEGIN`, one round trip. Its isolation is the server's
/// default, READ COMMITTED unless configured otherwise; the lock's first statement checks it
/// and refuses any other ([`Error::UnsafeIsolation`]), after which the call begins again with
/// [`begin_read_committed`].
pub(crate) async fn begin(db: &DatabaseConnection) -> Result<Own, Error> {
    // sqlx-postgres 0.9.0 counts a transaction only once `BEGIN` is answered, so a call
    // dropped before that handed its pooled connection back inside an open transaction, where
    // the next user's statements would run uncommitted (sqlx #4393). The `BEGIN` runs to its
    // end in a task of its own: dropped, the call leaves it to finish, and the transaction is
    // then dropped and rolled back.
    let db = db.clone();
    Ok(Own::Plain(
        to_the_end(async move { db.begin().await }).await?,
    ))
}

/// Begins with READ COMMITTED set explicitly (`BEGIN`, then `SET TRANSACTION ISOLATION LEVEL
/// READ COMMITTED`: a second round trip), for a server whose default isolation is stricter
/// (see [why READ COMMITTED](crate#why-read-committed)).
pub(crate) async fn begin_read_committed(db: &DatabaseConnection) -> Result<Own, Error> {
    // Runs to its end, as in `begin`.
    let db = db.clone();
    Ok(Own::Plain(
        to_the_end(async move {
            db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
        })
        .await?,
    ))
}

/// Takes `key`'s lock in `txn` and names the session it is taken in, from the statement that
/// tries it (no extra round trip); `refuse` is asked about that session before any wait.
pub(crate) async fn lock_in(
    txn: Txn<'_>,
    key: LockKey,
    deadline: Deadline,
    refuse: impl FnOnce(SessionId) -> Result<(), Error>,
) -> Result<SessionId, Error> {
    lock::acquire_in(txn.plain(), key, Mode::Exclusive, deadline, refuse).await
}

/// The columns that name the session a statement runs in, read by [`session_of_row`]. Fixed
/// text; the functions exist in every server the crate accepts (`current_setting(name, true)`
/// is NULL where a setting does not exist).
pub(crate) const SESSION_COLUMNS: &str = "pg_backend_pid()::int8 AS session_pid, \
     current_database()::text AS session_database, \
     current_setting('port', true) AS session_port, \
     current_setting('cluster_name', true) AS session_cluster";

/// The session named by [`SESSION_COLUMNS`] in `row`: the backend's process id in the
/// database, told apart by port and cluster name from other servers' databases.
pub(crate) fn session_of_row(row: &QueryResult) -> Result<SessionId, sea_orm::DbErr> {
    let database: String = row.try_get("", "session_database")?;
    let port: Option<String> = row.try_get("", "session_port")?;
    let cluster: Option<String> = row.try_get("", "session_cluster")?;
    let pid: i64 = row.try_get("", "session_pid")?;
    let db = DbId::of(&[
        "postgres",
        port.as_deref().unwrap_or(""),
        cluster.as_deref().unwrap_or(""),
        &database,
    ]);
    Ok(SessionId::new(db, pid as u64))
}
