//! Leadership in etcd: **etcd's election API on `/<cluster>/leader`**, the
//! one leadership mechanism of a cluster kept in etcd.
//!
//! Every candidate holds a key `/<cluster>/leader/<lease id in hex>` bound
//! to a lease of its own, as etcd's `Campaign` creates it; the candidate
//! whose key has the oldest create revision leads, and that create revision
//! is its fencing token: its writes carry
//! [`Fence::Leader`]` { key: "leader/<lease id>", token }` and the store's
//! transactions compare the key's create revision, so a leader whose key is
//! gone (lease expired or revoked, resigned) can no longer write.
//!
//! Two ways in, one keyspace:
//!
//! - **shardd** campaigns with etcd's election API (`campaign`, `observe`,
//!   `resign`) on its own client, and uses [`election_name`], [`fence`] and
//!   [`keep_lease_alive`] from here.
//! - [`TopologyStore::try_lead`] on an [`EtcdStore`] tries once, without
//!   waiting: in one transaction it creates its candidate key only if the
//!   election has no candidate at all, so it wins exactly when a campaign
//!   would have won at once, and never while someone else (a shardd
//!   process, another caller) leads or campaigns. [`TopologyStore::leader`]
//!   reports the election's leader, whoever campaigned.
//!
//! The candidate's value is opaque to the election: the `candidate` given
//! to `try_lead`, shardd's `{"member_id", "address"}` JSON.
//!
//! The lease is kept alive every third of its TTL ([`keep_lease_alive`]);
//! leadership ends at once when etcd says the lease expired, or when no
//! keep-alive was answered before the lease may have expired (counted from
//! when the last answered keep-alive was *sent*, which is never later than
//! etcd counts), so a leader stops before etcd can let another one win.
//!
//! [`TopologyStore::try_lead`]: crate::store::TopologyStore::try_lead
//! [`TopologyStore::leader`]: crate::store::TopologyStore::leader

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseClient, LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::layout::prefix_end;
use super::{EtcdStore, Inner};
use crate::store::{Fence, LEADER_KEY, LeaderInfo, Leadership, StoreError};

/// Pause before a keep-alive stream or a watch is opened again after it
/// failed (the lease deadline still decides when leadership ends).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The election's name for `cluster`: `/<cluster>/leader`. Candidates keep
/// their keys under `/<cluster>/leader/`.
pub fn election_name(cluster: &str) -> String {
    format!("/{cluster}/{LEADER_KEY}")
}

/// The candidate key that etcd's `Campaign` creates for `lease`:
/// `/<cluster>/leader/<lease id in lowercase hex>`.
pub fn candidate_key(cluster: &str, lease: i64) -> String {
    format!("{}/{lease:x}", election_name(cluster))
}

/// The fence of the candidate whose election key is `key` (absolute, as
/// etcd returns it) and was created at `create_revision`:
/// `Fence::Leader { key: "leader/<lease id>", token: create_revision }`.
pub fn fence(cluster: &str, key: &[u8], create_revision: i64) -> Fence {
    Fence::Leader { key: relative_key(cluster, key), token: create_revision }
}

/// `key` without the `/<cluster>/` prefix.
fn relative_key(cluster: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    let root = format!("/{cluster}/");
    key.strip_prefix(&root).unwrap_or(&key).to_owned()
}

/// Why a lease kept by [`keep_lease_alive`] is lost (or may be).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// etcd answered a keep-alive with a TTL of zero: the lease expired or
    /// was revoked.
    #[error("the lease expired")]
    Expired,
    /// No keep-alive was answered before the lease may have expired.
    #[error("the lease may have expired: no keep-alive answered in time ({last})")]
    NoAnswer {
        /// The last error seen, or `no answer`.
        last: String,
    },
}

