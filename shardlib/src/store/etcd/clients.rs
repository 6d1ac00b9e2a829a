//! Client registrations in etcd: `/<cluster>/clients/<id>`, bound to a
//! lease of the registrant's own (see [`crate::store::clients`]).
//!
//! Registering grants a lease of the TTL and puts the key with it; the
//! keeper renews the lease every third of the TTL ([`keep_lease_alive`]),
//! puts each new value with the same lease, and on close revokes the lease,
//! which deletes the key if it is still bound to it (a registration that
//! another holder replaced is bound to that holder's lease, and stays).
//! When the lease is lost, the keeper grants a new one and puts the latest
//! value again, retrying with backoff until etcd answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::PutOptions;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::EtcdStore;
use super::election::keep_lease_alive;
use super::kv::MAX_TXN_BYTES;
use crate::store::StoreError;
use crate::store::clients::{ClientInfo, KeeperChannels, Registration, effective_ttl, validate_client_id};

/// Registrations per read request.
const CLIENT_PAGE: i64 = 256;

/// Pause between two attempts to register again after the registration
/// was lost, doubling up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The longest pause between two attempts to register again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A granted lease.
#[derive(Clone, Copy, Debug)]
struct Lease {
    id: i64,
    /// When the grant was sent (the lease may expire `ttl` after it).
    granted_at: Instant,
    ttl: Duration,
}

/// [`TopologyStore::register_client`](crate::store::TopologyStore::register_client).
pub(super) async fn register(
    store: &EtcdStore,
    id: &str,
    value: serde_json::Value,
    ttl: Duration,
) -> Result<Registration, StoreError> {
    validate_client_id(id)?;
    let ttl = effective_ttl(ttl);
    let keeper = Keeper { store: store.clone(), id: id.to_owned(), key: store.inner.layout.client(id), ttl, value };
    let lease = keeper.grant_and_put().await?;
    let (channels, make) = Registration::channels(id, ttl);
    Ok(make(tokio::spawn(keeper.run(lease, channels))))
}

/// [`TopologyStore::list_clients`](crate::store::TopologyStore::list_clients).
pub(super) async fn list(store: &EtcdStore) -> Result<Vec<ClientInfo>, StoreError> {
    let inner = &store.inner;
    let prefix = inner.layout.clients();
    let (_, kvs) = inner.kv.get_prefix(&prefix, 0, CLIENT_PAGE).await.map_err(|e| super::etcd_error(&inner.kv, e))?;
    let mut clients = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let Some(id) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(prefix.as_str())) else {
            continue;
        };
        match StoredClient::decode(id, kv.value()) {
            Ok(stored) => clients.push(stored.info(id)),
            // One unreadable entry must not hide the others.
            Err(error) => tracing::warn!(client = id, %error, "skipping an unreadable client registration"),
        }
    }
    Ok(clients)
}

/// The state of one registration's keeper task.
struct Keeper {
    store: EtcdStore,
    id: String,
    /// The absolute key.
    key: String,
    ttl: Duration,
    /// The latest value: what is written when registering again.
    value: serde_json::Value,
}

