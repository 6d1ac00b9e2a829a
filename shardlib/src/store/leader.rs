//! [`Leadership`]: the handle a store gives the process that won
//! leadership, the same for every backend.
//!
//! A backend starts a *keeper* task when leadership is won: it keeps the
//! leadership alive (etcd: renews the lease), reports its loss through a
//! `watch` channel, and on a stop signal gives leadership back (etcd:
//! deletes the election key if it is still ours, revokes the lease).
//! Dropping the handle sends the stop signal; [`Leadership::resign`] sends
//! it and waits.

use std::fmt;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{Fence, StoreError};

/// Who leads, as recorded by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The name the leader campaigned with (for a shardd member elected
    /// through etcd, its `{"member_id", "address"}` JSON).
    pub candidate: String,
    /// The leader key relative to the cluster, which its writes are fenced
    /// by: in etcd the leader's election key `leader/<lease id>`, in the
    /// local store [`LEADER_KEY`](super::LEADER_KEY).
    pub key: String,
    /// Its fencing token: the key's create revision (see [`Fence::Leader`]).
    pub token: i64,
}

impl LeaderInfo {
    /// The fence this leader writes with. Once its leadership has ended,
    /// writes with this fence fail with [`StoreError::Fenced`].
    pub fn fence(&self) -> Fence {
        Fence::Leader { key: self.key.clone(), token: self.token }
    }
}

/// Leadership held by this process. Writes made with [`Leadership::fence`]
/// fail with [`StoreError::Fenced`] once it is lost.
///
/// Dropping the handle gives leadership back in the background;
/// [`Leadership::resign`] does so and waits until it is done.
pub struct Leadership {
    info: LeaderInfo,
    fence: Fence,
    lost: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    keeper: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Leadership {
    /// Wraps a won leadership and its keeper task. The keeper sets `lost`
    /// to `true` when leadership ends for any reason, and ends on `stop`.
    pub(crate) fn new(
        info: LeaderInfo,
        lost: watch::Receiver<bool>,
        stop: oneshot::Sender<()>,
        keeper: JoinHandle<Result<(), StoreError>>,
    ) -> Self {
        let fence = info.fence();
        Leadership { info, fence, lost, stop: Some(stop), keeper: Some(keeper) }
    }

    /// The candidate name and fencing token.
    pub fn info(&self) -> &LeaderInfo {
        &self.info
    }

    /// The fencing token: the epoch at which leadership was won.
    pub fn token(&self) -> i64 {
        self.info.token
    }

    /// The fence to pass to every write made as the leader.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether leadership has ended (lease expired, store unreachable for
    /// longer than the lease, election key deleted).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when leadership ends. Stop leading at once then: writes
    /// fenced with [`Leadership::fence`] will fail.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper is gone, which also ends leadership.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Gives leadership back and waits until the store has forgotten it.
    pub async fn resign(mut self) -> Result<(), StoreError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.keeper.take() {
            Some(keeper) => keeper
                .await
                .map_err(|e| StoreError::Backend { message: format!("leadership keeper task failed: {e}") })?,
            None => Ok(()),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership").field("info", &self.info).field("lost", &self.is_lost()).finish()
    }
}
