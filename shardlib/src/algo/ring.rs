//! A consistent-hash ring with virtual nodes (Karger et al.), built so that
//! it is exactly a [`RangeMap`] of the keyspace-id space.
//!
//! # Tokens
//!
//! Node `name` with weight `w` owns `vnodes * w` tokens; its `v`-th token is
//! [`token`]`(name, v)` for `v` in `0..vnodes * w`:
//!
//! ```text
//! token(name, v) = xxh3_64(seed 0, utf8(name) ++ be32(v))
//! ```
//!
//! that is, XXH3-64 with seed 0 over the name's UTF-8 bytes followed by the
//! vnode number as 4 big-endian bytes. A client in another language computes
//! the same ring from the node names, weights and vnode count alone.
//!
//! # Ownership
//!
//! Sorted tokens cut the space into arcs: a token owns the half-open arc
//! `[token, next token)`, and the ids below the first token belong to the
//! owner of the last token (the arc wraps around). If two tokens are equal,
//! the one of the node whose name is smaller (bytewise) keeps it; the other
//! token is dropped. So the owner of an id depends only on the set of
//! `(name, weight)` pairs and `vnodes`, never on the order the nodes are
//! listed in; [`Placement::place`] answers with the index of the owner in
//! the list given to [`HashRing::new`].
//!
//! Because arcs are half-open ranges, [`HashRing::to_range_map`] is the
//! same assignment as a [`RangeMap`] (neighbouring arcs of one node
//! merged), and comparing the maps of two rings with [`RangeMap::diff`]
//! lists exactly the arcs that move. Lookups go through that map's radix
//! index: no allocation, integer comparisons only.

use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

use super::{AlgoError, Placement};
use crate::key::KeyspaceId;
use crate::range::RangeMap;

const ALGORITHM: &str = "hash ring";

/// The most tokens a ring may hold (`vnodes` times the sum of the weights).
pub const MAX_TOKENS: u64 = 1 << 24;

/// The `vnode`-th token of node `name`: XXH3-64 with seed 0 over the UTF-8
/// bytes of `name` followed by `vnode` as 4 big-endian bytes.
pub fn token(name: &str, vnode: u32) -> u64 {
    let mut bytes = Vec::with_capacity(name.len() + 4);
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&vnode.to_be_bytes());
    xxh3_64(&bytes)
}

/// A consistent-hash ring of named, weighted nodes with virtual nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct HashRing {
    /// `(name, weight)` in the order given.
    nodes: Vec<(String, u32)>,
    vnodes: u32,
    /// `(token, node index)`, sorted by token, tokens distinct.
    tokens: Vec<(u64, u32)>,
    /// The arcs as ranges, neighbours of one node merged.
    map: RangeMap<u32>,
}

