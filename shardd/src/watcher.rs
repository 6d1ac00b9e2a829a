//! The daemon's own watch of the store: it keeps the latest epoch (for
//! `/v1/status` and `shardd_topology_epoch`) and tells whether this member
//! follows the store (for `/health/ready`).
//!
//! Each (re)connection reads a snapshot first, then watches from its
//! epoch, so a lost or compacted watch simply starts over. Failures are
//! retried with a backoff from 100 ms doubling up to 5 s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use shardlib::Epoch;
use shardlib::store::{StoreError, TopologyStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The state of the daemon's watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// The latest epoch seen (`None` before the first snapshot).
    pub epoch: Option<Epoch>,
    /// The epoch of the latest topology change seen: of the last watch
    /// event, or after a snapshot the newest keyspace version in it (`None`
    /// before the first snapshot, or while the topology is empty). A client
    /// that reports an older epoch lags behind (`GET /v1/clients`).
    pub changed: Option<Epoch>,
    /// Whether the watch is connected and up to date.
    pub current: bool,
    /// The last failure, while not current.
    pub error: Option<String>,
}

/// Read access to the watch state.
#[derive(Clone, Debug)]
pub struct WatchStatus(watch::Receiver<WatchState>);

impl WatchStatus {
    /// The state now.
    pub fn get(&self) -> WatchState {
        self.0.borrow().clone()
    }

    /// Waits until the watch is current (for tests and start-up).
    pub async fn wait_current(&mut self) {
        let _ = self.0.wait_for(|s| s.current).await;
    }
}

/// Starts the watch; it runs until `stop` is cancelled.
pub fn start(
    store: Arc<dyn TopologyStore>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> (WatchStatus, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(WatchState::default());
    let task = tokio::spawn(run(store, metrics, tx, stop));
    (WatchStatus(rx), task)
}

async fn run(
    store: Arc<dyn TopologyStore>,
    metrics: Arc<Metrics>,
    tx: watch::Sender<WatchState>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let failed = |error: &StoreError| {
        metrics.store_error(error);
        tx.send_modify(|s| {
            s.current = false;
            s.error = Some(error.to_string());
        });
    };
    loop {
        let snapshot = tokio::select! {
            snapshot = store.snapshot() => snapshot,
            () = stop.cancelled() => return,
        };
        match snapshot {
            Ok(snapshot) => {
                let epoch = snapshot.topology.epoch;
                metrics.observe_epoch(epoch.0);
                let changed = snapshot.versions.values().max().copied();
                tx.send_replace(WatchState { epoch: Some(epoch), changed, current: true, error: None });
                tracing::debug!(%epoch, "watching the topology store");
                let mut events = store.watch(epoch);
                loop {
                    let next = tokio::select! {
                        next = events.next() => next,
                        () = stop.cancelled() => return,
                    };
                    match next {
                        Some(Ok(event)) => {
                            let epoch = event.snapshot.topology.epoch;
                            metrics.observe_epoch(epoch.0);
                            tx.send_modify(|s| (s.epoch, s.changed) = (Some(epoch), Some(epoch)));
                            backoff = MIN_BACKOFF;
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "topology watch failed; reconnecting");
                            failed(&error);
                            break;
                        }
                        None => {
                            failed(&StoreError::Unavailable { message: "the watch ended".to_owned() });
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the topology; retrying");
                failed(&error);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
