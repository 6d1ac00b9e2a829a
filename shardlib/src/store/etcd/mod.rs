//! [`EtcdStore`]: the topology store in etcd (feature `etcd`).
//!
//! # Key layout
//!
//! Everything of a cluster lives under `/<cluster>/`:
//!
//! | key | value |
//! |-----|-------|
//! | `/<cluster>/keyspaces/<keyspace>` | the keyspace's meta document (JSON): settings, shards, and for `hash_range` and `key_order` keyspaces the index of its range chunks |
//! | `/<cluster>/ranges/<keyspace>/<generation>/@<boundary>` | one chunk of the keyspace's ranges (text, at most ~192 KiB) |
//! | `/<cluster>/docs/<collection>/<id>` | a document (JSON), e.g. a job |
//! | `/<cluster>/clients/<id>` | a client registration, bound to its holder's lease: `{"format": 1, "value": …, "ttl_ms", "updated_at_ms"}` (see [`crate::store::clients`]) |
//! | `/<cluster>/leader/<lease id>` | a candidate of etcd's election `/<cluster>/leader`, bound to its lease; the oldest leads (see [`election`]). The value is the candidate's name (shardd's `{"member_id", "address"}`) |
//!
//! - The **epoch** is the etcd revision. A keyspace's version (what
//!   [`Expect::Version`] compares) is the `mod_revision` of its meta key:
//!   every change of a keyspace rewrites its meta document, in the same
//!   transaction as the chunks it changes.
//! - **Chunks**: ranges are stored compactly, ~20 bytes per range, about
//!   3,000 ranges per chunk, keyed by the lowest range start the chunk may
//!   hold (its *boundary*: `@` and hex; `@` alone for the first chunk). A
//!   million ranges make ~300 chunks of ≤ 64 KiB and a meta document of a
//!   few KiB listing them. See *Formats* below.
//! - A **small change** (split, merge or move of a few ranges, shard
//!   settings) is one transaction: compare the meta's `mod_revision` (and the
//!   leader key), put the meta and the touched chunks, delete emptied ones.
//! - A **large change** (more than ~1 MiB or ~100 keys to write, or a new
//!   keyspace of that size) writes all chunks under a new random
//!   *generation* in several transactions (each one also comparing the
//!   meta and leader key, so that a lost race stops early), then one final
//!   compare-and-set transaction points the meta at the new generation and
//!   deletes every other generation of the keyspace (old ones, and orphans
//!   of writers that crashed or lost a race). Readers only ever follow the
//!   meta's generation, so they never see a half-written keyspace.
//! - Every transaction stays under 1 MiB of keys and values and 100
//!   operations (etcd's defaults are 1.5 MiB and 128).
//! - **Fencing**: a write fenced by [`Fence::Leader`] compares the
//!   `create_revision` of `/<cluster>/<key>` (the leader's election key,
//!   `leader/<lease id>`) with the token, in the same transaction.
//! - A **snapshot** reads the meta documents page by page at one revision
//!   (that of the first response), then the chunks of each keyspace's
//!   current generation at that same revision.
//! - A **watch** is one etcd watch on the topology keys (`/<cluster>/keyspaces/`
//!   to the end of `/<cluster>/ranges/`, so that frequent client
//!   registrations never reach it) from `after + 1`; it
//!   applies events to an in-memory copy of the keyspace keys and emits one
//!   [`WatchEvent`](crate::store::WatchEvent) per revision that changed a
//!   meta document.
//!
//! # Formats
//!
//! The meta document is the keyspace as in a topology file, with its
//! ranges left out when they are chunked, plus the chunk index:
//!
//! ```json
//! {
//!   "format": 1,
//!   "keyspace": { "key_type": "u64", "tables": [...], "shards": [...],
//!                 "partitioning": { "algorithm": "hash_range", "ranges": [] } },
//!   "chunks": { "generation": "5f0c9a1e33b2d407", "ranges": 1000000,
//!               "boundaries": ["", "0a3d70a3d70a3d70", ...] }
//! }
//! ```
//!
//! A chunk holds the ranges whose start lies between its boundary and the
//! next chunk's, one line each: the start in hex (`-` for the first
//! range), the owner as an index into the chunk's `owners` line, and `f`
//! if the range is frozen. A range ends where the next one starts.
//!
//! ```text
//! shardkit-chunk 1
//! owners s0 s1 s7
//! - 0
//! 4000000000000000 1
//! 8000000000000000 2 f
//! ```
//!
//! A start is a byte string: for `hash_range` the 8 big-endian bytes of the
//! keyspace id with trailing zero bytes dropped (the bound of the Vitess
//! name: `0x4000…` is `40`), for `key_order` the key itself. Rewriting a
//! keyspace keeps the chunk boundaries, so that an unchanged chunk is
//! byte-identical and is not written; a chunk grown past 192 KiB is cut
//! into chunks of ~64 KiB, and a chunk left without ranges is deleted.

