//! The main job, `examples/webhook_burst.rs`, run as a user runs it: as a program, several at
//! once, on PostgreSQL (`DATABASE_URL`), on MariaDB (`--database-url`; a fresh database per
//! test on both) and on its default embedded SQLite file.
//!
//! The multi-process tests can fail: `naive_processes_hit_unique_violations_on_postgres`
//! and `_on_mariadb` run the same workload with `--naive` (find, then insert, no lock) and
//! show unique violations and a failing exit status, where `create_once` shows none. On
//! MariaDB, with the MySQL arm of `Backend::lock` (src/backend/mod.rs) made a no-op,
//! `several_processes_create_each_pr_once_on_mariadb` failed: the first process checked
//! exited non-zero with 11 and 22 unique violations.
//!
//! Also what a user meets first: `--naive` right after the main job still races (it takes new
//! ids), and a database URL that does not answer, or names a database that does not exist,
//! fails within seconds and says why.

#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;
mod webhook_support;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{TempDir, rows_for};
use entity::{PullRequest, pull_requests};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;
use test_support::TestDb;
use webhook_support::example_binary;

/// `webhook_burst` with `args`, in `dir`, with no `DATABASE_URL` unless `database_url` is
/// given (so a developer's own never leaks in). Started, not awaited.
fn burst(
    dir: &Path,
    database_url: Option<&str>,
    args: &[&str],
) -> impl Future<Output = std::io::Result<Output>> + use<> {
    let mut command = tokio::process::Command::new(example_binary("webhook_burst"));
    command
        .current_dir(dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output()
}

/// The JSON summary a `--json` run printed, with its stderr for messages.
fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn field(summary: &Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn rows_in(db: &DatabaseConnection, first: i64, count: i64) -> u64 {
    PullRequest::find()
        .filter(pull_requests::Column::PrId.between(first, first + count - 1))
        .count(db)
        .await
        .unwrap()
}

/// No configuration at all: an embedded SQLite file in the current directory, created and
/// migrated, announced in one line; every pull request stored once; a second run finds them
/// all. Output is piped, so no progress bar.
#[tokio::test]
async fn the_default_run_uses_an_embedded_sqlite_file() {
    let dir = TempDir::new("burst-default");
    let args = ["--prs", "60", "--duplicates", "3", "--concurrency", "8"];

    let table = burst(&dir.0, None, &args).await.unwrap();
    let err = stderr(&table);
    assert!(table.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("embedded SQLite file ./webhook_burst.db")),
        "says which database, in one line: {err}"
    );
    assert!(
        !err.contains('\r'),
        "no progress bar when not on a terminal"
    );
    assert!(dir.0.join("webhook_burst.db").is_file());
    let stdout = String::from_utf8_lossy(&table.stdout);
    for line in [
        "deliveries            180",
        "created               60",
        "duplicates absorbed   120",
        "errors                0",
        "rows in table         60",
        "throughput",
        "lock wait p50/p99",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    let again = burst(&dir.0, None, &[&args[..], &["--json"]].concat())
        .await
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let again = summary(&again);
    assert_eq!(again["database"], "sqlite");
    assert_eq!(field(&again, "deliveries"), 180);
    assert_eq!(field(&again, "created"), 0, "the first run stored them all");
    assert_eq!(field(&again, "existing"), 180);
    assert_eq!(field(&again, "errors"), 0);
    assert_eq!(field(&again, "rows"), 60);
    assert!(again["seconds"].as_f64().unwrap() > 0.0);
}

/// `--naive` right after the main job, on the same file and flags, still shows the race: it
/// starts above every stored pull request by default (on stored ones the naive code finds each
/// row and has nothing to race for). `--first-pr-id` still chooses the ids.
#[tokio::test]
async fn naive_right_after_the_main_run_still_races_on_sqlite() {
    let dir = TempDir::new("burst-naive-after");
    let args = [
        "--prs",
        "100",
        "--duplicates",
        "3",
        "--concurrency",
        "8",
        "--json",
    ];
    let main = burst(&dir.0, None, &args).await.unwrap();
    assert!(main.status.success(), "{}", stderr(&main));
    assert_eq!(field(&summary(&main), "created"), 100);

    let naive = burst(&dir.0, None, &[&args[..], &["--naive"]].concat())
        .await
        .unwrap();
    let err = stderr(&naive);
    let naive_summary = summary(&naive);
    assert_eq!(naive_summary["strategy"], "naive");
    assert_eq!(
        field(&naive_summary, "first_pr_id"),
        101,
        "fresh ids, above the stored ones: {naive_summary}"
    );
    assert!(
        err.contains("--naive: new pull requests from pr_id 101"),
        "says which ids it took: {err}"
    );
    let violations = naive_summary["errors_by_kind"]["unique_violation"]
        .as_u64()
        .unwrap_or(0);
    assert!(violations > 0, "the naive code races: {naive_summary}");
    assert_eq!(naive.status.code(), Some(1), "{err}");
    assert_eq!(field(&naive_summary, "rows"), 100, "{naive_summary}");

    // Told the stored ids, it uses them: every row found, nothing to race for.
    let reused = burst(
        &dir.0,
        None,
        &[&args[..], &["--naive", "--first-pr-id", "1"]].concat(),
    )
    .await
    .unwrap();
    assert!(reused.status.success(), "{}", stderr(&reused));
    let reused = summary(&reused);
    assert_eq!(field(&reused, "first_pr_id"), 1);
    assert_eq!(field(&reused, "existing"), 300, "{reused}");
}

/// A database URL nobody answers: the run fails at once with the cause and the address, not
/// after the pool's acquire timeout (sqlx retries a refused connection until then and reports
/// only "pool timed out": that took 60 s). The password is never printed. The 20 s bound only
/// guards against a hang.
#[tokio::test]
async fn an_unreachable_database_says_connection_refused_at_once() {
    let dir = TempDir::new("burst-refused");
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let urls = [
        format!("postgres://postgres:hunter2@127.0.0.1:{port}/app"),
        format!("mysql://root:hunter2@127.0.0.1:{port}/app"),
    ];
    for url in urls {
        let started = std::time::Instant::now();
        let run = burst(
            &dir.0,
            None,
            &["--prs", "5", "--json", "--database-url", &url],
        );
        let output = tokio::time::timeout(std::time::Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("{url}: still running after 20 s"))
            .unwrap();
        let err = stderr(&output);
        eprintln!(
            "{url}: {:?} after {:?}: {err}",
            output.status,
            started.elapsed()
        );
        assert_eq!(output.status.code(), Some(2), "could not start: {err}");
        assert!(
            err.to_lowercase().contains("connection refused"),
            "says why: {err}"
        );
        assert!(
            err.contains(&format!("127.0.0.1:{port}")),
            "says where: {err}"
        );
        assert!(!err.contains("hunter2"), "never the password: {err}");
    }
}

/// A PostgreSQL server that is up, but without the URL's database: the error says so and
/// that the database must be created first (the example migrates a database, it does not
/// create one).
#[tokio::test]
async fn a_missing_database_says_to_create_it_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("burst-missing-db");
    let (server, _) = test_db
        .url
        .rsplit_once('/')
        .expect("a URL with a database name");
    let url = format!("{server}/no_such_database");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        burst(&dir.0, None, &["--prs", "5", "--database-url", &url]),
    )
    .await
    .expect("still running after 20 s")
    .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("\"no_such_database\" does not exist"), "{err}");
    assert!(err.contains("create the database first"), "{err}");
}