impl Keeper {
    /// Keeps the registration until the handle is closed or dropped.
    async fn run(mut self, lease: Lease, mut channels: KeeperChannels) -> Result<(), StoreError> {
        let mut lease = Some(lease);
        // A lost lease, revoked once a new one holds the key.
        let mut lost = None;
        let mut pause = RETRY_PAUSE;
        loop {
            if let Some(held) = lease {
                let leases = self.store.inner.client.lease_client();
                let keeping = keep_lease_alive(leases, held.id, held.granted_at, held.ttl);
                tokio::pin!(keeping);
                loop {
                    tokio::select! {
                        reason = &mut keeping => {
                            tracing::warn!(client = %self.id, lease = held.id, %reason, "client registration lost; registering again");
                            channels.active.send_replace(false);
                            (lease, lost) = (None, Some(held.id));
                            break;
                        }
                        request = channels.updates.recv() => match request {
                            Some((value, reply)) => {
                                self.value = value;
                                let _ = reply.send(self.put(held.id).await);
                            }
                            None => return self.revoke(held.id).await,
                        }
                    }
                }
                continue;
            }
            match self.grant_and_put().await {
                Ok(held) => {
                    tracing::info!(client = %self.id, lease = held.id, "client registered again");
                    channels.active.send_replace(true);
                    (lease, pause) = (Some(held), RETRY_PAUSE);
                    if let Some(old) = lost.take() {
                        let _ = self.revoke(old).await;
                    }
                }
                Err(error) => {
                    tracing::debug!(client = %self.id, %error, "registering again failed; retrying after a pause");
                    let until = Instant::now() + pause;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            request = channels.updates.recv() => match request {
                                Some((value, reply)) => {
                                    self.value = value;
                                    let _ = reply.send(Err(error.clone()));
                                }
                                // The old key goes with its lease: revoke it
                                // if etcd answers, else it expires.
                                None => return match lost {
                                    Some(old) => self.revoke(old).await,
                                    None => Ok(()),
                                },
                            }
                        }
                    }
                }
            }
        }
    }

    /// Grants a lease and puts the latest value with it.
    async fn grant_and_put(&self) -> Result<Lease, StoreError> {
        let inner = &self.store.inner;
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let granted_at = Instant::now();
        let grant = inner.client.lease_client().grant(ttl_secs, None).await.map_err(|e| inner.kv.error(e))?;
        let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0).max(1));
        let lease = Lease { id: grant.id(), granted_at, ttl: granted };
        if let Err(error) = self.put(lease.id).await {
            let _ = inner.client.lease_client().revoke(lease.id).await;
            return Err(error);
        }
        Ok(lease)
    }

    /// Puts the latest value, bound to `lease`.
    async fn put(&self, lease: i64) -> Result<(), StoreError> {
        let inner = &self.store.inner;
        let bytes = StoredClient::new(self.value.clone(), self.ttl).encode();
        if bytes.len() > MAX_TXN_BYTES {
            return Err(StoreError::Backend {
                message: format!("client registration {} is too large: {} bytes", self.id, bytes.len()),
            });
        }
        let options = PutOptions::new().with_lease(lease);
        inner.client.kv_client().put(self.key.as_str(), bytes, Some(options)).await.map_err(|e| inner.kv.error(e))?;
        Ok(())
    }

    /// Revokes `lease`: etcd deletes the key if it is still bound to it.
    /// A lease that has expired already is fine.
    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let inner = &self.store.inner;
        match inner.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("lease not found") => Ok(()),
            Err(e) => Err(inner.kv.error(e)),
        }
    }
}

/// How a registration is stored (the etcd value of `/<cluster>/clients/<id>`):
/// `{"format": 1, "value": …, "ttl_ms": 10000, "updated_at_ms": 1738…}`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredClient {
    format: u32,
    value: serde_json::Value,
    ttl_ms: u64,
    updated_at_ms: u64,
}

impl StoredClient {
    /// The stored form of `value`, written now.
    fn new(value: serde_json::Value, ttl: Duration) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        StoredClient {
            format: 1,
            value,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            updated_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The JSON bytes.
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("json values always serialize")
    }

    /// Parses stored bytes.
    fn decode(id: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Backend {
            message: format!("client registration {id} is stored in a form that cannot be read: {e}"),
        })
    }

    /// As listed.
    fn info(self, id: &str) -> ClientInfo {
        ClientInfo {
            id: id.to_owned(),
            value: self.value,
            ttl: Duration::from_millis(self.ttl_ms),
            updated_at: UNIX_EPOCH + Duration::from_millis(self.updated_at_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let stored = StoredClient::new(serde_json::json!({"epoch": 42}), Duration::from_secs(10));
        let bytes = stored.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"format":1,"value":{"epoch":42},"ttl_ms":10000,"updated_at_ms":"#), "{text}");
        let info = StoredClient::decode("a", &bytes).unwrap().info("a");
        assert_eq!(info.value["epoch"], 42);
        assert_eq!(info.ttl, Duration::from_secs(10));
        assert!(info.updated_at.elapsed().unwrap_or_default() < Duration::from_secs(60));
        assert!(StoredClient::decode("a", b"nope").is_err());
    }
}
