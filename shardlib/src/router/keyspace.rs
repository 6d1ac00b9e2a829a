//! The compiled routing table of one keyspace.

use std::collections::HashMap;
use std::fmt;

use super::batch::ShardBatches;
use crate::algo::Placement;
use crate::algo::jump::Jump;
use crate::algo::jumpback::JumpBack;
use crate::algo::maglev::Maglev;
use crate::algo::rendezvous::Rendezvous;
use crate::algo::ring::HashRing;
use crate::id::{KeyspaceName, ShardId};
use crate::key::{KeyspaceId, ShardKey};
use crate::range::{KeyOrderMap, KeyOrderRange, KeyRange, RangeMap};
use crate::topology::{Keyspace, Partitioning, RangeState, ShardState, TopologyError};

/// The owner of a range in a compiled range map: a shard index and whether
/// writes to the range are frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    shard: u32,
    frozen: bool,
}

/// The compiled placement. An enum rather than a trait object, so that the
/// hot path is a jump table and every algorithm's lookup can be inlined.
#[derive(Debug)]
enum Placer {
    HashRange(RangeMap<Owner>),
    KeyOrder(KeyOrderMap<Owner>),
    Ring(HashRing),
    Jump(Jump),
    JumpBack(JumpBack),
    Rendezvous(Rendezvous),
    Maglev(Maglev),
}

/// Routes the keys of one keyspace. Obtained from
/// [`Router::keyspace`](super::Router::keyspace).
#[derive(Debug)]
pub struct KeyspaceRouter {
    name: KeyspaceName,
    seed: u64,
    /// Range maps index every listed shard; hash algorithms only the shards
    /// that take part (not removed), in listed order.
    shards: Box<[ShardId]>,
    placer: Placer,
}

/// The range a key fell into, for range-partitioned keyspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRange<'r> {
    /// A range of keyspace ids.
    Hash(KeyRange),
    /// A range of raw keys, borrowed from the router: `[start, end)`, with
    /// `end` `None` for the end of the space.
    KeyOrder {
        /// The inclusive start.
        start: &'r [u8],
        /// The exclusive end, or `None`.
        end: Option<&'r [u8]>,
    },
}

impl fmt::Display for RouteRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteRange::Hash(range) => write!(f, "{range}"),
            RouteRange::KeyOrder { start, end } => {
                let range = KeyOrderRange::new(start.to_vec(), end.map(<[u8]>::to_vec)).map_err(|_| fmt::Error)?;
                write!(f, "{range}")
            }
        }
    }
}

/// Everything a lookup found out about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'r> {
    /// The key's keyspace id (also what goes into the `keyspace_id` column).
    pub keyspace_id: KeyspaceId,
    /// The owning shard.
    pub shard: &'r ShardId,
    /// The range the key is in, if the keyspace is partitioned by ranges.
    pub range: Option<RouteRange<'r>>,
    /// Whether writes to the key are frozen for a migration cutover.
    pub frozen: bool,
}

impl KeyspaceRouter {
    /// Builds the routing table of a keyspace, checking the placement's rules
    /// (range coverage, known and live owners, algorithm parameters).
    pub(crate) fn compile(name: &KeyspaceName, keyspace: &Keyspace) -> Result<Self, TopologyError> {
        let ks = name.as_str();
        let algo_error = |source| TopologyError::Algorithm { keyspace: ks.to_owned(), source };
        let all_shards: Box<[ShardId]> = keyspace.shards.iter().map(|s| s.id.clone()).collect();
        let live: Vec<_> = keyspace.shards.iter().filter(|s| s.state != ShardState::Removed).collect();
        let live_ids = || live.iter().map(|s| s.id.clone()).collect::<Box<[ShardId]>>();
        let live_weighted = || live.iter().map(|s| (s.id.as_str(), s.weight));

        // Shard ids are unique (checked by `validate_structure` before).
        let positions: HashMap<&str, usize> =
            keyspace.shards.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        // The range is named only in an error: formatting a million names
        // for nothing took most of the compile of a large keyspace.
        let owner_of = |range: &dyn fmt::Display, shard: &ShardId, state: RangeState| -> Result<Owner, TopologyError> {
            let index = positions.get(shard.as_str()).copied().ok_or_else(|| TopologyError::UnknownShard {
                keyspace: ks.to_owned(),
                range: range.to_string(),
                shard: shard.to_string(),
            })?;
            if keyspace.shards[index].state == ShardState::Removed {
                return Err(TopologyError::RemovedOwner {
                    keyspace: ks.to_owned(),
                    range: range.to_string(),
                    shard: shard.to_string(),
                });
            }
            Ok(Owner { shard: index as u32, frozen: state == RangeState::Frozen })
        };
        let range_error = |source| TopologyError::Range { keyspace: ks.to_owned(), source };

        let (shards, placer) = match &keyspace.partitioning {
            Partitioning::HashRange { ranges } => {
                let assignments = ranges
                    .iter()
                    .map(|a| Ok((a.range, owner_of(&a.range, &a.shard, a.state)?)))
                    .collect::<Result<Vec<_>, TopologyError>>()?;
                (all_shards, Placer::HashRange(RangeMap::new(assignments).map_err(range_error)?))
            }
            Partitioning::KeyOrder { ranges } => {
                let assignments = ranges
                    .iter()
                    .map(|a| Ok((a.range.clone(), owner_of(&a.range, &a.shard, a.state)?)))
                    .collect::<Result<Vec<_>, TopologyError>>()?;
                (all_shards, Placer::KeyOrder(KeyOrderMap::new(assignments).map_err(range_error)?))
            }
            Partitioning::Ring { vnodes } => {
                (live_ids(), Placer::Ring(HashRing::new(live_weighted(), *vnodes).map_err(algo_error)?))
            }
            Partitioning::Jump => (live_ids(), Placer::Jump(Jump::new(live.len() as u32).map_err(algo_error)?)),
            Partitioning::JumpBack => {
                (live_ids(), Placer::JumpBack(JumpBack::new(live.len() as u32).map_err(algo_error)?))
            }
            Partitioning::Rendezvous => {
                let nodes = live.iter().map(|s| (s.id.as_str(), f64::from(s.weight)));
                (live_ids(), Placer::Rendezvous(Rendezvous::new(nodes).map_err(algo_error)?))
            }
            Partitioning::Maglev { table_size } => {
                (live_ids(), Placer::Maglev(Maglev::new(live_weighted(), *table_size).map_err(algo_error)?))
            }
        };
        Ok(KeyspaceRouter { name: name.clone(), seed: keyspace.seed, shards, placer })
    }

