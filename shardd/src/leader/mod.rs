//! Leader election: which shardd process writes the topology.
//!
//! - **etcd** ([`etcd`]): etcd's election API on a client of its own (so
//!   that store traffic never delays lease renewals). Each process grants a
//!   lease of `lease_ttl`, keeps it alive every third of the TTL, and
//!   campaigns on `/<cluster>/leader` with the value
//!   `{"member_id", "address"}`. The winner's leader key
//!   (`/<cluster>/leader/<lease id>`) has a create revision that is the
//!   fencing token: every write carries
//!   [`Fence::Leader`]` { key: "leader/<lease id>", token }`, and the store
//!   refuses it once that key is gone. The leader steps down at once — stops
//!   writing, turns follower, campaigns again with a new lease — when etcd
//!   reports the lease expired or it may have expired (no keep-alive
//!   answered within the TTL, measured from when the last answered one was
//!   sent, so it steps down before etcd can elect another leader); a broken
//!   keep-alive stream is opened again until then. Followers learn the
//!   leader through `observe`. On shutdown the leader resigns, so a standby
//!   takes over at once; after a SIGKILL, within the TTL. The keys, fences
//!   and lease keeping are shardlib's ([`shardlib::store::etcd::election`]):
//!   the store's own `try_lead` and `leader` take part in this same
//!   election, so they report shardd's leader and cannot make a second one.
//! - **local and memory stores** ([`store`]): the store's own leadership
//!   ([`TopologyStore::try_lead`]). The local store locks its file against
//!   other processes, so this process is the leader.
//!
//! The outcome is published as an [`ElectionState`] that the API reads
//! through a [`LeaderHandle`].

pub mod etcd;
pub mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shardlib::store::{Fence, TopologyStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A shardd process as other members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its member id.
    pub member_id: String,
    /// The base URL of its API (its advertise address); empty if unknown.
    pub address: String,
}

/// This process's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It writes the topology.
    Leader,
    /// It serves reads and forwards writes to the leader.
    Follower,
}

/// The election as this process knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionState {
    /// This process's role.
    pub role: Role,
    /// The fence to write with; `Some` exactly while leading.
    pub fence: Option<Fence>,
    /// The current leader, if known (this process while it leads).
    pub leader: Option<Member>,
    /// Why this process cannot take part in the election now (e.g. etcd
    /// does not answer); `None` while it leads or campaigns normally.
    pub problem: Option<String>,
}

/// The election value of a member: `{"member_id", "address"}` (JSON), the
/// same with every store.
fn member_value(me: &Member) -> Vec<u8> {
    serde_json::to_vec(me).expect("a member serializes")
}

/// A member from an election value (shown raw if it is not ours: e.g. a
/// tool that took leadership through the store's `try_lead`).
fn parse_member(value: &[u8]) -> Member {
    serde_json::from_slice(value)
        .unwrap_or_else(|_| Member { member_id: String::from_utf8_lossy(value).into_owned(), address: String::new() })
}

impl ElectionState {
    fn follower(leader: Option<Member>) -> Self {
        ElectionState { role: Role::Follower, fence: None, leader, problem: None }
    }
}

/// Where the list of members comes from.
#[derive(Clone)]
enum Members {
    /// Only this process takes part.
    Single,
    /// The candidates of the etcd election.
    Etcd(Box<etcd::Candidates>),
}

/// Read access to the election, for the API and the service.
#[derive(Clone)]
pub struct LeaderHandle {
    state: watch::Receiver<ElectionState>,
    me: Member,
    members: Members,
}

impl LeaderHandle {
    /// The election state now.
    pub fn state(&self) -> ElectionState {
        self.state.borrow().clone()
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().role == Role::Leader
    }

    /// The fence for writes, while this process leads.
    pub fn fence(&self) -> Option<Fence> {
        self.state.borrow().fence.clone()
    }

    /// The leader other than this process, if known: where writes are
    /// forwarded.
    pub fn remote_leader(&self) -> Option<Member> {
        let state = self.state.borrow();
        match &state.leader {
            Some(leader) if state.role == Role::Follower && leader.member_id != self.me.member_id => {
                Some(leader.clone())
            }
            _ => None,
        }
    }

    /// This process.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Every process taking part in the election, leader first (`None` if
    /// the store cannot be asked now).
    pub async fn members(&self) -> Option<Vec<Member>> {
        match &self.members {
            Members::Single => Some(vec![self.me.clone()]),
            Members::Etcd(candidates) => candidates.list().await,
        }
    }

    /// A receiver of every change of the election state.
    pub fn subscribe(&self) -> watch::Receiver<ElectionState> {
        self.state.clone()
    }
}

/// Publishes the election state: the watch channel, the `shardd_leader`
/// metric and a log line per change of role.
struct Publisher {
    tx: watch::Sender<ElectionState>,
    me: Member,
    metrics: Arc<Metrics>,
}