impl HashRing {
    /// Builds a ring of `(name, weight)` nodes; node `i` gets
    /// `vnodes * weight` tokens.
    ///
    /// Fails with [`AlgoError::NoBuckets`] for no nodes,
    /// [`AlgoError::BadWeight`] for a weight of 0,
    /// [`AlgoError::DuplicateNode`] for a name listed twice,
    /// [`AlgoError::TooManyBuckets`] for more than `u32::MAX` nodes, and
    /// [`AlgoError::InvalidParameter`] for `vnodes == 0`, an empty name or
    /// more than [`MAX_TOKENS`] tokens in all.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, u32)>, vnodes: u32) -> Result<Self, AlgoError> {
        let invalid = |message: String| AlgoError::InvalidParameter { algorithm: ALGORITHM, message };
        if vnodes == 0 {
            return Err(invalid("vnodes must be at least 1".to_owned()));
        }
        let nodes: Vec<(String, u32)> = nodes.into_iter().map(|(name, weight)| (name.to_owned(), weight)).collect();
        if nodes.is_empty() {
            return Err(AlgoError::NoBuckets { algorithm: ALGORITHM });
        }
        if u32::try_from(nodes.len()).is_err() {
            return Err(AlgoError::TooManyBuckets {
                algorithm: ALGORITHM,
                max: u32::MAX.into(),
                got: nodes.len() as u64,
            });
        }
        let mut names: Vec<&str> = Vec::with_capacity(nodes.len());
        let mut total: u64 = 0;
        for (name, weight) in &nodes {
            if name.is_empty() {
                return Err(invalid("node names must not be empty".to_owned()));
            }
            if *weight == 0 {
                return Err(AlgoError::BadWeight { algorithm: ALGORITHM, node: name.clone(), weight: 0.0 });
            }
            names.push(name);
            total = total.saturating_add(u64::from(vnodes) * u64::from(*weight));
        }
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(AlgoError::DuplicateNode { algorithm: ALGORITHM, node: pair[0].to_owned() });
        }
        if total > MAX_TOKENS {
            return Err(invalid(format!(
                "{vnodes} vnodes times the total weight makes {total} tokens; at most {MAX_TOKENS} are supported"
            )));
        }

        let mut tokens = Vec::with_capacity(total as usize);
        for (index, (name, weight)) in nodes.iter().enumerate() {
            // Both fit: total <= MAX_TOKENS < 2^32.
            tokens.extend((0..vnodes * weight).map(|v| (token(name, v), index as u32)));
        }
        // Equal tokens: the smaller name first, and only it is kept.
        tokens.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| nodes[a.1 as usize].0.cmp(&nodes[b.1 as usize].0)));
        tokens.dedup_by_key(|t| t.0);

        let last_owner = tokens[tokens.len() - 1].1;
        let wrap = (tokens[0].0 != 0).then_some((0, last_owner));
        let map = RangeMap::from_starts_coalesced(wrap.into_iter().chain(tokens.iter().copied()));
        Ok(HashRing { nodes, vnodes, tokens, map })
    }

    /// The nodes as `(name, weight)`, in the order given to [`HashRing::new`].
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = (&str, u32)> + '_ {
        self.nodes.iter().map(|(name, weight)| (name.as_str(), *weight))
    }

    /// The index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<u32> {
        self.nodes.iter().position(|(n, _)| n == name).map(|i| i as u32)
    }

    /// The name of node `index`.
    pub fn node_name(&self, index: u32) -> Option<&str> {
        self.nodes.get(index as usize).map(|(name, _)| name.as_str())
    }

    /// Virtual nodes per unit of weight.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The distinct tokens in increasing order, each with the index of the
    /// node that owns the arc starting there.
    pub fn tokens(&self) -> impl ExactSizeIterator<Item = (u64, u32)> + DoubleEndedIterator + '_ {
        self.tokens.iter().copied()
    }

    /// The name of the node that owns `id`. Never allocates.
    #[inline]
    pub fn owner_name(&self, id: KeyspaceId) -> &str {
        &self.nodes[self.place(id) as usize].0
    }

    /// The ring as ranges of the keyspace-id space owned by node indexes:
    /// each arc `[token, next token)` is a range, the wrapped arc is split
    /// into `[last token, 2^64)` and `[0, first token)`, and neighbouring
    /// ranges of one node are merged.
    pub fn to_range_map(&self) -> RangeMap<u32> {
        self.map.clone()
    }

    /// The ring's range map, borrowed.
    pub fn range_map(&self) -> &RangeMap<u32> {
        &self.map
    }
}

impl Placement for HashRing {
    /// The index (in the list given to [`HashRing::new`]) of the node that
    /// owns the arc holding `id`.
    #[inline]
    fn place(&self, id: KeyspaceId) -> u32 {
        *self.map.lookup(id)
    }

    #[inline]
    fn buckets(&self) -> u32 {
        self.nodes.len() as u32
    }
}

