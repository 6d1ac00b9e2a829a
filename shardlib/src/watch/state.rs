//! What the watcher handle and its task share, and the task's side of it:
//! installing topologies, tracking the connection's health, pausing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::update::{TopologyUpdate, UpdateKind, diff};
use super::{WatchError, WatchOptions, telemetry};
use crate::id::{Epoch, KeyspaceName};
use crate::router::{Router, SharedRouter, StaleEpoch};
use crate::store::{Change, Snapshot, StoreError};
use crate::topology::Topology;

/// A request from the handle to the task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Read the whole topology again; answer with the installed epoch.
    Reload(oneshot::Sender<Result<Epoch, WatchError>>),
}

/// What interrupted a wait of the task.
#[derive(Debug)]
pub(crate) enum Signal {
    /// The handle asked the task to stop, or was dropped.
    Shutdown,
    /// The handle sent a command.
    Command(Command),
}

/// State read by the handle and written by the task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) source_kind: &'static str,
    pub(crate) router: Arc<SharedRouter>,
    health: Mutex<Health>,
    /// Held while an update is published to both channels, and while a
    /// receiver of every update subscribes: a new receiver gets exactly the
    /// updates published after the latest one `subscribe()` showed then.
    pub(crate) publishing: Mutex<()>,
}

#[derive(Debug)]
struct Health {
    connected: bool,
    /// While disconnected: since when (at first, since the watcher was made).
    lost_at: Instant,
    /// While connected: since when.
    connected_at: Instant,
    last_error: Option<WatchError>,
}

impl Shared {
    pub(crate) fn new(name: String, source_kind: &'static str, router: Arc<SharedRouter>) -> Self {
        let now = Instant::now();
        let health = Health { connected: false, lost_at: now, connected_at: now, last_error: None };
        Shared { name, source_kind, router, health: Mutex::new(health), publishing: Mutex::new(()) }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // The lock guards plain values and is never held across a panic
        // point that could leave them half-written.
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock that orders publications and subscriptions.
    pub(crate) fn publishing(&self) -> MutexGuard<'_, ()> {
        self.publishing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.health().connected
    }

    pub(crate) fn staleness(&self) -> Option<Duration> {
        let health = self.health();
        (!health.connected).then(|| health.lost_at.elapsed())
    }

    pub(crate) fn last_error(&self) -> Option<WatchError> {
        self.health().last_error.clone()
    }

    pub(crate) fn record_error(&self, error: WatchError) {
        self.health().last_error = Some(error);
    }
}

/// A topology offered by a source.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) topology: Arc<Topology>,
    pub(crate) versions: BTreeMap<KeyspaceName, Epoch>,
    /// What changed, if the source says; else computed by comparison.
    pub(crate) changes: Option<Vec<Change>>,
    pub(crate) kind: UpdateKind,
}

impl Incoming {
    /// A store snapshot; its changes are computed.
    pub(crate) fn snapshot(snapshot: Snapshot, kind: UpdateKind) -> Self {
        Incoming { topology: snapshot.topology, versions: snapshot.versions, changes: None, kind }
    }
}

/// The task's side: publishes topologies and health.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: WatchOptions,
    pub(crate) updates: watch::Sender<Arc<TopologyUpdate>>,
    pub(crate) events: broadcast::Sender<Arc<TopologyUpdate>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// The newest epoch seen, installed or skipped: where a watch resumes.
    position: Epoch,
    /// Whether a topology was skipped since the last install (its changes
    /// must then be folded into the next update's).
    skipped: bool,
}

impl Ctx {
    pub(crate) fn new(
        shared: Arc<Shared>,
        options: WatchOptions,
        updates: watch::Sender<Arc<TopologyUpdate>>,
        events: broadcast::Sender<Arc<TopologyUpdate>>,
        shutdown: watch::Receiver<bool>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Ctx { shared, options, updates, events, shutdown, commands, position: Epoch(0), skipped: false }
    }

    /// The newest epoch seen: a watch resumes after it.
    pub(crate) fn position(&self) -> Epoch {
        self.position
    }

    /// The last installed update (the placeholder before the first).
    pub(crate) fn current(&self) -> Arc<TopologyUpdate> {
        Arc::clone(&self.updates.borrow())
    }

