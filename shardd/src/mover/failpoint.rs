//! Fault injection for the crash and cancel tests: a named point where a
//! job runner stops and waits (until it is cancelled or the process stops),
//! so that a test can SIGKILL the leader, or cancel the job, exactly there.
//!
//! Points are enabled with `SHARDD_FAILPOINTS=name,name…` in the daemon's
//! environment; without it every point is a no-op (one lookup in an empty
//! set). Names: `before:<phase>` (e.g. `before:copy`, after the phase is
//! saved and before it runs), `fence:frozen` (ranges frozen and the
//! database fence installed, nothing drained yet), `hand_over:written`
//! (the target owns the ranges; the job does not know yet), and
//! `copy:chunk` (after the first copied chunk).

use std::collections::HashSet;
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

fn enabled() -> &'static HashSet<String> {
    static POINTS: OnceLock<HashSet<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("SHARDD_FAILPOINTS")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    })
}

/// Whether point `name` is enabled.
pub fn is_enabled(name: &str) -> bool {
    let points = enabled();
    !points.is_empty() && points.contains(name)
}

/// Stops here while `name` is enabled, until `stop` or `cancel` fires.
pub async fn hit(name: &str, stop: &CancellationToken, cancel: &CancellationToken) {
    if !is_enabled(name) {
        return;
    }
    tracing::warn!(failpoint = name, "failpoint reached; waiting until stopped or cancelled");
    tokio::select! {
        () = stop.cancelled() => {}
        () = cancel.cancelled() => {}
    }
}
