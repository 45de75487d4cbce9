//! The strategies, and the one call every measurement makes: [`deliver`].
//!
//! 1. `create_once`: the crate (where the table's unique index covers the key, as
//!    `pull_requests`'s does, a new key is one statement), and the crate on its locked path
//!    (`locked_path.rs`: the same table, an entity that keeps ids without gaps; what a table
//!    without a unique index gets).
//! 2. The hand-written transaction (PostgreSQL: `BEGIN`; `pg_advisory_xact_lock`; `SELECT`;
//!    `INSERT` if missing; `COMMIT`. SQLite: the same under `BEGIN IMMEDIATE`, no lock
//!    statement).
//! 3. The same with a plain `SELECT` first, returning an existing row without a transaction.
//! 4. `INSERT ... ON CONFLICT (pr_id) DO NOTHING RETURNING *`, then `SELECT` if nothing came back.
//! 5. The floor: one plain `INSERT ... RETURNING *` for new keys, one plain `SELECT` for late
//!    redeliveries. It does not de-duplicate, so it runs only in those two scenarios.
//! 6. PostgreSQL only: the crate's own statements on sqlx (`by_hand.rs`), without SeaORM, the
//!    crate's code or its waiting room: what those cost.
//!
//! On MariaDB 2 to 4 and 6 do not run; MySQL's own forms do (`baseline_mysql.rs`):
//! `INSERT IGNORE`, then `SELECT`; `INSERT ... ON DUPLICATE KEY UPDATE id = id`, then `SELECT`;
//! `LOCK TABLES pull_requests WRITE` around the look and the insert; `GET_LOCK` around them;
//! and the naive find-then-insert (no lock: duplicates at once fail on the unique key, counted
//! as errors). The floor runs there too (MySQL has no `RETURNING`: a plain `INSERT`, then a
//! `SELECT` of the row).
//!
//! All but the crate are written by hand with sqlx as a user would write them
//! (`baseline_pg.rs`, `baseline_sqlite.rs`, `baseline_mysql.rs`), and each returns the full
//! row, as the crate does.

use entity::PullRequest;
use sea_orm_idempotent::{IdempotentCreate, Outcome};
use test_support::new_pr;

use crate::place::{Db, Engine, Place, Raw};
use crate::scenario::Scenario;
use crate::{baseline_mysql, baseline_pg, baseline_sqlite, by_hand, locked_path};

/// Any error a delivery can return.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strategy {
    Crate,
    CrateLocked,
    Transaction,
    LookThenTransaction,
    OnConflict,
    InsertIgnore,
    OnDuplicateKey,
    LockTables,
    GetLock,
    Naive,
    Floor,
    SameStatements,
}

impl Strategy {
    /// In the order of the tables and the chart.
    pub(crate) const ALL: [Strategy; 12] = [
        Strategy::Crate,
        Strategy::CrateLocked,
        Strategy::Transaction,
        Strategy::LookThenTransaction,
        Strategy::OnConflict,
        Strategy::InsertIgnore,
        Strategy::OnDuplicateKey,
        Strategy::LockTables,
        Strategy::GetLock,
        Strategy::Naive,
        Strategy::Floor,
        Strategy::SameStatements,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::Crate => "create_once (crate)",
            Strategy::CrateLocked => "create_once, locked path",
            Strategy::Transaction => "txn by hand",
            Strategy::LookThenTransaction => "SELECT, then txn by hand",
            Strategy::OnConflict => "ON CONFLICT, then SELECT",
            Strategy::InsertIgnore => "INSERT IGNORE, then SELECT",
            Strategy::OnDuplicateKey => "ON DUPLICATE KEY UPDATE, then SELECT",
            Strategy::LockTables => "LOCK TABLES by hand",
            Strategy::GetLock => "GET_LOCK by hand",
            Strategy::Naive => "naive find-then-insert",
            Strategy::Floor => "plain INSERT / SELECT",
            Strategy::SameStatements => "crate's statements on sqlx",
        }
    }

    /// Whether this strategy runs in `scenario` at `place`.
    pub(crate) fn runs(self, place: Place, scenario: Scenario) -> bool {
        let engine = place.engine();
        match self {
            Strategy::Crate | Strategy::CrateLocked => true,
            Strategy::Floor => matches!(scenario, Scenario::NewKeys | Scenario::Late),
            Strategy::SameStatements => engine == Engine::Postgres,
            Strategy::Transaction | Strategy::LookThenTransaction | Strategy::OnConflict => {
                engine != Engine::MySql
            }
            Strategy::InsertIgnore
            | Strategy::OnDuplicateKey
            | Strategy::LockTables
            | Strategy::GetLock
            | Strategy::Naive => engine == Engine::MySql,
        }
    }
}

