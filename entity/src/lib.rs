//! The SeaORM entities of the sample schema (`migration/`), and their `IdempotentCreate` impl.
//!
//! `prelude.rs` and `pull_requests.rs` are generated; do not edit them by hand. Regenerate
//! them from a migrated database with sea-orm-cli:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/app cargo run -p migration -- fresh
//! sea-orm-cli generate entity -u postgres://postgres@127.0.0.1/app \
//!     --entity-format compact -o /tmp/generated
//! cp /tmp/generated/prelude.rs /tmp/generated/pull_requests.rs entity/src/
//! ```
//!
//! (the generator's `mod.rs` is not used: this `lib.rs` declares the modules and is kept by
//! hand, with the `IdempotentCreate` impl in `idempotent.rs`).

#[allow(missing_docs)]
pub mod prelude;
#[allow(missing_docs)]
pub mod pull_requests;

mod idempotent;

pub use idempotent::NewPullRequest;

/// The `pull_requests` entity: `PullRequest::create_once(&db, pr_id, new_pr)`.
pub type PullRequest = pull_requests::Entity;
