//! Stopping: the signals that ask for it, and the order it happens in.
//!
//! On SIGTERM or SIGINT (or [`Handle::shutdown`](crate::Handle::shutdown)):
//!
//! 1. the API stops accepting connections and `/v1/watch` streams end;
//! 2. in-flight requests finish (at most `shutdown_timeout`);
//! 3. leadership is resigned, so that a standby takes over at once;
//! 4. background tasks stop and [`run`](crate::run) returns `Ok(())`: the
//!    binary exits 0.

use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot install signal handlers; shutdown only by Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "ctrl-c", "shutting down");
    }
}

/// Cancels `token` when `signal` resolves (or immediately if the signal
/// future is already done); returns the task that waits.
pub(crate) fn cancel_on(
    token: CancellationToken,
    signal: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = signal => token.cancel(),
            () = token.cancelled() => {}
        }
    })
}
