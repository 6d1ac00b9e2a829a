//! Keeping a process's router up to date: the [`TopologyWatcher`].
//!
//! A watcher loads the topology from a [`Source`], compiles it into the
//! [`SharedRouter`] it owns, and then follows every change in a background
//! tokio task:
//!
//! - **Store** ([`Source::Store`]: etcd or the embedded local store): one
//!   snapshot, then a watch from the next epoch. After a lost connection it
//!   reconnects with exponential backoff and jitter (`backoff_min` to
//!   `backoff_max`, reset after a healthy period) and resumes after the
//!   last epoch it saw, so no version is missed; if the store compacted
//!   that history away, it reads the whole topology again and installs it
//!   as one [`UpdateKind::Resync`] update.
//! - **shardd** (`Source::Shardd`, feature `shardd-source`): shardd's
//!   `GET /v1/watch?after=N` server-sent events, for services that cannot
//!   reach the store (shardd's embedded store). Reconnects the same way,
//!   with `Last-Event-ID` and `after` set to the last epoch seen.
//! - **File** ([`Source::File`]): read once; read again on
//!   [`TopologyWatcher::reload`].
//!
//! Routing never waits for the watcher: lookups read the installed router
//! through an atomic pointer, and a new router replaces it in one swap.
//! Epochs only move forward. While the source is unreachable, routing goes
//! on with the last good topology; [`TopologyWatcher::staleness`] and the
//! `shardlib_topology_stale_seconds` gauge say for how long. A topology that
//! does not compile is logged, counted and skipped; the router keeps the
//! last good one and [`TopologyWatcher::last_error`] says why.
//!
//! Services learn about changes through [`TopologyWatcher::subscribe`] (a
//! `tokio::sync::watch` receiver of the latest [`TopologyUpdate`]) or
//! [`TopologyWatcher::updates`] (every update, in order). Each update
//! carries its epoch, the topology, what changed and when it was received.
//!
//! With a file (a store or shardd works the same way, with changes pushed
//! instead of reloaded):
//!
//! ```no_run
//! use shardlib::watch::{Source, TopologyWatcher, WatchOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let watcher = TopologyWatcher::start(Source::file("topology.toml"), WatchOptions::named("users-api")).await?;
//! let shard = watcher.router().load().route("users", "alice")?.clone();
//! println!("alice lives on {shard}");
//!
//! let mut changes = watcher.subscribe();
//! while changes.changed().await.is_ok() {
//!     let update = changes.borrow_and_update().clone();
//!     println!("epoch {}: {:?}", update.epoch, update.changes);
//! }
//! watcher.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! With [`WatchOptions::register_as`], a store watcher also registers
//! itself as a client of the store, reporting its installed epoch, so that
//! operators can see which services lag (shardd's `GET /v1/clients`).
//!
//! Metrics go through the `metrics` facade (names in [`telemetry`]); the
//! library installs no exporter.

mod backoff;
mod error;
mod file_source;
mod options;
mod registration;
#[cfg(feature = "shardd-source")]
mod shardd_source;
#[cfg(feature = "shardd-source")]
mod sse;
mod state;
mod store_source;
pub mod telemetry;
#[cfg(test)]
mod tests;
mod update;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use error::WatchError;
pub use options::{Source, WatchOptions};
pub use update::{TopologyUpdate, UpdateKind};

use self::state::{Command, Ctx, Shared};
use crate::id::Epoch;
use crate::router::{Router, SharedRouter};

/// Follows a topology source and keeps a [`SharedRouter`] up to date.
///
/// Dropping the watcher stops its task; [`shutdown`](Self::shutdown) also
/// waits for it. The router it hands out keeps working after that, frozen
/// at the last topology.
pub struct TopologyWatcher {
    shared: Arc<Shared>,
    updates: watch::Receiver<Arc<TopologyUpdate>>,
    events: broadcast::WeakSender<Arc<TopologyUpdate>>,
    commands: mpsc::Sender<Command>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Keeps the client registration ([`WatchOptions::register_as`]).
    registration: Option<JoinHandle<()>>,
}

