//! [`LocalStore`]: the embedded topology store, a JSON file plus an
//! in-process watch, so that `shardd` runs with no setup at all.
//!
//! It keeps etcd's semantics: every write (keyspace, document, leadership)
//! makes a new revision, the epoch; writes compare the version the caller
//! read ([`Expect`]) and the writer's leadership ([`Fence`]); a watch sees
//! every topology change in order, as a complete snapshot.
//!
//! # Durability and exclusivity
//!
//! Every write replaces the file atomically before it returns: it is
//! written to `<file>.tmp`, flushed to disk, renamed over the file, and the
//! directory is flushed. The file is JSON:
//!
//! ```json
//! {
//!   "format": 1,
//!   "cluster": "dev",
//!   "revision": 42,
//!   "topology_epoch": 40,
//!   "keyspaces": { "users": { "version": 40, "keyspace": { "shards": [...], "partitioning": {...} } } },
//!   "documents": { "jobs": { "move-1": { "version": 42, "value": {...} } } }
//! }
//! ```
//!
//! `revision` is the current epoch, `topology_epoch` the last epoch at
//! which a keyspace changed, and each `version` the epoch of an item's last
//! change. [`LocalStore::open`] takes an exclusive lock on
//! `<file>.lock`, so a second process cannot open the same store; within
//! the process, clones of a `LocalStore` share one state.
//!
//! # Leadership
//!
//! The lock makes this process the only writer; within it,
//! [`TopologyStore::try_lead`] grants leadership to one caller at a time
//! until it resigns or drops its [`Leadership`]. The fencing token is the
//! epoch at which leadership was won (the revision is persisted, so tokens
//! never repeat). The `ttl` is not needed in-process and is ignored.
//!
//! # Client registrations
//!
//! Registrations live in memory only (they end with the process anyway)
//! and take no revision. Each has a deadline, its TTL from the last
//! renewal; its keeper renews it every third of the TTL. A registration
//! whose keeper stopped (its runtime shut down, the task was starved past
//! the deadline) is no longer listed once the deadline passes.
//!
//! # History
//!
//! The last [`HISTORY`] topology changes are kept in memory, so that a
//! watch can resume from any of them and [`TopologyStore::snapshot_at`] can
//! read them. Older epochs, epochs before the store was opened (history is
//! not persisted), and epochs before a [`TopologyStore::compact`] fail with
//! [`StoreError::Compacted`].

mod clients;
mod file;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, oneshot, watch};

use self::file::{FileLock, FileRef, KeyspaceRef, StoredDocument};
use super::{
    Change, ClientInfo, Document, Expect, Fence, LEADER_KEY, LeaderInfo, Leadership, Registration, Snapshot,
    StoreError, StoreFuture, TopologyStore, WatchEvent, WatchStream, describe_found, validate_document_path,
    validate_keyspace,
};
use crate::id::{Epoch, KeyspaceName, validate_name};
use crate::topology::{Keyspace, Topology};

/// How many topology changes are kept for watches and `snapshot_at`.
pub const HISTORY: usize = 1000;

/// The embedded topology store: a JSON file (or memory only) and an
/// in-process watch. Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    path: Option<PathBuf>,
    _lock: Option<FileLock>,
    state: Mutex<State>,
    /// The epoch of the newest topology change, for watchers to wait on.
    changed: watch::Sender<u64>,
}

struct State {
    revision: u64,
    /// The topology as of its last change (its `epoch` is that change's).
    topology: Arc<Topology>,
    versions: BTreeMap<KeyspaceName, Epoch>,
    documents: BTreeMap<String, BTreeMap<String, StoredDocument>>,
    /// `topology` relabelled with the current revision, made on demand.
    current: Option<Arc<Topology>>,
    /// The oldest epoch that `watch` and `snapshot_at` can start from.
    floor: u64,
    /// The state at `floor`.
    base: Snapshot,
    /// The changes after `floor`, oldest first.
    history: VecDeque<WatchEvent>,
    leader: Option<LeaderInfo>,
    /// Client registrations (in memory only: they live as long as this
    /// process), by id.
    clients: clients::Clients,
}

