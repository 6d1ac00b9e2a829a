//! The topology model: cluster → keyspaces → shards → range assignments.
//!
//! A [`Topology`] is plain data with serde support (JSON and TOML). It is
//! what the topology store keeps, what `shardd` serves, and what a
//! [`Router`](crate::router::Router) is compiled from. [`Topology::validate`]
//! checks every rule; compiling a router validates too, so a router can only
//! ever be built from a valid topology.
//!
//! A small example in TOML:
//!
//! ```toml
//! cluster = "prod"
//! epoch = 7
//!
//! [keyspaces.users]
//! key_type = "u64"
//! tables = [{ name = "users", key_columns = ["user_id"] }]
//! shards = [
//!   { id = "s0", primary = "postgres://app:secret@db0/users" },
//!   { id = "s1", primary = "postgres://app:secret@db1/users" },
//! ]
//! partitioning = { algorithm = "hash_range", ranges = [
//!   { range = "-80", shard = "s0" },
//!   { range = "80-", shard = "s1" },
//! ] }
//! ```

mod dsn;
mod error;
mod io;
mod seed;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use dsn::{Dsn, redact};
pub use error::TopologyError;

use crate::id::{Epoch, KeyspaceName, ShardId};
use crate::key::KeyType;
use crate::range::{KeyOrderRange, KeyRange};

/// Default number of virtual nodes per unit of weight on a hash ring.
pub const DEFAULT_VNODES: u32 = 160;

/// Default Maglev lookup-table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;

/// The whole shard layout of one cluster at one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The cluster's name.
    pub cluster: String,
    /// The version of this layout; larger is newer.
    #[serde(default)]
    pub epoch: Epoch,
    /// The keyspaces, by name.
    #[serde(default)]
    pub keyspaces: BTreeMap<KeyspaceName, Keyspace>,
}

/// A set of tables sharded by the same key, with its shards and partitioning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    /// The xxh3 seed of this keyspace's keyspace ids (0 by default).
    #[serde(default, with = "seed", skip_serializing_if = "is_zero")]
    pub seed: u64,
    /// How keys of this keyspace are written as text (CLI, API).
    #[serde(default)]
    pub key_type: KeyType,
    /// The tables stored in this keyspace.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// The shards (databases) of this keyspace.
    pub shards: Vec<Shard>,
    /// How keys are placed on the shards.
    pub partitioning: Partitioning,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A table of a keyspace, with the columns that form its sharding key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The table's name in every shard database.
    pub name: String,
    /// The columns whose values form the sharding key, in order.
    pub key_columns: Vec<String>,
    /// The column holding the row's keyspace id (see [`KeyspaceId::to_sql`](crate::KeyspaceId::to_sql)).
    #[serde(default = "default_keyspace_id_column")]
    pub keyspace_id_column: String,
}

fn default_keyspace_id_column() -> String {
    "keyspace_id".to_owned()
}

/// One shard: a primary database and its replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// The shard's id, unique within its keyspace.
    pub id: ShardId,
    /// Connection string of the primary (passwords are redacted when printed).
    pub primary: Dsn,
    /// Read replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
    /// Placement labels of the primary.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Relative capacity: placement algorithms with weights give this shard
    /// `weight` times the share of a weight-1 shard.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The most bytes of managed tables the rebalance planner may place on
    /// this shard (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Lifecycle state.
    #[serde(default)]
    pub state: ShardState,
}

fn default_weight() -> u32 {
    1
}

/// A read replica of a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// Connection string (passwords are redacted when printed).
    pub dsn: Dsn,
    /// Placement labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Where a database runs, for placement constraints and nearest-replica reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Data center or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
}

impl Labels {
    /// Whether no label is set.
    pub fn is_empty(&self) -> bool {
        self.zone.is_none() && self.datacenter.is_none()
    }
}

/// The lifecycle state of a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// Takes reads and writes for what it owns.
    #[default]
    Serving,
    /// Still serves what it owns, but everything is to be moved off it and
    /// nothing new is placed on it.
    Draining,
    /// Owns nothing and takes no traffic; kept for history until deleted.
    Removed,
}

/// How a keyspace places keys on its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum Partitioning {
    /// Ranges of the keyspace-id space (Vitess-style `-80`, `80-`), each
    /// owned by a shard. Resharding splits, merges and moves ranges.
    HashRange {
        /// The ranges; together they cover the whole space exactly once.
        ranges: Vec<RangeAssignment>,
    },
    /// Ranges of raw key bytes in lexicographic order (for range scans).
    KeyOrder {
        /// The ranges; together they cover every key exactly once.
        ranges: Vec<KeyOrderAssignment>,
    },
    /// Consistent-hash ring with `vnodes × weight` tokens per shard.
    Ring {
        /// Virtual nodes per unit of weight.
        #[serde(default = "default_vnodes")]
        vnodes: u32,
    },
    /// Jump consistent hash over the shards in listed order (no weights;
    /// only the last shard can be removed).
    Jump,
    /// Constant-time jump-family hash over the shards in listed order.
    JumpBack,
    /// Weighted rendezvous (highest random weight) hashing.
    Rendezvous,
    /// Maglev hashing with weights.
    Maglev {
        /// Lookup-table size, a prime larger than the number of shards.
        #[serde(default = "default_maglev_table_size")]
        table_size: u32,
    },
}

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

fn default_maglev_table_size() -> u32 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

impl Partitioning {
    /// The algorithm's name as written in topology files.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Partitioning::HashRange { .. } => "hash_range",
            Partitioning::KeyOrder { .. } => "key_order",
            Partitioning::Ring { .. } => "ring",
            Partitioning::Jump => "jump",
            Partitioning::JumpBack => "jump_back",
            Partitioning::Rendezvous => "rendezvous",
            Partitioning::Maglev { .. } => "maglev",
        }
    }
}

/// Whether a range takes writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeState {
    /// Reads and writes go to the owner.
    #[default]
    Serving,
    /// A migration is cutting this range over: writes must wait for the next
    /// epoch (reads still go to the owner).
    Frozen,
}

impl RangeState {
    fn is_serving(&self) -> bool {
        *self == RangeState::Serving
    }
}

/// A range of the keyspace-id space and the shard that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeAssignment {
    /// The range, by its Vitess-style name.
    pub range: KeyRange,
    /// The owner.
    pub shard: ShardId,
    /// Whether writes are frozen for a cutover.
    #[serde(default, skip_serializing_if = "RangeState::is_serving")]
    pub state: RangeState,
}

/// A range of raw key bytes and the shard that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOrderAssignment {
    /// The range of keys.
    pub range: KeyOrderRange,
    /// The owner.
    pub shard: ShardId,
    /// Whether writes are frozen for a cutover.
    #[serde(default, skip_serializing_if = "RangeState::is_serving")]
    pub state: RangeState,
}

impl Topology {
    /// An empty topology of the named cluster at epoch 0.
    pub fn new(cluster: impl Into<String>) -> Self {
        Topology { cluster: cluster.into(), epoch: Epoch(0), keyspaces: BTreeMap::new() }
    }

    /// The keyspace with this name.
    pub fn keyspace(&self, name: &str) -> Result<&Keyspace, TopologyError> {
        self.keyspaces.get(name).ok_or_else(|| TopologyError::UnknownKeyspace { keyspace: name.to_owned() })
    }
}

impl Keyspace {
    /// The shard with this id.
    pub fn shard(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id.as_str() == id)
    }
}
