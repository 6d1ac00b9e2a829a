//! Requests to etcd: paginated reads at one revision, transactions with
//! their size accounted, and the mapping of etcd errors to [`StoreError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, KvClient, PutOptions, Txn, TxnOp};

use super::layout::prefix_end;
use crate::store::StoreError;

/// etcd's default request limit is 1.5 MiB; transactions are kept under
/// this many bytes of keys and values, leaving room for framing.
pub(super) const MAX_TXN_BYTES: usize = 1024 * 1024;

/// etcd's default limit is 128 operations per transaction (and as many
/// compares); transactions are kept under this.
pub(super) const MAX_TXN_OPS: usize = 100;

/// Responses larger than etcd's request limit can be read (a watch may
/// batch many revisions); this caps what a client accepts.
pub(super) const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// Accounted overhead per compare or operation.
const OP_OVERHEAD: usize = 16;

/// Sizes of the write transactions a store has sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions sent.
    pub txns: u64,
    /// The largest transaction, in bytes of keys and values plus a small
    /// overhead per compare and operation (etcd's limit is 1.5 MiB).
    pub max_txn_bytes: u64,
    /// The most operations in one transaction (etcd's limit is 128).
    pub max_txn_ops: u64,
}

#[derive(Default)]
pub(super) struct Stats {
    txns: AtomicU64,
    max_bytes: AtomicU64,
    max_ops: AtomicU64,
}

impl Stats {
    pub(super) fn get(&self) -> WriteStats {
        WriteStats {
            txns: self.txns.load(Ordering::Relaxed),
            max_txn_bytes: self.max_bytes.load(Ordering::Relaxed),
            max_txn_ops: self.max_ops.load(Ordering::Relaxed),
        }
    }
}

/// A transaction being built, with its size.
#[derive(Default)]
pub(super) struct TxnBuilder {
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
    bytes: usize,
}

impl TxnBuilder {
    /// The item at `key` must have been last modified at `revision`.
    pub(super) fn mod_revision_is(&mut self, key: &str, revision: i64) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.compares.push(Compare::mod_revision(key, CompareOp::Equal, revision));
    }

    /// The item at `key` must not exist.
    pub(super) fn absent(&mut self, key: &str) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.compares.push(Compare::version(key, CompareOp::Equal, 0));
    }

    /// The item at `key` must exist.
    pub(super) fn present(&mut self, key: &str) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.compares.push(Compare::version(key, CompareOp::Greater, 0));
    }

    /// The key at `key` must have been created at `revision` (a fencing token).
    pub(super) fn created_at(&mut self, key: &str, revision: i64) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.compares.push(Compare::create_revision(key, CompareOp::Equal, revision));
    }

    /// Puts `value` at `key`, bound to `lease` if given.
    pub(super) fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<i64>) {
        self.bytes += key.len() + value.len() + OP_OVERHEAD;
        let options = lease.map(|lease| PutOptions::new().with_lease(lease));
        self.success.push(TxnOp::put(key, value, options));
    }

    /// Deletes `key`.
    pub(super) fn delete(&mut self, key: &str) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.success.push(TxnOp::delete(key, None));
    }

    /// Deletes the keys in `[start, end)`.
    pub(super) fn delete_range(&mut self, start: impl Into<Vec<u8>>, end: Vec<u8>) {
        let start = start.into();
        self.bytes += start.len() + end.len() + OP_OVERHEAD;
        self.success.push(TxnOp::delete(start, Some(DeleteOptions::new().with_range(end))));
    }

    /// Reads `key` if the compares fail (to tell which failed).
    pub(super) fn get_on_failure(&mut self, key: &str) {
        self.bytes += key.len() + OP_OVERHEAD;
        self.failure.push(TxnOp::get(key, None));
    }

    /// The accounted size in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The number of operations in the larger branch, or of compares.
    pub(super) fn ops(&self) -> usize {
        self.compares.len().max(self.success.len()).max(self.failure.len())
    }

    /// Whether another operation of `bytes` bytes still fits.
    pub(super) fn fits(&self, bytes: usize) -> bool {
        self.bytes + bytes + OP_OVERHEAD <= MAX_TXN_BYTES && self.ops() < MAX_TXN_OPS
    }
}

/// The outcome of a transaction.
pub(super) struct TxnOutcome {
    /// Whether the compares held (and the success operations ran).
    pub(super) succeeded: bool,
    /// The store revision after the transaction.
    pub(super) revision: i64,
    /// The keys read by the failure branch, in order (`None`: absent).
    pub(super) reads: Vec<Option<KeyValue>>,
}

/// A key-value client with the endpoints (for messages) and statistics.
#[derive(Clone)]
pub(super) struct Kv {
    client: KvClient,
    endpoints: Arc<str>,
    stats: Arc<Stats>,
}

impl Kv {
    pub(super) fn new(client: KvClient, endpoints: Arc<str>) -> Self {
        Kv { client: client.max_decoding_message_size(MAX_RESPONSE_BYTES), endpoints, stats: Arc::default() }
    }

    pub(super) fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub(super) fn stats(&self) -> WriteStats {
        self.stats.get()
    }

    /// Maps an etcd error.
    pub(super) fn error(&self, e: etcd_client::Error) -> StoreError {
        map_error(e, &self.endpoints)
    }

    /// Reads one key (at `revision`, 0 for the latest): the store revision
    /// of the read and the key, if present.
    pub(super) async fn get(&self, key: &str, revision: i64) -> Result<(i64, Option<KeyValue>), EtcdError> {
        let options = GetOptions::new().with_revision(revision);
        let mut response = self.client.clone().get(key, Some(options)).await?;
        let header = response.header().map_or(0, |h| h.revision());
        Ok((header, response.take_kvs().into_iter().next()))
    }

