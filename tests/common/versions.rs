//! The update form (`once(..).update(..)`) shared by `tests/update_form.rs` (PostgreSQL and
//! MariaDB) and `tests/update_form_sqlite.rs`: documents keyed by `(owner_id, name)` (integer,
//! string), each edit carrying a version, applied only if it is newer than the row; and payments keyed
//! by an idempotency key, where the same key with different data is refused.
//!
//! The race: every version of every document is delivered at once, in shuffled order, by many
//! tasks over several pools (and by several processes). The update function keeps the newest
//! version, so the row must end at the last version, however the deliveries interleave. Without
//! the key's lock the look, `make_data` and the write of two callers interleave, and an older
//! version read before a newer one was written overwrites it (a lost update): `make_data`
//! sleeps a little to hold that window open.
//! (The sleep widens a race window; it coordinates nothing: the callers meet at the database's
//! lock, and the assertions hold whatever the timing.)
//!
//! (Over 450 lines: the update form's two entities, their tables on three backends, the race
//! and every shared check, so that the three backends' test files stay a list of calls.)

use std::sync::Arc;
use std::time::Duration;

use sea_orm::ActiveValue::Set;
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use sea_orm_idempotent::{Change, Error, IdempotentCreate, UpsertOutcome};
use tokio::sync::Barrier;

use super::is_unique_violation;

/// Documents, keyed by `(owner_id, name)`; an edit is a version and a body.
#[allow(unreachable_pub)]
pub(crate) mod documents {
    use sea_orm::ActiveValue::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_id: i64,
        pub name: String,
        pub version: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// One delivery: the document at `version`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Edit {
        pub version: i32,
        pub body: String,
    }

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = (i64, String);
        type Data = Edit;

        fn key_column() -> Column {
            Column::OwnerId
        }

        fn key_columns() -> Vec<Column> {
            vec![Column::OwnerId, Column::Name]
        }

        fn new_active_model(_: &(i64, String), edit: Edit) -> ActiveModel {
            ActiveModel {
                version: Set(edit.version),
                body: Set(edit.body),
                ..Default::default()
            }
        }
    }
}

/// Payments, keyed by the client's idempotency key; the data is the request.
#[allow(unreachable_pub)]
pub(crate) mod payments {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub idempotency_key: String,
        pub amount: i64,
        pub currency: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl sea_orm_idempotent::IdempotentCreate for Entity {
        type Key = String;
        type Data = ActiveModel;

        fn key_column() -> Column {
            Column::IdempotencyKey
        }

        fn new_active_model(_: &String, request: ActiveModel) -> ActiveModel {
            request
        }
    }
}

/// The tables on PostgreSQL.
pub(crate) const POSTGRES_TABLES: &str = "
    CREATE TABLE documents (id bigserial PRIMARY KEY, owner_id bigint NOT NULL,
        name text NOT NULL, version integer NOT NULL, body text NOT NULL,
        UNIQUE (owner_id, name));
    CREATE TABLE payments (id bigserial PRIMARY KEY, idempotency_key text NOT NULL UNIQUE,
        amount bigint NOT NULL, currency text NOT NULL);";

/// The same tables on SQLite.
pub(crate) const SQLITE_TABLES: &str = "
    CREATE TABLE documents (id INTEGER PRIMARY KEY AUTOINCREMENT, owner_id INTEGER NOT NULL,
        name TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
        UNIQUE (owner_id, name));
    CREATE TABLE payments (id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL, currency TEXT NOT NULL);";

/// The same tables on MySQL.
pub(crate) const MYSQL_TABLES: &str = "
    CREATE TABLE documents (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner_id BIGINT NOT NULL,
        name VARCHAR(191) NOT NULL, version INT NOT NULL, body TEXT NOT NULL,
        UNIQUE (owner_id, name)) ENGINE=InnoDB;
    CREATE TABLE payments (id BIGINT AUTO_INCREMENT PRIMARY KEY,
        idempotency_key VARCHAR(191) NOT NULL UNIQUE, amount BIGINT NOT NULL,
        currency TEXT NOT NULL) ENGINE=InnoDB;";

