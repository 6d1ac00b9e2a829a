//! The etcd election (see the [module docs](super) for the protocol): the
//! campaign, observe and resign calls of etcd's election API, with the
//! election's keys, fences and lease keeping shared with the store
//! ([`shardlib::store::etcd::election`]), whose own `try_lead` and `leader`
//! take part in the same election.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, LeaderKey, ResignOptions, SortOrder, SortTarget};
use shardlib::store::Fence;
use shardlib::store::etcd::election;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Member, Publisher, member_value, parse_member, sleep_or_stop};

/// Pause before campaigning again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Longest an etcd call made outside the campaign itself may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `/v1/status` waits for the list of members.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(1);

/// What the etcd election needs.
#[derive(Clone)]
pub struct Settings {
    /// A client used only by the election.
    pub client: Client,
    /// The cluster: the election is `/<cluster>/leader`.
    pub cluster: String,
    /// The lease TTL.
    pub ttl: Duration,
}

impl Settings {
    /// The election's name: `/<cluster>/leader`.
    pub fn election_name(&self) -> String {
        election::election_name(&self.cluster)
    }

    /// The fence of a won election: the leader key relative to the cluster
    /// prefix, and its create revision.
    fn fence(&self, leader: &LeaderKey) -> Fence {
        election::fence(&self.cluster, leader.key(), leader.rev())
    }
}

/// The election's candidates, read from etcd.
#[derive(Clone)]
pub struct Candidates {
    client: Client,
    prefix: String,
}

impl Candidates {
    pub(super) fn new(settings: &Settings) -> Self {
        Candidates { client: settings.client.clone(), prefix: format!("{}/", settings.election_name()) }
    }

    /// Every candidate, oldest (the leader) first; `None` if etcd cannot be
    /// asked now.
    pub async fn list(&self) -> Option<Vec<Member>> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let response =
            tokio::time::timeout(MEMBERS_TIMEOUT, kv.get(self.prefix.as_str(), Some(options))).await.ok()?.ok()?;
        Some(response.kvs().iter().map(|kv| parse_member(kv.value())).collect())
    }
}

/// How one term of candidacy ended.
enum Ended {
    /// Shutting down: resigned.
    Stopped,
    /// The lease was lost or etcd failed: campaign again.
    Lost(String),
}

pub(super) async fn run(settings: Settings, publisher: Arc<Publisher>, stop: CancellationToken) {
    let observer = tokio::spawn(observe(settings.clone(), publisher.clone(), stop.clone()));
    loop {
        match candidacy(&settings, &publisher, &stop).await {
            Ended::Stopped => break,
            Ended::Lost(reason) => {
                publisher.step_down(&reason, Some(reason.clone()));
                tracing::warn!(reason, "campaigning again");
            }
        }
        if sleep_or_stop(RETRY, &stop).await {
            break;
        }
    }
    publisher.step_down(super::SHUTTING_DOWN, None);
    let _ = observer.await;
}

/// One lease: campaign, lead until the lease is lost or we stop.
async fn candidacy(settings: &Settings, publisher: &Publisher, stop: &CancellationToken) -> Ended {
    let mut client = settings.client.clone();
    let ttl_secs = i64::try_from(settings.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    let granted_at = Instant::now();
    let lease = match call(client.lease_grant(ttl_secs, None)).await {
        Ok(lease) => lease,
        Err(error) => return Ended::Lost(format!("cannot grant a lease: {error}")),
    };
    let lease_id = lease.id();
    let granted = Duration::from_secs(u64::try_from(lease.ttl()).unwrap_or(0));
    let keep_alive = election::keep_lease_alive(client.lease_client(), lease_id, granted_at, granted);
    tokio::pin!(keep_alive);
    publisher.campaigning();

    let name = settings.election_name();
    let value = member_value(&publisher.me);
    let mut election = client.election_client();
    tracing::debug!(election = %name, lease = lease_id, "campaigning");
    let won = tokio::select! {
        won = election.campaign(name.as_str(), value, lease_id) => won,
        lost = &mut keep_alive => {
            revoke(&mut client, lease_id).await;
            return Ended::Lost(lost.to_string());
        }
        () = stop.cancelled() => {
            revoke(&mut client, lease_id).await;
            return Ended::Stopped;
        }
    };
    let leader = match won.map(|mut response| response.take_leader()) {
        Ok(Some(leader)) => leader,
        Ok(None) => {
            revoke(&mut client, lease_id).await;
            return Ended::Lost("campaign answered without a leader key".to_owned());
        }
        Err(error) => {
            revoke(&mut client, lease_id).await;
            return Ended::Lost(format!("campaign failed: {error}"));
        }
    };
    publisher.lead(settings.fence(&leader));

    let ended = tokio::select! {
        lost = &mut keep_alive => Ended::Lost(lost.to_string()),
        () = stop.cancelled() => Ended::Stopped,
    };
    // Stop writing before anything else: the fence is withdrawn at once.
    match &ended {
        Ended::Lost(reason) => publisher.step_down(reason, Some(reason.clone())),
        Ended::Stopped => {
            publisher.step_down(super::SHUTTING_DOWN, None);
            match call(election.resign(Some(ResignOptions::new().with_leader(leader)))).await {
                Ok(_) => tracing::info!(member_id = %publisher.me.member_id, "resigned leadership"),
                Err(error) => tracing::warn!(%error, "resigning leadership failed; the lease will expire"),
            }
        }
    }
    revoke(&mut client, lease_id).await;
    ended
}

/// Follows who leads, for followers (forwarding, `/v1/status`).
async fn observe(settings: Settings, publisher: Arc<Publisher>, stop: CancellationToken) {
    let mut election = settings.client.election_client();
    loop {
        match call(election.observe(settings.election_name())).await {
            Ok(mut stream) => loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(response)) => publisher.observed(response.kv().map(|kv| parse_member(kv.value()))),
                        Ok(None) => break,
                        Err(error) => {
                            tracing::debug!(%error, "observing the leader failed");
                            break;
                        }
                    },
                    () = stop.cancelled() => return,
                }
            },
            Err(error) => tracing::debug!(%error, "cannot observe the leader"),
        }
        if sleep_or_stop(RETRY, &stop).await {
            return;
        }
    }
}

/// An etcd call with [`CALL_TIMEOUT`].
async fn call<T>(future: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::ElectError(format!("etcd did not answer within {CALL_TIMEOUT:?}"))),
    }
}

/// Revokes a lease (deleting our candidate key at once); a failure only
/// means the lease expires on its own.
async fn revoke(client: &mut Client, lease_id: i64) {
    if let Err(error) = call(client.lease_revoke(lease_id)).await {
        tracing::debug!(%error, lease = lease_id, "cannot revoke the lease; it will expire");
    }
}
