//! The SeaORM entities of the sample schema (`migration/`), and their `IdempotentCreate` impl.
//!
//! `prelude.rs` and `pull_requests.rs` are generated; do not edit them by hand. Regenerate
//! them from a migrated database with sea-orm-cli:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/app cargo run -p migration -- fresh
//! sea-orm-cli generate entity -u postgres://postgres@127.0.0.1/app \
//!     --entity-format compact --ignore-tables seaql_migrations -o entity/src
//! ```
//!
//! then restore this file (`lib.rs`), which the generator overwrites as `mod.rs` output only
//! with `--lib`: it is kept by hand.

#[allow(missing_docs)]
pub mod prelude;
#[allow(missing_docs)]
pub mod pull_requests;

mod idempotent;

pub use idempotent::NewPullRequest;

/// The `pull_requests` entity: `PullRequest::create_once(&db, pr_id, new_pr)`.
pub type PullRequest = pull_requests::Entity;