/// Documents raced on.
pub(crate) const DOCUMENTS: usize = 12;
/// Versions of each document, each delivered once per process.
pub(crate) const VERSIONS: i32 = 8;

/// The document keys.
pub(crate) fn document_keys() -> Vec<(i64, String)> {
    (0..DOCUMENTS)
        .map(|n| ((n % 3) as i64 + 1, format!("notes-{n}.md")))
        .collect()
}

/// The edit of `version`.
pub(crate) fn edit(version: i32) -> documents::Edit {
    documents::Edit {
        version,
        body: format!("body at version {version}"),
    }
}

/// The update function of the documents: apply an edit only if it is newer than the row.
pub(crate) fn newer_only(
    existing: &documents::Model,
    edit: documents::Edit,
) -> Change<documents::ActiveModel> {
    if edit.version > existing.version {
        Change::Update(documents::ActiveModel {
            version: Set(edit.version),
            body: Set(edit.body),
            ..Default::default()
        })
    } else {
        Change::Keep
    }
}

/// What the calls of an update race returned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upserts {
    pub(crate) created: usize,
    pub(crate) updated: usize,
    pub(crate) unchanged: usize,
    pub(crate) unique_violations: usize,
    pub(crate) other_errors: usize,
}

/// Marks the line a worker process prints its [`Upserts`] on.
const WORKER_UPSERTS: &str = "WORKER_UPSERTS";

impl Upserts {
    pub(crate) fn add(&mut self, other: Upserts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.unique_violations += other.unique_violations;
        self.other_errors += other.other_errors;
    }

    fn count<M>(&mut self, result: Result<UpsertOutcome<M>, Error>, what: impl FnOnce() -> String) {
        match result {
            Ok(UpsertOutcome::Created(_)) => self.created += 1,
            Ok(UpsertOutcome::Updated(_)) => self.updated += 1,
            Ok(UpsertOutcome::Unchanged(_)) => self.unchanged += 1,
            Err(Error::Database(e)) if is_unique_violation(&e) => self.unique_violations += 1,
            Err(e) => {
                eprintln!("{}: {e:?}", what());
                self.other_errors += 1;
            }
        }
    }

    /// Prints the line a parent reads back with [`Upserts::of_worker`].
    pub(crate) fn print_for_parent(&self) {
        let Upserts {
            created,
            updated,
            unchanged,
            unique_violations,
            other_errors,
        } = self;
        println!(
            "{WORKER_UPSERTS} {created} {updated} {unchanged} {unique_violations} {other_errors}"
        );
    }

    /// What a worker process printed ([`Upserts::print_for_parent`]); panics, with its
    /// output, if it failed or printed none.
    pub(crate) fn of_worker(output: &std::process::Output) -> Upserts {
        let n: Vec<usize> = super::worker_line(output, WORKER_UPSERTS)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        Upserts {
            created: n[0],
            updated: n[1],
            unchanged: n[2],
            unique_violations: n[3],
            other_errors: n[4],
        }
    }

    /// Every document created once (`Created` once in all `processes`), no error, and every
    /// other delivery updated or left unchanged.
    pub(crate) fn assert_each_created_once(&self, processes: usize) {
        let deliveries = DOCUMENTS * VERSIONS as usize * processes;
        assert_eq!(
            (self.created, self.unique_violations, self.other_errors),
            (DOCUMENTS, 0, 0),
            "{self:?}"
        );
        assert_eq!(
            self.created + self.updated + self.unchanged,
            deliveries,
            "{self:?}"
        );
    }
}

