//! Writes: keyspaces (in one transaction, or in generations when large)
//! and documents, each compared with the version the caller read and the
//! leader key.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::KeyValue;

use super::chunks::{self, Chunk, Entry};
use super::kv::{MAX_TXN_BYTES, MAX_TXN_OPS, TxnBuilder, TxnOutcome};
use super::layout::prefix_end;
use super::meta::{self, Meta};
use super::read::load_chunks;
use super::{CachedChunks, EtcdStore, etcd_error};
use crate::id::{Epoch, KeyspaceName};
use crate::store::{Expect, Fence, StoreError, describe_found, validate_document_path, validate_keyspace};
use crate::topology::Keyspace;

/// A generation and its chunks by boundary, to remember after a write.
type ChunkMap = (String, BTreeMap<Vec<u8>, Vec<u8>>);

/// How often a write with [`Expect::Any`] is retried when it races.
const ANY_ATTEMPTS: usize = 8;

/// What one attempt of a write came to.
enum Attempt {
    /// Written at this epoch.
    Done(Epoch),
    /// The item changed between the read and the write, and the caller
    /// expected any version: read again and retry.
    Raced,
}

/// Creates or replaces a keyspace.
pub(super) async fn put_keyspace(
    store: &EtcdStore,
    name: &KeyspaceName,
    keyspace: &Keyspace,
    expect: Expect,
    fence: &Fence,
) -> Result<Epoch, StoreError> {
    validate_keyspace(&store.inner.cluster, name, keyspace)?;
    let split = meta::split(keyspace);
    for _ in 0..ANY_ATTEMPTS {
        if let Attempt::Done(epoch) = put_keyspace_once(store, name, keyspace, split.as_ref(), expect, fence).await? {
            return Ok(epoch);
        }
    }
    Err(raced(&format!("keyspace {name}")))
}

/// Deletes a keyspace: its meta document and every generation of chunks.
pub(super) async fn delete_keyspace(
    store: &EtcdStore,
    name: &KeyspaceName,
    expect: Expect,
    fence: &Fence,
) -> Result<Epoch, StoreError> {
    let inner = &store.inner;
    let meta_key = inner.layout.meta(name);
    let item = format!("keyspace {name}");
    for _ in 0..ANY_ATTEMPTS {
        let (_, current) = inner.kv.get(&meta_key, 0).await.map_err(|e| etcd_error(&inner.kv, e))?;
        let current = current.map(|kv| kv.mod_revision());
        check_delete(&item, expect, current)?;
        let mut txn = TxnBuilder::default();
        txn.mod_revision_is(&meta_key, current.expect("checked present"));
        txn.delete(&meta_key);
        let ranges = inner.layout.ranges(name);
        txn.delete_range(ranges.clone(), prefix_end(&ranges));
        let outcome = run(store, txn, &meta_key, fence).await?;
        if outcome.succeeded {
            store.remember(name, None);
            return Ok(Epoch(outcome.revision as u64));
        }
        if let Attempt::Done(_) = failed(&item, &outcome, expect, fence, None)? {
            unreachable!("a failed transaction is never done");
        }
    }
    Err(raced(&item))
}

/// Writes (`Some`) or deletes (`None`) a document.
pub(super) async fn put_document(
    store: &EtcdStore,
    collection: &str,
    id: &str,
    value: Option<&serde_json::Value>,
    expect: Expect,
    fence: &Fence,
) -> Result<Epoch, StoreError> {
    validate_document_path(collection, Some(id))?;
    let inner = &store.inner;
    let key = inner.layout.document(collection, id);
    let item = format!("document {collection}/{id}");
    let mut txn = TxnBuilder::default();
    match (value, expect) {
        (_, Expect::Version(version)) => txn.mod_revision_is(&key, version.0 as i64),
        (Some(_), Expect::Absent) => txn.absent(&key),
        (Some(_), Expect::Any) => {}
        (None, Expect::Any) => txn.present(&key),
        (None, Expect::Absent) => {
            // Deleting what must not exist: there is nothing to delete.
            let (_, current) = inner.kv.get(&key, 0).await.map_err(|e| etcd_error(&inner.kv, e))?;
            return Err(check_delete(&item, expect, current.map(|kv| kv.mod_revision())).err().unwrap_or_else(|| {
                StoreError::Backend { message: format!("{item}: cannot delete with expect absent") }
            }));
        }
    }
    match value {
        Some(value) => {
            let bytes = serde_json::to_vec(value).expect("json values always serialize");
            if bytes.len() > MAX_TXN_BYTES {
                return Err(StoreError::Backend {
                    message: format!("{item} is too large: {} bytes (limit {MAX_TXN_BYTES})", bytes.len()),
                });
            }
            txn.put(&key, bytes, None);
        }
        None => txn.delete(&key),
    }
    let outcome = run(store, txn, &key, fence).await?;
    if outcome.succeeded {
        return Ok(Epoch(outcome.revision as u64));
    }
    let found = outcome.reads.first().and_then(Option::as_ref).map(|kv| kv.mod_revision());
    if value.is_none() && expect == Expect::Any && found.is_none() && !is_fenced(&outcome, fence) {
        return Err(StoreError::NotFound { item });
    }
    match failed(&item, &outcome, expect, fence, None)? {
        Attempt::Done(_) | Attempt::Raced => Err(raced(&item)),
    }
}

