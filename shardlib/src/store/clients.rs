//! Client registrations: services announce themselves in the store, bound
//! to a lease, and report a small JSON value (their topology epoch, their
//! load) that operators and the planner read with
//! [`TopologyStore::list_clients`](super::TopologyStore::list_clients).
//!
//! [`TopologyStore::register_client`](super::TopologyStore::register_client)
//! writes the registration and returns a [`Registration`]: a handle whose
//! *keeper* task keeps it alive (etcd: a lease renewed every third of the
//! TTL; the local store: an in-process deadline pushed forward as often).
//! [`Registration::update`] replaces the reported value;
//! [`Registration::close`] removes the registration and waits; dropping the
//! handle removes it in the background. If the process dies, nothing
//! renews it and it disappears within its TTL.
//!
//! The keeper survives store outages: when the lease is lost (etcd
//! unreachable for longer than the TTL) it registers again, with the latest
//! value, as soon as the store answers.
//!
//! Ids are names (1 to 64 characters from `[A-Za-z0-9_.-]`): give each
//! live process its own. Registering an id that is registered replaces the
//! registration (a restarted process takes over its previous one at once);
//! a replaced holder's updates take it back, and its `close` removes only
//! a registration that is still its own.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::StoreError;
use crate::id::validate_name;

/// A registered client, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientInfo {
    /// The client's id.
    pub id: String,
    /// The value it reports (e.g. `{"epoch": 42, "load": 0.3}`).
    pub value: serde_json::Value,
    /// The TTL it registered with: it disappears this long after its
    /// holder stops renewing it.
    pub ttl: Duration,
    /// When the value was last written (registered or updated), by the
    /// client's clock.
    pub updated_at: SystemTime,
}

/// The TTL a registration actually gets: whole seconds (etcd leases are),
/// rounded up, at least one.
pub(crate) fn effective_ttl(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Checks a client id: a name (see [`validate_name`]).
pub(crate) fn validate_client_id(id: &str) -> Result<(), StoreError> {
    validate_name("client id", id)?;
    Ok(())
}

/// A request from a [`Registration`] to its keeper.
pub(crate) type UpdateRequest = (serde_json::Value, oneshot::Sender<Result<(), StoreError>>);

/// What a backend's keeper task is given.
pub(crate) struct KeeperChannels {
    /// Updates of the value; closed when the handle is closed or dropped:
    /// then the keeper removes the registration and ends.
    pub(crate) updates: mpsc::Receiver<UpdateRequest>,
    /// Whether the store holds the registration now, as far as the keeper
    /// knows.
    pub(crate) active: watch::Sender<bool>,
}

/// A client registration held by this process; see the [module
/// docs](self). Dropping it removes the registration in the background.
pub struct Registration {
    id: String,
    ttl: Duration,
    updates: Option<mpsc::Sender<UpdateRequest>>,
    active: watch::Receiver<bool>,
    keeper: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Registration {
    /// The channels for a keeper, and a function that makes the handle
    /// once the keeper task is spawned. The registration starts active:
    /// backends write it before they return the handle.
    pub(crate) fn channels(
        id: &str,
        ttl: Duration,
    ) -> (KeeperChannels, impl FnOnce(JoinHandle<Result<(), StoreError>>) -> Registration) {
        let (updates_tx, updates) = mpsc::channel(8);
        let (active_tx, active) = watch::channel(true);
        let id = id.to_owned();
        let make = move |keeper| Registration { id, ttl, updates: Some(updates_tx), active, keeper: Some(keeper) };
        (KeeperChannels { updates, active: active_tx }, make)
    }

    /// The client id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The TTL the registration got (whole seconds, at least one).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the store holds the registration now, as far as the keeper
    /// knows: `false` after the lease was lost, until it is registered
    /// again.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Replaces the reported value and waits until it is written. While
    /// the registration is lost (the store unreachable), fails with the
    /// store's error; the value is kept and written when the keeper
    /// registers again.
    pub async fn update(&self, value: serde_json::Value) -> Result<(), StoreError> {
        let ended = || StoreError::Backend { message: format!("client registration {}: its keeper ended", self.id) };
        let updates = self.updates.as_ref().ok_or_else(ended)?;
        let (reply, answer) = oneshot::channel();
        updates.send((value, reply)).await.map_err(|_| ended())?;
        answer.await.map_err(|_| ended())?
    }

    /// Removes the registration (if it is still this holder's) and waits
    /// until the store has forgotten it.
    pub async fn close(mut self) -> Result<(), StoreError> {
        drop(self.updates.take());
        match self.keeper.take() {
            Some(keeper) => keeper.await.map_err(|e| StoreError::Backend {
                message: format!("client registration {}: keeper task failed: {e}", self.id),
            })?,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("active", &self.is_active())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds() {
        assert_eq!(effective_ttl(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(effective_ttl(Duration::from_millis(1500)), Duration::from_secs(2));
        assert_eq!(effective_ttl(Duration::from_secs(10)), Duration::from_secs(10));
    }
}
