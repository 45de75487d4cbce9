//! Every test gets a database of its own: these two tests insert the same unique key. Were the
//! database shared, whichever ran second would hit the unique constraint (or see two rows).

use sea_orm::{ConnectionTrait, Statement};
use test_support::TestDb;

async fn insert_same_key_and_count(db: &TestDb) -> (String, i64) {
    let conn = db.connect(1).await;
    conn.execute_unprepared(
        "INSERT INTO pull_requests (pr_id, repository, number, title, author, state, head_sha, first_delivery_id) \
         VALUES (1, 'o/r', 1, 't', 'a', 'open', 'x', 'd')",
    )
    .await
    .expect("the key is new in this test's database");
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT current_database() AS name, (SELECT count(*) FROM pull_requests) AS rows",
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get("", "name").unwrap(),
        row.try_get("", "rows").unwrap(),
    )
}

#[tokio::test]
async fn first_test_has_its_own_database() {
    let db = TestDb::new().await;
    let (name, rows) = insert_same_key_and_count(&db).await;
    assert_eq!(name, db.name);
    assert!(name.contains("first_test_has_its_own_database"), "{name}");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn second_test_has_its_own_database() {
    let db = TestDb::new().await;
    let (name, rows) = insert_same_key_and_count(&db).await;
    assert_eq!(name, db.name);
    assert!(name.contains("second_test_has_its_own_database"), "{name}");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn two_databases_in_one_test_are_distinct() {
    let a = TestDb::named("one").await;
    let b = TestDb::named("two").await;
    assert_ne!(a.name, b.name);
    assert_eq!(insert_same_key_and_count(&a).await.1, 1);
    assert_eq!(insert_same_key_and_count(&b).await.1, 1);
}

/// `TestDb::new()` twice in one test would be the same database (and is refused); a test that
/// needs two asks for a part of its own.
#[tokio::test]
async fn a_test_that_needs_two_databases_gets_two() {
    let first = TestDb::new().await;
    let second = TestDb::new_part("second").await;
    assert_ne!(first.name, second.name);
    assert_eq!(insert_same_key_and_count(&first).await.1, 1);
    assert_eq!(insert_same_key_and_count(&second).await.1, 1);
}