    /// Compiles and installs `incoming` unless it is older than what is
    /// installed or already seen. Returns the installed epoch, `None` for a
    /// duplicate. An invalid topology is skipped (logged, counted, kept as
    /// the last error): the router keeps the last good one.
    pub(crate) async fn install(&mut self, incoming: Incoming) -> Result<Option<Epoch>, WatchError> {
        let (received_at, received) = (SystemTime::now(), Instant::now());
        let epoch = incoming.topology.epoch;
        let current = self.current();
        if incoming.kind == UpdateKind::Change && epoch <= self.position {
            debug!(epoch = epoch.0, position = self.position.0, "skipping an epoch already seen");
            return Ok(None);
        }
        if current.is_loaded() {
            if epoch < current.epoch {
                debug!(epoch = epoch.0, installed = current.epoch.0, "skipping an older topology");
                return Err(StaleEpoch { installed: current.epoch, offered: epoch }.into());
            }
            if epoch == current.epoch && incoming.topology == current.topology {
                return Ok(None);
            }
        }
        let topology = Arc::clone(&incoming.topology);
        let compiled = tokio::task::spawn_blocking(move || Router::compile(&topology)).await;
        let router = match compiled {
            Ok(Ok(router)) => router,
            Ok(Err(source)) => {
                let error = WatchError::InvalidTopology { epoch, source };
                warn!(epoch = epoch.0, error = %error, "skipping an invalid topology; routing stays on the last good one");
                telemetry::count_invalid(&self.shared.name);
                return Err(self.skip(epoch, error));
            }
            Err(join) => {
                let error = WatchError::Internal { message: format!("compiling the router failed: {join}") };
                error!(epoch = epoch.0, error = %error, "skipping a topology that could not be compiled");
                return Err(self.skip(epoch, error));
            }
        };
        if let Err(stale) = self.shared.router.replace(router) {
            self.position = self.position.max(epoch);
            return Err(stale.into());
        }
        let changes = match incoming.changes {
            Some(changes) if !self.skipped && current.is_loaded() => changes,
            _ => diff(&current.topology, &current.versions, &incoming.topology, &incoming.versions),
        };
        self.skipped = false;
        self.position = self.position.max(epoch);
        let update = Arc::new(TopologyUpdate {
            epoch,
            topology: incoming.topology,
            versions: incoming.versions,
            changes,
            kind: incoming.kind,
            received_at,
            received,
        });
        info!(epoch = epoch.0, kind = ?update.kind, changes = update.changes.len(), "topology installed");
        {
            let _publishing = self.shared.publishing();
            self.updates.send_replace(Arc::clone(&update));
            // No receiver is not an error: nobody asked for every update.
            let _ = self.events.send(update);
        }
        telemetry::set_epoch(&self.shared.name, epoch.0);
        telemetry::count_update(&self.shared.name);
        Ok(Some(epoch))
    }

    fn skip(&mut self, epoch: Epoch, error: WatchError) -> WatchError {
        self.position = self.position.max(epoch);
        self.skipped = true;
        self.shared.record_error(error.clone());
        error
    }

    /// Notes that the source answers.
    pub(crate) fn set_connected(&self) {
        let mut health = self.shared.health();
        if health.connected {
            return;
        }
        let down_for = health.lost_at.elapsed();
        health.connected = true;
        health.connected_at = Instant::now();
        drop(health);
        info!(down_for = ?down_for, "connected to the topology source");
        telemetry::set_stale(&self.shared.name, 0.0);
    }

    /// Notes that the source failed with `error`; returns how long the
    /// connection had been healthy (zero if it already was down).
    pub(crate) fn set_lost(&self, error: WatchError) -> Duration {
        let mut health = self.shared.health();
        let was_connected = health.connected;
        let healthy_for = if was_connected { health.connected_at.elapsed() } else { Duration::ZERO };
        if was_connected {
            health.connected = false;
            health.lost_at = Instant::now();
        }
        let stale = health.lost_at.elapsed();
        health.last_error = Some(error.clone());
        drop(health);
        if was_connected {
            warn!(error = %error, "lost the topology source; routing goes on with the last good topology");
        } else {
            debug!(error = %error, stale = ?stale, "the topology source is still unreachable");
        }
        telemetry::set_stale(&self.shared.name, stale.as_secs_f64());
        healthy_for
    }

    /// Waits for the next shutdown request or command.
    pub(crate) async fn next_signal(&mut self) -> Signal {
        tokio::select! {
            biased;
            // An error means the handle is gone: stop too.
            _ = self.shutdown.wait_for(|stop| *stop) => Signal::Shutdown,
            Some(command) = self.commands.recv() => Signal::Command(command),
        }
    }

    /// Sleeps for `delay` before a reconnection attempt. Reloads asked for
    /// meanwhile fail at once with the last error. Returns `false` when the
    /// watcher is to stop.
    pub(crate) async fn pause(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                signal = self.next_signal() => match signal {
                    Signal::Shutdown => return false,
                    Signal::Command(Command::Reload(reply)) => {
                        let error = self.shared.last_error().unwrap_or_else(|| WatchError::unavailable("the source is unreachable"));
                        let _ = reply.send(Err(error));
                    }
                },
            }
        }
        if let Some(stale) = self.shared.staleness() {
            telemetry::set_stale(&self.shared.name, stale.as_secs_f64());
        }
        telemetry::count_reconnect(&self.shared.name);
        true
    }

    /// Runs one request to the store with the request timeout; gives up
    /// with [`WatchError::Stopped`] when the watcher is to stop.
    pub(crate) async fn request<T>(
        &self,
        request: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, WatchError> {
        let timeout = self.options.request_timeout;
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => Err(WatchError::Stopped),
            answer = tokio::time::timeout(timeout, request) => match answer {
                Ok(result) => result.map_err(WatchError::from),
                Err(_) => Err(WatchError::unavailable(format!("no answer within {timeout:?}"))),
            },
        }
    }
}