/// What a delivery got back.
pub(crate) enum Answer {
    Created,
    Existing,
}

impl<M> From<Outcome<M>> for Answer {
    fn from(outcome: Outcome<M>) -> Answer {
        match outcome {
            Outcome::Created(_) => Answer::Created,
            Outcome::Existing(_) => Answer::Existing,
        }
    }
}

/// One delivery of pull request `key`, stored with `strategy`. `rows_exist`: every row is
/// there already (late redeliveries), so the floor is a plain `SELECT`.
pub(crate) async fn deliver(
    db: &Db,
    strategy: Strategy,
    rows_exist: bool,
    key: i64,
) -> Result<Answer, BoxError> {
    let data = new_pr(key);
    Ok(match (strategy, &db.raw) {
        (Strategy::Crate, _) => PullRequest::create_once(&db.orm, key, data).await?.into(),
        (Strategy::CrateLocked, _) => locked_path::deliver(&db.orm, key).await?,
        (Strategy::SameStatements, Raw::Pg(pool)) => {
            by_hand::create_once(pool, key, data).await?.into()
        }
        (Strategy::Transaction, Raw::Pg(pool)) => {
            baseline_pg::transaction(pool, key, data).await?.into()
        }
        (Strategy::Transaction, Raw::Sqlite(pool)) => {
            baseline_sqlite::transaction(pool, key, data).await?.into()
        }
        (Strategy::LookThenTransaction, Raw::Pg(pool)) => {
            baseline_pg::look_then_transaction(pool, key, data)
                .await?
                .into()
        }
        (Strategy::LookThenTransaction, Raw::Sqlite(pool)) => {
            baseline_sqlite::look_then_transaction(pool, key, data)
                .await?
                .into()
        }
        (Strategy::OnConflict, Raw::Pg(pool)) => {
            baseline_pg::on_conflict(pool, key, data).await?.into()
        }
        (Strategy::OnConflict, Raw::Sqlite(pool)) => {
            baseline_sqlite::on_conflict(pool, key, data).await?.into()
        }
        (Strategy::Floor, Raw::Pg(pool)) if rows_exist => {
            existing(baseline_pg::select(pool, key).await?)?
        }
        (Strategy::Floor, Raw::Sqlite(pool)) if rows_exist => {
            existing(baseline_sqlite::select(pool, key).await?)?
        }
        (Strategy::Floor, Raw::Pg(pool)) => {
            baseline_pg::insert(pool, key, data).await?;
            Answer::Created
        }
        (Strategy::Floor, Raw::Sqlite(pool)) => {
            baseline_sqlite::insert(pool, key, data).await?;
            Answer::Created
        }
        (Strategy::InsertIgnore, Raw::MySql(pool)) => {
            baseline_mysql::insert_ignore(pool, key, data).await?.into()
        }
        (Strategy::OnDuplicateKey, Raw::MySql(pool)) => {
            baseline_mysql::on_duplicate_key(pool, key, data)
                .await?
                .into()
        }
        (Strategy::LockTables, Raw::MySql(pool)) => {
            baseline_mysql::lock_tables(pool, key, data).await?.into()
        }
        (Strategy::GetLock, Raw::MySql(pool)) => {
            baseline_mysql::get_lock(pool, key, data).await?.into()
        }
        (Strategy::Naive, Raw::MySql(pool)) => baseline_mysql::naive(pool, key, data).await?.into(),
        (Strategy::Floor, Raw::MySql(pool)) if rows_exist => {
            existing(baseline_mysql::select(pool, key).await?)?
        }
        (Strategy::Floor, Raw::MySql(pool)) => {
            baseline_mysql::insert(pool, key, data).await?;
            Answer::Created
        }
        (strategy, _) => {
            return Err(format!("{} does not run at {}", strategy.name(), db.place.name()).into());
        }
    })
}

/// The floor's answer to a late redelivery: the row must be there.
fn existing<M>(found: Option<M>) -> Result<Answer, BoxError> {
    match found {
        Some(_) => Ok(Answer::Existing),
        None => Err("the row is missing".into()),
    }
}
