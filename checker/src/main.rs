//! `cargo run --release -p checker -- --backend postgres|sqlite|mariadb|all --seconds N --seed S`
//!
//! Generates random histories of `sea-orm-idempotent` calls, contexts and faults from a seed,
//! runs them against real servers (`DATABASE_URL` / `MYSQL_DATABASE_URL`, or throwaway servers
//! from the installed binaries) and checks the crate's promise. Exit 0: no violation; 1: a
//! violation (printed with its seed and a shrunk history); 2: the checker itself failed.

use std::process::ExitCode;
use std::time::Duration;

use checker::{Backend, Config};
use clap::Parser;

/// The randomized workload checker of sea-orm-idempotent.
#[derive(Debug, Parser)]
struct Args {
    /// postgres, sqlite, mariadb or all.
    #[arg(long, default_value = "all")]
    backend: String,
    /// How long to run, per backend.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The generator's seed (random when not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Generate no transaction that waits in the application while it holds locks (deadlock
    /// pairs, calls inside make_data).
    #[arg(long)]
    without_cross_waits: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let backends: Vec<Backend> = match args.backend.as_str() {
        "all" => Backend::ALL.to_vec(),
        name => match Backend::ALL.iter().find(|b| b.name() == name) {
            Some(backend) => vec![*backend],
            None => {
                eprintln!("unknown backend {name}: postgres, sqlite, mariadb or all");
                return ExitCode::from(2);
            }
        },
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut violated = false;
    for backend in backends {
        println!(
            "[checker] {} seed {seed}, {} s",
            backend.name(),
            args.seconds
        );
        let config = Config {
            backend,
            duration: Duration::from_secs(args.seconds),
            seed,
            progress: true,
            without_cross_waits: args.without_cross_waits,
        };
        match runtime.block_on(checker::run(&config)) {
            Ok(report) => {
                println!(
                    "[checker] {}: histories {} calls {} faults {} violations {}",
                    backend.name(),
                    report.histories,
                    report.calls,
                    report.faults,
                    usize::from(report.violation.is_some()),
                );
                if let Some(violation) = report.violation {
                    violated = true;
                    println!("VIOLATION on {} (seed {seed}):", backend.name());
                    for broken in &violation.broken {
                        println!("  - {broken}");
                    }
                    println!("shrunk history: {:#?}", violation.shrunk);
                    println!("its events:");
                    for event in &violation.events {
                        println!("  {event:?}");
                    }
                    println!(
                        "(history seed {}, {} operations before shrinking)",
                        violation.history.seed,
                        violation.history.len()
                    );
                }
            }
            Err(err) => {
                eprintln!("[checker] harness error on {}: {err}", backend.name());
                return ExitCode::from(2);
            }
        }
    }
    if violated {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