impl TopologyWatcher {
    /// Starts a watcher and waits until it has installed a first topology,
    /// for at most `options.initial_load_timeout`. Retries meanwhile with
    /// backoff, except for a file source, which fails at once.
    ///
    /// Fails with [`WatchError::InitialLoad`] (carrying the last failure) at
    /// the deadline, with [`WatchError::File`] for a file that cannot be
    /// loaded, and with [`WatchError::NoRuntime`] outside a tokio runtime.
    pub async fn start(source: Source, options: WatchOptions) -> Result<TopologyWatcher, WatchError> {
        let timeout = options.initial_load_timeout;
        let started = Instant::now();
        let watcher = TopologyWatcher::spawn(source, options, true)?;
        let mut updates = watcher.updates.clone();
        let loaded = tokio::time::timeout(timeout, async { updates.wait_for(|u| u.is_loaded()).await.map(drop) }).await;
        match loaded {
            Ok(Ok(())) => Ok(watcher),
            Ok(Err(_stopped)) => {
                let error = watcher.shared.last_error().unwrap_or(WatchError::Stopped);
                watcher.shutdown().await;
                Err(error)
            }
            Err(_elapsed) => {
                let last = watcher.shared.last_error().map(Box::new);
                watcher.shutdown().await;
                Err(WatchError::InitialLoad { waited: started.elapsed(), last })
            }
        }
    }

    /// Starts a watcher without waiting for the first topology. Until it is
    /// loaded, the router is empty (epoch 0, no keyspace: every lookup fails
    /// with [`RouteError::UnknownKeyspace`](crate::RouteError::UnknownKeyspace))
    /// and [`subscribe`](Self::subscribe) shows an
    /// [`UpdateKind::Placeholder`]. Use [`wait_for_epoch`](Self::wait_for_epoch)
    /// to wait for it.
    pub fn start_lazy(source: Source, options: WatchOptions) -> Result<TopologyWatcher, WatchError> {
        TopologyWatcher::spawn(source, options, false)
    }