const PROCESSES: usize = 4;
const PRS: i64 = 150;

/// The arguments of one of the racing processes: the same keys, the same seed (so the same
/// arrival order), every pull request delivered three times within each process.
fn racing_args(first_pr_id: i64, naive: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--prs",
        &PRS.to_string(),
        "--duplicates",
        "3",
        "--concurrency",
        "8",
        "--first-pr-id",
        &first_pr_id.to_string(),
        "--json",
    ]
    .map(String::from)
    .into();
    if naive {
        args.push("--naive".into());
    }
    args
}

/// How a racing process is told its database, as a user would tell it.
#[derive(Clone, Copy)]
enum Database<'a> {
    /// `DATABASE_URL=url`.
    Env(&'a str),
    /// `--database-url url`.
    Flag(&'a str),
}

/// `PROCESSES` processes started at once on the same keys; their outputs.
async fn race(dir: &Path, database: Database<'_>, first_pr_id: i64, naive: bool) -> Vec<Output> {
    let mut args = racing_args(first_pr_id, naive);
    let database_url = match database {
        Database::Env(url) => Some(url),
        Database::Flag(url) => {
            args.extend(["--database-url".to_owned(), url.to_owned()]);
            None
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runs: Vec<_> = (0..PROCESSES)
        .map(|_| burst(dir, database_url, &args))
        .collect();
    let mut outputs = Vec::new();
    for run in runs {
        outputs.push(run.await.expect("run webhook_burst"));
    }
    outputs
}

/// Checks that the processes together created each pull request exactly once, without an
/// error, and that the table holds one row per pull request.
async fn assert_created_once(outputs: &[Output], db: &DatabaseConnection, first_pr_id: i64) {
    let mut created = 0;
    for output in outputs {
        assert!(
            output.status.success(),
            "{}\n{}",
            stderr(output),
            String::from_utf8_lossy(&output.stdout)
        );
        let summary = summary(output);
        assert_eq!(field(&summary, "errors"), 0, "{summary}");
        assert_eq!(field(&summary, "deliveries"), PRS as u64 * 3);
        created += field(&summary, "created");
    }
    assert_eq!(
        created, PRS as u64,
        "created sums to --prs over the processes"
    );
    assert_eq!(rows_in(db, first_pr_id, PRS).await, PRS as u64);
    for pr_id in first_pr_id..first_pr_id + PRS {
        assert_eq!(rows_for(db, pr_id).await, 1, "pr_id {pr_id}");
    }
}

/// Several processes on one PostgreSQL database and the same `--first-pr-id` (`DATABASE_URL`,
/// as a user sets it) create each pull request exactly once between them.
#[tokio::test]
async fn several_processes_create_each_pr_once_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("burst-pg");
    const FIRST: i64 = 7_000;

    let outputs = race(&dir.0, Database::Env(&test_db.url), FIRST, false).await;

    for output in &outputs {
        assert!(
            stderr(output).contains("(DATABASE_URL)"),
            "{}",
            stderr(output)
        );
        assert_eq!(summary(output)["database"], "postgres");
    }
    assert_created_once(&outputs, &test_db.connect(1).await, FIRST).await;
}

/// The same workload with `--naive`: duplicates collide on the unique constraint (the table
/// stays right only because the constraint exists), errors are counted by kind, and the exit
/// status says a delivery failed. This is what the test above would see without the lock.
#[tokio::test]
async fn naive_processes_hit_unique_violations_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("burst-naive");
    const FIRST: i64 = 8_000;

    let outputs = race(&dir.0, Database::Env(&test_db.url), FIRST, true).await;
    assert_naive_failed(&outputs, &test_db.connect(1).await, FIRST).await;
}

/// Each naive process's unique violations and exit status, and the table kept right by the
/// constraint alone.
async fn assert_naive_failed(outputs: &[Output], db: &DatabaseConnection, first_pr_id: i64) {
    let mut violations = 0;
    let mut failed = 0;
    for output in outputs {
        let summary = summary(output);
        violations += summary["errors_by_kind"]["unique_violation"]
            .as_u64()
            .unwrap_or(0);
        if !output.status.success() {
            assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
            failed += 1;
        }
    }
    eprintln!("naive processes: {violations} unique violations, {failed} failed");
    assert!(
        violations > 0,
        "the naive workload should race, or the create_once run proves nothing"
    );
    assert!(
        failed > 0,
        "a failed delivery makes the exit status non-zero"
    );
    assert_eq!(rows_in(db, first_pr_id, PRS).await, PRS as u64);
}

/// Several processes on one MariaDB database and the same `--first-pr-id`, told the database
/// with `--database-url` (as a user does), create each pull request exactly once between them.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn several_processes_create_each_pr_once_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let dir = TempDir::new("burst-mariadb");
    const FIRST: i64 = 7_000;

    let outputs = race(&dir.0, Database::Flag(&test_db.url), FIRST, false).await;

    for output in &outputs {
        assert!(
            stderr(output).contains("(--database-url)"),
            "{}",
            stderr(output)
        );
        assert_eq!(summary(output)["database"], "mysql");
    }
    assert_created_once(&outputs, &test_db.connect(1).await, FIRST).await;
}