mod chunks;
mod clients;
mod config;
pub mod election;
mod kv;
mod layout;
mod meta;
mod read;
mod watch;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The etcd client crate, re-exported for administration and tests.
pub use etcd_client;

pub use self::config::{EtcdConfig, TlsConfig};
pub use self::kv::WriteStats;
use self::kv::{EtcdError, Kv, hint_refused_certificate, map_error};
use self::layout::Layout;
use super::{
    ClientInfo, Document, Expect, Fence, LEADER_KEY, LeaderInfo, Leadership, Registration, Snapshot, StoreError,
    StoreFuture, TopologyStore, WatchStream,
};
use crate::id::{Epoch, KeyspaceName, validate_name};
use crate::topology::Keyspace;

/// How long to wait for etcd to name its compaction revision.
const COMPACTION_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The chunks of one keyspace as last read or written, valid while its
/// meta key keeps `mod_revision`.
pub(super) struct CachedChunks {
    mod_revision: i64,
    generation: String,
    chunks: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The topology store in etcd. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    layout: Layout,
    client: etcd_client::Client,
    kv: Kv,
    cache: Mutex<HashMap<KeyspaceName, Arc<CachedChunks>>>,
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (and accepts the
    /// credentials). Fails with [`StoreError::Config`] when the
    /// configuration cannot work (no endpoints, `https://` without TLS
    /// settings or the other way round, unreadable TLS files, TLS in a build
    /// without the feature `etcd-tls`: see [`EtcdConfig::client_options`]),
    /// with [`StoreError::Unavailable`] naming the endpoints when none
    /// answers (the message says so when the TLS handshake failed, e.g. a
    /// server certificate that the CA did not sign), and with
    /// [`StoreError::Unauthorized`] when the credentials are refused.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        validate_name("cluster name", &config.cluster)?;
        let endpoints = config.endpoints_text();
        if config.endpoints.is_empty() {
            return Err(StoreError::Config { message: "no etcd endpoints configured".to_owned() });
        }
        let base = etcd_client::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        let options = config.client_options(base)?;
        let deadline = config.connect_timeout + config.request_timeout;
        let connecting = etcd_client::Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(deadline, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(map_error(e, &endpoints)),
            Err(_) => return Err(timed_out(&endpoints, deadline)),
        };
        let kv = Kv::new(client.kv_client(), endpoints.clone().into());
        let layout = Layout::new(&config.cluster);
        // The client connects lazily: one read shows whether etcd answers.
        match tokio::time::timeout(deadline, kv.get(&layout.relative(LEADER_KEY), 0)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if config.tls.is_some() => return Err(hint_refused_certificate(etcd_error(&kv, e))),
            Ok(Err(e)) => return Err(etcd_error(&kv, e)),
            Err(_) => return Err(timed_out(&endpoints, deadline)),
        }
        let inner = Inner { cluster: config.cluster, layout, client, kv, cache: Mutex::new(HashMap::new()) };
        Ok(EtcdStore { inner: Arc::new(inner) })
    }

    /// The cluster this store holds.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The key prefix of the cluster, `/<cluster>/`.
    pub fn prefix(&self) -> &str {
        self.inner.layout.root()
    }

    /// The underlying etcd client, for administration and tests. Writes
    /// made through it bypass validation and fencing.
    pub fn client(&self) -> etcd_client::Client {
        self.inner.client.clone()
    }

