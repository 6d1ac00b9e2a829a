//! Leadership in etcd: the leader key `/<cluster>/leader`, created only if
//! absent and bound to a lease that a keeper task renews. The fencing token
//! is the key's create revision.

use std::time::Duration;

use etcd_client::LeaseClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::kv::TxnBuilder;
use super::{EtcdStore, etcd_error};
use crate::store::{LEADER_KEY, LeaderInfo, Leadership, StoreError};

/// The leader key's value.
#[derive(Serialize, Deserialize)]
struct LeaderValue {
    candidate: String,
}

/// Tries once to create the leader key under a new lease.
pub(super) async fn try_lead(
    store: &EtcdStore,
    candidate: &str,
    ttl: Duration,
) -> Result<Option<Leadership>, StoreError> {
    let inner = &store.inner;
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let mut leases = inner.client.lease_client();
    let lease = leases.grant(ttl_secs, None).await.map_err(|e| inner.kv.error(e))?.id();
    let key = inner.layout.relative(LEADER_KEY);
    let value = serde_json::to_vec(&LeaderValue { candidate: candidate.to_owned() }).expect("serializes");
    let mut txn = TxnBuilder::default();
    txn.absent(&key);
    txn.put(&key, value, Some(lease));
    let outcome = match inner.kv.txn(txn).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = leases.revoke(lease).await;
            return Err(etcd_error(&inner.kv, e));
        }
    };
    if !outcome.succeeded {
        let _ = leases.revoke(lease).await;
        return Ok(None);
    }
    let info = LeaderInfo { candidate: candidate.to_owned(), token: outcome.revision };
    let (lost_tx, lost_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = oneshot::channel();
    let keeper =
        tokio::spawn(keep(store.clone(), lease, info.token, Duration::from_secs(ttl_secs as u64), stop_rx, lost_tx));
    Ok(Some(Leadership::new(info, lost_rx, stop_tx, keeper)))
}

/// The current leader.
pub(super) async fn leader(store: &EtcdStore) -> Result<Option<LeaderInfo>, StoreError> {
    let inner = &store.inner;
    let (_, kv) = inner.kv.get(&inner.layout.relative(LEADER_KEY), 0).await.map_err(|e| etcd_error(&inner.kv, e))?;
    Ok(kv.map(|kv| {
        let candidate = serde_json::from_slice::<LeaderValue>(kv.value()).map(|v| v.candidate);
        LeaderInfo { candidate: candidate.unwrap_or_default(), token: kv.create_revision() }
    }))
}

/// Renews the lease every third of its TTL until told to stop (then gives
/// leadership back) or until the lease cannot be renewed before it expires.
async fn keep(
    store: EtcdStore,
    lease: i64,
    token: i64,
    ttl: Duration,
    mut stop: oneshot::Receiver<()>,
    lost: watch::Sender<bool>,
) -> Result<(), StoreError> {
    let mut leases = store.inner.client.lease_client();
    let mut expires = Instant::now() + ttl;
    let mut keeper = None;
    let renew_every = ttl / 3;
    loop {
        tokio::select! {
            _ = &mut stop => {
                let result = resign(&store, &mut leases, lease, token).await;
                lost.send_replace(true);
                return result;
            }
            _ = tokio::time::sleep(renew_every) => {}
        }
        let sent = Instant::now();
        match renew(&mut leases, &mut keeper, lease, renew_every).await {
            Some(remaining) if remaining > 0 => expires = sent + Duration::from_secs(remaining as u64),
            Some(_) => {
                tracing::warn!(lease, "leader lease expired");
                break;
            }
            None => keeper = None,
        }
        if !still_leader(&store, token, renew_every).await {
            tracing::warn!(lease, token, "the leader key was deleted or replaced");
            break;
        }
        if Instant::now() >= expires {
            tracing::warn!(lease, "leader lease could not be renewed in time");
            break;
        }
    }
    lost.send_replace(true);
    let _ = leases.revoke(lease).await;
    // Wait for the handle to be dropped or resigned, so that resign() sees Ok.
    let _ = stop.await;
    Ok(())
}

type Keeper = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// Renews the lease once; the TTL left, or `None` if etcd did not answer
/// (the keep-alive stream is then opened again next time).
async fn renew(leases: &mut LeaseClient, keeper: &mut Option<Keeper>, lease: i64, wait: Duration) -> Option<i64> {
    let attempt = async {
        if keeper.is_none() {
            *keeper = Some(leases.keep_alive(lease).await.ok()?);
        }
        let (sender, responses) = keeper.as_mut()?;
        sender.keep_alive().await.ok()?;
        responses.message().await.ok()?.map(|r| r.ttl())
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

/// Whether the leader key is still the one created at `token` (`true`
/// when etcd does not answer in time: the lease deadline decides then).
async fn still_leader(store: &EtcdStore, token: i64, wait: Duration) -> bool {
    let inner = &store.inner;
    let key = inner.layout.relative(LEADER_KEY);
    match tokio::time::timeout(wait, inner.kv.get(&key, 0)).await {
        Ok(Ok((_, kv))) => kv.is_some_and(|kv| kv.create_revision() == token),
        _ => true,
    }
}

/// Deletes the leader key if it is still ours, and revokes the lease.
async fn resign(store: &EtcdStore, leases: &mut LeaseClient, lease: i64, token: i64) -> Result<(), StoreError> {
    let inner = &store.inner;
    let key = inner.layout.relative(LEADER_KEY);
    let mut txn = TxnBuilder::default();
    txn.created_at(&key, token);
    txn.delete(&key);
    let deleted = inner.kv.txn(txn).await.map(|_| ()).map_err(|e| etcd_error(&inner.kv, e));
    let revoked = leases.revoke(lease).await.map(|_| ()).map_err(|e| inner.kv.error(e));
    deleted.and(revoked)
}
