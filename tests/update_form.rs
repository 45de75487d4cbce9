//! The update form (`once(..).update(..)`) on PostgreSQL and MariaDB, the same tests on both
//! (`name::postgres`, `name::mariadb`: `common::on_each_server!`): every version of a document
//! delivered at once and out of order, by many tasks over two pools and by several OS
//! processes released together, ends at the newest version (no older delivery overwrites a
//! newer one) and is `Created` once; the outcomes are created, updated and unchanged; the
//! strict form refuses the same key with different data and writes nothing; the options
//! (`wait`, `update`, data in hand or made lazily) combine. The entities and the race are
//! `tests/common/versions.rs`, shared with `tests/update_form_sqlite.rs`.
//!
//! The race tests can fail, and were seen to: with `Backend::lock` in `src/backend/mod.rs` made
//! a no-op for PostgreSQL, `many_tasks_keep_the_newest_version` and
//! `several_processes_keep_the_newest_version` failed on every run: 2 and 4 to 11 unique
//! violations (callers of one document both found no row and both inserted), and, in runs
//! where every insert happened to pass, a document left at version 7 (an older version, read
//! before version 8 was written, overwrote it). On MariaDB (no `UPDATE ... RETURNING`: the
//! row is read back in the transaction), with the MySQL arm of `Backend::lock` made a no-op,
//! `many_tasks_keep_the_newest_version::mariadb` failed with 7 and 8 unique violations and
//! `several_processes_keep_the_newest_version::mariadb` with 35 and 23.
//! They run over FOUR pools because callers of one pool on the same key take turns in the
//! crate's waiting room first: over one pool they would pass without the lock, and the more
//! pools, the more callers of one document meet at the lock.

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::time::Duration;

use common::versions::{
    MYSQL_TABLES, POSTGRES_TABLES, Upserts, a_refusal_leaves_the_callers_transaction_usable,
    assert_newest_versions, document_keys, documents, edit, newer_only, outcomes_in_order, race,
    same_key_different_data_is_refused,
};
use common::{Server, on_each_server, open_pools, run_gated_outputs, wait_at_gate, worker_process};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sea_orm_idempotent::{Error, IdempotentCreate, UpsertOutcome, Wait};
use tokio::sync::oneshot;

const POOLS: usize = 4;
const POOL: u32 = 4;
const TASKS: usize = 16;
const PROCESSES: usize = 4;

/// Creates the documents and payments tables on `server`.
async fn tables(server: Server, db: &DatabaseConnection) {
    db.execute_unprepared(server.sql(POSTGRES_TABLES, MYSQL_TABLES))
        .await
        .unwrap();
}

on_each_server! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_tasks_keep_the_newest_version(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let pools = open_pools(&test_db.url, POOLS, POOL).await;
        tables(server, &pools[0]).await;

        race(&pools, TASKS).await.assert_each_created_once(1);
        assert_newest_versions(&pools[0]).await;
    }

    /// Four processes, released together by the start gate, each deliver every version of every
    /// document.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_processes_keep_the_newest_version(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let direct = test_db.connect(2).await;
        tables(server, &direct).await;
        let workers = (0..PROCESSES).map(|_| {
            let mut worker = worker_process("update_race_worker_process");
            worker.env(WORKER_URL, &test_db.url);
            worker
        });
        let mut total = Upserts::default();
        for output in run_gated_outputs(&direct, workers).await {
            total.add(Upserts::of_worker(&output));
        }
        total.assert_each_created_once(PROCESSES);
        assert_newest_versions(&direct).await;
    }

    #[tokio::test]
    async fn the_outcomes_are_created_updated_and_unchanged(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        tables(server, &db).await;
        outcomes_in_order(&db).await;
    }

    #[tokio::test]
    async fn the_same_key_with_different_data_is_refused_and_nothing_written(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        tables(server, &db).await;
        same_key_different_data_is_refused(&db).await;
    }

    #[tokio::test]
    async fn a_refusal_in_a_callers_transaction_rolls_back_only_its_savepoint(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(2).await;
        tables(server, &db).await;
        a_refusal_leaves_the_callers_transaction_usable(&db).await;
    }

    /// `wait` and `update` combine in either order, with the data in hand (no type annotation)
    /// or made lazily: while another call holds the document's lock (inside its `make_data`),
    /// `Wait::No` is `LockBusy` and `Wait::Timeout` is `LockTimeout`, and nothing runs the
    /// update function; once the holder commits, the same calls update.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_and_update_combine(server: Server) {
        let Some(test_db) = server.database().await else {
            return;
        };
        let db = test_db.connect(4).await;
        tables(server, &db).await;
        let key = document_keys()[0].clone();

        let (inside_tx, inside_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let (db, key) = (db.clone(), key.clone());
            async move {
                documents::Entity::once_with(key, || async move {
                    inside_tx.send(()).unwrap();
                    go_rx.await.unwrap();
                    Ok::<_, std::convert::Infallible>(edit(1))
                })
                .update(newer_only)
                .exec(&db)
                .await
            }
        });
        inside_rx.await.unwrap(); // the holder has the lock, inside make_data

        let ran = std::sync::atomic::AtomicBool::new(false);
        let busy = documents::Entity::once(key.clone(), edit(2))
            .wait(Wait::No)
            .update(|existing, edit| {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                newer_only(existing, edit)
            })
            .exec(&db)
            .await
            .expect_err("the key is held");
        assert!(matches!(busy, Error::LockBusy { .. }), "{busy:?}");
        let timed_out = documents::Entity::once(key.clone(), edit(2))
            .update(newer_only)
            .wait(Wait::Timeout(Duration::from_millis(150)))
            .exec(&db)
            .await
            .expect_err("the key is held");
        assert!(
            matches!(timed_out, Error::LockTimeout { .. }),
            "{timed_out:?}"
        );
        assert!(
            !ran.into_inner(),
            "the update function ran without the lock"
        );

        go_tx.send(()).unwrap();
        assert!(matches!(
            holder.await.unwrap().unwrap(),
            UpsertOutcome::Created(_)
        ));
        let updated = documents::Entity::once_with(key.clone(), || async {
            Ok::<_, std::convert::Infallible>(edit(2))
        })
        .wait(Wait::No)
        .update(newer_only)
        .exec(&db)
        .await
        .unwrap();
        assert!(
            matches!(&updated, UpsertOutcome::Updated(row) if row.version == 2),
            "{updated:?}"
        );
    }
}

const WORKER_URL: &str = "SEA_ORM_IDEMPOTENT_UPDATE_FORM_WORKER_URL";

/// One racing process of `several_processes_keep_the_newest_version`: waits at the parent's
/// gate, delivers every version (on either server: the URL says which), reports what its calls
/// returned. Run plainly, it races alone on a PostgreSQL database of its own and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_race_worker_process() {
    match std::env::var(WORKER_URL) {
        Ok(url) => {
            let pools = open_pools(&url, POOLS, POOL).await;
            wait_at_gate(&pools[0]).await;
            race(&pools, TASKS).await.print_for_parent();
        }
        Err(_) if cfg!(feature = "postgres") => {
            let test_db = test_support::TestDb::new().await;
            let pools = open_pools(&test_db.url, POOLS, POOL).await;
            tables(Server::Postgres, &pools[0]).await;
            race(&pools, TASKS).await.assert_each_created_once(1);
            assert_newest_versions(&pools[0]).await;
        }
        Err(_) => {}
    }
}
