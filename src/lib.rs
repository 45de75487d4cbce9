//! Create a SeaORM row exactly once per natural key, however many times the event arrives.
//!
//! Services receive events at least once: GitHub may deliver the same pull-request webhook
//! twice, to two workers, at the same moment. Both look for the row, both miss, both insert,
//! and one fails on the unique constraint. This crate makes "find or create" one call that is
//! correct under any concurrency, by serialising exactly the callers that share a key with
//! PostgreSQL's transaction-scoped advisory lock (`pg_advisory_xact_lock`):
//!
//! ```no_run
//! # mod pull_requests {
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//! #     #[sea_orm(table_name = "pull_requests")]
//! #     pub struct Model {
//! #         #[sea_orm(primary_key)]
//! #         pub id: i64,
//! #         #[sea_orm(unique)]
//! #         pub pr_id: i64,
//! #         pub title: String,
//! #     }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! #     impl ActiveModelBehavior for ActiveModel {}
//! // In the entity's module, next to SeaORM's generated `Model`: the one thing to write.
//! impl sea_orm_idempotent::IdempotentCreate for Entity {
//!     type Key = i64; // the natural key: GitHub's pull-request id
//!     type Data = ActiveModel; // what a new row is made from
//!     fn key_column() -> Column {
//!         Column::PrId
//!     }
//!     fn new_active_model(_pr_id: &i64, row: ActiveModel) -> ActiveModel {
//!         row // the crate sets the key column from the key
//!     }
//! }
//! # }
//! # use pull_requests::Entity as PullRequest;
//! use sea_orm::{ActiveValue::Set, Database};
//! use sea_orm_idempotent::{IdempotentCreate, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::connect("postgres://postgres@localhost/app").await?;
//! let (pr_id, title) = (1001, "Fix the flaky test".to_owned());
//! let new_pr = pull_requests::ActiveModel { title: Set(title), ..Default::default() };
//! match PullRequest::create_once(&db, pr_id, new_pr).await? {
//!     Outcome::Created(pr) => println!("stored pull request {}", pr.pr_id),
//!     Outcome::Existing(pr) => println!("duplicate delivery of {} absorbed", pr.pr_id),
//! }
//! # Ok(()) }
//! ```
//!
//! An entity whose key is its own columns and whose data is the row itself needs no
//! hand-written impl: `#[derive(DeriveEntityModel, IdempotentCreate)]` with
//! `#[idempotent(key = "pr_id")]` on its `Model` (the `derive` feature, on by default).
//!
//! The same call with options is a builder, as SeaORM's `Entity::insert(..).exec(&db)`:
//! `PullRequest::once(pr_id, new_pr)` (or [`once_with`](IdempotentCreate::once_with) for data
//! made only when needed), then `.wait(Wait::Timeout(d))` to bound the lock wait and
//! `.update(|existing, new| ..)` to handle the events that follow a creation: under the same
//! lock, the function returns a [`Change`] for the existing row (update it, keep it, or refuse
//! the call), and the [`UpsertOutcome`] says created, updated or unchanged. See [`Once`].
//!
//! For backfills, the batch form takes many keys at once and returns one outcome per item, in
//! input order: `PullRequest::create_many_once(&db, items)`, or
//! `PullRequest::many_with(keys, |missing| ..)` whose `make_data` receives, in one call per
//! chunk, every key found missing. Each chunk of [`DEFAULT_CHUNK_SIZE`] items is one
//! transaction that locks its keys in one statement, in one sorted order (so batches and
//! single calls never deadlock one another), looks once and inserts once; with
//! `.for_each_chunk(&db, |first, outcomes| ..)` the items are pulled and the outcomes handed
//! over one chunk at a time, so memory is bounded by the chunk size. See [`Many`].
//!
//! # The lock's scope
//!
//! The lock is **transaction-scoped**: PostgreSQL releases it at COMMIT or ROLLBACK, never
//! earlier, and there is no unlock call to forget. A dropped future, a panic or a lost
//! connection rolls the transaction back, which releases it. Because it never outlives the
//! transaction it also works through PgBouncer in transaction-pooling mode, where a
//! session-scoped `pg_advisory_lock` would stay behind on a server connection that another
//! client is handed next. Advisory locks block nothing but other takers of the same key:
//! readers, writers and callers with other keys never wait. What a call does, step by step,
//! is in [`IdempotentCreate`'s docs](IdempotentCreate#what-a-call-does).
//!
//! # Why READ COMMITTED
//!
//! After the lock is granted the row must be looked for by a *new* statement: under READ
//! COMMITTED each statement sees everything committed before it started, including the row of
//! the caller that held the lock before us. Under REPEATABLE READ or SERIALIZABLE the snapshot
//! is taken at the transaction's first statement, before the lock wait, and the look would miss
//! that row. So the crate's own transactions are READ COMMITTED whatever the server's default:
//! on a pool, with data in hand and no update function, `BEGIN ISOLATION LEVEL READ COMMITTED`
//! travels with the try for the lock in one message; otherwise a plain `BEGIN` is READ
//! COMMITTED on a server left at PostgreSQL's default, which the statement that tries the lock
//! checks (the same round trip), and where the default is stricter the crate rolls back and
//! begins again with the level set explicitly (four round trips more: the `ROLLBACK`, a new
//! `BEGIN`, `SET TRANSACTION` and the try again). Inside a caller's stricter transaction it
//! returns [`Error::UnsafeIsolation`] before writing anything, instead of a unique violation.
//!
//! # Keys
//!
//! Entity keys lock `LockKey::Pair(crc32(namespace), crc32(key.to_string()))`
//! ([`LockKey::for_entity`]; the namespace is the table name, `schema.table` when the entity
//! has a schema: [`IdempotentCreate::lock_namespace`]). A natural key of several columns is a
//! tuple (`type Key = (i64, String)`, see [`NaturalKey`]) and locks
//! [`LockKey::for_composite`], an unambiguous encoding of all its parts.
//! [`LockKey::crc32`] gives the key of the common Python recipe
//! `pg_advisory_xact_lock(zlib.crc32(name))`, so Rust and Python services exclude each other on
//! the same name. A hash collision only makes two keys wait for each other; it never loses or
//! duplicates a row.
//!
//! # Cancel safety
//!
//! Every async function documents its cancel safety. In short: dropping a call writes nothing
//! and releases its lock (a connection the crate took from the pool itself is closed, never
//! handed back with a transaction open); a connection whose statement is still waiting on the
//! server stays busy until that wait ends, so bound waits with [`Wait::Timeout`] where callers
//! may go away.
//! On a caller's transaction the call's work belongs to that transaction (see
//! [`IdempotentCreate`'s section on it](IdempotentCreate#on-a-callers-transaction)). On
//! MySQL/MariaDB, whose driver cannot abandon a statement safely, each statement of the crate's
//! own transaction runs to its end even when the call is dropped (the repository's `docs/backends.md`, "MySQL and MariaDB").
//!
//! # Errors and retries
//!
//! Lock timeouts, busy locks and deadlocks are their own [`Error`] variants, classified by
//! SQLSTATE (on SQLite its result codes, on MySQL its error numbers); [`Error::is_retryable`]
//! says which failures a retry can get past (those, plus lost connections and a restarting
//! server), and [`Retry`] repeats a call while it can. Retrying `create_once` is safe: a
//! failed call wrote nothing.
//!
//! # Backends and features
//!
//! PostgreSQL uses advisory locks. SQLite has none: an IMMEDIATE transaction takes its write
//! lock before the look, serialising creators across connections and processes (one pool's
//! callers queue for it in the process, in arrival order). MySQL and MariaDB lock the key's
//! slot, one of the fixed rows of the crate's lock table (add it with [`mysql_lock_slots`];
//! tested on MariaDB 10.11, MySQL 8 is refused). The differences, in one place, are in the README's "Backends" table and, in full, in the
//! repository's `docs/backends.md`.
//! A server that speaks PostgreSQL's protocol but whose advisory locks are known not to lock
//! (CockroachDB before v26.2, old YugabyteDB) is refused with [`Error::UnsupportedServer`]
//! (see [`ServerRefusal`] for which engines are used, refused and untested);
//! [`probe_advisory_locks`] checks any other at start-up. [`LockHolders`] shows who holds and
//! who waits for a key.
//!
//! Each backend is a cargo feature, `postgres`, `sqlite` and `mysql`, turning on SeaORM's sqlx
//! driver for it. All three are on by default, so the examples (on embedded SQLite) and the
//! tests run with no flags; a service on one backend turns the others off, and does not build
//! their drivers (SQLite's is a C library). A connection whose backend's feature is off gets
//! [`Error::UnsupportedBackend`]:
//!
//! ```toml
//! sea-orm-idempotent = { version = "0.1", default-features = false, features = ["postgres"] }
//! ```
//!
//! (Built with no backend feature, the crate compiles, for crates that only implement
//! [`IdempotentCreate`] for their entities, and `create_once` refuses every backend.)
//!
//! # How the crate is built
//!
//! A core, and a folder per backend behind one seam. One call reads, top to bottom: the trait
//! (`create.rs`) and the builder (`once.rs`); `call/`, the call's whole path (the key checked,
//! the caller's turn in the waiting room, `turns/`, and the look; then the lock and the
//! statements under it, ending in COMMIT); and at each step where backends differ, the seam,
//! `backend/mod.rs`, which hands the step to `backend/postgres/`, `backend/mysql/` or
//! `backend/sqlite/`: each holds its SQL, its lock, its begin and its error codes. The rest of
//! the core is the vocabulary: keys (`key.rs`, `natural_key.rs`), outcomes, errors
//! (`error.rs`, `classify.rs`), waits and retries. CONTRIBUTING.md in the repository has the
//! table of every file.

