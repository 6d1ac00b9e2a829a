//! A topology file: read at start and on each manual reload.
//!
//! A file has no connection to lose: the watcher counts as connected unless
//! the last read failed because the file could not be read (then
//! [`staleness`](super::TopologyWatcher::staleness) counts from that
//! failure). A file that reads but is invalid is skipped like any invalid
//! topology: routing stays on the last good one and the error is kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::WatchError;
use super::state::{Command, Ctx, Incoming, Signal};
use super::telemetry;
use super::update::UpdateKind;
use crate::id::Epoch;
use crate::topology::{Topology, TopologyError};

/// Loads `path`, then serves reloads until shutdown. When the first load
/// fails and `fail_fast` is set, returns at once (the handle reports the
/// error); otherwise waits for a reload that succeeds.
pub(crate) async fn run(path: PathBuf, ctx: &mut Ctx, fail_fast: bool) {
    if let Err(error) = load(&path, ctx, UpdateKind::Initial).await {
        if fail_fast {
            return;
        }
        tracing::warn!(path = %path.display(), error = %error, "no topology loaded; waiting for a reload");
    }
    loop {
        match ctx.next_signal().await {
            Signal::Shutdown => return,
            Signal::Command(Command::Reload(reply)) => {
                let result = load(&path, ctx, UpdateKind::Reload).await;
                let _ = reply.send(result);
            }
        }
    }
}

/// Reads, validates and installs the file; returns the installed epoch.
async fn load(path: &Path, ctx: &mut Ctx, kind: UpdateKind) -> Result<Epoch, WatchError> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || Topology::load(&owned)).await;
    let topology = match read {
        Ok(Ok(topology)) => topology,
        Ok(Err(source)) => {
            let unreadable = matches!(source, TopologyError::Io { .. });
            let error = WatchError::File { path: path.to_owned(), source };
            if unreadable {
                ctx.set_lost(error.clone());
            } else {
                tracing::warn!(path = %path.display(), error = %error, "skipping an invalid topology file; routing stays on the last good one");
                telemetry::count_invalid(&ctx.shared.name);
                ctx.shared.record_error(error.clone());
            }
            return Err(error);
        }
        Err(join) => {
            let error = WatchError::Internal { message: format!("reading the topology file failed: {join}") };
            ctx.shared.record_error(error.clone());
            return Err(error);
        }
    };
    ctx.set_connected();
    let reason = if kind == UpdateKind::Initial { "initial" } else { "manual" };
    telemetry::count_reload(&ctx.shared.name, reason);
    let incoming = Incoming { topology: Arc::new(topology), versions: BTreeMap::new(), changes: None, kind };
    ctx.install(incoming).await?;
    Ok(ctx.current().epoch)
}
