//! The local store's file: its JSON format, atomic replacement and the
//! lock that keeps a second process out.
//!
//! ```json
//! {
//!   "format": 1,
//!   "cluster": "dev",
//!   "revision": 42,
//!   "topology_epoch": 40,
//!   "keyspaces": { "users": { "version": 40, "keyspace": { "shards": […], "partitioning": {…} } } },
//!   "documents": { "jobs": { "move-1": { "version": 42, "value": {…} } } }
//! }
//! ```
//!
//! `revision` is the store's epoch (every write bumps it, leadership
//! included, so that fencing tokens stay unique across restarts);
//! `topology_epoch` is the last epoch at which a keyspace changed. The file
//! is replaced on every write: written to `<file>.tmp`, flushed to disk,
//! renamed over the file, and the directory flushed. An exclusive lock on
//! `<file>.lock` (held while the store is open, released by the operating
//! system when the process ends) keeps other processes from opening it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::{Epoch, KeyspaceName};
use crate::store::StoreError;
use crate::topology::Keyspace;

/// The file format version written and accepted.
const FORMAT: u32 = 1;

/// The whole file, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileState {
    format: u32,
    pub(super) cluster: String,
    pub(super) revision: u64,
    pub(super) topology_epoch: u64,
    #[serde(default)]
    pub(super) keyspaces: BTreeMap<KeyspaceName, StoredKeyspace>,
    #[serde(default)]
    pub(super) documents: BTreeMap<String, BTreeMap<String, StoredDocument>>,
}

/// A keyspace and the epoch of its last change, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredKeyspace {
    pub(super) version: Epoch,
    pub(super) keyspace: Keyspace,
}

/// A document and the epoch of its last change.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredDocument {
    pub(super) version: Epoch,
    pub(super) value: serde_json::Value,
}

/// The whole file, as written (borrowing the store's state).
#[derive(Serialize)]
pub(super) struct FileRef<'a> {
    format: u32,
    pub(super) cluster: &'a str,
    pub(super) revision: u64,
    pub(super) topology_epoch: u64,
    pub(super) keyspaces: BTreeMap<&'a KeyspaceName, KeyspaceRef<'a>>,
    pub(super) documents: &'a BTreeMap<String, BTreeMap<String, StoredDocument>>,
}

/// A keyspace and its version, as written.
#[derive(Serialize)]
pub(super) struct KeyspaceRef<'a> {
    pub(super) version: Epoch,
    pub(super) keyspace: &'a Keyspace,
}

impl<'a> FileRef<'a> {
    /// A file of `cluster` holding the given state.
    pub(super) fn new(
        cluster: &'a str,
        revision: u64,
        topology_epoch: u64,
        keyspaces: BTreeMap<&'a KeyspaceName, KeyspaceRef<'a>>,
        documents: &'a BTreeMap<String, BTreeMap<String, StoredDocument>>,
    ) -> Self {
        FileRef { format: FORMAT, cluster, revision, topology_epoch, keyspaces, documents }
    }
}

/// Reads and parses the file, or `None` if it does not exist.
pub(super) fn read(path: &Path) -> Result<Option<FileState>, StoreError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read local store", path, &e)),
    };
    let state: FileState = serde_json::from_slice(&text).map_err(|e| StoreError::Backend {
        message: format!("local store {} is not a valid store file: {e}", path.display()),
    })?;
    if state.format != FORMAT {
        return Err(StoreError::Backend {
            message: format!("local store {} has format {}, this version reads {FORMAT}", path.display(), state.format),
        });
    }
    Ok(Some(state))
}

/// Replaces the file with `bytes` atomically: a reader (or a crash) sees
/// either the old or the new content, never a mix.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = sibling(path, "tmp");
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_parent(path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        let error = io_error("cannot write local store", path, &e);
        // A full or failing disk may recover: the caller may retry.
        StoreError::Unavailable { message: error.to_string() }
    })
}

/// Flushes the directory entry of `path` (the rename) to disk.
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The exclusive lock on `<file>.lock`, held until dropped.
pub(super) struct FileLock {
    _lock: fd_lock::RwLock<File>,
}

impl FileLock {
    /// Takes the lock without waiting; fails with
    /// [`StoreError::Unavailable`] if another process holds it.
    pub(super) fn acquire(path: &Path) -> Result<FileLock, StoreError> {
        let lock_path = sibling(path, "lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("cannot open lock file", &lock_path, &e))?;
        let mut lock = fd_lock::RwLock::new(file);
        match lock.try_write() {
            // The guard would unlock on drop; forgetting it keeps the lock
            // until the file is closed, i.e. until this `FileLock` drops.
            Ok(guard) => std::mem::forget(guard),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(StoreError::Unavailable {
                    message: format!(
                        "local store {} is in use by another process (it holds {})",
                        path.display(),
                        lock_path.display()
                    ),
                });
            }
            Err(e) => return Err(io_error("cannot lock", &lock_path, &e)),
        }
        Ok(FileLock { _lock: lock })
    }
}

/// `<path>.<extension>`, beside `path`.
fn sibling(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> StoreError {
    StoreError::Backend { message: format!("{what} {}: {e}", path.display()) }
}
