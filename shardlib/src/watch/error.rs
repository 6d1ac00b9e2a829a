//! Why a watcher operation failed.

use std::path::PathBuf;
use std::time::Duration;

use crate::id::Epoch;
use crate::router::StaleEpoch;
use crate::store::StoreError;
use crate::topology::TopologyError;

/// A watcher could not start, a topology was skipped, or a wait timed out.
///
/// Errors are `Clone`: the watcher keeps the most recent one for
/// [`TopologyWatcher::last_error`](super::TopologyWatcher::last_error).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The [`WatchOptions`](super::WatchOptions) contradict themselves.
    #[error("invalid watcher options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// The watcher was started outside a tokio runtime.
    #[error("the topology watcher must be started inside a tokio runtime")]
    NoRuntime,
    /// [`TopologyWatcher::start`](super::TopologyWatcher::start) loaded no
    /// topology within its deadline.
    #[error("no topology loaded within {waited:?}: {}", describe_last(last.as_deref()))]
    InitialLoad {
        /// How long the watcher tried.
        waited: Duration,
        /// The last failure seen while trying, if any.
        last: Option<Box<WatchError>>,
    },
    /// The topology store failed (unreachable, compacted, refused, …).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A topology does not compile into a router. It was skipped: routing
    /// goes on with the last good topology.
    #[error("topology epoch {epoch} is invalid and was skipped: {source}")]
    InvalidTopology {
        /// The epoch of the skipped topology.
        epoch: Epoch,
        /// Why it is invalid.
        #[source]
        source: TopologyError,
    },
    /// A topology file could not be read, parsed or validated.
    #[error("topology file {path}: {source}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: TopologyError,
    },
    /// The offered topology is older than the installed one.
    #[error(transparent)]
    Stale(#[from] StaleEpoch),
    /// shardd's watch endpoint failed (connection, HTTP status, stream).
    #[error("shardd watch at {url}: {message}")]
    Shardd {
        /// The endpoint, with any password redacted.
        url: String,
        /// What failed.
        message: String,
    },
    /// [`TopologyWatcher::wait_for_epoch`](super::TopologyWatcher::wait_for_epoch)
    /// timed out.
    #[error("timed out after {waited:?} waiting for topology epoch {wanted} (installed: {installed})")]
    Timeout {
        /// The epoch waited for.
        wanted: Epoch,
        /// The epoch installed when the wait gave up.
        installed: Epoch,
        /// How long it waited.
        waited: Duration,
    },
    /// The watcher has stopped (shut down, or its task ended).
    #[error("the topology watcher has stopped")]
    Stopped,
    /// A bug in the watcher, such as compiling a router panicked. The
    /// topology concerned was skipped.
    #[error("internal watcher error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
    /// The source cannot do this.
    #[error("{operation} is not supported by the {source_kind} source")]
    Unsupported {
        /// The operation asked for, e.g. `reload`.
        operation: &'static str,
        /// The kind of source (`store`, `shardd`, `file`).
        source_kind: &'static str,
    },
}

fn describe_last(last: Option<&WatchError>) -> String {
    match last {
        Some(error) => error.to_string(),
        None => "the source has not answered".to_owned(),
    }
}

impl WatchError {
    /// Whether this says the source cannot be reached (as opposed to
    /// answering with something wrong).
    pub fn is_unavailable(&self) -> bool {
        match self {
            WatchError::Store(error) => error.is_transient(),
            WatchError::Shardd { .. } => true,
            _ => false,
        }
    }

    /// A store-unavailable error with this message.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        WatchError::Store(StoreError::Unavailable { message: message.into() })
    }
}