impl LocalStore {
    /// Opens the store file at `path` for `cluster`, creating it if
    /// missing, and locks it against other processes. Fails if the file
    /// belongs to another cluster, is not a valid store file or holds an
    /// invalid topology, or if another process has it open.
    pub fn open(path: impl AsRef<Path>, cluster: &str) -> Result<LocalStore, StoreError> {
        validate_name("cluster name", cluster)?;
        let path = path.as_ref().to_path_buf();
        let lock = FileLock::acquire(&path)?;
        let (state, created) = match file::read(&path)? {
            Some(stored) => {
                if stored.cluster != cluster {
                    return Err(StoreError::Backend {
                        message: format!(
                            "local store {} belongs to cluster {:?}, not {cluster:?}",
                            path.display(),
                            stored.cluster
                        ),
                    });
                }
                let mut topology = Topology::new(cluster);
                topology.epoch = Epoch(stored.topology_epoch);
                let mut versions = BTreeMap::new();
                for (name, stored) in stored.keyspaces {
                    versions.insert(name.clone(), stored.version);
                    topology.keyspaces.insert(name, stored.keyspace);
                }
                topology.validate()?;
                (State::new(topology, versions, stored.documents, stored.revision), false)
            }
            None => (State::new(Topology::new(cluster), BTreeMap::new(), BTreeMap::new(), 0), true),
        };
        let store = LocalStore::build(cluster, Some(path), Some(lock), state);
        if created {
            let state = store.inner.state.try_lock().expect("a new store is not shared yet");
            file::write_atomically(store.path().expect("opened from a file"), &store.serialize(&state)?)?;
        }
        Ok(store)
    }

    /// A store that lives in memory only, for tests and one-off tools.
    pub fn in_memory(cluster: &str) -> Result<LocalStore, StoreError> {
        validate_name("cluster name", cluster)?;
        let state = State::new(Topology::new(cluster), BTreeMap::new(), BTreeMap::new(), 0);
        Ok(LocalStore::build(cluster, None, None, state))
    }

    fn build(cluster: &str, path: Option<PathBuf>, lock: Option<FileLock>, state: State) -> LocalStore {
        let (changed, _) = watch::channel(state.topology.epoch.0);
        let inner = Inner { cluster: cluster.to_owned(), path, _lock: lock, state: Mutex::new(state), changed };
        LocalStore { inner: Arc::new(inner) }
    }

