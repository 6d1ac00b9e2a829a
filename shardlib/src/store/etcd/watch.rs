//! The watch: one etcd watch on the cluster's topology keys
//! (`/<cluster>/keyspaces/` to `/<cluster>/ranges/`), applied to an
//! in-memory copy of them, one event per revision that changed a keyspace.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use etcd_client::{EventType, WatchOptions};

use super::EtcdStore;
use super::kv::{MAX_RESPONSE_BYTES, map_error};
use super::layout::{TopologyKey, prefix_end};
use super::meta::{self, Meta};
use super::read::{CHUNK_PAGE, corrupt};
use crate::id::{Epoch, KeyspaceName};
use crate::store::{Change, Snapshot, StoreError, WatchEvent, WatchStream};
use crate::topology::{Keyspace, Topology};

/// Meta documents per read request when a watch starts.
const META_PAGE: i64 = 64;

/// The watch of `store` from `after`, as a stream.
pub(super) fn watch(store: EtcdStore, after: Epoch) -> WatchStream {
    let watcher = Watcher::new(store, after);
    Box::pin(futures_util::stream::unfold(Some(watcher), |watcher| async move {
        let mut watcher = watcher?;
        match watcher.next().await {
            Ok(event) => Some((Ok(event), Some(watcher))),
            // An error ends the stream: the caller reconnects from its last epoch.
            Err(e) => Some((Err(e), None)),
        }
    }))
}

/// The raw topology keys as of the last applied revision.
#[derive(Default)]
struct Keys {
    /// Meta documents and their mod revisions.
    metas: BTreeMap<KeyspaceName, (Vec<u8>, i64)>,
    /// Chunks by keyspace and generation, then boundary.
    chunks: HashMap<(KeyspaceName, String), BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Keys {
    /// Applies a put (`Some`) or delete (`None`) of a topology key; returns
    /// the keyspace whose meta document it was.
    fn apply(&mut self, key: TopologyKey, value: Option<Vec<u8>>, revision: i64) -> Option<KeyspaceName> {
        match key {
            TopologyKey::Meta(name) => {
                match value {
                    Some(value) => self.metas.insert(name.clone(), (value, revision)),
                    None => self.metas.remove(&name),
                };
                Some(name)
            }
            TopologyKey::Chunk { keyspace, generation, boundary } => {
                let slot = (keyspace, generation);
                match value {
                    Some(value) => {
                        self.chunks.entry(slot).or_default().insert(boundary, value);
                    }
                    None => {
                        if let Some(chunks) = self.chunks.get_mut(&slot) {
                            chunks.remove(&boundary);
                            if chunks.is_empty() {
                                self.chunks.remove(&slot);
                            }
                        }
                    }
                }
                None
            }
        }
    }

    /// The keyspace `name` as the keys hold it (with its version), `None`
    /// if it has no meta document.
    fn keyspace(&self, name: &KeyspaceName) -> Result<Option<(Keyspace, Epoch)>, StoreError> {
        let Some((bytes, revision)) = self.metas.get(name) else { return Ok(None) };
        let meta = Meta::decode(bytes).map_err(|e| corrupt(name, e))?;
        let generation = meta.chunks.as_ref().map(|c| c.generation.clone()).unwrap_or_default();
        let chunks = self.chunks.get(&(name.clone(), generation));
        let keyspace =
            meta::assemble(meta, |boundary| chunks?.get(boundary).map(Vec::as_slice)).map_err(|e| match e {
                StoreError::Backend { message } => corrupt(name, message),
                other => other,
            })?;
        Ok(Some((keyspace, Epoch(*revision as u64))))
    }
}

struct Watcher {
    store: EtcdStore,
    /// The epoch of the last event delivered (or the start).
    last: Epoch,
    stream: Option<etcd_client::WatchStream>,
    keys: Keys,
    current: Snapshot,
    pending: VecDeque<WatchEvent>,
}

impl Watcher {
    fn new(store: EtcdStore, after: Epoch) -> Self {
        let mut topology = Topology::new(&store.inner.cluster);
        topology.epoch = after;
        let current = Snapshot { topology: Arc::new(topology), versions: BTreeMap::new() };
        Watcher { store, last: after, stream: None, keys: Keys::default(), current, pending: VecDeque::new() }
    }