    /// Sizes of the write transactions this store has sent so far.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.kv.stats()
    }

    fn cached(&self, keyspace: &KeyspaceName, mod_revision: i64) -> Option<Arc<CachedChunks>> {
        let cache = self.inner.cache.lock().expect("cache lock");
        cache.get(keyspace).filter(|c| c.mod_revision == mod_revision).cloned()
    }

    fn remember(&self, keyspace: &KeyspaceName, chunks: Option<Arc<CachedChunks>>) {
        let mut cache = self.inner.cache.lock().expect("cache lock");
        match chunks {
            Some(chunks) => cache.insert(keyspace.clone(), chunks),
            None => cache.remove(keyspace),
        };
    }

    /// The oldest revision etcd still has (its compaction revision), found
    /// by watching from revision 1: etcd cancels such a watch and names it.
    async fn oldest_revision(&self) -> Option<i64> {
        let options = etcd_client::WatchOptions::new().with_start_revision(1);
        let key = self.inner.layout.relative(LEADER_KEY);
        let probe = async {
            let mut watch = self.inner.client.watch_client().watch(key, Some(options)).await.ok()?;
            loop {
                let response = watch.message().await.ok()??;
                if response.compact_revision() > 0 {
                    return Some(response.compact_revision());
                }
            }
        };
        // Only asked after etcd reported a compaction, so the answer comes
        // (etcd checks unsynced watchers every 100 ms).
        tokio::time::timeout(COMPACTION_PROBE_TIMEOUT, probe).await.ok().flatten()
    }

    /// The store error for a compacted `requested` epoch.
    async fn compacted(&self, requested: Epoch) -> StoreError {
        let oldest = self.oldest_revision().await.map_or(Epoch(requested.0 + 1), |r| Epoch(r as u64));
        StoreError::Compacted { requested, oldest }
    }

    /// Maps an etcd error of a read at `requested`.
    async fn read_error(&self, e: EtcdError, requested: Epoch) -> StoreError {
        match e {
            EtcdError::Compacted => self.compacted(requested).await,
            EtcdError::FutureRevision => {
                StoreError::NotFound { item: format!("epoch {requested} (newer than etcd's)") }
            }
            EtcdError::Other(e) => self.inner.kv.error(e),
        }
    }
}

fn timed_out(endpoints: &str, after: Duration) -> StoreError {
    StoreError::Unavailable { message: format!("etcd at {endpoints}: no answer within {after:?}") }
}

/// Maps an etcd error where no revision was asked for.
fn etcd_error(kv: &Kv, e: EtcdError) -> StoreError {
    match e {
        EtcdError::Other(e) => kv.error(e),
        EtcdError::Compacted | EtcdError::FutureRevision => {
            StoreError::Backend { message: format!("etcd at {}: unexpected revision error", kv.endpoints()) }
        }
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.kv.endpoints())
            .field("cluster", &self.inner.cluster)
            .finish()
    }
}

impl TopologyStore for EtcdStore {
    fn snapshot(&self) -> StoreFuture<'_, Snapshot> {
        Box::pin(read::snapshot(self, None))
    }

    fn snapshot_at(&self, epoch: Epoch) -> StoreFuture<'_, Snapshot> {
        Box::pin(read::snapshot(self, Some(epoch)))
    }

    fn put_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        keyspace: &'a Keyspace,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(write::put_keyspace(self, name, keyspace, expect, fence))
    }

    fn delete_keyspace<'a>(
        &'a self,
        name: &'a KeyspaceName,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(write::delete_keyspace(self, name, expect, fence))
    }

    fn watch(&self, after: Epoch) -> WatchStream {
        watch::watch(self.clone(), after)
    }

    fn compact(&self, epoch: Epoch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.inner.kv.compact(epoch.0 as i64).await {
                Ok(()) | Err(EtcdError::Compacted) => Ok(()),
                Err(e) => Err(self.read_error(e, epoch).await),
            }
        })
    }

    fn try_lead<'a>(&'a self, candidate: &'a str, ttl: Duration) -> StoreFuture<'a, Option<Leadership>> {
        Box::pin(election::try_lead(self, candidate, ttl))
    }

    fn leader(&self) -> StoreFuture<'_, Option<LeaderInfo>> {
        Box::pin(election::leader(self))
    }

    fn get_document<'a>(&'a self, collection: &'a str, id: &'a str) -> StoreFuture<'a, Option<Document>> {
        Box::pin(read::get_document(self, collection, id))
    }

    fn list_documents<'a>(&'a self, collection: &'a str) -> StoreFuture<'a, Vec<Document>> {
        Box::pin(read::list_documents(self, collection))
    }

    fn put_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        value: &'a serde_json::Value,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(write::put_document(self, collection, id, Some(value), expect, fence))
    }

    fn delete_document<'a>(
        &'a self,
        collection: &'a str,
        id: &'a str,
        expect: Expect,
        fence: &'a Fence,
    ) -> StoreFuture<'a, Epoch> {
        Box::pin(write::put_document(self, collection, id, None, expect, fence))
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