/// One attempt to write a keyspace: read its current meta, then write the
/// difference in one transaction, or the whole keyspace in a new generation.
async fn put_keyspace_once(
    store: &EtcdStore,
    name: &KeyspaceName,
    keyspace: &Keyspace,
    split: Option<&(Keyspace, Vec<Entry>)>,
    expect: Expect,
    fence: &Fence,
) -> Result<Attempt, StoreError> {
    let inner = &store.inner;
    let item = format!("keyspace {name}");
    let meta_key = inner.layout.meta(name);
    let (read_revision, current) = inner.kv.get(&meta_key, 0).await.map_err(|e| etcd_error(&inner.kv, e))?;
    let current_version = current.as_ref().map(KeyValue::mod_revision);
    check_put(&item, expect, current_version)?;
    // An unreadable meta document is overwritten as a whole.
    let current_meta = current.and_then(|kv| Meta::decode(kv.value()).ok());
    let compare = |txn: &mut TxnBuilder| match current_version {
        Some(version) => txn.mod_revision_is(&meta_key, version),
        None => txn.absent(&meta_key),
    };

    let Some((bare, entries)) = split else {
        let mut txn = TxnBuilder::default();
        compare(&mut txn);
        txn.put(&meta_key, Meta::new(keyspace.clone(), None).encode(), None);
        let ranges = inner.layout.ranges(name);
        txn.delete_range(ranges.clone(), prefix_end(&ranges));
        check_size(&item, &txn)?;
        let outcome = run(store, txn, &meta_key, fence).await?;
        return finish(store, name, &item, outcome, expect, fence, None, current_version);
    };

    // The current chunks, to rewrite only those that change.
    let old = match current_meta.as_ref().and_then(|m| m.chunks.as_ref()) {
        Some(index) => {
            let version = current_version.expect("a meta was read");
            let chunks = load_chunks(store, name, &index.generation, version, read_revision).await?;
            index.boundary_bytes().ok().map(|boundaries| (chunks, boundaries))
        }
        None => None,
    };
    let planned = chunks::plan(entries, old.as_ref().map(|(_, boundaries)| boundaries.as_slice()));
    let (generation, changed, removed): (String, Vec<&Chunk>, Vec<&Vec<u8>>) = match &old {
        Some((chunks, _)) => {
            let changed = planned.iter().filter(|c| chunks.chunks.get(&c.boundary) != Some(&c.bytes)).collect();
            let kept: std::collections::HashSet<&Vec<u8>> = planned.iter().map(|c| &c.boundary).collect();
            let removed = chunks.chunks.keys().filter(|b| !kept.contains(b)).collect();
            (chunks.generation.clone(), changed, removed)
        }
        None => (new_generation(), planned.iter().collect(), Vec::new()),
    };
    let index = meta::index(&generation, entries.len(), &planned);
    let mut txn = TxnBuilder::default();
    compare(&mut txn);
    txn.put(&meta_key, Meta::new(bare.clone(), Some(index)).encode(), None);
    for chunk in &changed {
        txn.put(&inner.layout.chunk(name, &generation, &chunk.boundary), chunk.bytes.clone(), None);
    }
    for boundary in &removed {
        txn.delete(&inner.layout.chunk(name, &generation, boundary));
    }
    if old.is_none() {
        delete_other_generations(store, &mut txn, name, &generation);
    }
    if txn.bytes() <= MAX_TXN_BYTES && txn.ops() <= MAX_TXN_OPS {
        let outcome = run(store, txn, &meta_key, fence).await?;
        let cache = Some(cache_of(&generation, &planned));
        return finish(store, name, &item, outcome, expect, fence, cache, current_version);
    }
    drop(txn);

    // Too large for one transaction: a new generation, then the flip.
    let generation = new_generation();
    let fresh = if old.is_some() { chunks::plan(entries, None) } else { planned };
    let written = write_generation(store, name, &generation, &fresh, &compare, fence).await?;
    if let Some(outcome) = written {
        discard_generation(store, name, &generation).await;
        return finish(store, name, &item, outcome, expect, fence, None, current_version);
    }
    let mut txn = TxnBuilder::default();
    compare(&mut txn);
    let index = meta::index(&generation, entries.len(), &fresh);
    txn.put(&meta_key, Meta::new(bare.clone(), Some(index)).encode(), None);
    delete_other_generations(store, &mut txn, name, &generation);
    check_size(&item, &txn)?;
    let outcome = run(store, txn, &meta_key, fence).await?;
    if !outcome.succeeded {
        discard_generation(store, name, &generation).await;
    }
    let cache = Some(cache_of(&generation, &fresh));
    finish(store, name, &item, outcome, expect, fence, cache, current_version)
}

