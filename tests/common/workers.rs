//! The racing workload in worker processes: this test binary re-run as one test, reporting its
//! [`Tally`] on a marked line of its output.

use std::process::Output;

use super::Tally;

/// Marks the line a worker process prints its tally on.
const WORKER_TALLY: &str = "WORKER_TALLY";

impl Tally {
    /// Prints the line [`worker_tally`] reads back in the parent process.
    pub(crate) fn print_for_parent(&self) {
        println!(
            "{WORKER_TALLY} created={} existing={} unique_violations={} other_errors={}",
            self.created, self.existing, self.unique_violations, self.other_errors
        );
    }
}

/// This test binary, to be re-run as a worker process that runs only the test `test_name`
/// (add its environment, then `.output()`).
pub(crate) fn worker_process(test_name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command.args([test_name, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// What a worker process printed after `marker` on its marked line; panics, with the worker's
/// output, if it failed or printed no such line.
pub(crate) fn worker_line(output: &Output, marker: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "worker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find(marker).map(|at| l[at + marker.len()..].to_owned()))
        .unwrap_or_else(|| panic!("no {marker} line from worker:\n{stdout}"))
}

/// The tally a worker process printed ([`Tally::print_for_parent`]); panics, with the
/// worker's output, if it failed or printed none.
pub(crate) fn worker_tally(output: &Output) -> Tally {
    let line = worker_line(output, WORKER_TALLY);
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    Tally {
        created: field("created"),
        existing: field("existing"),
        unique_violations: field("unique_violations"),
        other_errors: field("other_errors"),
    }
}
