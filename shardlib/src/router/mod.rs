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