/// Writes the chunks of a new generation in as few transactions as fit,
/// each comparing the meta document (`compare`), the fence, and that the
/// chunk keys are new. Returns the outcome of a transaction that failed.
async fn write_generation(
    store: &EtcdStore,
    name: &KeyspaceName,
    generation: &str,
    chunks: &[Chunk],
    compare: &impl Fn(&mut TxnBuilder),
    fence: &Fence,
) -> Result<Option<TxnOutcome>, StoreError> {
    let inner = &store.inner;
    let meta_key = inner.layout.meta(name);
    let start = || {
        let mut txn = TxnBuilder::default();
        compare(&mut txn);
        txn
    };
    let mut txn = start();
    let mut pending = 0;
    for chunk in chunks {
        let key = inner.layout.chunk(name, generation, &chunk.boundary);
        if pending > 0 && !txn.fits(2 * key.len() + chunk.bytes.len()) {
            let outcome = run(store, std::mem::replace(&mut txn, start()), &meta_key, fence).await?;
            if !outcome.succeeded {
                return Ok(Some(outcome));
            }
            pending = 0;
        }
        txn.absent(&key);
        txn.put(&key, chunk.bytes.clone(), None);
        pending += 1;
    }
    if pending > 0 {
        let outcome = run(store, txn, &meta_key, fence).await?;
        if !outcome.succeeded {
            return Ok(Some(outcome));
        }
    }
    Ok(None)
}

/// Adds to `txn` the deletion of every generation of the keyspace but
/// `keep` (two range deletions around it).
fn delete_other_generations(store: &EtcdStore, txn: &mut TxnBuilder, name: &KeyspaceName, keep: &str) {
    let layout = &store.inner.layout;
    let all = layout.ranges(name);
    let kept = layout.generation(name, keep);
    txn.delete_range(all.clone(), kept.clone().into_bytes());
    txn.delete_range(prefix_end(&kept), prefix_end(&all));
}

/// Deletes a generation that was never made current (best effort: the
/// next large write of the keyspace deletes it anyway).
async fn discard_generation(store: &EtcdStore, name: &KeyspaceName, generation: &str) {
    let prefix = store.inner.layout.generation(name, generation);
    let mut txn = TxnBuilder::default();
    txn.delete_range(prefix.clone(), prefix_end(&prefix));
    if let Err(e) = store.inner.kv.txn(txn).await {
        tracing::warn!(keyspace = %name, generation, error = ?e, "cannot delete an unused generation of chunks");
    }
}

/// Adds the fence to `txn`, asks for the item (`key`) and leader key on
/// failure, and runs it.
async fn run(store: &EtcdStore, mut txn: TxnBuilder, key: &str, fence: &Fence) -> Result<TxnOutcome, StoreError> {
    let inner = &store.inner;
    txn.get_on_failure(key);
    if let Fence::Leader { key: leader, token } = fence {
        let leader = inner.layout.relative(leader);
        txn.created_at(&leader, *token);
        txn.get_on_failure(&leader);
    }
    inner.kv.txn(txn).await.map_err(|e| etcd_error(&inner.kv, e))
}

