//! Client registrations of the local store: in memory, each with a
//! deadline that its keeper pushes forward every third of the TTL (see
//! [`crate::store::clients`] and the module docs of [`super`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::LocalStore;
use crate::store::StoreError;
use crate::store::clients::{ClientInfo, KeeperChannels, Registration, effective_ttl, validate_client_id};

/// The registrations, by id.
#[derive(Debug, Default)]
pub(super) struct Clients {
    entries: BTreeMap<String, Entry>,
    /// The token of the next registration: who holds an entry.
    next_token: u64,
}

#[derive(Debug)]
struct Entry {
    info: ClientInfo,
    /// Listed until then.
    deadline: Instant,
    /// The registration holding it.
    token: u64,
}

impl Clients {
    /// A token for a new registration.
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Writes the registration of `token` (replacing any), alive for `ttl`.
    fn put(&mut self, id: &str, value: serde_json::Value, ttl: Duration, token: u64) {
        let info = ClientInfo { id: id.to_owned(), value, ttl, updated_at: SystemTime::now() };
        self.entries.insert(id.to_owned(), Entry { info, deadline: Instant::now() + ttl, token });
    }

    /// Renews the registration of `token`: pushes its deadline forward, or
    /// writes it again if it expired or vanished. Leaves a live
    /// registration of another holder alone. Returns whether `token` holds
    /// the id afterwards.
    fn renew(&mut self, id: &str, value: &serde_json::Value, ttl: Duration, token: u64) -> bool {
        let now = Instant::now();
        match self.entries.get_mut(id) {
            Some(entry) if entry.token == token && entry.deadline > now => {
                entry.deadline = now + ttl;
                true
            }
            Some(entry) if entry.token != token && entry.deadline > now => false,
            _ => {
                self.put(id, value.clone(), ttl, token);
                true
            }
        }
    }

    /// Removes the registration if `token` still holds it.
    fn remove(&mut self, id: &str, token: u64) {
        if self.entries.get(id).is_some_and(|entry| entry.token == token) {
            self.entries.remove(id);
        }
    }

    /// The live registrations, ordered by id; forgets expired ones.
    fn list(&mut self) -> Vec<ClientInfo> {
        let now = Instant::now();
        self.entries.retain(|_, entry| entry.deadline > now);
        self.entries.values().map(|entry| entry.info.clone()).collect()
    }
}

/// [`TopologyStore::register_client`](crate::store::TopologyStore::register_client).
pub(super) async fn register(
    store: &LocalStore,
    id: &str,
    value: serde_json::Value,
    ttl: Duration,
) -> Result<Registration, StoreError> {
    validate_client_id(id)?;
    let ttl = effective_ttl(ttl);
    let token = {
        let mut state = store.inner.state.lock().await;
        let token = state.clients.token();
        state.clients.put(id, value.clone(), ttl, token);
        token
    };
    let (channels, make) = Registration::channels(id, ttl);
    let keeper = Keeper { store: store.clone(), id: id.to_owned(), ttl, token, value };
    Ok(make(tokio::spawn(keeper.run(channels))))
}

/// [`TopologyStore::list_clients`](crate::store::TopologyStore::list_clients).
pub(super) async fn list(store: &LocalStore) -> Result<Vec<ClientInfo>, StoreError> {
    Ok(store.inner.state.lock().await.clients.list())
}

/// One registration's keeper task.
struct Keeper {
    store: LocalStore,
    id: String,
    ttl: Duration,
    token: u64,
    /// The latest value: what is written if the registration expired.
    value: serde_json::Value,
}

impl Keeper {
    /// Renews the registration every third of its TTL and writes updates,
    /// until the handle is closed or dropped; then removes it.
    async fn run(mut self, mut channels: KeeperChannels) -> Result<(), StoreError> {
        let period = self.ttl / 3;
        let mut next = Instant::now() + period;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    let holds = self.store.inner.state.lock().await.clients.renew(&self.id, &self.value, self.ttl, self.token);
                    channels.active.send_replace(holds);
                    next = Instant::now() + period;
                }
                request = channels.updates.recv() => match request {
                    Some((value, reply)) => {
                        self.value = value;
                        self.store.inner.state.lock().await.clients.put(&self.id, self.value.clone(), self.ttl, self.token);
                        channels.active.send_replace(true);
                        let _ = reply.send(Ok(()));
                    }
                    None => {
                        self.store.inner.state.lock().await.clients.remove(&self.id, self.token);
                        return Ok(());
                    }
                }
            }
        }
    }
}
