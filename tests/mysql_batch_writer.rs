//! MariaDB only: a batch's chunk whose multi-row insert (`INSERT ... VALUES ..., ... RETURNING
//! ...`) meets a row that a writer which does not take the lock inserted after the chunk's
//! look and commits while the insert waits for it. The insert's duplicate-key error undoes
//! the whole statement, and every row of the chunk goes the single call's guarded way: the
//! writer's key comes back `Existing` with the writer's row, the others `Created`, one row
//! each.
#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use common::{new_pr, rows_for};
use entity::{PullRequest, pull_requests};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbBackend, Statement, TransactionTrait};
use sea_orm_idempotent::IdempotentCreate;
use test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_writer_without_the_lock_commits_under_the_chunks_insert_is_existing() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(4).await;
    let observer = test_db.connect(1).await;
    // The writer inserts key 3's row and holds it, uncommitted: the chunk's look (READ
    // COMMITTED) does not see it, and its insert waits on the unique index.
    let writer = db.begin().await.unwrap();
    let mut row = <PullRequest as IdempotentCreate>::new_active_model(&3, new_pr(3));
    row.title = sea_orm::ActiveValue::Set("the writer's".to_owned());
    let written: pull_requests::Model = row.insert(&writer).await.unwrap();
    let batch = tokio::spawn({
        let db = db.clone();
        async move {
            PullRequest::many((1..=5).map(|k| (k, new_pr(k))).collect::<Vec<_>>())
                .exec(&db)
                .await
        }
    });
    // Until the chunk's insert waits for the writer's row.
    let started = Instant::now();
    loop {
        let waiting: i64 = observer
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX \
                 WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%INSERT INTO `pull_requests`%'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            !batch.is_finished(),
            "the batch ended without waiting for the writer: {:?}",
            batch.await
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the chunk's insert never waited for the writer's row"
        );
        // INNODB_TRX is a cache InnoDB refreshes only after 0.1 s without readers.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    writer.commit().await.unwrap();
    let outcomes = batch.await.unwrap().unwrap();
    let shape: Vec<(i64, bool)> = outcomes
        .iter()
        .map(|outcome| (outcome.model().pr_id, outcome.is_created()))
        .collect();
    assert_eq!(
        shape,
        vec![(1, true), (2, true), (3, false), (4, true), (5, true)]
    );
    assert_eq!(outcomes[2].model(), &written);
    for k in 1..=5 {
        assert_eq!(rows_for(&db, k).await, 1, "key {k}");
    }
}