    fn spawn(source: Source, options: WatchOptions, fail_fast: bool) -> Result<TopologyWatcher, WatchError> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        telemetry::describe();
        let placeholder = TopologyUpdate::placeholder();
        let empty = Router::compile(&placeholder.topology)
            .map_err(|source| WatchError::InvalidTopology { epoch: Epoch(0), source })?;
        let router = Arc::new(SharedRouter::new(empty));
        let shared = Arc::new(Shared::new(options.name.clone(), source.kind(), router));
        let (updates_tx, updates) = watch::channel(Arc::new(placeholder));
        let (events_tx, _) = broadcast::channel(options.update_buffer);
        let events = events_tx.downgrade();
        let (commands, commands_rx) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let span = tracing::info_span!("topology_watcher", watcher = %options.name, source = source.kind());
        let registration = match (&options.register_as, &source) {
            (None, _) => None,
            (Some(id), Source::Store(store)) => {
                let reporter = registration::Reporter {
                    store: Arc::clone(store),
                    id: id.clone(),
                    ttl: options.registration_ttl,
                    name: options.name.clone(),
                    updates: updates.clone(),
                    shutdown: shutdown.subscribe(),
                    backoff: (options.backoff_min, options.backoff_max),
                };
                Some(runtime.spawn(reporter.run().instrument(span.clone())))
            }
            (Some(_), other) => {
                let reason = format!("register_as needs a store source, not {}", other.kind());
                return Err(WatchError::InvalidOptions { reason });
            }
        };
        let mut ctx = Ctx::new(Arc::clone(&shared), options, updates_tx, events_tx, shutdown_rx, commands_rx);
        let task = runtime.spawn(async move { run(source, &mut ctx, fail_fast).await }.instrument(span));
        Ok(TopologyWatcher { shared, updates, events, commands, shutdown, task: Some(task), registration })
    }

    /// The router, always the newest installed topology. Lookups through
    /// [`SharedRouter::load`] never block. Clone the `Arc` to keep it beyond
    /// the watcher's lifetime.
    pub fn router(&self) -> &Arc<SharedRouter> {
        &self.shared.router
    }

    /// A receiver of the latest update: `borrow()` shows the installed one,
    /// `changed()` wakes on the next install. A slow reader sees only the
    /// newest (intermediate updates are skipped; their changes are not
    /// folded in). For every update, use [`updates`](Self::updates).
    /// `changed()` fails once the watcher has stopped.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopologyUpdate>> {
        let mut receiver = self.updates.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// A receiver of every update installed after [`current`](Self::current)
    /// as it is at this call, in epoch order, with none left out. It buffers
    /// `options.update_buffer` updates; a receiver that falls further behind
    /// gets [`broadcast::error::RecvError::Lagged`]. Closed once the watcher
    /// has stopped.
    ///
    /// To follow every version: call `updates()`, then take `current()` as
    /// the starting point and skip received updates at or below its epoch
    /// (one may have been installed between the two calls). Do not call it
    /// while holding a `borrow()` of a [`subscribe`](Self::subscribe)
    /// receiver: publishing waits for that borrow, and this call for
    /// publishing.
    pub fn updates(&self) -> broadcast::Receiver<Arc<TopologyUpdate>> {
        let _publishing = self.shared.publishing();
        match self.events.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// The latest installed update (the placeholder before the first load).
    pub fn current(&self) -> Arc<TopologyUpdate> {
        Arc::clone(&self.updates.borrow())
    }

    /// The epoch of the installed router (0 before the first load).
    pub fn epoch(&self) -> Epoch {
        self.shared.router.epoch()
    }

    /// Whether a topology has been installed.
    pub fn is_loaded(&self) -> bool {
        self.updates.borrow().is_loaded()
    }

    /// Whether the watcher has a working connection to its source: the
    /// source answered since the last failure was detected.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// How long the watcher has been without a working connection to its
    /// source; `None` while it has one.
    ///
    /// - `None` from the moment the source answers (a read, a watch event,
    ///   a health probe, an accepted shardd stream) until a failure is
    ///   detected.
    /// - `Some(d)` while disconnected: `d` is the time since the watcher
    ///   detected the loss (the watch stream failed or ended, a request or
    ///   health probe failed or timed out), or since the watcher was created
    ///   if it never connected.
    ///
    /// It bounds from below how long changes may have been missed; the true
    /// loss can precede its detection by up to `health_check_interval +
    /// request_timeout`. It does not say the topology is outdated: nothing
    /// may have changed meanwhile.
    pub fn staleness(&self) -> Option<Duration> {
        self.shared.staleness()
    }

    /// The most recent failure: a lost connection, a rejected request, a
    /// skipped invalid topology. Kept after recovery; use
    /// [`is_connected`](Self::is_connected) for the present state.
    pub fn last_error(&self) -> Option<WatchError> {
        self.shared.last_error()
    }

    /// Waits until a topology of epoch `epoch` or newer is installed, for at
    /// most `timeout`, and returns the update that reached it. For tests and
    /// for writers waiting on a cutover.
    pub async fn wait_for_epoch(&self, epoch: Epoch, timeout: Duration) -> Result<Arc<TopologyUpdate>, WatchError> {
        let started = Instant::now();
        let mut updates = self.updates.clone();
        let reached = async { updates.wait_for(|u| u.is_loaded() && u.epoch >= epoch).await.map(|u| Arc::clone(&u)) };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(update)) => Ok(update),
            Ok(Err(_stopped)) => Err(WatchError::Stopped),
            Err(_elapsed) => {
                Err(WatchError::Timeout { wanted: epoch, installed: self.epoch(), waited: started.elapsed() })
            }
        }
    }

    /// Reads the whole topology again now and installs it if it is new;
    /// returns the epoch installed afterwards. A file is read again; a store
    /// is asked for a snapshot (fails at once while it is unreachable). An
    /// invalid topology is refused and the router keeps the last good one.
    /// Not supported by the shardd source.
    pub async fn reload(&self) -> Result<Epoch, WatchError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Reload(reply)).await.map_err(|_| WatchError::Stopped)?;
        answer.await.map_err(|_| WatchError::Stopped)?
    }

    /// The watcher's name (its metrics' `watcher` label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The kind of source: `store`, `shardd` or `file`.
    pub fn source_kind(&self) -> &'static str {
        self.shared.source_kind
    }

    /// Stops the task and waits for it to end (and for the client
    /// registration, if any, to be removed).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(registration) = self.registration.take() {
            let _ = registration.await;
        }
    }
}

impl fmt::Debug for TopologyWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopologyWatcher")
            .field("name", &self.shared.name)
            .field("source", &self.shared.source_kind)
            .field("epoch", &self.epoch())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Drop for TopologyWatcher {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Dropping the registration removes it in the background.
        if let Some(registration) = self.registration.take() {
            registration.abort();
        }
    }
}

async fn run(source: Source, ctx: &mut Ctx, fail_fast: bool) {
    match source {
        Source::Store(store) => store_source::run(store, ctx).await,
        #[cfg(feature = "shardd-source")]
        Source::Shardd { url, token } => shardd_source::run(&url, token.as_deref(), ctx).await,
        Source::File(path) => file_source::run(path, ctx, fail_fast).await,
    }
    tracing::debug!("topology watcher stopped");
}
