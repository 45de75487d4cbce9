//! The migration CLI: `cargo run -p migration -- up` (or `down`, `fresh`, `refresh`, `reset`,
//! `status`) against `DATABASE_URL`, e.g. `postgres://postgres@127.0.0.1/app` or
//! `sqlite://demo.db?mode=rwc`.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