/// `tasks` tasks over `pools` released together; each delivers every version of every
/// document, its own shuffle of them (a task's order depends on its number), so every
/// document's versions arrive at once and out of order. `make_data` sleeps a little: the
/// window in which, without the lock, another caller's newer version could be written after
/// this caller's look and before its write.
pub(crate) async fn race(pools: &[DatabaseConnection], tasks: usize) -> Upserts {
    let keys = Arc::new(document_keys());
    let barrier = Arc::new(Barrier::new(tasks));
    let deliveries: Vec<(usize, i32)> = (0..DOCUMENTS)
        .flat_map(|doc| (1..=VERSIONS).map(move |version| (doc, version)))
        .collect();
    let deliveries = Arc::new(deliveries);
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let db = pools[task % pools.len()].clone();
            let (keys, barrier, deliveries) = (keys.clone(), barrier.clone(), deliveries.clone());
            tokio::spawn(async move {
                let mut upserts = Upserts::default();
                barrier.wait().await;
                // Task t delivers deliveries t, t + tasks, ...: every version exactly once
                // over all tasks, each document's versions spread over tasks (so at once),
                // in an order that is not the versions' (the stride walks documents first).
                let mine = deliveries.iter().skip(task).step_by(tasks).rev();
                for &(doc, version) in mine {
                    let key = keys[doc].clone();
                    let result = documents::Entity::once_with(key.clone(), || async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<_, std::convert::Infallible>(edit(version))
                    })
                    .update(newer_only)
                    .exec(&db)
                    .await;
                    upserts.count(result, || format!("{key:?} version {version}"));
                }
                upserts
            })
        })
        .collect();
    let mut total = Upserts::default();
    for handle in handles {
        total.add(handle.await.expect("task panicked"));
    }
    total
}

/// Every document exists once, at its last version, with that version's body: no older
/// delivery overwrote a newer one.
pub(crate) async fn assert_newest_versions(db: &DatabaseConnection) {
    let rows = documents::Entity::find().all(db).await.unwrap();
    assert_eq!(rows.len(), DOCUMENTS, "{rows:?}");
    let stale: Vec<_> = rows
        .iter()
        .filter(|row| row.version != VERSIONS || row.body != edit(VERSIONS).body)
        .collect();
    assert!(
        stale.is_empty(),
        "{} documents lost a newer version to an older one: {stale:?}",
        stale.len()
    );
    assert_eq!(
        documents::Entity::find().count(db).await.unwrap(),
        DOCUMENTS as u64
    );
}

/// One document, one call at a time: created, then updated by a newer edit (the model
/// returned is the row after the update), left unchanged by an older or equal one, and never
/// moved to another key by an update that sets the key columns.
pub(crate) async fn outcomes_in_order(db: &DatabaseConnection) {
    let key = (1_i64, "readme.md".to_owned());
    let call = |version: i32| {
        documents::Entity::once(key.clone(), edit(version))
            .update(newer_only)
            .exec(db)
    };

    let created = call(2).await.unwrap();
    assert!(
        matches!(&created, UpsertOutcome::Created(row) if row.version == 2),
        "{created:?}"
    );
    let updated = call(5).await.unwrap();
    assert!(
        matches!(&updated, UpsertOutcome::Updated(row)
            if row.version == 5 && row.body == edit(5).body && row.id == created.model().id),
        "{updated:?}"
    );
    for stale in [3, 5] {
        let unchanged = call(stale).await.unwrap();
        assert!(
            matches!(&unchanged, UpsertOutcome::Unchanged(row) if row.version == 5),
            "version {stale}: {unchanged:?}"
        );
    }

    // An update that sets the key columns: they stay the key's.
    let moved = documents::Entity::once(key.clone(), edit(6))
        .update(|_, edit| {
            Change::Update(documents::ActiveModel {
                owner_id: Set(99),
                name: Set("elsewhere.md".to_owned()),
                version: Set(edit.version),
                ..Default::default()
            })
        })
        .exec(db)
        .await
        .unwrap();
    assert!(
        matches!(&moved, UpsertOutcome::Updated(row)
            if (row.owner_id, row.name.as_str(), row.version) == (1, "readme.md", 6)),
        "{moved:?}"
    );
    // A change that sets no column writes nothing.
    let nothing = documents::Entity::once(key.clone(), edit(7))
        .update(|_, _| Change::Update(documents::ActiveModel::default()))
        .exec(db)
        .await
        .unwrap();
    assert!(
        matches!(&nothing, UpsertOutcome::Unchanged(row) if row.version == 6),
        "{nothing:?}"
    );
    assert_eq!(documents::Entity::find().count(db).await.unwrap(), 1);
}

