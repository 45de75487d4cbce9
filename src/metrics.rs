//! Operators' numbers: with the `metrics` feature, every call is counted and every lock wait
//! timed through the [`metrics`](https://docs.rs/metrics) facade, for whichever exporter the
//! application installs (Prometheus, StatsD, ...). Without it, nothing is recorded and nothing
//! is built.
//!
//! - `sea_orm_idempotent_calls_total` (counter), labels `entity` (the table), `outcome`
//!   (`created`, `existing`, `updated`, `unchanged` or `error`) and `error_kind`
//!   ([`Error::kind`](crate::Error::kind), empty unless `outcome` is `error`);
//! - `sea_orm_idempotent_lock_wait_seconds` (histogram), label `entity`: from the call to
//!   holding the key, for calls that got past the first look (the span's `lock_wait_us`).
//!
//! Labels are few and fixed: no key is ever a label.

use std::time::Duration;

/// The counter of calls.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const CALLS: &str = "sea_orm_idempotent_calls_total";
/// The histogram of lock waits, in seconds.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const LOCK_WAIT: &str = "sea_orm_idempotent_lock_wait_seconds";

/// Counts one call of `entity` that ended with `outcome` (and `error_kind` for an error).
pub(crate) fn count_call(entity: &'static str, outcome: &'static str, error_kind: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CALLS, "entity" => entity, "outcome" => outcome, "error_kind" => error_kind)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (entity, outcome, error_kind);
}

/// Records how long a call of `entity` took to hold its key.
pub(crate) fn record_lock_wait(entity: &'static str, waited: Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(LOCK_WAIT, "entity" => entity).record(waited.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (entity, waited);
}
