//! The primitives turns are built on: std's and tokio's, or the shuttle model checker's in the
//! unit tests built with `RUSTFLAGS="--cfg shuttle"` (see `model_check.rs`).
//!
//! A model checker only sees the primitives it provides, and it does not instrument tokio's
//! when tokio is a normal dependency: this seam is where they are swapped.

#[cfg(not(all(test, shuttle)))]
pub(super) use std::sync::{Arc, Mutex, Weak};

/// One place's mutex: tokio's, which is fair (callers are served in arrival order).
#[cfg(not(all(test, shuttle)))]
pub(super) type AsyncMutex = tokio::sync::Mutex<()>;

/// A turn at one place's mutex.
#[cfg(not(all(test, shuttle)))]
pub(super) type OwnedGuard = tokio::sync::OwnedMutexGuard<()>;

#[cfg(all(test, shuttle))]
pub(super) use self::model::{Arc, AsyncMutex, OwnedGuard, Weak};
#[cfg(all(test, shuttle))]
pub(super) use shuttle::sync::Mutex;

#[cfg(all(test, shuttle))]
mod model {
    use std::ops::Deref;
    use std::time::Duration;

    use shuttle::future::batch_semaphore::{BatchSemaphore, Fairness, TryAcquireError};

    /// std's `Arc`, with a scheduling point before each reference it releases. Shuttle only
    /// switches tasks inside its own primitives, but another thread can run between any two
    /// steps, and a release changes what `strong_count` and `upgrade` see elsewhere: the count
    /// turns use to find the last one out. (A clone needs no such point: a holder's clone never
    /// makes a count leave zero.)
    #[derive(Debug)]
    pub(in crate::turns) struct Arc<T>(std::sync::Arc<T>);

    /// std's `Weak`, upgraded to the [`Arc`] above.
    #[derive(Debug)]
    pub(in crate::turns) struct Weak<T>(std::sync::Weak<T>);

    impl<T> Arc<T> {
        pub(in crate::turns) fn new(value: T) -> Arc<T> {
            Arc(std::sync::Arc::new(value))
        }

        pub(in crate::turns) fn downgrade(this: &Arc<T>) -> Weak<T> {
            Weak(std::sync::Arc::downgrade(&this.0))
        }
    }

    impl<T> Clone for Arc<T> {
        fn clone(&self) -> Arc<T> {
            Arc(std::sync::Arc::clone(&self.0))
        }
    }

    impl<T> Deref for Arc<T> {
        type Target = T;

        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> Drop for Arc<T> {
        fn drop(&mut self) {
            // Shuttle does not model time: a sleep is a bare scheduling point (unlike
            // `yield_now`, which asks some schedulers to deprioritise the task).
            shuttle::thread::sleep(Duration::ZERO);
        }
    }

    impl<T> Weak<T> {
        pub(in crate::turns) fn upgrade(&self) -> Option<Arc<T>> {
            self.0.upgrade().map(Arc)
        }

        pub(in crate::turns) fn strong_count(&self) -> usize {
            self.0.strong_count()
        }
    }

    /// tokio's `Mutex<()>` as turns use it, built as tokio builds it: a strictly fair
    /// semaphore with one permit (shuttle's `BatchSemaphore` models tokio's). A permit granted
    /// to an acquire that is dropped before it completes goes back, as in tokio.
    #[derive(Debug)]
    pub(in crate::turns) struct AsyncMutex {
        permit: BatchSemaphore,
    }

    impl Default for AsyncMutex {
        fn default() -> Self {
            AsyncMutex {
                permit: BatchSemaphore::new(1, Fairness::StrictlyFair),
            }
        }
    }

    /// tokio's `lock_owned` and `try_lock_owned`, on the [`Arc`] above.
    impl Arc<AsyncMutex> {
        pub(in crate::turns) async fn lock_owned(self) -> OwnedGuard {
            self.permit.acquire(1).await.expect("never closed");
            OwnedGuard(self)
        }

        pub(in crate::turns) fn try_lock_owned(self) -> Result<OwnedGuard, TryAcquireError> {
            self.permit.try_acquire(1)?;
            Ok(OwnedGuard(self))
        }
    }

    #[derive(Debug)]
    pub(in crate::turns) struct OwnedGuard(Arc<AsyncMutex>);

    impl Drop for OwnedGuard {
        fn drop(&mut self) {
            self.0.permit.release(1);
        }
    }
}
