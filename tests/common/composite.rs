//! Composite natural keys shared by `tests/composite_keys.rs` (PostgreSQL and MariaDB) and
//! `tests/composite_keys_sqlite.rs`: a two-column key (`(org_id, login)`: integer, string) and
//! a three-column key (`(tenant, repo_id, number)`: string, integer, integer), their tables,
//! and the race of many callers per key.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use sea_orm_idempotent::{IdempotentCreate, NaturalKey};
use tokio::sync::Barrier;

use super::Tally;

/// Org members, keyed by `(org_id, login)`; the data is the role.
#[allow(unreachable_pub)]
pub(crate) mod members {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub org_id: i64,
        pub login: String,
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (i64, String);
        type Data = ActiveModel;

        fn key_column() -> Column {
            Column::OrgId
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::OrgId, Column::Login]
        }

        // The crate sets the key columns from the key.
        fn new_active_model(_: &(i64, String), row: ActiveModel) -> ActiveModel {
            row
        }
    }
}

/// Pull requests of a multi-tenant service, keyed by `(tenant, repo_id, number)`.
#[allow(unreachable_pub)]
pub(crate) mod tenant_prs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_prs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant: String,
        pub repo_id: i64,
        pub number: i32,
        pub title: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (String, i64, i32);
        type Data = String;

        fn key_column() -> Column {
            Column::Tenant
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::Tenant, Column::RepoId, Column::Number]
        }

        fn new_active_model(_: &(String, i64, i32), title: String) -> ActiveModel {
            ActiveModel {
                title: sea_orm::ActiveValue::Set(title),
                ..Default::default()
            }
        }
    }
}

/// The tables of [`members`] and [`tenant_prs`] on PostgreSQL.
pub(crate) const POSTGRES_TABLES: &str = "
    CREATE TABLE members (id bigserial PRIMARY KEY, org_id bigint NOT NULL, login text NOT NULL,
        role text NOT NULL, UNIQUE (org_id, login));
    CREATE TABLE tenant_prs (id bigserial PRIMARY KEY, tenant text NOT NULL,
        repo_id bigint NOT NULL, number integer NOT NULL, title text NOT NULL,
        UNIQUE (tenant, repo_id, number));";

/// The same tables on SQLite.
pub(crate) const SQLITE_TABLES: &str = "
    CREATE TABLE members (id INTEGER PRIMARY KEY AUTOINCREMENT, org_id INTEGER NOT NULL,
        login TEXT NOT NULL, role TEXT NOT NULL, UNIQUE (org_id, login));
    CREATE TABLE tenant_prs (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
        repo_id INTEGER NOT NULL, number INTEGER NOT NULL, title TEXT NOT NULL,
        UNIQUE (tenant, repo_id, number));";

/// The same tables on MySQL/MariaDB (string key parts as `varchar`, which a unique index
/// takes whole).
pub(crate) const MYSQL_TABLES: &str = "
    CREATE TABLE members (id BIGINT AUTO_INCREMENT PRIMARY KEY, org_id BIGINT NOT NULL,
        login VARCHAR(191) NOT NULL, role TEXT NOT NULL, UNIQUE (org_id, login)) ENGINE=InnoDB;
    CREATE TABLE tenant_prs (id BIGINT AUTO_INCREMENT PRIMARY KEY, tenant VARCHAR(191) NOT NULL,
        repo_id BIGINT NOT NULL, number INT NOT NULL, title TEXT NOT NULL,
        UNIQUE (tenant, repo_id, number)) ENGINE=InnoDB;";

/// Keys per table.
pub(crate) const KEYS: usize = 60;
/// Callers asking for each key at once, in one process.
pub(crate) const CALLERS_PER_KEY: usize = 8;
const TASKS: usize = 32;

pub(crate) fn member_keys() -> Vec<(i64, String)> {
    (0..KEYS)
        .map(|n| ((n % 4) as i64 + 1, format!("mona-{n}")))
        .collect()
}

pub(crate) fn member_row(_: &(i64, String)) -> members::ActiveModel {
    members::ActiveModel {
        role: sea_orm::ActiveValue::Set("member".to_owned()),
        ..Default::default()
    }
}

pub(crate) fn tenant_pr_keys() -> Vec<(String, i64, i32)> {
    (0..KEYS)
        .map(|n| {
            (
                format!("tenant-{}", n % 3),
                1_296_269 + (n % 2) as i64,
                n as i32,
            )
        })
        .collect()
}

pub(crate) fn tenant_pr_title(key: &(String, i64, i32)) -> String {
    format!("PR {} of {} in {}", key.2, key.1, key.0)
}

