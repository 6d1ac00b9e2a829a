//! Leadership through the store's own [`TopologyStore::try_lead`]: used with
//! the local and memory stores, where this process is the only writer (the
//! local store locks its file against other processes), and by servers
//! that share one store in a process ([`Server::start_with_store`]).
//!
//! [`Server::start_with_store`]: crate::Server::start_with_store

use std::sync::Arc;
use std::time::Duration;

use shardlib::store::TopologyStore;
use tokio_util::sync::CancellationToken;

use super::{Member, Publisher, member_value, parse_member, sleep_or_stop};

/// How often to try again when leadership is held by someone else or the
/// store failed.
const RETRY: Duration = Duration::from_secs(1);

/// The candidate name: the member's election value (`{"member_id",
/// "address"}`, as in the etcd election), so that followers sharing the
/// store know where to forward writes.
fn candidate(me: &Member) -> String {
    String::from_utf8(member_value(me)).expect("JSON is UTF-8")
}

pub(super) async fn run(store: Arc<dyn TopologyStore>, publisher: Publisher, ttl: Duration, stop: CancellationToken) {
    let me = publisher.me.member_id.clone();
    let candidate = candidate(&publisher.me);
    loop {
        match store.try_lead(&candidate, ttl).await {
            Ok(Some(leadership)) => {
                publisher.lead(leadership.fence().clone());
                tokio::select! {
                    () = leadership.lost() => publisher.step_down("the store ended the leadership", None),
                    () = stop.cancelled() => {
                        publisher.step_down(super::SHUTTING_DOWN, None);
                        match leadership.resign().await {
                            Ok(()) => tracing::info!(member_id = %me, "resigned leadership"),
                            Err(error) => tracing::warn!(%error, "resigning leadership failed"),
                        }
                        return;
                    }
                }
            }
            Ok(None) => {
                publisher.campaigning();
                let leader = store.leader().await.ok().flatten();
                publisher.observed(leader.map(|info| parse_member(info.candidate.as_bytes())));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot try to lead");
                publisher.step_down("the store failed", Some(format!("cannot try to lead: {error}")));
                if sleep_or_stop(RETRY, &stop).await {
                    return;
                }
                continue;
            }
        }
        if sleep_or_stop(RETRY, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_carry_the_address() {
        let me = Member { member_id: "m1".into(), address: "http://127.0.0.1:7070".into() };
        assert_eq!(parse_member(candidate(&me).as_bytes()), me);
    }
}
