//! MariaDB only: what each path of a call costs, in statements the server counted for the
//! session (`Questions`), in `COMMIT`s, and in commits that write (each flushed with
//! `innodb_flush_log_at_trx_commit = 1`, InnoDB's default): a transaction's `COMMIT` after a
//! write, and every write sent in autocommit. The statements themselves are read from the
//! server's general query log (`mysql.general_log`, switched on around the measured call
//! only), so the test names each one and where it ran. As `tests/round_trips.rs` counts
//! PostgreSQL's round trips. Over a pool of one connection, so that every statement of the
//! call is the session's.
#![cfg(feature = "mysql")]

mod common;

use common::mysql::{create_unguarded, read_committed_pool, unguarded};
use common::new_pr;
use entity::PullRequest;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_idempotent::IdempotentCreate;
use test_support::TestDb;

/// The session's counters: statements and `COMMIT`s.
async fn counters(db: &DatabaseConnection) -> [i64; 2] {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SHOW SESSION STATUS WHERE Variable_name IN ('Questions', 'Com_commit')",
        ))
        .await
        .unwrap();
    let value = |name: &str| -> i64 {
        rows.iter()
            .find(|row| row.try_get::<String>("", "Variable_name").unwrap() == name)
            .map(|row| row.try_get::<String>("", "Value").unwrap().parse().unwrap())
            .unwrap_or(0)
    };
    [value("Questions"), value("Com_commit")]
}

async fn run(observer: &DatabaseConnection, sql: &str) {
    observer
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// What one call cost.
#[derive(Debug, PartialEq, Eq)]
struct Cost {
    /// Statements (without the `SHOW` that counts).
    statements: i64,
    /// `COMMIT`s.
    commits: i64,
    /// Commits that write: `COMMIT`s after a write, and writes in autocommit.
    flushed: usize,
    /// The statements, each as its kind: the first word after any `SET STATEMENT ... FOR`,
    /// with `(lock row)` for those on the lock table, `(slot locked)` for the one statement's
    /// insert, which locks the key's slot.
    kinds: Vec<String>,
}

/// What `create_once(pr_id)` on `db` cost; `observer` reads the general log.
async fn cost(db: &DatabaseConnection, observer: &DatabaseConnection, pr_id: i64) -> Cost {
    cost_of(db, observer, async {
        PullRequest::create_once(db, pr_id, new_pr(pr_id))
            .await
            .unwrap();
    })
    .await
}

/// The general log is the server's: one test at a time switches it on (the tests share one
/// throwaway server).
static GENERAL_LOG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What `call` (on `db`) cost; `observer` reads the general log.
async fn cost_of(
    db: &DatabaseConnection,
    observer: &DatabaseConnection,
    call: impl Future<Output = ()>,
) -> Cost {
    let _log = GENERAL_LOG.lock().await;
    let session: u64 = db
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT CAST(CONNECTION_ID() AS UNSIGNED) AS id",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "id")
        .unwrap();
    run(observer, "SET GLOBAL general_log = 0").await;
    run(observer, "TRUNCATE TABLE mysql.general_log").await;
    run(observer, "SET GLOBAL log_output = 'TABLE'").await;
    let before = counters(db).await;
    run(observer, "SET GLOBAL general_log = 1").await;
    call.await;
    run(observer, "SET GLOBAL general_log = 0").await;
    let after = counters(db).await;
    let logged = observer
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(argument AS CHAR) AS statement FROM mysql.general_log \
             WHERE thread_id = ? AND command_type IN ('Query', 'Execute')",
            [session.into()],
        ))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    let (mut in_transaction, mut wrote, mut flushed) = (false, false, 0);
    for row in logged {
        let statement: String = row.try_get("", "statement").unwrap();
        let upper = statement.trim().to_uppercase();
        let body = match upper.strip_prefix("SET STATEMENT") {
            Some(rest) => rest[rest.find(" FOR ").expect("SET STATEMENT ... FOR") + 5..].trim(),
            None => upper.as_str(),
        };
        let kind = body.split_whitespace().next().unwrap_or("").to_owned();
        // Both lock tables: `sea_orm_idempotent_lock_slots` and the per-key `..._locks`. The
        // one statement inserts the entity's row and names the slots only to lock one.
        let names_lock_table = upper.contains("SEA_ORM_IDEMPOTENT_LOCK");
        let on_the_slot = names_lock_table
            && kind == "INSERT"
            && !upper.contains("INTO `SEA_ORM_IDEMPOTENT_LOCK");
        let lock_row = names_lock_table && !on_the_slot;
        let writes = matches!(kind.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE");
        match kind.as_str() {
            "BEGIN" | "START" => (in_transaction, wrote) = (true, false),
            "COMMIT" => {
                flushed += usize::from(wrote);
                in_transaction = false;
            }
            "ROLLBACK" => in_transaction = false,
            _ if writes && in_transaction => wrote = true,
            _ if writes => flushed += 1,
            _ => {}
        }
        let kind = match (kind.as_str(), body.split_whitespace().nth(1)) {
            ("SET", Some(second)) => format!("SET {second}"),
            _ => kind,
        };
        kinds.push(if lock_row {
            format!("{kind} (lock row)")
        } else if on_the_slot {
            format!("{kind} (slot locked)")
        } else {
            kind
        });
    }
    Cost {
        statements: after[0] - before[0] - 1,
        commits: after[1] - before[1],
        flushed,
        kinds,
    }
}

