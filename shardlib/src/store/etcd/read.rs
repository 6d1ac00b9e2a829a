//! Reads: snapshots of the topology at one revision, and documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::layout::TopologyKey;
use super::meta::{self, Meta};
use super::{CachedChunks, EtcdStore};
use crate::id::{Epoch, KeyspaceName};
use crate::store::{Document, Snapshot, StoreError, validate_document_path};
use crate::topology::{Keyspace, Topology};

/// Meta documents per read request (each a few KiB).
const META_PAGE: i64 = 64;

/// Chunks per read request (each at most ~192 KiB, so ≤ 1.5 MiB a page).
pub(super) const CHUNK_PAGE: i64 = 8;

/// Documents per read request.
const DOCUMENT_PAGE: i64 = 64;

/// The topology at `at` (`None`: the latest), read page by page at one
/// revision.
pub(super) async fn snapshot(store: &EtcdStore, at: Option<Epoch>) -> Result<Snapshot, StoreError> {
    let inner = &store.inner;
    let requested = at.unwrap_or_default();
    if at == Some(Epoch(0)) {
        // etcd reads "revision 0" as the latest; epoch 0 is the empty
        // topology before the first write, there unless compacted away.
        if let Err(e) = inner.kv.get(&inner.layout.metas(), 1).await {
            return Err(store.read_error(e, requested).await);
        }
        return Ok(Snapshot { topology: Arc::new(Topology::new(&inner.cluster)), versions: BTreeMap::new() });
    }
    let revision = at.map_or(0, |e| e.0 as i64);
    let (revision, metas) = match inner.kv.get_prefix(&inner.layout.metas(), revision, META_PAGE).await {
        Ok(read) => read,
        Err(e) => return Err(store.read_error(e, requested).await),
    };
    let mut topology = Topology::new(&inner.cluster);
    topology.epoch = Epoch(revision as u64);
    let mut versions = BTreeMap::new();
    for kv in metas {
        let Some(TopologyKey::Meta(name)) = inner.layout.parse(kv.key()) else { continue };
        let meta = Meta::decode(kv.value()).map_err(|e| corrupt(&name, e))?;
        let keyspace = load_keyspace(store, &name, meta, kv.mod_revision(), revision).await?;
        versions.insert(name.clone(), Epoch(kv.mod_revision() as u64));
        topology.keyspaces.insert(name, keyspace);
    }
    Ok(Snapshot { topology: Arc::new(topology), versions })
}

/// A keyspace from its meta document (last modified at `mod_revision`) and
/// its chunks read at `revision`, or from the cache.
pub(super) async fn load_keyspace(
    store: &EtcdStore,
    name: &KeyspaceName,
    meta: Meta,
    mod_revision: i64,
    revision: i64,
) -> Result<Keyspace, StoreError> {
    let Some(generation) = meta.chunks.as_ref().map(|c| c.generation.clone()) else { return Ok(meta.keyspace) };
    let chunks = load_chunks(store, name, &generation, mod_revision, revision).await?;
    meta::assemble(meta, |boundary| chunks.chunks.get(boundary).map(Vec::as_slice)).map_err(|e| match e {
        StoreError::Backend { message } => corrupt(name, message),
        other => other,
    })
}

/// The chunks of `generation` of a keyspace whose meta was last modified
/// at `mod_revision`, read at `revision` unless cached.
pub(super) async fn load_chunks(
    store: &EtcdStore,
    name: &KeyspaceName,
    generation: &str,
    mod_revision: i64,
    revision: i64,
) -> Result<Arc<CachedChunks>, StoreError> {
    if let Some(cached) = store.cached(name, mod_revision).filter(|c| c.generation == generation) {
        return Ok(cached);
    }
    let inner = &store.inner;
    let prefix = inner.layout.generation(name, generation);
    let (_, kvs) = match inner.kv.get_prefix(&prefix, revision, CHUNK_PAGE).await {
        Ok(read) => read,
        Err(e) => return Err(store.read_error(e, Epoch(revision as u64)).await),
    };
    let mut chunks = BTreeMap::new();
    for kv in kvs {
        if let Some(TopologyKey::Chunk { boundary, .. }) = inner.layout.parse(kv.key()) {
            chunks.insert(boundary, kv.value().to_vec());
        }
    }
    let cached = Arc::new(CachedChunks { mod_revision, generation: generation.to_owned(), chunks });
    store.remember(name, Some(cached.clone()));
    Ok(cached)
}

/// The error for a keyspace whose stored form cannot be read.
pub(super) fn corrupt(name: &KeyspaceName, message: String) -> StoreError {
    StoreError::Backend { message: format!("keyspace {name} is stored in a form that cannot be read: {message}") }
}

/// Reads one document.
pub(super) async fn get_document(
    store: &EtcdStore,
    collection: &str,
    id: &str,
) -> Result<Option<Document>, StoreError> {
    validate_document_path(collection, Some(id))?;
    let inner = &store.inner;
    let (_, kv) =
        inner.kv.get(&inner.layout.document(collection, id), 0).await.map_err(|e| super::etcd_error(&inner.kv, e))?;
    kv.map(|kv| document(collection, id, kv.value(), kv.mod_revision())).transpose()
}

/// Reads every document of a collection, at one revision.
pub(super) async fn list_documents(store: &EtcdStore, collection: &str) -> Result<Vec<Document>, StoreError> {
    validate_document_path(collection, None)?;
    let inner = &store.inner;
    let prefix = inner.layout.documents(collection);
    let (_, kvs) = inner.kv.get_prefix(&prefix, 0, DOCUMENT_PAGE).await.map_err(|e| super::etcd_error(&inner.kv, e))?;
    kvs.iter()
        .filter_map(|kv| {
            let id = std::str::from_utf8(kv.key()).ok()?.strip_prefix(prefix.as_str())?;
            Some(document(collection, id, kv.value(), kv.mod_revision()))
        })
        .collect()
}

fn document(collection: &str, id: &str, value: &[u8], mod_revision: i64) -> Result<Document, StoreError> {
    let value = serde_json::from_slice(value)
        .map_err(|e| StoreError::Backend { message: format!("document {collection}/{id} is not valid json: {e}") })?;
    Ok(Document { id: id.to_owned(), value, version: Epoch(mod_revision as u64) })
}