impl fmt::Debug for HashRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("nodes", &self.nodes)
            .field("vnodes", &self.vnodes)
            .field("tokens", &self.tokens.len())
            .field("ranges", &self.map.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: &[(&str, u32)], vnodes: u32) -> HashRing {
        HashRing::new(nodes.iter().copied(), vnodes).unwrap()
    }

    #[test]
    fn token_is_xxh3_of_name_and_big_endian_vnode() {
        assert_eq!(token("a", 1), xxh3_64(&[b'a', 0, 0, 0, 1]));
        assert_eq!(token("shard-0", 0x0102_0304), xxh3_64(b"shard-0\x01\x02\x03\x04"));
        // Pinned: a change here changes every ring's placement.
        assert_eq!(token("", 0), xxh3_64(&[0, 0, 0, 0]));
        // Values checked against Python's `xxhash.xxh3_64`.
        assert_eq!(token("node-1", 0), 0x3b76_c882_5005_e97b);
        assert_eq!(token("shard-7", 159), 0x8836_0bc4_385d_2696);
    }

    #[test]
    fn rejects_bad_parameters() {
        let err = |nodes: &[(&str, u32)], vnodes| HashRing::new(nodes.iter().copied(), vnodes).unwrap_err();
        assert!(matches!(err(&[], 10), AlgoError::NoBuckets { .. }));
        assert!(matches!(err(&[("a", 1)], 0), AlgoError::InvalidParameter { .. }));
        assert!(matches!(err(&[("a", 1), ("b", 0)], 10), AlgoError::BadWeight { node, .. } if node == "b"));
        assert!(
            matches!(err(&[("a", 1), ("b", 1), ("a", 2)], 10), AlgoError::DuplicateNode { node, .. } if node == "a")
        );
        assert!(matches!(err(&[("", 1)], 10), AlgoError::InvalidParameter { .. }));
        let too_many = err(&[("a", 1 << 20), ("b", 1)], 16).to_string();
        assert_eq!(
            too_many,
            "hash ring: 16 vnodes times the total weight makes 16777232 tokens; at most 16777216 are supported"
        );
    }

    #[test]
    fn lookup_follows_the_tokens() {
        let r = ring(&[("a", 1), ("b", 2), ("c", 1)], 8);
        assert_eq!(r.tokens().len(), 32);
        assert_eq!(r.buckets(), 3);
        let tokens: Vec<(u64, u32)> = r.tokens().collect();
        let (last_token, last_owner) = tokens[tokens.len() - 1];
        let brute = |id: u64| tokens.iter().rev().find(|(t, _)| *t <= id).map_or(last_owner, |&(_, o)| o);
        for &(t, owner) in &tokens {
            assert_eq!(r.place(KeyspaceId(t)), owner);
            assert_eq!(r.place(KeyspaceId(t.wrapping_sub(1))), brute(t.wrapping_sub(1)));
        }
        assert_eq!(r.place(KeyspaceId(0)), brute(0));
        assert_eq!(r.place(KeyspaceId(u64::MAX)), last_owner);
        assert_eq!(r.place(KeyspaceId(last_token)), last_owner);
        for i in 0..1000u64 {
            let id = xxh3_64(&i.to_be_bytes());
            assert_eq!(r.place(KeyspaceId(id)), brute(id));
            assert_eq!(r.owner_name(KeyspaceId(id)), r.node_name(brute(id)).unwrap());
        }
    }

    #[test]
    fn listing_order_does_not_change_owners() {
        let a = ring(&[("a", 1), ("b", 2), ("c", 1)], 16);
        let b = ring(&[("c", 1), ("a", 1), ("b", 2)], 16);
        for i in 0..2000u64 {
            let id = KeyspaceId(xxh3_64(&i.to_le_bytes()));
            assert_eq!(a.owner_name(id), b.owner_name(id));
        }
        let names = |r: &HashRing| r.to_range_map().map_owners(|&i| r.node_name(i).unwrap().to_owned());
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn range_map_has_no_same_owner_neighbours() {
        let r = ring(&[("a", 1), ("b", 1)], 50);
        let map = r.to_range_map();
        let owners: Vec<u32> = map.iter().map(|(_, &o)| o).collect();
        assert!(owners.windows(2).all(|w| w[0] != w[1]));
        assert!(map.len() <= r.tokens().len() + 1);
    }
}