    async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        if self.stream.is_none() {
            self.start().await?;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.snapshot.topology.epoch;
                return Ok(event);
            }
            let stream = self.stream.as_mut().expect("started");
            let endpoints = self.store.inner.kv.endpoints();
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(StoreError::Unavailable { message: format!("etcd at {endpoints} closed the watch") });
                }
                Err(e) => return Err(map_error(e, endpoints)),
            };
            if response.compact_revision() > 0 {
                let oldest = Epoch(response.compact_revision() as u64);
                return Err(StoreError::Compacted { requested: self.last, oldest });
            }
            if response.canceled() {
                let reason = response.cancel_reason();
                return Err(StoreError::Unavailable {
                    message: format!("etcd at {endpoints} cancelled the watch: {reason}"),
                });
            }
            let mut touched = BTreeSet::new();
            let mut revision = None;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let at = kv.mod_revision();
                if let Some(previous) = revision.filter(|&r| r != at) {
                    self.finish_revision(previous, std::mem::take(&mut touched))?;
                }
                revision = Some(at);
                let Some(key) = self.store.inner.layout.parse(kv.key()) else { continue };
                let value = (event.event_type() == EventType::Put).then(|| kv.value().to_vec());
                touched.extend(self.keys.apply(key, value, at));
            }
            if let Some(revision) = revision {
                self.finish_revision(revision, touched)?;
            }
        }
    }

    /// Reads the keys at the start epoch and opens the etcd watch after it.
    async fn start(&mut self) -> Result<(), StoreError> {
        let inner = &self.store.inner;
        let after = self.last;
        if after.0 > 0 {
            let revision = after.0 as i64;
            let read = async {
                let (_, metas) = inner.kv.get_prefix(&inner.layout.metas(), revision, META_PAGE).await?;
                let (_, chunks) = inner.kv.get_prefix(&inner.layout.all_ranges(), revision, CHUNK_PAGE).await?;
                Ok((metas, chunks))
            };
            let (metas, chunks) = match read.await {
                Ok(read) => read,
                Err(e) => return Err(self.store.read_error(e, after).await),
            };
            for kv in metas.iter().chain(&chunks) {
                if let Some(key) = inner.layout.parse(kv.key()) {
                    self.keys.apply(key, Some(kv.value().to_vec()), kv.mod_revision());
                }
            }
            let mut topology = Topology::new(&inner.cluster);
            topology.epoch = after;
            let mut versions = BTreeMap::new();
            let names: Vec<KeyspaceName> = self.keys.metas.keys().cloned().collect();
            for name in names {
                if let Some((keyspace, version)) = self.keys.keyspace(&name)? {
                    versions.insert(name.clone(), version);
                    topology.keyspaces.insert(name, keyspace);
                }
            }
            self.current = Snapshot { topology: Arc::new(topology), versions };
        }
        // From `keyspaces/` to the end of `ranges/` (which also spans the
        // rare `leader/` keys): client registrations and documents, written
        // often, never reach topology watchers.
        let end = prefix_end(&inner.layout.all_ranges());
        let options = WatchOptions::new().with_range(end).with_start_revision(after.0 as i64 + 1);
        let mut client = inner.client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let stream = client.watch(inner.layout.metas(), Some(options)).await.map_err(|e| inner.kv.error(e))?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Queues the event of `revision` if it changed keyspaces.
    fn finish_revision(&mut self, revision: i64, touched: BTreeSet<KeyspaceName>) -> Result<(), StoreError> {
        if touched.is_empty() {
            return Ok(());
        }
        let mut topology = (*self.current.topology).clone();
        topology.epoch = Epoch(revision as u64);
        let mut versions = self.current.versions.clone();
        let mut changes = Vec::with_capacity(touched.len());
        for name in touched {
            let existed = topology.keyspaces.contains_key(&name);
            match self.keys.keyspace(&name)? {
                Some((keyspace, version)) => {
                    topology.keyspaces.insert(name.clone(), keyspace);
                    versions.insert(name.clone(), version);
                    changes.push(if existed { Change::KeyspaceUpdated(name) } else { Change::KeyspaceCreated(name) });
                }
                None => {
                    topology.keyspaces.remove(&name);
                    versions.remove(&name);
                    if existed {
                        changes.push(Change::KeyspaceDeleted(name));
                    }
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.current = Snapshot { topology: Arc::new(topology), versions };
        self.pending.push_back(WatchEvent { snapshot: self.current.clone(), changes });
        Ok(())
    }
}
