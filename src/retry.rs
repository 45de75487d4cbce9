//! `Retry`: repeat a call while its error is retryable, a bounded number of times, with backoff.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::Error;

/// Repeats a call while it fails with a retryable [`Error`] ([`Error::is_retryable`]): lock
/// timeouts, busy locks, deadlocks, serialization failures and lost or unavailable connections
/// (a server restart, a killed backend, a pool that timed out). Any other error, and the last
/// retryable one once the attempts run out, is returned as it is.
///
/// Between attempts it sleeps for an exponentially growing delay with jitter: attempt `n`
/// (counting from 1) is followed by a delay drawn from `[d/2, d]` where
/// `d = min(initial_backoff * 2^(n-1), max_backoff)`, so callers that failed together (every
/// worker at a server restart) do not come back together.
///
/// Retrying [`IdempotentCreate::create_once`](crate::IdempotentCreate::create_once) is safe
/// by construction: a failed call wrote nothing, and a call whose COMMIT reached the server
/// but whose answer was lost finds the row on the next attempt and returns
/// [`Outcome::Existing`](crate::Outcome::Existing). Only retry operations with that property.
///
/// ```no_run
/// use sea_orm::DatabaseConnection;
/// use sea_orm_idempotent::{Error, IdempotentCreate, NaturalKey, Outcome, Retry};
///
/// /// Stores a row of any entity once, retrying lock timeouts, deadlocks and lost connections.
/// /// (`Shape` is the key's shape, one column or several; Rust infers it at each call.)
/// async fn store<E, Shape>(db: &DatabaseConnection, key: E::Key, data: E::Data)
///     -> Result<Outcome<E::Model>, Error>
/// where
///     E: IdempotentCreate,
///     E::Key: NaturalKey<Shape>,
///     E::Data: Clone,
/// {
///     // Up to 5 attempts, backing off from 50 ms to at most 2 s (the defaults).
///     Retry::default()
///         .run(|| E::create_once(db, key.clone(), data.clone()))
///         .await
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for Retry {
    /// 5 attempts, backing off from 50 ms, at most 2 s between two attempts (about 0.4 s to
    /// 0.75 s of sleeping in all). Waiting for a restarting server is mostly the pool's job:
    /// sqlx keeps trying to connect until its `acquire_timeout`, so an attempt made while the
    /// server is down waits for it rather than failing at once.
    fn default() -> Retry {
        Retry {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// The default policy: see [`Retry::default`].
    pub fn new() -> Retry {
        Retry::default()
    }

    /// At most `attempts` calls in all (the first one included); `0` is taken as `1`.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Retry {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The delay after the first failure (`initial`), doubling after each further one up to
    /// `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Retry {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Calls `operation` until it succeeds, fails with an error that is not retryable, or has
    /// been called `max_attempts` times; returns its last result.
    ///
    /// # Errors
    ///
    /// The first error that is not retryable, or the last error when the attempts run out.
    ///
    /// # Cancel Safety
    ///
    /// Dropping the future stops the retries: while it sleeps between attempts nothing is in
    /// flight; during an attempt, dropping it drops that attempt's future, with that
    /// operation's own cancel safety (for `create_once`: nothing is written and the lock is
    /// released).
    pub async fn run<T, F, Fut>(&self, mut operation: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        loop {
            match operation().await {
                Err(err) if err.is_retryable() && attempt < self.max_attempts => {
                    let delay = self.delay_after(attempt, jitter());
                    tracing::debug!(attempt, ?delay, error = %err, "retrying after a retryable error");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// The delay after failed attempt `attempt` (from 1), with `jitter` in `[0, 1]` choosing
    /// where in `[d/2, d]` it falls.
    fn delay_after(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A number in `[0, 1]` that differs from call to call (`RandomState` is seeded randomly per
/// thread and advanced per instance): jitter needs spread, not cryptographic randomness.
fn jitter() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::LockKey;

    fn busy() -> Error {
        Error::LockBusy {
            key: LockKey::BigInt(1),
            row: None,
        }
    }

    fn unsafe_isolation() -> Error {
        Error::UnsafeIsolation {
            level: "serializable".into(),
        }
    }

    fn no_backoff() -> Retry {
        Retry::new().backoff(Duration::ZERO, Duration::ZERO)
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = Cell::new(0);
        let result = no_backoff()
            .max_attempts(5)
            .run(|| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err(busy()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let calls = Cell::new(0);
        let result: Result<(), Error> = no_backoff()
            .max_attempts(4)
            .run(|| {
                calls.set(calls.get() + 1);
                async { Err(busy()) }
            })
            .await;
        assert!(matches!(result, Err(Error::LockBusy { .. })));
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test]
    async fn does_not_retry_errors_a_retry_cannot_fix() {
        let calls = Cell::new(0);
        let result: Result<(), Error> = no_backoff()
            .run(|| {
                calls.set(calls.get() + 1);
                async { Err(unsafe_isolation()) }
            })
            .await;
        assert!(matches!(result, Err(Error::UnsafeIsolation { .. })));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn zero_attempts_still_calls_once() {
        let calls = Cell::new(0);
        let result: Result<(), Error> = no_backoff()
            .max_attempts(0)
            .run(|| {
                calls.set(calls.get() + 1);
                async { Err(busy()) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_and_jitters_within_half() {
        let retry = Retry::new().backoff(Duration::from_millis(100), Duration::from_millis(700));
        assert_eq!(retry.delay_after(1, 1.0), Duration::from_millis(100));
        assert_eq!(retry.delay_after(1, 0.0), Duration::from_millis(50));
        assert_eq!(retry.delay_after(2, 1.0), Duration::from_millis(200));
        assert_eq!(retry.delay_after(3, 1.0), Duration::from_millis(400));
        assert_eq!(retry.delay_after(4, 1.0), Duration::from_millis(700));
        assert_eq!(retry.delay_after(40, 1.0), Duration::from_millis(700));
        assert_eq!(retry.delay_after(40, 0.0), Duration::from_millis(350));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..=1.0).contains(&j), "{j}");
        }
    }
}