/// `several_processes_create_each_pr_once_on_mariadb` with `--naive`: unique violations and a
/// failing exit status, as on PostgreSQL.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn naive_processes_hit_unique_violations_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let dir = TempDir::new("burst-mariadb-naive");
    const FIRST: i64 = 8_000;

    let outputs = race(&dir.0, Database::Flag(&test_db.url), FIRST, true).await;
    assert_naive_failed(&outputs, &test_db.connect(1).await, FIRST).await;
}

/// Several processes started at once on a SQLite file that does not exist yet: they create
/// and migrate it one at a time (the migration takes the write lock) and create each pull
/// request exactly once between them.
#[tokio::test]
async fn several_processes_create_each_pr_once_on_a_new_sqlite_file() {
    let dir = TempDir::new("burst-sqlite");
    let url = dir.sqlite_url("shared.db");
    const FIRST: i64 = 1;

    let outputs = race(&dir.0, Database::Env(&url), FIRST, false).await;

    let db = sea_orm::Database::connect(&url).await.unwrap();
    assert_created_once(&outputs, &db, FIRST).await;
}

/// Pull requests per process in the fresh-database rounds: a small burst, the start-up is what
/// they test.
const FRESH_PRS: u64 = 8;

/// `PROCESSES` processes started at once on `url`, a database nobody has migrated: each
/// migrates it at start-up, then delivers the same small burst. Every process must start and
/// succeed, and between them create each pull request once. `round` names the round in
/// failures.
async fn start_together_on_a_fresh_database(dir: &Path, url: &str, round: usize) {
    let prs = FRESH_PRS.to_string();
    let args = [
        "--prs",
        &prs,
        "--duplicates",
        "2",
        "--concurrency",
        "2",
        "--first-pr-id",
        "100",
        "--json",
        "--database-url",
        url,
    ];
    let runs: Vec<_> = (0..PROCESSES).map(|_| burst(dir, None, &args)).collect();
    let mut created = 0;
    for (process, run) in runs.into_iter().enumerate() {
        let output = run.await.expect("run webhook_burst");
        assert!(
            output.status.success(),
            "round {round}, process {process} of {PROCESSES} started together on a fresh \
             database: {:?}\n{}",
            output.status,
            stderr(&output)
        );
        let summary = summary(&output);
        assert_eq!(field(&summary, "errors"), 0, "round {round}: {summary}");
        assert_eq!(
            field(&summary, "rows"),
            FRESH_PRS,
            "round {round}: {summary}"
        );
        created += field(&summary, "created");
    }
    assert_eq!(created, FRESH_PRS, "round {round}: created sums to --prs");
}