    /// The file this store lives in (`None` for [`LocalStore::in_memory`]).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The cluster this store holds.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    fn serialize(&self, state: &State) -> Result<Vec<u8>, StoreError> {
        let keyspaces = state
            .topology
            .keyspaces
            .iter()
            .map(|(name, keyspace)| (name, KeyspaceRef { version: state.versions[name], keyspace }))
            .collect();
        let file =
            FileRef::new(&self.inner.cluster, state.revision, state.topology.epoch.0, keyspaces, &state.documents);
        serde_json::to_vec_pretty(&file)
            .map_err(|e| StoreError::Backend { message: format!("cannot encode the local store: {e}") })
    }

    /// Writes the state to the file, if there is one.
    async fn persist(&self, state: &State) -> Result<(), StoreError> {
        let Some(path) = self.inner.path.clone() else { return Ok(()) };
        let bytes = self.serialize(state)?;
        tokio::task::spawn_blocking(move || file::write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::Backend { message: format!("local store writer task failed: {e}") })?
    }

    /// Applies a keyspace change (`None` deletes) at a new revision,
    /// persists it, and publishes it to watchers. On a failed write the
    /// state is left as it was.
    async fn change_keyspace(
        &self,
        state: &mut State,
        name: &KeyspaceName,
        keyspace: Option<&Keyspace>,
    ) -> Result<Epoch, StoreError> {
        let epoch = Epoch(state.revision + 1);
        let mut topology = (*state.topology).clone();
        topology.epoch = epoch;
        let mut versions = state.versions.clone();
        let change = match keyspace {
            Some(keyspace) => {
                versions.insert(name.clone(), epoch);
                match topology.keyspaces.insert(name.clone(), keyspace.clone()) {
                    Some(_) => Change::KeyspaceUpdated(name.clone()),
                    None => Change::KeyspaceCreated(name.clone()),
                }
            }
            None => {
                versions.remove(name);
                topology.keyspaces.remove(name);
                Change::KeyspaceDeleted(name.clone())
            }
        };
        let topology = Arc::new(topology);
        let old = (
            state.revision,
            std::mem::replace(&mut state.topology, topology.clone()),
            std::mem::replace(&mut state.versions, versions.clone()),
        );
        state.revision = epoch.0;
        if let Err(e) = self.persist(state).await {
            (state.revision, state.topology, state.versions) = old;
            return Err(e);
        }
        state.current = None;
        state.push(WatchEvent { snapshot: Snapshot { topology, versions }, changes: vec![change] });
        self.inner.changed.send_replace(epoch.0);
        Ok(epoch)
    }

    /// Bumps the revision for a change outside the topology, persisting it.
    /// `undo` restores what the caller changed if the write fails.
    async fn bump(&self, state: &mut State, undo: impl FnOnce(&mut State)) -> Result<Epoch, StoreError> {
        state.revision += 1;
        if let Err(e) = self.persist(state).await {
            state.revision -= 1;
            undo(state);
            return Err(e);
        }
        state.current = None;
        Ok(Epoch(state.revision))
    }
}

impl State {
    fn new(
        topology: Topology,
        versions: BTreeMap<KeyspaceName, Epoch>,
        documents: BTreeMap<String, BTreeMap<String, StoredDocument>>,
        revision: u64,
    ) -> State {
        let floor = topology.epoch.0;
        let topology = Arc::new(topology);
        let base = Snapshot { topology: topology.clone(), versions: versions.clone() };
        State {
            revision,
            topology,
            versions,
            documents,
            current: None,
            floor,
            base,
            history: VecDeque::new(),
            leader: None,
            clients: clients::Clients::default(),
        }
    }

    fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        match fence {
            Fence::None => Ok(()),
            Fence::Leader { key, token } => {
                let leads = key == LEADER_KEY && self.leader.as_ref().is_some_and(|leader| leader.token == *token);
                if leads { Ok(()) } else { Err(StoreError::Fenced { key: key.clone() }) }
            }
        }
    }

    fn push(&mut self, event: WatchEvent) {
        self.history.push_back(event);
        while self.history.len() > HISTORY {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.history.pop_front() {
            self.floor = oldest.snapshot.topology.epoch.0;
            self.base = oldest.snapshot;
        }
    }

    /// The topology as of now, labelled with the current revision.
    fn current(&mut self) -> Snapshot {
        let topology = if self.topology.epoch.0 == self.revision {
            self.topology.clone()
        } else {
            let revision = self.revision;
            let topology = &self.topology;
            self.current
                .get_or_insert_with(|| Arc::new(Topology { epoch: Epoch(revision), ..(**topology).clone() }))
                .clone()
        };
        Snapshot { topology, versions: self.versions.clone() }
    }

    fn compacted(&self, requested: Epoch) -> StoreError {
        StoreError::Compacted { requested, oldest: Epoch(self.floor) }
    }
}

/// Checks `expect` for a write of an item whose version is `current`.
fn check_put(item: impl FnOnce() -> String, expect: Expect, current: Option<Epoch>) -> Result<(), StoreError> {
    let ok = match expect {
        Expect::Absent => current.is_none(),
        Expect::Version(v) => current == Some(v),
        Expect::Any => true,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict { item: item(), expected: expect.describe(), found: describe_found(current) })
    }
}

