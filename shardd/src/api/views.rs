//! What the API shows of the topology: the model's own JSON shape, except
//! that every connection string goes through [`Dsn::redacted`]. The model
//! serializes DSNs in full (for the store), so handlers never serialize a
//! [`Shard`] or [`Keyspace`] directly: only these views.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use shardlib::topology::{Dsn, Keyspace, Labels, Partitioning, Replica, Shard, ShardState, Table};
use shardlib::{Epoch, KeyType, KeyspaceName, ShardId, Topology};

/// A topology with redacted connection strings.
#[derive(Debug, Serialize)]
pub struct TopologyView<'a> {
    /// The cluster.
    pub cluster: &'a str,
    /// The epoch the topology was read at.
    pub epoch: Epoch,
    /// The keyspaces, by name.
    pub keyspaces: BTreeMap<&'a KeyspaceName, KeyspaceView<'a>>,
}

impl<'a> TopologyView<'a> {
    /// The view of `topology`.
    pub fn new(topology: &'a Topology) -> Self {
        TopologyView {
            cluster: &topology.cluster,
            epoch: topology.epoch,
            keyspaces: topology.keyspaces.iter().map(|(name, ks)| (name, KeyspaceView::new(ks))).collect(),
        }
    }
}

/// A keyspace with redacted connection strings, in the shape of
/// [`Keyspace`].
#[derive(Debug, Serialize)]
pub struct KeyspaceView<'a> {
    /// The xxh3 seed (omitted when 0).
    #[serde(skip_serializing_if = "is_zero", serialize_with = "serialize_seed")]
    pub seed: u64,
    /// How keys are written as text.
    pub key_type: &'a KeyType,
    /// The tables.
    pub tables: &'a [Table],
    /// The shards.
    pub shards: Vec<ShardView<'a>>,
    /// The placement.
    pub partitioning: &'a Partitioning,
}

impl<'a> KeyspaceView<'a> {
    /// The view of `keyspace`.
    pub fn new(keyspace: &'a Keyspace) -> Self {
        KeyspaceView {
            seed: keyspace.seed,
            key_type: &keyspace.key_type,
            tables: &keyspace.tables,
            shards: keyspace.shards.iter().map(ShardView::new).collect(),
            partitioning: &keyspace.partitioning,
        }
    }
}

/// A shard with redacted connection strings, in the shape of [`Shard`];
/// shard listings add the ranges it owns.
#[derive(Debug, Serialize)]
pub struct ShardView<'a> {
    /// The shard id.
    pub id: &'a ShardId,
    /// The primary's connection string, password redacted.
    #[serde(serialize_with = "serialize_dsn")]
    pub primary: &'a Dsn,
    /// Read replicas.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub replicas: Vec<ReplicaView<'a>>,
    /// Placement labels.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: &'a Labels,
    /// Relative capacity.
    pub weight: u32,
    /// Byte limit for the rebalance planner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Lifecycle state.
    pub state: ShardState,
    /// The ranges the shard owns (range keyspaces, in shard listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<String>>,
}

impl<'a> ShardView<'a> {
    /// The view of `shard`.
    pub fn new(shard: &'a Shard) -> Self {
        ShardView {
            id: &shard.id,
            primary: &shard.primary,
            replicas: shard.replicas.iter().map(ReplicaView::new).collect(),
            labels: &shard.labels,
            weight: shard.weight,
            capacity_bytes: shard.capacity_bytes,
            state: shard.state,
            ranges: None,
        }
    }

    /// The view of `shard` with the ranges it owns in `keyspace`.
    pub fn with_ranges(keyspace: &'a Keyspace, shard: &'a Shard) -> Self {
        ShardView { ranges: Some(owned_ranges(keyspace, &shard.id)), ..ShardView::new(shard) }
    }
}

/// A replica with its connection string redacted.
#[derive(Debug, Serialize)]
pub struct ReplicaView<'a> {
    /// The connection string, password redacted.
    #[serde(serialize_with = "serialize_dsn")]
    pub dsn: &'a Dsn,
    /// Placement labels.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: &'a Labels,
}

impl<'a> ReplicaView<'a> {
    fn new(replica: &'a Replica) -> Self {
        ReplicaView { dsn: &replica.dsn, labels: &replica.labels }
    }
}

/// One line of the keyspace listing.
#[derive(Debug, Serialize)]
pub struct KeyspaceSummary<'a> {
    /// The keyspace.
    pub name: &'a KeyspaceName,
    /// The placement algorithm (`hash_range`, `key_order`, `ring`, …).
    pub algorithm: &'static str,
    /// How many shards it lists (any state).
    pub shard_count: usize,
    /// How many ranges it has; `null` for algorithms without ranges.
    pub range_count: Option<usize>,
    /// The epoch of its last modification.
    pub version: Epoch,
}