/// The caller's error of the strict form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DifferentRequest {
    pub(crate) stored_amount: i64,
}

impl std::fmt::Display for DifferentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this idempotency key was used for {}",
            self.stored_amount
        )
    }
}

impl std::error::Error for DifferentRequest {}

/// A payment request.
pub(crate) fn payment(amount: i64) -> payments::ActiveModel {
    payments::ActiveModel {
        amount: Set(amount),
        currency: Set("EUR".to_owned()),
        ..Default::default()
    }
}

/// The strict form: the same request again is `Unchanged`; the same key with another amount
/// is refused with the caller's error, as `Error::UpdateRefused`.
pub(crate) async fn pay<C: sea_orm_idempotent::TransactionSource>(
    db: &C,
    key: &str,
    amount: i64,
) -> Result<UpsertOutcome<payments::Model>, Error> {
    payments::Entity::once(key.to_owned(), payment(amount))
        .update(|stored, request| {
            if request.amount.as_ref() == &stored.amount
                && request.currency.as_ref() == &stored.currency
            {
                Change::Keep
            } else {
                Change::refuse(DifferentRequest {
                    stored_amount: stored.amount,
                })
            }
        })
        .exec(db)
        .await
}

/// [`pay`] twice with the same request, then with another amount: refused, typed, not
/// retryable, and nothing written.
pub(crate) async fn same_key_different_data_is_refused(db: &DatabaseConnection) {
    assert!(matches!(
        pay(db, "idem-1", 500).await.unwrap(),
        UpsertOutcome::Created(_)
    ));
    assert!(matches!(
        pay(db, "idem-1", 500).await.unwrap(),
        UpsertOutcome::Unchanged(_)
    ));

    let err = pay(db, "idem-1", 900)
        .await
        .expect_err("a different amount");
    let Error::UpdateRefused(cause) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        cause.downcast_ref::<DifferentRequest>(),
        Some(&DifferentRequest { stored_amount: 500 })
    );
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "the update of the existing row was refused: this idempotency key was used for 500"
    );
    let rows = payments::Entity::find().all(db).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.idempotency_key.as_str(), r.amount))
            .collect::<Vec<_>>(),
        [("idem-1", 500)]
    );
}

/// In a caller's transaction, a refused call rolls back only its own savepoint: the caller's
/// earlier write survives, the transaction stays usable and commits.
pub(crate) async fn a_refusal_leaves_the_callers_transaction_usable(db: &DatabaseConnection) {
    use sea_orm::TransactionTrait;

    assert!(pay(db, "idem-2", 100).await.unwrap().is_written());
    let txn = db.begin().await.unwrap();
    assert!(matches!(
        pay(&txn, "idem-3", 300).await.unwrap(),
        UpsertOutcome::Created(_)
    ));
    let err = pay(&txn, "idem-2", 999)
        .await
        .expect_err("a different amount");
    assert!(matches!(err, Error::UpdateRefused(_)), "{err:?}");
    assert!(matches!(
        pay(&txn, "idem-4", 400).await.unwrap(),
        UpsertOutcome::Created(_)
    ));
    txn.commit().await.unwrap();

    let mut rows: Vec<_> = payments::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.idempotency_key, r.amount))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("idem-2".to_owned(), 100),
            ("idem-3".to_owned(), 300),
            ("idem-4".to_owned(), 400)
        ]
    );
}