    /// The keyspace's name.
    pub fn name(&self) -> &KeyspaceName {
        &self.name
    }

    /// The keyspace's hash seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The shards that routing can return, in topology order.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    /// The keyspace id of `key` in this keyspace.
    #[inline]
    pub fn keyspace_id<K: ShardKey + ?Sized>(&self, key: &K) -> KeyspaceId {
        key.keyspace_id(self.seed)
    }

    /// The shard that owns `key`. Never allocates (composite keys in a
    /// key-order keyspace excepted: their parts are joined first).
    #[inline]
    pub fn route<K: ShardKey + ?Sized>(&self, key: &K) -> &ShardId {
        self.shard_at(self.shard_index(key))
    }

    /// The shard that owns a keyspace id, for keyspaces placed by hash.
    /// Key-order keyspaces place raw keys, not ids: for them this is `None`.
    #[inline]
    pub fn route_id(&self, id: KeyspaceId) -> Option<&ShardId> {
        self.index_of_id(id).map(|index| self.shard_at(index))
    }

    /// Everything known about `key`'s placement: keyspace id, shard, range
    /// and whether writes to it are frozen.
    pub fn lookup<K: ShardKey + ?Sized>(&self, key: &K) -> Route<'_> {
        let keyspace_id = self.keyspace_id(key);
        let (owner, range) = match &self.placer {
            Placer::HashRange(map) => {
                let (range, owner) = map.lookup_range(keyspace_id);
                (*owner, Some(RouteRange::Hash(range)))
            }
            Placer::KeyOrder(map) => {
                let (start, end, owner) = key.with_bytes(|bytes| map.lookup_bounds(bytes));
                (*owner, Some(RouteRange::KeyOrder { start, end }))
            }
            _ => {
                let shard = self.index_of_id(keyspace_id).expect("hash placements route ids");
                (Owner { shard, frozen: false }, None)
            }
        };
        Route { keyspace_id, shard: self.shard_at(owner.shard), range, frozen: owner.frozen }
    }

    /// Groups `items` by the shard that owns each item's key.
    pub fn group_by_shard<T, K, I, F>(&self, items: I, mut key_of: F) -> ShardBatches<'_, T>
    where
        I: IntoIterator<Item = T>,
        F: FnMut(&T) -> K,
        K: ShardKey,
    {
        let mut groups: Vec<Vec<T>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for item in items {
            let index = self.shard_index(&key_of(&item));
            groups[index as usize].push(item);
        }
        ShardBatches::new(self, groups)
    }

    #[inline]
    fn shard_index<K: ShardKey + ?Sized>(&self, key: &K) -> u32 {
        match &self.placer {
            Placer::KeyOrder(map) => key.with_bytes(|bytes| map.lookup(bytes).shard),
            _ => self.index_of_id(self.keyspace_id(key)).expect("hash placements route ids"),
        }
    }

    #[inline]
    fn index_of_id(&self, id: KeyspaceId) -> Option<u32> {
        Some(match &self.placer {
            Placer::HashRange(map) => map.lookup(id).shard,
            Placer::KeyOrder(_) => return None,
            Placer::Ring(ring) => ring.place(id),
            Placer::Jump(jump) => jump.place(id),
            Placer::JumpBack(jump) => jump.place(id),
            Placer::Rendezvous(rendezvous) => rendezvous.place(id),
            Placer::Maglev(maglev) => maglev.place(id),
        })
    }

    #[inline]
    pub(super) fn shard_at(&self, index: u32) -> &ShardId {
        &self.shards[index as usize]
    }
}
