//! Shared by the tests of the examples (`tests/webhook_burst.rs`, `tests/github_webhook.rs`):
//! where the example binaries are. (Their temp dirs are `common::TempDir`.)

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

/// The example binary `name`, as `cargo test` builds it (`target/<profile>/examples/<name>`,
/// next to this test binary's `deps/` directory). Panics if it is missing or older than the
/// sources it is built from (as cargo's dep-info file lists them): running a stale program
/// would test old code.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile_dir.join("examples").join(name);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: `cargo test --workspace` builds the examples; when running one \
                 test target, build them first with `cargo build --examples`",
                binary.display()
            )
        });
    // Cargo's dep-info file lists exactly the sources the binary was built from.
    let dep_info = std::fs::read_to_string(binary.with_extension("d")).unwrap_or_default();
    let sources = dep_info
        .split_once(": ")
        .map_or("", |(_, sources)| sources)
        .replace("\\ ", "\u{0}");
    for source in sources.split_whitespace() {
        let source = PathBuf::from(source.replace('\u{0}', " "));
        if let Ok(modified) = std::fs::metadata(&source).and_then(|m| m.modified()) {
            assert!(
                modified <= built,
                "{} is older than {}: rebuild it with `cargo build --examples`",
                binary.display(),
                source.display()
            );
        }
    }
    binary
}