impl Publisher {
    fn lead(&self, fence: Fence) {
        tracing::info!(member_id = %self.me.member_id, fence = ?fence, "became leader");
        self.tx.send_replace(ElectionState {
            role: Role::Leader,
            fence: Some(fence),
            leader: Some(self.me.clone()),
            problem: None,
        });
        self.metrics.set_leader(true);
    }

    /// Stops leading at once (before anything else happens). `problem`
    /// says why this process cannot take part now, if it cannot. A follower
    /// keeps the leader it observed: the observer reports only changes, so
    /// forgetting it here (say, when a campaign fails because an etcd member
    /// went away) would leave this process without a leader to forward to.
    fn step_down(&self, reason: &str, problem: Option<String>) {
        let mut was_leader = false;
        self.tx.send_modify(|state| {
            was_leader = state.role == Role::Leader;
            let leader = if was_leader { None } else { state.leader.take() };
            *state = ElectionState { problem, ..ElectionState::follower(leader) };
        });
        self.metrics.set_leader(false);
        if was_leader {
            if reason == SHUTTING_DOWN {
                tracing::info!(member_id = %self.me.member_id, reason, "stepped down");
            } else {
                tracing::warn!(member_id = %self.me.member_id, reason, "stepped down");
            }
        }
    }

    /// Campaigning normally again: clears any problem.
    fn campaigning(&self) {
        self.tx.send_if_modified(|state| state.problem.take().is_some());
    }

    /// Records who leads, as observed (does not change this process's role).
    fn observed(&self, leader: Option<Member>) {
        self.tx.send_if_modified(|state| {
            if state.role == Role::Follower && state.leader != leader {
                tracing::info!(leader = ?leader.as_ref().map(|l| &l.member_id), "leader observed");
                state.leader = leader;
                true
            } else {
                false
            }
        });
    }
}

/// The reason given when leadership ends because the process stops.
const SHUTTING_DOWN: &str = "shutting down";

/// The election task of this process.
pub struct Election {
    handle: LeaderHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Takes part in the election through the store's own leadership
    /// (local and memory stores).
    pub fn start_with_store(
        store: Arc<dyn TopologyStore>,
        me: Member,
        ttl: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Election {
        let (tx, rx) = watch::channel(ElectionState::follower(None));
        let publisher = Publisher { tx, me: me.clone(), metrics };
        let stop = CancellationToken::new();
        let task = tokio::spawn(store::run(store, publisher, ttl, stop.clone()));
        Election { handle: LeaderHandle { state: rx, me, members: Members::Single }, stop, task }
    }

    /// Takes part in the etcd election on its own `client`.
    pub fn start_with_etcd(settings: etcd::Settings, me: Member, metrics: Arc<Metrics>) -> Election {
        let (tx, rx) = watch::channel(ElectionState::follower(None));
        let publisher = Arc::new(Publisher { tx, me: me.clone(), metrics });
        let stop = CancellationToken::new();
        let candidates = Box::new(etcd::Candidates::new(&settings));
        let task = tokio::spawn(etcd::run(settings, publisher, stop.clone()));
        Election { handle: LeaderHandle { state: rx, me, members: Members::Etcd(candidates) }, stop, task }
    }

    /// The read side.
    pub fn handle(&self) -> &LeaderHandle {
        &self.handle
    }

    /// Stops taking part: a leader resigns (a standby takes over at once),
    /// a candidate withdraws. Waits until done.
    pub async fn resign(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "election task failed");
        }
    }
}

/// Sleeps for `duration` unless `stop` is cancelled first; returns whether
/// it was.
async fn sleep_or_stop(duration: std::time::Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_through_election_values() {
        let me = Member { member_id: "m1".into(), address: "http://10.0.0.1:7070".into() };
        assert_eq!(parse_member(&member_value(&me)), me);
        assert_eq!(parse_member(b"raw"), Member { member_id: "raw".into(), address: String::new() });
    }

    /// Regression: a follower whose campaign failed (its etcd member went
    /// away) forgot the leader it had observed, and the observer, which
    /// reports only changes, never told it again: writes could not be
    /// forwarded until the next change of leader.
    #[test]
    fn a_follower_that_cannot_campaign_keeps_the_observed_leader() {
        let me = Member { member_id: "m2".into(), address: String::new() };
        let other = Member { member_id: "m1".into(), address: "http://m1".into() };
        let (tx, rx) = watch::channel(ElectionState::follower(None));
        let publisher = Publisher { tx, me: me.clone(), metrics: Arc::new(Metrics::new()) };
        publisher.observed(Some(other.clone()));
        publisher.step_down("campaign failed", Some("campaign failed".into()));
        assert_eq!(rx.borrow().leader, Some(other.clone()));
        assert_eq!(rx.borrow().problem.as_deref(), Some("campaign failed"));

        // A leader that steps down no longer names itself.
        publisher.lead(Fence::leader(7));
        assert_eq!(rx.borrow().leader, Some(me));
        publisher.step_down("the lease expired", None);
        assert_eq!(
            (rx.borrow().role, rx.borrow().leader.clone(), rx.borrow().fence.clone()),
            (Role::Follower, None, None)
        );
    }
}
