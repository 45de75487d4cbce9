//! The probe: a check of what an advisory lock does on this server, for engines the crate
//! has never heard of (known fakes are refused by [`engine`](crate::backend::postgres::engine) at no cost).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

#[cfg(feature = "postgres")]
use sea_orm::DatabaseConnectionType;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, Statement,
    TransactionTrait,
};

use crate::{Error, LockKey, ServerRefusal, Wait, acquire_advisory_lock};

/// Checks that the server's advisory locks really lock: takes a key on one connection of
/// `db`'s pool and tries it from another, which must be refused, then tries it again once the
/// first has rolled back, which must succeed.
///
/// Engines known to fake their locks are refused by every lock the crate takes, at no cost
/// (see [`Error::UnsupportedServer`]); this probe is for the rest: an engine or proxy this
/// crate has never heard of. It is opt-in: call it once per pool at start-up, e.g. right
/// after connecting. It is not run on its own because it needs two connections at once (a
/// pool of one cannot run it) and costs about ten round trips; and it is not remembered per
/// pool, because nothing identifies a pool for longer than the pool lives.
///
/// The key is random in the pair key space, so probes of several processes starting at once
/// do not wait for each other, and the locks are transaction-scoped: nothing outlives the call.
/// On SQLite there are no advisory locks to probe: it returns `Ok(())`.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let db = sea_orm::Database::connect("postgres://app@db/app").await?;
/// sea_orm_idempotent::probe_advisory_locks(&db).await?; // once, before serving
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::UnsupportedServer`] with [`ServerRefusal::ProbeFailed`] when the second
/// connection could take the held key, or could not take it after its release; with another
/// reason when the server is refused without probing (a known fake, a server too old);
/// [`Error::Database`] with [`DbErr::BackendNotSupported`](sea_orm::DbErr::BackendNotSupported) when `db` is a PostgreSQL pool of
/// fewer than two connections; [`Error::UnsupportedBackend`] on MySQL; [`Error::Database`]
/// when a connection or statement fails.
///
/// # Cancel Safety
///
/// Dropping the future drops its two transactions, which roll back: the probe's key is
/// released once the pool has sent the queued ROLLBACKs, and both connections return to the
/// pool. Nothing is written.
pub async fn probe_advisory_locks(db: &DatabaseConnection) -> Result<(), Error> {
    match db.get_database_backend() {
        DbBackend::Postgres => {}
        DbBackend::Sqlite => return Ok(()),
        backend => {
            return Err(Error::UnsupportedBackend {
                backend,
                what: "probe advisory locks: advisory locks need PostgreSQL",
            });
        }
    }
    #[cfg(feature = "postgres")]
    if let DatabaseConnectionType::SqlxPostgresPoolConnection(_) = &db.inner
        && db
            .get_postgres_connection_pool()
            .options()
            .get_max_connections()
            < 2
    {
        return Err(Error::Database(sea_orm::DbErr::BackendNotSupported {
            db: "PostgreSQL",
            ctx: "probe_advisory_locks on a pool of one connection (it needs two at once)",
        }));
    }
    let key = probe_key();
    let read_committed = Some(IsolationLevel::ReadCommitted);
    let holder = db.begin_with_config(read_committed, None).await?;
    // A random key is free: busy means the try answers "no" whatever the key.
    match acquire_advisory_lock(&holder, key, Wait::No).await {
        Ok(()) => {}
        Err(Error::LockBusy { .. }) => return Err(probe_failed(&holder).await),
        Err(err) => return Err(err),
    }
    let other = db.begin_with_config(read_committed, None).await?;
    match acquire_advisory_lock(&other, key, Wait::No).await {
        Err(Error::LockBusy { .. }) => {}
        Ok(()) => return Err(probe_failed(&other).await),
        Err(err) => return Err(err),
    }
    holder.rollback().await?;
    match acquire_advisory_lock(&other, key, Wait::No).await {
        Ok(()) => {}
        Err(Error::LockBusy { .. }) => return Err(probe_failed(&other).await),
        Err(err) => return Err(err),
    }
    other.rollback().await?;
    Ok(())
}

/// The probe's verdict, naming the server (one more statement, on the failure path only, on
/// a connection the probe holds: the pool may have no other).
async fn probe_failed(txn: &DatabaseTransaction) -> Error {
    let server = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT version() AS server_version",
        ))
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get("", "server_version").ok());
    Error::UnsupportedServer {
        server,
        reason: ServerRefusal::ProbeFailed,
        source: None,
    }
}

/// A key no other caller uses: a namespace of its own and a random second half.
fn probe_key() -> LockKey {
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    LockKey::for_entity("sea-orm-idempotent probe", &random)
}
