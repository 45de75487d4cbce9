//! A future that runs to its end even when its caller is dropped: what the crate's own
//! `BEGIN` (PostgreSQL, MySQL) and every statement of its MySQL transaction run in, where the
//! driver cannot abandon a statement safely.

use std::future::Future;

/// Runs `work` in a task of its own and returns its output; dropped, it leaves `work` to
/// finish. A panic in `work` is resumed here.
pub(crate) async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(work).await {
        Ok(output) => output,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