impl<'a> KeyspaceSummary<'a> {
    /// The summary of `keyspace`, last modified at `version`.
    pub fn new(name: &'a KeyspaceName, keyspace: &'a Keyspace, version: Epoch) -> Self {
        KeyspaceSummary {
            name,
            algorithm: keyspace.partitioning.algorithm(),
            shard_count: keyspace.shards.len(),
            range_count: range_count(&keyspace.partitioning),
            version,
        }
    }
}

/// How many ranges a placement has (`None` without ranges).
pub fn range_count(partitioning: &Partitioning) -> Option<usize> {
    match partitioning {
        Partitioning::HashRange { ranges } => Some(ranges.len()),
        Partitioning::KeyOrder { ranges } => Some(ranges.len()),
        _ => None,
    }
}

/// The names of the ranges `shard` owns (empty for algorithms without ranges).
pub fn owned_ranges(keyspace: &Keyspace, shard: &ShardId) -> Vec<String> {
    match &keyspace.partitioning {
        Partitioning::HashRange { ranges } => {
            ranges.iter().filter(|a| &a.shard == shard).map(|a| a.range.to_string()).collect()
        }
        Partitioning::KeyOrder { ranges } => {
            ranges.iter().filter(|a| &a.shard == shard).map(|a| a.range.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

fn serialize_dsn<S: Serializer>(dsn: &&Dsn, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&dsn.redacted())
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// As the model writes seeds: an integer up to `i64::MAX`, else a string.
fn serialize_seed<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    match i64::try_from(*seed) {
        Ok(small) => s.serialize_i64(small),
        Err(_) => s.collect_str(seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyspace(seed: u64) -> Keyspace {
        let text = format!(
            r#"{{
            "seed": {seed},
            "key_type": "u64",
            "tables": [{{"name": "users", "key_columns": ["user_id"]}}],
            "shards": [
                {{"id": "s0", "primary": "postgres://app:s3cret@db0/users",
                  "replicas": [{{"dsn": "host=r0 user=app password=s3cret", "labels": {{"zone": "a"}}}}],
                  "labels": {{"zone": "a", "datacenter": "dc1"}}, "weight": 2}},
                {{"id": "s1", "primary": "postgres://app:s3cret@db1/users", "state": "draining"}}
            ],
            "partitioning": {{"algorithm": "hash_range", "ranges": [
                {{"range": "-80", "shard": "s0"}}, {{"range": "80-c0", "shard": "s1"}}, {{"range": "c0-", "shard": "s0", "state": "frozen"}}
            ]}}
        }}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    /// The view must be the model's JSON with only the DSNs changed: a field
    /// added to the model and not to the view makes this fail.
    #[test]
    fn views_match_the_model_except_for_passwords() {
        for seed in [0, 42, u64::MAX] {
            let ks = keyspace(seed);
            let model = serde_json::to_string(&ks).unwrap();
            let view = serde_json::to_string(&KeyspaceView::new(&ks)).unwrap();
            assert!(model.contains("s3cret"));
            assert!(!view.contains("s3cret"), "{view}");
            let expected = model.replace("app:s3cret@", "app:***@").replace("password=s3cret", "password=***");
            assert_eq!(view, expected);
        }
    }

    #[test]
    fn topology_view_redacts_and_shards_list_their_ranges() {
        let mut topology = Topology::new("c");
        topology.epoch = Epoch(9);
        let ks = keyspace(0);
        topology.keyspaces.insert(KeyspaceName::new("users").unwrap(), ks.clone());
        let json = serde_json::to_value(TopologyView::new(&topology)).unwrap();
        assert_eq!(json["epoch"], 9);
        assert_eq!(json["keyspaces"]["users"]["shards"][0]["primary"], "postgres://app:***@db0/users");
        assert!(!json.to_string().contains("s3cret"));

        let s0 = serde_json::to_value(ShardView::with_ranges(&ks, &ks.shards[0])).unwrap();
        assert_eq!(s0["ranges"], serde_json::json!(["-80", "c0-"]));
        let summary =
            serde_json::to_value(KeyspaceSummary::new(topology.keyspaces.keys().next().unwrap(), &ks, Epoch(3)))
                .unwrap();
        assert_eq!(
            summary,
            serde_json::json!({"name": "users", "algorithm": "hash_range", "shard_count": 2, "range_count": 3, "version": 3})
        );
    }
}
