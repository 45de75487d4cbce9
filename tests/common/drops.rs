//! Dropping a call at an exact await point, as a request timeout or a departed client does.

/// Polls `call` until it has waited `pendings + 1` times, then drops it (a timeout, a client
/// gone, at exactly that await point); `Some(output)` when it finished first.
///
/// (By poll count, not a timer: tokio's timers tick in milliseconds, coarser than round trips
/// on loopback, so a sweep of timeouts would skip await points; a sweep of `pendings` hits
/// each one.) The library's own tests include this file by path (`src/backend/mod.rs`).
pub(crate) async fn drop_at_await_point<F: std::future::Future>(
    call: F,
    pendings: usize,
) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    let mut waited = 0;
    std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending if waited == pendings => std::task::Poll::Ready(None),
        std::task::Poll::Pending => {
            waited += 1;
            std::task::Poll::Pending
        }
    })
    .await
}