/// What the calls of a race returned, and how often a `make_data` ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Race {
    pub(crate) tally: Tally,
    /// `Created` outcomes of the callers that passed a `make_data`.
    pub(crate) created_with_make_data: usize,
    /// How often a `make_data` ran: once per row it made when every caller of a key waits
    /// for the one before (the lock), more when two callers of a key looked at once.
    pub(crate) make_data_runs: usize,
}

/// Marks the line a worker process prints its [`Race`] on.
const WORKER_RACE: &str = "COMPOSITE_RACE";

impl Race {
    pub(crate) fn add(&mut self, other: Race) {
        self.tally.add(other.tally);
        self.created_with_make_data += other.created_with_make_data;
        self.make_data_runs += other.make_data_runs;
    }

    /// Prints the lines a parent reads back with [`Race::of_worker`].
    pub(crate) fn print_for_parent(&self) {
        self.tally.print_for_parent();
        println!(
            "{WORKER_RACE} {} {}",
            self.created_with_make_data, self.make_data_runs
        );
    }

    /// What a worker process printed ([`Race::print_for_parent`]).
    pub(crate) fn of_worker(output: &std::process::Output) -> Race {
        let tally = super::worker_tally(output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find(WORKER_RACE).map(|at| &l[at + WORKER_RACE.len()..]))
            .unwrap_or_else(|| panic!("no race line from worker:\n{stdout}"));
        let numbers: Vec<usize> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        Race {
            tally,
            created_with_make_data: numbers[0],
            make_data_runs: numbers[1],
        }
    }

    /// Each of `keys` keys created once (`Created` once), every other call of `processes`
    /// processes absorbed, no error, and `make_data` run only for the rows it made.
    pub(crate) fn assert_exactly_once(&self, keys: usize, processes: usize) {
        assert_eq!(
            self.tally,
            Tally {
                created: keys,
                existing: keys * (CALLERS_PER_KEY * processes - 1),
                unique_violations: 0,
                other_errors: 0,
            },
            "{self:?}"
        );
        assert_eq!(
            self.make_data_runs, self.created_with_make_data,
            "make_data ran for a key another caller created: {self:?}"
        );
    }
}

/// `TASKS` tasks released together; each key is asked for by `CALLERS_PER_KEY` of them at
/// once, spread evenly over `pools` (as `Workload::race` spreads them). Even tasks pass the
/// data (`create_once`), odd ones a `make_data` (`create_once_with`).
pub(crate) async fn race<E, S>(
    pools: &[DatabaseConnection],
    keys: Vec<E::Key>,
    data: fn(&E::Key) -> E::Data,
) -> Race
where
    E: IdempotentCreate,
    E::Key: NaturalKey<S> + 'static,
    E::Data: Send + 'static,
    S: 'static,
{
    let groups = TASKS / CALLERS_PER_KEY;
    let keys = Arc::new(keys);
    let barrier = Arc::new(Barrier::new(TASKS));
    let handles: Vec<_> = (0..TASKS)
        .map(|task| {
            let db = pools[(task / groups) % pools.len()].clone();
            let (keys, barrier) = (keys.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut race = Race::default();
                let runs = AtomicUsize::new(0);
                barrier.wait().await;
                for key in keys.iter().skip(task % groups).step_by(groups) {
                    let result = if task % 2 == 0 {
                        E::create_once(&db, key.clone(), data(key)).await
                    } else {
                        let result = E::create_once_with(&db, key.clone(), || async {
                            runs.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, Infallible>(data(key))
                        })
                        .await;
                        if matches!(result, Ok(ref outcome) if outcome.is_created()) {
                            race.created_with_make_data += 1;
                        }
                        result
                    };
                    race.tally.count_outcome(result, || format!("{key:?}"));
                }
                race.make_data_runs = runs.into_inner();
                race
            })
        })
        .collect();
    let mut total = Race::default();
    for handle in handles {
        total.add(handle.await.expect("task panicked"));
    }
    total
}

/// Both composite tables raced at once (`2 * KEYS` keys).
pub(crate) async fn race_both(pools: &[DatabaseConnection]) -> Race {
    let (mut a, b) = tokio::join!(
        race::<members::Entity, _>(pools, member_keys(), member_row),
        race::<tenant_prs::Entity, _>(pools, tenant_pr_keys(), tenant_pr_title),
    );
    a.add(b);
    a
}

/// One row per key in both tables.
pub(crate) async fn assert_one_row_per_key(db: &DatabaseConnection) {
    assert_eq!(
        members::Entity::find().count(db).await.unwrap(),
        KEYS as u64
    );
    assert_eq!(
        tenant_prs::Entity::find().count(db).await.unwrap(),
        KEYS as u64
    );
}