/// Checks `expect` for a delete: the item must exist ([`StoreError::NotFound`]
/// otherwise, or a conflict when a version was expected).
fn check_delete(item: impl Fn() -> String, expect: Expect, current: Option<Epoch>) -> Result<(), StoreError> {
    match (current, expect) {
        (None, Expect::Version(_)) => check_put(item, expect, current),
        (None, _) => Err(StoreError::NotFound { item: item() }),
        (Some(_), Expect::Absent | Expect::Version(_)) => check_put(item, expect, current),
        (Some(_), Expect::Any) => Ok(()),
    }
}

impl TopologyStore for LocalStore {
    fn snapshot(&self) -> StoreFuture<'_, Snapshot> {
        Box::pin(async move { Ok(self.inner.state.lock().await.current()) })
    }

    fn snapshot_at(&self, epoch: Epoch) -> StoreFuture<'_, Snapshot> {
        Box::pin(async move {
            let state = self.inner.state.lock().await;
            if epoch.0 > state.revision {
                return Err(StoreError::NotFound { item: format!("epoch {epoch} (the newest is {})", state.revision) });
            }
            if epoch.0 < state.floor {
                return Err(state.compacted(epoch));
            }
            let at = state.history.iter().rev().find(|e| e.snapshot.topology.epoch <= epoch);
            let snapshot = at.map_or(&state.base, |event| &event.snapshot);
            let topology = Arc::new(Topology { epoch, ..(*snapshot.topology).clone() });
            Ok(Snapshot { topology, versions: snapshot.versions.clone() })
        })
    }

    fn put_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        keyspace: &'a Keyspace,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(async move {
            validate_keyspace(&self.inner.cluster, name, keyspace)?;
            let mut state = self.inner.state.lock().await;
            state.check_fence(fence)?;
            check_put(|| format!("keyspace {name}"), expect, state.versions.get(name).copied())?;
            self.change_keyspace(&mut state, name, Some(keyspace)).await
        })
    }

    fn delete_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            state.check_fence(fence)?;
            check_delete(|| format!("keyspace {name}"), expect, state.versions.get(name).copied())?;
            self.change_keyspace(&mut state, name, None).await
        })
    }

    fn watch(&self, after: Epoch) -> WatchStream {
        struct Watch {
            store: LocalStore,
            changed: watch::Receiver<u64>,
            last: Epoch,
            pending: VecDeque<WatchEvent>,
            done: bool,
        }
        let changed = self.inner.changed.subscribe();
        let start = Watch { store: self.clone(), changed, last: after, pending: VecDeque::new(), done: false };
        Box::pin(futures_util::stream::unfold(start, |mut w| async move {
            loop {
                if w.done {
                    return None;
                }
                if let Some(event) = w.pending.pop_front() {
                    w.last = event.snapshot.topology.epoch;
                    return Some((Ok(event), w));
                }
                // Mark the current value seen before reading the history, so
                // that a change published after the read wakes us up.
                w.changed.borrow_and_update();
                let compacted = {
                    let state = w.store.inner.state.lock().await;
                    let newer = state.history.iter().filter(|e| e.snapshot.topology.epoch > w.last);
                    w.pending.extend(newer.cloned());
                    (w.last.0 < state.floor).then(|| state.compacted(w.last))
                };
                if let Some(error) = compacted {
                    w.done = true;
                    return Some((Err(error), w));
                }
                if w.pending.is_empty() && w.changed.changed().await.is_err() {
                    return None;
                }
            }
        }))
    }

    fn compact(&self, epoch: Epoch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            if epoch.0 > state.revision {
                return Err(StoreError::NotFound { item: format!("epoch {epoch} (the newest is {})", state.revision) });
            }
            while state.history.front().is_some_and(|e| e.snapshot.topology.epoch <= epoch) {
                state.forget_oldest();
            }
            state.floor = state.floor.max(epoch.0);
            Ok(())
        })
    }

    fn try_lead<'a>(&'a self, candidate: &'a str, _ttl: Duration) -> StoreFuture<'a, Option<Leadership>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            if state.leader.is_some() {
                return Ok(None);
            }
            let token = self.bump(&mut state, |_| {}).await?;
            let info =
                LeaderInfo { candidate: candidate.to_owned(), key: LEADER_KEY.to_owned(), token: token.0 as i64 };
            state.leader = Some(info.clone());
            drop(state);
            let (lost_tx, lost_rx) = watch::channel(false);
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let store = self.clone();
            let token = info.token;
            let keeper = tokio::spawn(async move {
                // In-process leadership cannot expire: it ends on resign or drop.
                let _ = stop_rx.await;
                let mut state = store.inner.state.lock().await;
                if state.leader.as_ref().is_some_and(|leader| leader.token == token) {
                    state.leader = None;
                }
                lost_tx.send_replace(true);
                Ok(())
            });
            Ok(Some(Leadership::new(info, lost_rx, stop_tx, keeper)))
        })
    }

    fn leader(&self) -> StoreFuture<'_, Option<LeaderInfo>> {
        Box::pin(async move { Ok(self.inner.state.lock().await.leader.clone()) })
    }

    fn get_document<'a>(&'a self, collection: &'a str, id: &'a str) -> StoreFuture<'a, Option<Document>> {
        Box::pin(async move {
            validate_document_path(collection, Some(id))?;
            let state = self.inner.state.lock().await;
            let stored = state.documents.get(collection).and_then(|c| c.get(id));
            Ok(stored.map(|s| Document { id: id.to_owned(), value: s.value.clone(), version: s.version }))
        })
    }

    fn list_documents<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, Vec<Document>> {
        Box::pin(async move {
            validate_document_path(collection, None)?;
            let state = self.inner.state.lock().await;
            let documents = state.documents.get(collection).into_iter().flatten();
            Ok(documents
                .map(|(id, s)| Document { id: id.clone(), value: s.value.clone(), version: s.version })
                .collect())
        })
    }

    fn put_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        value: &'a serde_json::Value,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(async move {
            validate_document_path(collection, Some(id))?;
            let mut state = self.inner.state.lock().await;
            state.check_fence(fence)?;
            let current = state.documents.get(collection).and_then(|c| c.get(id)).map(|d| d.version);
            check_put(|| format!("document {collection}/{id}"), expect, current)?;
            let epoch = Epoch(state.revision + 1);
            let stored = StoredDocument { version: epoch, value: value.clone() };
            let old = state.documents.entry(collection.to_owned()).or_default().insert(id.to_owned(), stored);
            self.bump(&mut state, |state| restore_document(state, collection, id, old)).await
        })
    }

    fn delete_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(async move {
            validate_document_path(collection, Some(id))?;
            let mut state = self.inner.state.lock().await;
            state.check_fence(fence)?;
            let current = state.documents.get(collection).and_then(|c| c.get(id)).map(|d| d.version);
            check_delete(|| format!("document {collection}/{id}"), expect, current)?;
            let old = state.documents.get_mut(collection).and_then(|c| c.remove(id));
            self.bump(&mut state, |state| restore_document(state, collection, id, old)).await
        })
    }

    fn register_client<'a>(
        &'a self,
        id: &'a str,
        value: serde_json::Value,
        ttl: Duration,
    ) -> StoreFuture<'a, Registration> {
        Box::pin(clients::register(self, id, value, ttl))
    }

    fn list_clients(&self) -> StoreFuture<'_, Vec<ClientInfo>> {
        Box::pin(clients::list(self))
    }
}

/// Puts back a document that a failed write replaced or removed.
fn restore_document(state: &mut State, collection: &str, id: &str, old: Option<StoredDocument>) {
    let documents = state.documents.entry(collection.to_owned()).or_default();
    match old {
        Some(old) => documents.insert(id.to_owned(), old),
        None => documents.remove(id),
    };
    if documents.is_empty() {
        state.documents.remove(collection);
    }
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore").field("cluster", &self.inner.cluster).field("path", &self.inner.path).finish()
    }
}
