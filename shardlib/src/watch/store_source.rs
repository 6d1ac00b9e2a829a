//! Watching a [`TopologyStore`]: a snapshot, then every change after it.
//!
//! The loop remembers the newest epoch it has seen. After a lost connection
//! it waits (exponential backoff with jitter), asks the store something
//! cheap to learn that it answers again, and resumes the watch after that
//! epoch, so no version is missed. When the store has compacted that
//! history away, it reads the whole topology again and installs it as one
//! [`UpdateKind::Resync`] update, then watches from there.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{debug, info};

use super::WatchError;
use super::backoff::Backoff;
use super::state::{Command, Ctx, Incoming, Signal};
use super::telemetry;
use super::update::UpdateKind;
use crate::store::{StoreError, TopologyStore};

/// The document the health probe reads. It need not exist: any answer of
/// the store, even "not found", shows that the store is reachable.
const PROBE: (&str, &str) = ("clients", "shardlib-watcher-probe");

/// How the inner watch loop ended.
enum Ended {
    /// Stop the watcher.
    Shutdown,
    /// The history to resume from is gone: read everything again.
    Compacted,
    /// The connection failed: back off and reconnect.
    Failed(WatchError),
}

pub(crate) async fn run(store: Arc<dyn TopologyStore>, ctx: &mut Ctx) {
    let mut backoff = Backoff::new(ctx.options.backoff_min, ctx.options.backoff_max);
    // Read everything when starting and after a compaction; else resume.
    let mut read_all = Some(UpdateKind::Initial);
    // Whether the store answered the last read-all and nothing since.
    let mut just_loaded = false;
    let mut reconnecting = false;
    loop {
        let ended = match read_all {
            Some(kind) => match load(&*store, ctx, kind).await {
                Ok(()) => {
                    (read_all, just_loaded, reconnecting) = (None, true, false);
                    continue;
                }
                Err(error) => Ended::Failed(error),
            },
            None => {
                let (ended, events) = watch(&*store, ctx, reconnecting).await;
                just_loaded &= events == 0;
                ended
            }
        };
        let delay = match ended {
            Ended::Shutdown | Ended::Failed(WatchError::Stopped) => return,
            // Compacted right after a full read, with no change seen in
            // between: something compacts as fast as we read. Do not spin.
            Ended::Compacted if just_loaded => {
                read_all = Some(UpdateKind::Resync);
                backoff.next_delay()
            }
            Ended::Compacted => {
                read_all = Some(UpdateKind::Resync);
                continue;
            }
            Ended::Failed(error) => {
                if ctx.set_lost(error) >= ctx.options.backoff_reset_after {
                    backoff.reset();
                }
                backoff.next_delay()
            }
        };
        reconnecting = true;
        debug!(delay = ?delay, "reconnecting to the topology store after a pause");
        if !ctx.pause(delay).await {
            return;
        }
    }
}

/// Reads the whole topology and installs it.
async fn load(store: &dyn TopologyStore, ctx: &mut Ctx, kind: UpdateKind) -> Result<(), WatchError> {
    let snapshot = ctx.request(store.snapshot()).await?;
    ctx.set_connected();
    let reason = if kind == UpdateKind::Initial { "initial" } else { "compacted" };
    telemetry::count_reload(&ctx.shared.name, reason);
    // An invalid topology is skipped inside `install`; the watch goes on
    // from its epoch.
    let _ = ctx.install(Incoming::snapshot(snapshot, kind)).await;
    Ok(())
}

/// Watches after the newest epoch seen until the stream fails. Returns how
/// it ended and how many events it received.
async fn watch(store: &dyn TopologyStore, ctx: &mut Ctx, reconnecting: bool) -> (Ended, u64) {
    let after = ctx.position();
    // Ask first, then watch: a member that answers a (linearizable) read has
    // caught up, so the watch sees its history as the cluster has it.
    if reconnecting {
        if let Err(error) = probe(store, ctx).await {
            return (Ended::Failed(error), 0);
        }
        info!(after = after.0, "resuming the topology watch");
    }
    let mut stream = store.watch(after);
    let mut events = 0;
    let health_interval = ctx.options.health_check_interval;
    let mut quiet_until = tokio::time::Instant::now() + health_interval.unwrap_or(Duration::MAX / 4);
    loop {
        tokio::select! {
            signal = ctx.next_signal() => match signal {
                Signal::Shutdown => return (Ended::Shutdown, events),
                Signal::Command(Command::Reload(reply)) => {
                    let result = reload(store, ctx).await;
                    let _ = reply.send(result);
                }
            },
            _ = tokio::time::sleep_until(quiet_until), if health_interval.is_some() => {
                if let Err(error) = probe(store, ctx).await {
                    return (Ended::Failed(error), events);
                }
                quiet_until = tokio::time::Instant::now() + health_interval.unwrap_or_default();
            }
            item = stream.next() => {
                match item {
                    Some(Ok(event)) => {
                        events += 1;
                        ctx.set_connected();
                        let incoming = Incoming {
                            topology: event.snapshot.topology,
                            versions: event.snapshot.versions,
                            changes: Some(event.changes),
                            kind: UpdateKind::Change,
                        };
                        // Invalid topologies are skipped inside `install`.
                        let _ = ctx.install(incoming).await;
                    }
                    Some(Err(StoreError::Compacted { requested, oldest })) => {
                        info!(requested = requested.0, oldest = oldest.0, "watch history compacted; reading the whole topology again");
                        return (Ended::Compacted, events);
                    }
                    Some(Err(error)) => return (Ended::Failed(error.into()), events),
                    None => return (Ended::Failed(WatchError::unavailable("the watch stream ended")), events),
                }
                if let Some(interval) = health_interval {
                    quiet_until = tokio::time::Instant::now() + interval;
                }
            }
        }
    }
}

/// Asks the store something cheap: reachable unless it is unavailable.
async fn probe(store: &dyn TopologyStore, ctx: &Ctx) -> Result<(), WatchError> {
    match ctx.request(store.get_document(PROBE.0, PROBE.1)).await {
        Err(error) if error.is_unavailable() || matches!(error, WatchError::Stopped) => Err(error),
        _ => {
            ctx.set_connected();
            Ok(())
        }
    }
}

/// A manual reload: the whole topology, installed if it is new.
async fn reload(store: &dyn TopologyStore, ctx: &mut Ctx) -> Result<crate::id::Epoch, WatchError> {
    let snapshot = ctx.request(store.snapshot()).await?;
    telemetry::count_reload(&ctx.shared.name, "manual");
    ctx.install(Incoming::snapshot(snapshot, UpdateKind::Reload)).await?;
    Ok(ctx.current().epoch)
}