#[tokio::test]
async fn every_path_costs_its_statements_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    // READ COMMITTED sessions, where MariaDB's one statement applies.
    let db = read_committed_pool(&test_db, 1).await;
    let observer = test_db.connect(1).await;
    // Warm up: the entity's statements prepared on the connection.
    PullRequest::create_once(&db, 1, new_pr(1)).await.unwrap();
    PullRequest::create_once(&db, 2, new_pr(2)).await.unwrap();
    let new = cost(&db, &observer, 3).await;
    let existing = cost(&db, &observer, 3).await;
    println!("new {new:?}\nexisting {existing:?}");
    // A redelivery: the look.
    assert_eq!(
        existing,
        Cost {
            statements: 1,
            commits: 0,
            flushed: 0,
            kinds: vec!["SELECT".to_owned()],
        },
        "a redelivery"
    );
    // A new key, where a unique index covers the key (`pr_id`): the look; the one statement,
    // which locks the key's slot and inserts, in autocommit: 2 statements, 1 commit that
    // writes, as `INSERT IGNORE`, then `SELECT`. Was 6 (the locked path, below).
    assert_eq!(
        new,
        Cost {
            statements: 2,
            commits: 0,
            flushed: 1,
            kinds: ["SELECT", "INSERT (slot locked)"]
                .map(str::to_owned)
                .to_vec(),
        },
        "a new key, one statement"
    );
    // The server's default sessions, REPEATABLE READ: the locked path.
    let db = test_db.connect(1).await;
    PullRequest::create_once(&db, 11, new_pr(11)).await.unwrap();
    PullRequest::create_once(&db, 12, new_pr(12)).await.unwrap();
    assert_eq!(
        cost(&db, &observer, 13).await,
        locked_path_new_key(),
        "a new key, REPEATABLE READ sessions"
    );
}

/// A new key on the locked path: the look; SET TRANSACTION and BEGIN; the lock, an insert
/// that locks the key's slot (made by the migration: `ON DUPLICATE KEY UPDATE` counts this
/// holder) inside the transaction; the guarded insert with MariaDB's RETURNING; COMMIT: 6
/// statements, 1 commit that writes. Was 8 and 2: the lock row's own autocommit insert before
/// BEGIN (a flushed commit of its own), then the locking read and the `UPDATE` that counted
/// the holder.
fn locked_path_new_key() -> Cost {
    Cost {
        statements: 6,
        commits: 1,
        flushed: 1,
        kinds: [
            "SELECT",
            "SET TRANSACTION",
            "BEGIN",
            "INSERT (lock row)",
            "INSERT",
            "COMMIT",
        ]
        .map(str::to_owned)
        .to_vec(),
    }
}

/// A new key on the locked path in READ COMMITTED sessions: an entity without a unique index
/// over its key (`unguarded`).
#[tokio::test]
async fn a_new_key_without_a_unique_index_costs_its_statements_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = read_committed_pool(&test_db, 1).await;
    let observer = test_db.connect(1).await;
    create_unguarded(&db).await;
    let create = |k: i64| {
        let db = &db;
        async move {
            let outcome = unguarded::Entity::create_once(db, k, format!("v{k}"))
                .await
                .unwrap();
            assert!(outcome.is_created());
        }
    };
    // Warm up: the entity's statements prepared on the connection.
    create(1).await;
    create(2).await;
    let new = cost_of(&db, &observer, create(3)).await;
    assert_eq!(new, locked_path_new_key(), "a new key, no unique index");
}

/// A batch's chunk of new keys: its statements and flushed commits, whatever the chunk's size.
#[tokio::test]
async fn a_batch_chunk_of_new_keys_costs_its_statements_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let db = test_db.connect(1).await;
    let observer = test_db.connect(1).await;
    let batch = |keys: std::ops::Range<i64>| {
        let db = &db;
        async move {
            let outcomes = PullRequest::many(keys.map(|k| (k, new_pr(k))).collect::<Vec<_>>())
                .exec(db)
                .await
                .unwrap();
            assert!(outcomes.iter().all(|outcome| outcome.is_created()));
        }
    };
    // Warm up: the chunk's statements prepared on the connection.
    batch(1..11).await;
    let chunk = cost_of(&db, &observer, batch(11..21)).await;
    println!("a chunk of 10 new keys {chunk:?}");
    // SET TRANSACTION and BEGIN; the lock rows made, locked and counted inside the
    // transaction by one insert that does not wait; the look; the multi-row insert, with
    // MariaDB's RETURNING; COMMIT: 6 statements, 1 commit that writes. Was 9 and 2: the lock
    // rows' own autocommit insert before BEGIN (a flushed commit of its own), a locking read
    // of them, then the count; and a look after the insert to read back what it inserted.
    assert_eq!(
        chunk,
        Cost {
            statements: 6,
            commits: 1,
            flushed: 1,
            kinds: [
                "SET TRANSACTION",
                "BEGIN",
                "INSERT (lock row)",
                "SELECT",
                "INSERT",
                "COMMIT"
            ]
            .map(str::to_owned)
            .to_vec(),
        },
        "a chunk of new keys"
    );
}