    /// Reads every key starting with `prefix` at `revision` (0: the latest),
    /// `page` keys per request, all at the revision of the first response.
    /// Returns that revision and the keys in order.
    pub(super) async fn get_prefix(
        &self,
        prefix: &str,
        revision: i64,
        page: i64,
    ) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let end = prefix_end(prefix);
        let mut revision = revision;
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let options = GetOptions::new().with_range(end.clone()).with_revision(revision).with_limit(page);
            let mut response = self.client.clone().get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    out.extend(kvs);
                    return Ok((revision, out));
                }
            }
            out.extend(kvs);
        }
    }

    /// Runs a transaction, accounting its size.
    pub(super) async fn txn(&self, txn: TxnBuilder) -> Result<TxnOutcome, EtcdError> {
        let (bytes, ops) = (txn.bytes() as u64, txn.ops() as u64);
        self.stats.txns.fetch_add(1, Ordering::Relaxed);
        self.stats.max_bytes.fetch_max(bytes, Ordering::Relaxed);
        self.stats.max_ops.fetch_max(ops, Ordering::Relaxed);
        let request = Txn::new().when(txn.compares).and_then(txn.success).or_else(txn.failure);
        let response = self.client.clone().txn(request).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let reads = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                etcd_client::TxnOpResponse::Get(mut get) => Some(get.take_kvs().into_iter().next()),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome { succeeded: response.succeeded(), revision, reads })
    }

    /// Compacts the history before `revision`.
    pub(super) async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let options = etcd_client::CompactionOptions::new().with_physical();
        self.client.clone().compact(revision, Some(options)).await?;
        Ok(())
    }
}

/// An etcd error, classified where the store reacts to it.
#[derive(Debug)]
pub(super) enum EtcdError {
    /// The revision asked for was compacted.
    Compacted,
    /// The revision asked for is newer than the store's.
    FutureRevision,
    /// Anything else.
    Other(etcd_client::Error),
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        if let etcd_client::Error::GRpcStatus(status) = &e {
            if status.message().contains("required revision has been compacted") {
                return EtcdError::Compacted;
            }
            if status.message().contains("required revision is a future revision") {
                return EtcdError::FutureRevision;
            }
        }
        EtcdError::Other(e)
    }
}

/// gRPC status codes that etcd answers with (see `google.rpc.Code`).
mod code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const INTERNAL: i32 = 13;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// Maps an etcd client error to a store error. The endpoints are named
/// when etcd cannot be reached; credentials never appear in messages (etcd
/// does not echo passwords, and the endpoints carry none).
pub(super) fn map_error(e: etcd_client::Error, endpoints: &str) -> StoreError {
    let unavailable = |detail: &str| StoreError::Unavailable { message: format!("etcd at {endpoints}: {detail}") };
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            // A connection that failed (refused, TLS handshake, a TLS alert
            // right after it) comes back as an unavailable, cancelled or
            // unknown status whose cause is in its sources.
            let transport = [code::UNAVAILABLE, code::CANCELLED, code::UNKNOWN].contains(&(status.code() as i32));
            if let Some(cause) = std::error::Error::source(&status).filter(|_| transport) {
                return unavailable(&connect_failure(status.message().to_owned(), Some(cause)));
            }
            let message = status.message().to_owned();
            let auth = ["authentication failed", "invalid auth token", "permission denied", "user name is empty"]
                .iter()
                .any(|m| message.contains(m));
            match status.code() as i32 {
                code::UNAUTHENTICATED | code::PERMISSION_DENIED => StoreError::Unauthorized { message },
                _ if auth => StoreError::Unauthorized { message },
                code::UNAVAILABLE | code::DEADLINE_EXCEEDED | code::CANCELLED => {
                    unavailable(if message.is_empty() { "unavailable" } else { &message })
                }
                _ if message.contains("no leader") || message.contains("leader changed") => unavailable(&message),
                _ if message.contains("request timed out") => unavailable(&message),
                // The client's own transport failures (a member went away in
                // the middle of a stream: "h2 protocol error", "broken pipe")
                // come as unknown or internal, without etcd's prefix.
                code::UNKNOWN | code::INTERNAL if !message.starts_with("etcdserver:") => unavailable(&message),
                _ => StoreError::Backend { message: format!("etcd: {message}") },
            }
        }
        etcd_client::Error::TransportError(e) => {
            unavailable(&connect_failure(e.to_string(), std::error::Error::source(&e)))
        }
        etcd_client::Error::IoError(e) => unavailable(&format!("i/o error: {e}")),
        other => StoreError::Backend { message: format!("etcd: {other}") },
    }
}

/// Why the connection failed (to open, or in the middle of a stream): the
/// error and its causes (tonic says only "transport error" at the top),
/// and a hint when it was the TLS handshake.
fn connect_failure(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "unknownissuer"].iter().any(|m| lower.contains(m)) {
        format!("tls handshake failed ({text}); check the ca certificate, the servers' certificates and their names")
    } else {
        format!("connection failed: {text}")
    }
}

/// A first request over TLS whose connection etcd closed at once: with
/// TLS 1.3 that is how a refused client certificate (or a missing one)
/// shows, since the client has finished its side of the handshake before
/// the server checks it. Says so.
pub(super) fn hint_refused_certificate(error: StoreError) -> StoreError {
    match error {
        StoreError::Unavailable { message }
            if ["connection closed", "connection reset", "broken pipe"].iter().any(|m| message.contains(m)) =>
        {
            StoreError::Unavailable {
                message: format!(
                    "{message}; etcd closed the tls connection at once: it may have refused this client's \
                     certificate (or its absence)"
                ),
            }
        }
        other => other,
    }
}