mod advisory_lock;
mod backend;
mod batch;
mod call;
mod call_chain;
mod classify;
mod create;
mod error;
mod key;
mod key_schema;
mod look;
mod metrics;
mod natural_key;
mod once;
mod outcome;
mod refusal;
mod retry;
mod savepoint;
mod source;
mod statements;
mod to_the_end;
mod transaction;
mod turns;
mod unique_index;
mod wait;

pub use advisory_lock::{acquire_advisory_lock, acquire_shared_advisory_lock};
pub use backend::mysql::lock_table::{MYSQL_LOCK_TABLE, mysql_lock_table};
pub use backend::mysql::slots::{
    MYSQL_LOCK_SLOTS, MYSQL_LOCK_SLOTS_TABLE, mysql_lock_slot, mysql_lock_slots,
    mysql_lock_slots_fill,
};
pub use backend::postgres::holders::{LockHolder, LockHolders, LockMode};
pub use backend::postgres::probe::probe_advisory_locks;
pub use batch::{DEFAULT_CHUNK_SIZE, GivenData, GivenItems, MadeItems, Many, UpdateEach};
pub use create::IdempotentCreate;
pub use error::{Error, LockedRow};
pub use key::LockKey;
pub use key_schema::{KeyTypes, Verified};
pub use look::{LookFirst, MISSES_BEFORE_SKIPPING};
pub use natural_key::{MultiColumn, NaturalKey, SingleColumn};
pub use once::{Change, KeepExisting, Once, UpdateExisting, UpdateRow};
pub use outcome::{Outcome, UpsertOutcome};
pub use refusal::ServerRefusal;
pub use retry::Retry;
#[cfg(feature = "derive")]
pub use sea_orm_idempotent_macros::IdempotentCreate;
pub use source::TransactionSource;
pub use wait::Wait;