/// Keeps `lease` alive, every third of its TTL, until it is lost; never
/// returns otherwise. `granted_at` is when the grant was *sent* and `ttl`
/// the granted TTL.
///
/// Resolves as soon as etcd reports the lease expired, or when no keep-alive
/// was answered by the deadline: the TTL (less a small margin) counted from
/// when the last answered keep-alive was sent. Until then a keep-alive
/// stream that fails (the etcd member went away or lost its raft leader) or
/// leaves a keep-alive unanswered for a sixth of the TTL is dropped and
/// opened again, on whichever endpoint answers: a failure is not a loss
/// while the lease is certainly alive.
pub async fn keep_lease_alive(mut leases: LeaseClient, lease: i64, granted_at: Instant, ttl: Duration) -> LeaseLost {
    let margin = (ttl / 10).min(Duration::from_millis(500));
    let patience = (ttl / 6).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut deadline = granted_at + ttl.saturating_sub(margin);
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut last_error = None;
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            return LeaseLost::NoAnswer { last: last_error.unwrap_or_else(|| "no answer".to_owned()) };
        }
        let renewal =
            tokio::time::timeout_at((sent + patience).min(deadline), renew(&mut leases, lease, ttl, &mut stream));
        match renewal.await {
            Ok(Renewal::Renewed(left)) => {
                last_error = None;
                deadline = sent + left.saturating_sub(margin);
                tokio::time::sleep_until((sent + left / 3).min(deadline)).await;
            }
            Ok(Renewal::Expired) => return LeaseLost::Expired,
            Ok(Renewal::Failed(error)) => {
                tracing::debug!(lease, %error, "lease keep-alive failed; opening the stream again");
                last_error = Some(error);
                stream = None;
                tokio::time::sleep_until((Instant::now() + RETRY_PAUSE).min(deadline)).await;
            }
            Err(_) => {
                tracing::debug!(lease, "lease keep-alive unanswered; opening the stream again");
                last_error = Some(format!("no answer within {patience:?}"));
                stream = None;
            }
        }
    }
}

/// The outcome of one keep-alive.
enum Renewal {
    /// The lease lives on, for this long.
    Renewed(Duration),
    /// etcd no longer has the lease.
    Expired,
    /// The request or the stream failed: open the stream again.
    Failed(String),
}

/// Sends one keep-alive on `stream` (opening it if there is none) and reads
/// its answer. Answers come in the order of the requests.
async fn renew(
    leases: &mut LeaseClient,
    lease: i64,
    ttl: Duration,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Renewal {
    let Some((keeper, responses)) = stream else {
        // Opening the stream sends a keep-alive and reads its answer; the
        // answer's TTL is not returned, but a renewal restores the whole TTL.
        return match leases.keep_alive(lease).await {
            Ok(opened) => {
                *stream = Some(opened);
                Renewal::Renewed(ttl)
            }
            // etcd-client's error for an answer with a TTL of zero.
            Err(etcd_client::Error::LeaseKeepAliveError(message)) if message == "lease not found" => Renewal::Expired,
            Err(error) => Renewal::Failed(error.to_string()),
        };
    };
    if let Err(error) = keeper.keep_alive().await {
        return Renewal::Failed(error.to_string());
    }
    match responses.message().await {
        Ok(Some(response)) if response.ttl() <= 0 => Renewal::Expired,
        Ok(Some(response)) => Renewal::Renewed(Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0))),
        Ok(None) => Renewal::Failed("the keep-alive stream ended".to_owned()),
        Err(error) => Renewal::Failed(error.to_string()),
    }
}

/// [`TopologyStore::try_lead`](crate::store::TopologyStore::try_lead):
/// creates this candidate's election key under a new lease, in one
/// transaction, only if the election has no candidate.
pub(super) async fn try_lead(
    store: &EtcdStore,
    candidate: &str,
    ttl: Duration,
) -> Result<Option<Leadership>, StoreError> {
    let inner = &store.inner;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    let mut leases = inner.client.lease_client();
    let granted_at = Instant::now();
    let grant = leases.grant(ttl_secs, None).await.map_err(|e| inner.kv.error(e))?;
    let lease = grant.id();
    let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));

    let candidates = format!("{}/", election_name(&inner.cluster));
    let key = candidate_key(&inner.cluster, lease);
    // "No key under the prefix": a range compare holds for every key in the
    // range, and an empty range compares as one absent key (revision 0).
    let nobody = Compare::create_revision(candidates.as_str(), CompareOp::Equal, 0).with_range(prefix_end(&candidates));
    let put = TxnOp::put(key.as_str(), candidate, Some(PutOptions::new().with_lease(lease)));
    let txn = Txn::new().when([nobody]).and_then([put]);
    let outcome = inner.client.kv_client().txn(txn).await;
    let won = match outcome {
        Ok(response) if response.succeeded() => response.header().map(|h| h.revision()),
        Ok(_) => None,
        Err(e) => {
            let _ = leases.revoke(lease).await;
            return Err(inner.kv.error(e));
        }
    };
    let Some(token) = won else {
        let _ = leases.revoke(lease).await;
        return Ok(None);
    };
    let relative = relative_key(&inner.cluster, key.as_bytes());
    let info = LeaderInfo { candidate: candidate.to_owned(), key: relative, token };
    let (lost_tx, lost_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = oneshot::channel();
    let held = Held { store: store.clone(), lease, key, token, granted_at, ttl: granted };
    let keeper = tokio::spawn(held.keep(stop_rx, lost_tx));
    Ok(Some(Leadership::new(info, lost_rx, stop_tx, keeper)))
}

