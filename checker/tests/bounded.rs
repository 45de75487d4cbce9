//! The checker inside `cargo test`, on PostgreSQL, SQLite and MariaDB: two fixed seeds and one
//! random seed, printed so that a failure can be replayed with `cargo run --release -p checker
//! -- --backend B --seed S`; 10 s each, the backends side by side. The long run stays a command
//! (see the README).

use std::time::Duration;

use checker::{Backend, Config};

const SECONDS_PER_SEED: u64 = 10;

fn check(backend: Backend) {
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seeds = [1, 2, random];
    for seed in seeds {
        eprintln!("[checker] {} seed {seed}", backend.name());
        let config = Config {
            backend,
            duration: Duration::from_secs(SECONDS_PER_SEED),
            seed,
            progress: false,
            without_cross_waits: false,
        };
        let report = runtime
            .block_on(checker::run(&config))
            .unwrap_or_else(|err| panic!("{} seed {seed}: harness error: {err}", backend.name()));
        assert!(
            report.histories > 0,
            "{} seed {seed}: no history ran",
            backend.name()
        );
        if let Some(violation) = report.violation {
            let events: Vec<String> = violation.events.iter().map(|e| format!("{e:?}")).collect();
            panic!(
                "{} seed {seed}: {:#?}\nshrunk history: {:#?}\nits events:\n{}",
                backend.name(),
                violation.broken,
                violation.shrunk,
                events.join("\n")
            );
        }
        eprintln!(
            "[checker] {} seed {seed}: histories {} calls {} faults {} violations 0",
            backend.name(),
            report.histories,
            report.calls,
            report.faults
        );
    }
}

#[test]
fn randomized_histories_keep_the_promise_on_postgres() {
    check(Backend::Postgres);
}

#[test]
fn randomized_histories_keep_the_promise_on_sqlite() {
    check(Backend::Sqlite);
}

#[test]
fn randomized_histories_keep_the_promise_on_mariadb() {
    check(Backend::MariaDb);
}