/// Ends a keyspace write: remembers the chunks written, or tells why the
/// transaction failed.
#[allow(clippy::too_many_arguments)]
fn finish(
    store: &EtcdStore,
    name: &KeyspaceName,
    item: &str,
    outcome: TxnOutcome,
    expect: Expect,
    fence: &Fence,
    cache: Option<ChunkMap>,
    compared: Option<i64>,
) -> Result<Attempt, StoreError> {
    if outcome.succeeded {
        let cached = cache
            .map(|(generation, chunks)| Arc::new(CachedChunks { mod_revision: outcome.revision, generation, chunks }));
        store.remember(name, cached);
        return Ok(Attempt::Done(Epoch(outcome.revision as u64)));
    }
    failed(item, &outcome, expect, fence, Some(compared))
}

/// Why a transaction failed: the fence, a concurrent change of the item, or
/// (with `compared`, the version the write compared) neither.
fn failed(
    item: &str,
    outcome: &TxnOutcome,
    expect: Expect,
    fence: &Fence,
    compared: Option<Option<i64>>,
) -> Result<Attempt, StoreError> {
    if let (true, Fence::Leader { key, .. }) = (is_fenced(outcome, fence), fence) {
        return Err(StoreError::Fenced { key: key.clone() });
    }
    let found = outcome.reads.first().and_then(Option::as_ref).map(|kv| kv.mod_revision());
    if compared.is_some_and(|compared| compared == found) {
        return Err(StoreError::Backend {
            message: format!("{item}: a new generation of chunks collided with existing keys"),
        });
    }
    if expect == Expect::Any {
        return Ok(Attempt::Raced);
    }
    Err(StoreError::Conflict {
        item: item.to_owned(),
        expected: expect.describe(),
        found: describe_found(found.map(|v| Epoch(v as u64))),
    })
}

/// Whether a failed transaction failed on its fence.
fn is_fenced(outcome: &TxnOutcome, fence: &Fence) -> bool {
    match fence {
        Fence::None => false,
        Fence::Leader { token, .. } => {
            let leader = outcome.reads.get(1).and_then(Option::as_ref);
            leader.map(KeyValue::create_revision) != Some(*token)
        }
    }
}

fn check_put(item: &str, expect: Expect, current: Option<i64>) -> Result<(), StoreError> {
    let ok = match expect {
        Expect::Absent => current.is_none(),
        Expect::Version(version) => current == Some(version.0 as i64),
        Expect::Any => true,
    };
    if ok {
        return Ok(());
    }
    Err(StoreError::Conflict {
        item: item.to_owned(),
        expected: expect.describe(),
        found: describe_found(current.map(|v| Epoch(v as u64))),
    })
}

/// A delete needs the item to exist: [`StoreError::NotFound`] otherwise
/// (a conflict when a version was expected).
fn check_delete(item: &str, expect: Expect, current: Option<i64>) -> Result<(), StoreError> {
    match (current, expect) {
        (None, Expect::Version(_)) | (Some(_), Expect::Absent | Expect::Version(_)) => check_put(item, expect, current),
        (None, _) => Err(StoreError::NotFound { item: item.to_owned() }),
        (Some(_), Expect::Any) => Ok(()),
    }
}

fn check_size(item: &str, txn: &TxnBuilder) -> Result<(), StoreError> {
    if txn.bytes() <= MAX_TXN_BYTES {
        return Ok(());
    }
    Err(StoreError::Backend {
        message: format!("{item}: its settings are too large for etcd ({} bytes, limit {MAX_TXN_BYTES})", txn.bytes()),
    })
}

fn raced(item: &str) -> StoreError {
    StoreError::Conflict {
        item: item.to_owned(),
        expected: "any version".to_owned(),
        found: format!("a new version on each of {ANY_ATTEMPTS} attempts"),
    }
}

fn cache_of(generation: &str, chunks: &[Chunk]) -> ChunkMap {
    (generation.to_owned(), chunks.iter().map(|c| (c.boundary.clone(), c.bytes.clone())).collect())
}

/// A new generation id: 16 hex digits, different in every call and process.
fn new_generation() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", hasher.finish())
}