/// [`TopologyStore::leader`](crate::store::TopologyStore::leader): the
/// candidate with the oldest election key, as etcd's election `Leader` call
/// answers (read with a plain range request, which says "nobody" without an
/// error).
pub(super) async fn leader(store: &EtcdStore) -> Result<Option<LeaderInfo>, StoreError> {
    let inner = &store.inner;
    Ok(oldest_candidate(inner).await.map_err(|e| inner.kv.error(e))?.map(|kv| LeaderInfo {
        candidate: String::from_utf8_lossy(kv.value()).into_owned(),
        key: relative_key(&inner.cluster, kv.key()),
        token: kv.create_revision(),
    }))
}

async fn oldest_candidate(inner: &Inner) -> Result<Option<etcd_client::KeyValue>, etcd_client::Error> {
    let candidates = format!("{}/", election_name(&inner.cluster));
    let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
    let mut response = inner.client.kv_client().get(candidates, Some(options)).await?;
    Ok(response.take_kvs().into_iter().next())
}

/// A won leadership, kept by its keeper task.
struct Held {
    store: EtcdStore,
    lease: i64,
    /// The absolute election key.
    key: String,
    token: i64,
    granted_at: Instant,
    ttl: Duration,
}

impl Held {
    /// Keeps the lease alive and watches the key until told to stop (then
    /// resigns) or until leadership is lost (then revokes the lease and
    /// waits for the handle to go, so that `resign()` still answers `Ok`).
    async fn keep(self, mut stop: oneshot::Receiver<()>, lost: watch::Sender<bool>) -> Result<(), StoreError> {
        let leases = self.store.inner.client.lease_client();
        tokio::select! {
            reason = keep_lease_alive(leases, self.lease, self.granted_at, self.ttl) => {
                tracing::warn!(lease = self.lease, %reason, "leadership lost");
            }
            () = self.key_deleted() => {
                tracing::warn!(lease = self.lease, key = %self.key, "leadership lost: the election key was deleted");
            }
            _ = &mut stop => {
                let result = self.resign().await;
                lost.send_replace(true);
                return result;
            }
        }
        lost.send_replace(true);
        let _ = self.store.inner.client.lease_client().revoke(self.lease).await;
        let _ = stop.await;
        Ok(())
    }

    /// Resolves when the election key created at `token` is gone.
    async fn key_deleted(&self) {
        let mut watcher = self.store.inner.client.watch_client();
        let mut from = self.token + 1;
        loop {
            let options = WatchOptions::new().with_start_revision(from);
            if let Ok(mut stream) = watcher.watch(self.key.as_str(), Some(options)).await {
                while let Ok(Some(response)) = stream.message().await {
                    if response.events().iter().any(|event| event.event_type() == EventType::Delete) {
                        return;
                    }
                    if response.canceled() {
                        break;
                    }
                    if let Some(header) = response.header() {
                        from = from.max(header.revision() + 1);
                    }
                }
            }
            // The watch failed (member gone, history compacted): look.
            if let Ok(mut response) = self.store.inner.client.kv_client().get(self.key.as_str(), None).await {
                let ours = response.take_kvs().first().is_some_and(|kv| kv.create_revision() == self.token);
                if !ours {
                    return;
                }
                from = response.header().map_or(from, |h| h.revision() + 1);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// What etcd's `Resign` does: deletes the election key if it is still
    /// the one won at `token`; then revokes the lease.
    async fn resign(&self) -> Result<(), StoreError> {
        let inner = &self.store.inner;
        let ours = Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.token);
        let txn = Txn::new().when([ours]).and_then([TxnOp::delete(self.key.as_str(), None)]);
        let deleted = inner.client.kv_client().txn(txn).await.map(drop).map_err(|e| inner.kv.error(e));
        let revoked = inner.client.lease_client().revoke(self.lease).await.map(drop).map_err(|e| inner.kv.error(e));
        deleted.and(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_fences_follow_etcds_election() {
        assert_eq!(election_name("prod"), "/prod/leader");
        assert_eq!(candidate_key("prod", 0x694d_7a3c_1f2e_0b11), "/prod/leader/694d7a3c1f2e0b11");
        let fence = fence("prod", b"/prod/leader/694d7a3c1f2e0b11", 42);
        assert_eq!(fence, Fence::Leader { key: "leader/694d7a3c1f2e0b11".into(), token: 42 });
    }
}
