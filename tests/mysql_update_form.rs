//! The update form (`once(..).update(..)`) on a real MariaDB (the throwaway server of
//! `test_support`, or `MYSQL_DATABASE_URL`'s), the same checks as on PostgreSQL
//! (`tests/common/versions.rs`): every version of a document delivered at once and out of
//! order by many tasks over four pools ends at the newest version and is `Created` once; the
//! outcomes are created, updated and unchanged (MySQL has no `UPDATE ... RETURNING`: the row
//! is read back in the transaction); the strict form refuses and writes nothing, in a caller's
//! transaction too.
//!
//! The race can fail, and was seen to: with `Backend::lock` (src/backend.rs) made a no-op for
//! MySQL, `many_tasks_keep_the_newest_version` failed on both runs tried, with 16 and 12
//! unique violations (callers of one document both found no row and both inserted).

#![cfg(feature = "mysql")]

mod common;

use common::open_pools;
use common::versions::{
    MYSQL_TABLES, a_refusal_leaves_the_callers_transaction_usable, assert_newest_versions,
    outcomes_in_order, race, same_key_different_data_is_refused,
};
use sea_orm::ConnectionTrait;
use test_support::TestDb;

const POOLS: usize = 4;
const POOL: u32 = 4;
const TASKS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_keep_the_newest_version() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let pools = open_pools(&test_db.url, POOLS, POOL).await;
    pools[0].execute_unprepared(MYSQL_TABLES).await.unwrap();

    race(&pools, TASKS).await.assert_each_created_once(1);
    assert_newest_versions(&pools[0]).await;
}

#[tokio::test]
async fn the_outcomes_are_created_updated_and_unchanged() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    db.execute_unprepared(MYSQL_TABLES).await.unwrap();
    outcomes_in_order(&db).await;
}

#[tokio::test]
async fn the_same_key_with_different_data_is_refused_and_nothing_written() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    db.execute_unprepared(MYSQL_TABLES).await.unwrap();
    same_key_different_data_is_refused(&db).await;
}

#[tokio::test]
async fn a_refusal_in_a_callers_transaction_rolls_back_only_its_savepoint() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(2).await;
    db.execute_unprepared(MYSQL_TABLES).await.unwrap();
    a_refusal_leaves_the_callers_transaction_usable(&db).await;
}