/// PostgreSQL: the migration waits for this crate's advisory lock.
#[tokio::test]
async fn processes_started_at_once_migrate_a_fresh_database_on_postgres() {
    let dir = TempDir::new("burst-fresh-pg");
    for round in 0..3 {
        let test_db = TestDb::empty(&format!("burst_fresh_pg_{round}")).await;
        start_together_on_a_fresh_database(&dir.0, &test_db.url, round).await;
    }
}

/// MariaDB: the migration waits for a named lock (`GET_LOCK`), whose answer is checked.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn processes_started_at_once_migrate_a_fresh_database_on_mariadb() {
    let Some(server) = test_support::MySqlServer::get() else {
        return;
    };
    let dir = TempDir::new("burst-fresh-mariadb");
    for round in 0..3 {
        let test_db = server
            .empty_database(&format!("burst_fresh_mariadb_{round}"))
            .await;
        start_together_on_a_fresh_database(&dir.0, &test_db.url, round).await;
    }
}

/// SQLite: a new file each round. The processes switch it to WAL and migrate it at start-up;
/// the switch, which SQLite refuses at once (without waiting out `busy_timeout`) while another
/// connection makes it, failed a process in 1 to 5% of the rounds, so this runs 200 (about 10 s).
#[tokio::test]
async fn processes_started_at_once_migrate_a_fresh_database_on_sqlite() {
    let dir = TempDir::new("burst-fresh-sqlite");
    for round in 0..200 {
        let url = dir.sqlite_url(&format!("fresh-{round}.db"));
        start_together_on_a_fresh_database(&dir.0, &url, round).await;
    }
}
