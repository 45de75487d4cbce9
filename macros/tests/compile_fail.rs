//! The derive's mistakes are compile errors that point at the attribute: the cases in
//! `tests/ui/*.rs`, each with the exact message and span in its `.stderr` (regenerate with
//! `TRYBUILD=overwrite cargo test -p sea-orm-idempotent-macros --test compile_fail`, then read
//! the diff).

#[test]
fn mistakes_in_the_attribute_are_errors_at_the_attribute() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
