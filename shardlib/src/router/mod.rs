//! The compiled router: from a key to the shard that owns it.
//!
//! A [`Router`] is built once from a validated [`Topology`] snapshot and never
//! changes; a new topology makes a new router, published through
//! [`SharedRouter`] with one atomic pointer swap. Lookups therefore never
//! block, never allocate, and never see half of a change.

mod batch;
mod keyspace;
mod shared;

use std::collections::HashMap;

pub use batch::ShardBatches;
pub use keyspace::{KeyspaceRouter, Route, RouteRange};
pub use shared::{SharedRouter, StaleEpoch};

use crate::id::{Epoch, KeyspaceName, ShardId};
use crate::key::ShardKey;
use crate::topology::{Topology, TopologyError};

/// Routing tables for every keyspace of one topology epoch.
#[derive(Debug)]
pub struct Router {
    cluster: String,
    epoch: Epoch,
    keyspaces: HashMap<KeyspaceName, KeyspaceRouter>,
}

/// A lookup that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The router has no keyspace with this name.
    #[error("unknown keyspace {keyspace:?}")]
    UnknownKeyspace {
        /// The name asked for.
        keyspace: String,
    },
}

impl Router {
    /// Validates `topology` and compiles its routing tables.
    pub fn compile(topology: &Topology) -> Result<Router, TopologyError> {
        topology.validate_structure()?;
        let keyspaces = topology
            .keyspaces
            .iter()
            .map(|(name, keyspace)| Ok((name.clone(), KeyspaceRouter::compile(name, keyspace)?)))
            .collect::<Result<_, TopologyError>>()?;
        Ok(Router { cluster: topology.cluster.clone(), epoch: topology.epoch, keyspaces })
    }

    /// The cluster this router belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The topology epoch this router was compiled from.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The routing table of one keyspace. Look it up once and keep the
    /// reference for many lookups.
    pub fn keyspace(&self, name: &str) -> Result<&KeyspaceRouter, RouteError> {
        self.keyspaces.get(name).ok_or_else(|| RouteError::UnknownKeyspace { keyspace: name.to_owned() })
    }

    /// The names of all keyspaces, sorted.
    pub fn keyspace_names(&self) -> Vec<&KeyspaceName> {
        let mut names: Vec<_> = self.keyspaces.keys().collect();
        names.sort();
        names
    }

    /// The shard that owns `key` in `keyspace`.
    #[inline]
    pub fn route<K: ShardKey + ?Sized>(&self, keyspace: &str, key: &K) -> Result<&ShardId, RouteError> {
        Ok(self.keyspace(keyspace)?.route(key))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::key::{KeyspaceId, ShardKey};
    use crate::topology::{Dsn, Keyspace, Labels, Partitioning, RangeAssignment, RangeState, Shard, ShardState};

    /// A keyspace "users" over `n` shards `s0…`, split into `n` equal ranges.
    fn topology(epoch: u64, n: u32) -> Topology {
        let shards = (0..n)
            .map(|i| Shard {
                id: ShardId::new(format!("s{i}")).unwrap(),
                primary: Dsn::new(format!("sqlite:///tmp/s{i}.db")),
                replicas: vec![],
                labels: Labels::default(),
                weight: 1,
                capacity_bytes: None,
                state: ShardState::Serving,
            })
            .collect();
        let ranges = crate::range::KeyRange::uniform(n)
            .into_iter()
            .enumerate()
            .map(|(i, range)| RangeAssignment {
                range,
                shard: ShardId::new(format!("s{i}")).unwrap(),
                state: RangeState::Serving,
            })
            .collect();
        let mut topology = Topology::new("test");
        topology.epoch = Epoch(epoch);
        topology.keyspaces.insert(
            KeyspaceName::new("users").unwrap(),
            Keyspace {
                seed: 0,
                key_type: Default::default(),
                tables: vec![],
                shards,
                partitioning: Partitioning::HashRange { ranges },
            },
        );
        topology
    }

    #[test]
    fn routes_through_ranges_and_reports_unknown_keyspaces() {
        let router = Router::compile(&topology(1, 4)).unwrap();
        let users = router.keyspace("users").unwrap();
        assert_eq!(users.route_id(KeyspaceId(0)).unwrap().as_str(), "s0");
        assert_eq!(users.route_id(KeyspaceId(u64::MAX)).unwrap().as_str(), "s3");
        assert_eq!(users.route_id(KeyspaceId(0x8000_0000_0000_0000)).unwrap().as_str(), "s2");
        let route = users.lookup("alice");
        assert_eq!(route.keyspace_id, "alice".keyspace_id(0));
        assert_eq!(route.range.unwrap().to_string(), "40-80");
        assert_eq!(router.route("users", "alice").unwrap(), route.shard);
        assert_eq!(
            router.route("orders", "alice").unwrap_err(),
            RouteError::UnknownKeyspace { keyspace: "orders".into() }
        );
    }

    #[test]
    fn batches_group_keys_by_owner_in_input_order() {
        let router = Router::compile(&topology(1, 4)).unwrap();
        let users = router.keyspace("users").unwrap();
        let keys: Vec<u64> = (0..1000).collect();
        let batches = users.group_by_shard(keys.iter().copied(), |k| *k);
        let mut seen = 0;
        for (shard, group) in batches.iter() {
            assert!(group.windows(2).all(|w| w[0] < w[1]), "input order kept");
            assert!(group.iter().all(|k| users.route(k) == shard));
            seen += group.len();
        }
        assert_eq!(seen, keys.len());
        assert_eq!(batches.shard_count(), 4);
    }

    #[test]
    fn shared_router_refuses_older_epochs() {
        let shared = SharedRouter::new(Router::compile(&topology(5, 2)).unwrap());
        let stale = shared.replace(Router::compile(&topology(4, 8)).unwrap()).unwrap_err();
        assert_eq!(stale, StaleEpoch { installed: Epoch(5), offered: Epoch(4) });
        assert_eq!(shared.load().keyspace("users").unwrap().shards().len(), 2);
        let previous = shared.replace(Router::compile(&topology(6, 8)).unwrap()).unwrap();
        assert_eq!(previous.epoch(), Epoch(5));
        assert_eq!(shared.epoch(), Epoch(6));
        assert_eq!(shared.snapshot().keyspace("users").unwrap().shards().len(), 8);
    }

    #[test]
    fn readers_see_whole_routers_and_epochs_only_grow() {
        // Each epoch e has e shards: a reader that saw a router whose shard
        // count disagrees with its epoch would have seen half of a change.
        let shared = Arc::new(SharedRouter::new(Router::compile(&topology(1, 1)).unwrap()));
        let routers: Vec<Router> = (2..=40).map(|e| Router::compile(&topology(e, e as u32)).unwrap()).collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut reads = 0u32;
                    while last < 40 && reads < 50_000_000 {
                        let router = shared.load();
                        let epoch = router.epoch().0;
                        assert!(epoch >= last, "epoch went back from {last} to {epoch}");
                        let users = router.keyspace("users").unwrap();
                        assert_eq!(users.shards().len() as u64, epoch);
                        assert!(users.route(&u64::from(reads)).as_str().starts_with('s'));
                        last = epoch;
                        reads += 1;
                    }
                    last
                })
            })
            .collect();
        for router in routers {
            shared.replace(router).unwrap();
        }
        for reader in readers {
            assert_eq!(reader.join().unwrap(), 40);
        }
    }
}
