//! Maglev hashing, with integer weights.
//!
//! Daniel E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4 "Consistent Hashing".
//!
//! Every node walks its own pseudorandom permutation of the `M` slots of a
//! lookup table (`M` prime), and the nodes take turns claiming the next free
//! slot of their permutation until the table is full. A lookup is one
//! multiplication and one table read. Each node owns almost exactly its share
//! of the table (with equal weights, `⌊M/N⌋` or `⌈M/N⌉` slots), better balance
//! than a ring. Keep `M` well above the number of nodes (the paper uses
//! `M > 100·N`); [`DEFAULT_TABLE_SIZE`] suits up to a few hundred nodes.
//!
//! Maglev is only *nearly* consistent, a trade the paper makes for balance:
//! when a node joins, it claims slots the others would have taken, so they
//! move further along their lists and a few slots also change hands between
//! old nodes. With `M` = 65537 and up to a few hundred nodes, one join moved at
//! most about 1.5% of the table between old nodes in our measurements
//! (usually well under 1%); with `M` = 4099 and 20 nodes, up to about 7%. Two
//! nodes whose `skip`s coincide (probability about N²/2M) walk the same cycle
//! of slots, and a join elsewhere can then move much of their two shares
//! between them (up to 40% of the table with two such nodes). Use
//! [rendezvous](super::rendezvous) or jump hashing where exact minimal
//! movement matters more than O(1) lookups.
//!
//! # The exact table
//!
//! Nodes are identified by name (listing them in another order changes
//! nothing but the index numbers). For each node, with weight `w ≥ 1`:
//!
//! ```text
//! offset = xxh3_64(name, seed 0) mod M
//! skip   = xxh3_64(name, seed 1) mod (M − 1) + 1
//! the node's j-th preferred slot is (offset + j·skip) mod M,  j = 0, 1, 2, …
//! ```
//!
//! Population: each node takes its `k`-th turn (`k = 1, 2, 3, …`) at time
//! `k / w`. Turns happen in order of time, compared exactly (`k_a·w_b` against
//! `k_b·w_a`), equal times in byte-wise ascending name order. At its turn a node
//! claims the first slot of its preference list that is still free; population
//! stops when all `M` slots are taken. By time `T` a node has had `⌊T·w⌋`
//! turns, so its slot count is within `max(1, N·w/Σw)` of `M·w/Σw`, and a
//! node's turn times depend only on its own weight, so adding a node leaves
//! the others' schedules alone. With equal weights this is the paper's
//! Algorithm 1 (round robin, here in name order). A slot holds the node's
//! index in the list given to [`Maglev::new`].
//!
//! # Lookup
//!
//! `slot = (id · M) >> 64` on the 128-bit product (Lemire's fast range
//! reduction: no division, and uniform because `id` is a uniform 64-bit
//! hash), then `node = table[slot]`.
//!
//! Building costs O(M log M) expected probes plus O(M log N) for the turn
//! order, and the table takes 4·M bytes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::mix::node_hash;
use super::{AlgoError, Placement};
use crate::key::KeyspaceId;

/// The table size of the paper's experiments: a prime, fine for a few hundred nodes.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Table sizes above this are rejected (64 MiB of table); the largest
/// usable prime is 16 777 213.
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// The name used in error messages.
const ALGORITHM: &str = "maglev";

/// A free slot while the table is being filled.
const EMPTY: u32 = u32::MAX;

/// Weighted Maglev hashing: a prime-sized lookup table of node indexes.
#[derive(Clone)]
pub struct Maglev {
    table: Box<[u32]>,
    names: Box<[String]>,
    weights: Box<[u32]>,
}

impl Maglev {
    /// Builds the lookup table for `(name, weight)` pairs.
    ///
    /// Node indexes are positions in this list. Rejects an empty list, a zero
    /// weight, a name listed twice, and a `table_size` that is not a prime
    /// larger than the number of nodes (and at most [`MAX_TABLE_SIZE`]).
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, u32)>, table_size: u32) -> Result<Self, AlgoError> {
        let mut names = Vec::new();
        let mut weights = Vec::new();
        for (name, weight) in nodes {
            if weight == 0 {
                return Err(AlgoError::BadWeight { algorithm: ALGORITHM, node: name.to_owned(), weight: 0.0 });
            }
            names.push(name.to_owned());
            weights.push(weight);
        }
        if names.is_empty() {
            return Err(AlgoError::NoBuckets { algorithm: ALGORITHM });
        }
        let invalid = |message: String| AlgoError::InvalidParameter { algorithm: ALGORITHM, message };
        if table_size > MAX_TABLE_SIZE {
            return Err(invalid(format!("table size {table_size} is above the maximum {MAX_TABLE_SIZE}")));
        }
        if !is_prime(table_size) {
            return Err(invalid(format!("table size {table_size} is not a prime")));
        }
        if table_size as usize <= names.len() {
            return Err(invalid(format!(
                "table size {table_size} must be larger than the number of shards ({})",
                names.len()
            )));
        }
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
        if let Some(pair) = order.windows(2).find(|p| names[p[0] as usize] == names[p[1] as usize]) {
            return Err(AlgoError::DuplicateNode { algorithm: ALGORITHM, node: names[pair[0] as usize].clone() });
        }
        let table = populate(&names, &weights, &order, table_size);
        Ok(Maglev { table, names: names.into_boxed_slice(), weights: weights.into_boxed_slice() })
    }

    /// The table size `M`.
    #[inline]
    pub fn table_size(&self) -> u32 {
        self.table.len() as u32
    }

    /// The lookup table: slot → node index.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// The number of nodes.
    #[inline]
    pub fn nodes(&self) -> usize {
        self.names.len()
    }

    /// The node names, in the order given to [`Maglev::new`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The node weights, in the order given to [`Maglev::new`].
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }
}

/// Fills the table as the module docs describe; `order` lists node indexes in name order.
fn populate(names: &[String], weights: &[u32], order: &[u32], table_size: u32) -> Box<[u32]> {
    /// A node's permutation walk: its next candidate slot and its stride.
    struct Walker {
        index: u32,
        slot: u64,
        skip: u64,
    }
    let m = u64::from(table_size);
    let mut walkers: Vec<Walker> = order
        .iter()
        .map(|&i| {
            let name = names[i as usize].as_str();
            Walker { index: i, slot: node_hash(name) % m, skip: xxh3_64_with_seed(name.as_bytes(), 1) % (m - 1) + 1 }
        })
        .collect();
    let mut turns: BinaryHeap<Reverse<Turn>> = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| Reverse(Turn { k: 1, weight: u64::from(weights[i as usize]), rank: rank as u32 }))
        .collect();
    let mut table = vec![EMPTY; table_size as usize].into_boxed_slice();
    for _ in 0..m {
        let Some(Reverse(turn)) = turns.pop() else { unreachable!("every node always has a next turn") };
        let walker = &mut walkers[turn.rank as usize];
        while table[walker.slot as usize] != EMPTY {
            walker.slot = step(walker.slot, walker.skip, m);
        }
        table[walker.slot as usize] = walker.index;
        walker.slot = step(walker.slot, walker.skip, m);
        turns.push(Reverse(Turn { k: turn.k + 1, ..turn }));
    }
    table
}

/// A node's `k`-th turn, due at time `k / weight`; `rank` is the node's place in name order.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    k: u64,
    weight: u64,
    rank: u32,
}

impl Ord for Turn {
    /// Earlier time first, compared exactly (`k` ≤ 2²⁴ + 1 and `weight` < 2³²,
    /// so the products fit in a `u64`); equal times in name order.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.k * other.weight).cmp(&(other.k * self.weight)).then(self.rank.cmp(&other.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `(slot + skip) mod m` for `slot < m` and `skip < m`.
#[inline]
fn step(slot: u64, skip: u64, m: u64) -> u64 {
    let next = slot + skip;
    if next >= m { next - m } else { next }
}

/// Deterministic primality by trial division (table sizes are at most 2²⁴).
fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    (3..).step_by(2).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

impl Placement for Maglev {
    #[inline]
    fn place(&self, id: KeyspaceId) -> u32 {
        let slot = (u128::from(id.0) * self.table.len() as u128) >> 64;
        self.table[slot as usize]
    }

    #[inline]
    fn buckets(&self) -> u32 {
        self.names.len() as u32
    }
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .field("names", &self.names)
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: usize, weight: impl Fn(usize) -> u32, table_size: u32) -> Maglev {
        let names: Vec<String> = (0..n).map(|i| format!("shard-{i}")).collect();
        Maglev::new(names.iter().enumerate().map(|(i, s)| (s.as_str(), weight(i))), table_size).unwrap()
    }

    /// `Σ table[i]·31^(M−1−i)` mod 2⁶⁴, a cheap fingerprint of a whole table.
    fn digest(table: &[u32]) -> u64 {
        table.iter().fold(0u64, |acc, &n| acc.wrapping_mul(31).wrapping_add(u64::from(n)))
    }

    fn counts(m: &Maglev) -> Vec<u64> {
        let mut counts = vec![0u64; m.nodes()];
        for &node in m.table() {
            counts[node as usize] += 1;
        }
        counts
    }

    #[test]
    fn golden_values() {
        // Pinned (cross-checked with an independent Python transcription of the
        // module docs): a change here changes routing.
        let abc = Maglev::new([("a", 1), ("b", 3), ("c", 7)], 31).unwrap();
        let want = [1, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 2, 0, 0, 2, 1, 1, 0, 2, 1, 2, 2, 2, 1, 2];
        assert_eq!(abc.table(), want);
        let weighted = named(16, |i| 1 + i as u32 % 4, DEFAULT_TABLE_SIZE);
        assert_eq!(digest(weighted.table()), 18_306_509_542_924_467_246);
        let m = named(5, |i| 1 + i as u32, 13);
        assert_eq!(m.table(), [4, 1, 1, 2, 0, 2, 3, 3, 4, 2, 4, 4, 3]);
        let big = named(16, |_| 1, DEFAULT_TABLE_SIZE);
        assert_eq!(digest(big.table()), 5_663_953_971_742_316_790);
        for (id, want) in [(0u64, 15), (u64::MAX, 2), (0xdeadbeef_u64 << 32, 11)] {
            assert_eq!(big.place(KeyspaceId(id)), want, "id {id:#x}");
        }
    }

    #[test]
    fn equal_weights_share_the_table_to_one_slot() {
        for n in [1, 2, 7, 100] {
            let m = named(n, |_| 1, 1009);
            let c = counts(&m);
            let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(max - min <= 1, "n {n}: {c:?}");
        }
    }

    #[test]
    fn weights_set_the_table_shares() {
        for weights in [vec![1, 2, 3, 4], vec![1, 1, 1000], vec![7, 3], vec![u32::MAX, 1, 2]] {
            let n = weights.len();
            let m = named(n, |i| weights[i], 10007);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, &c) in counts(&m).iter().enumerate() {
                let share = f64::from(weights[i]) / total;
                let want = 10007.0 * share;
                let bound = 1f64.max(n as f64 * share) + 1e-9;
                assert!((c as f64 - want).abs() <= bound, "{weights:?}: node {i} has {c}, want {want}");
            }
        }
    }

    #[test]
    fn order_of_the_list_does_not_change_the_owner() {
        let a = Maglev::new([("x", 1), ("y", 2), ("z", 3)], 101).unwrap();
        let b = Maglev::new([("z", 3), ("x", 1), ("y", 2)], 101).unwrap();
        for (sa, sb) in a.table().iter().zip(b.table()) {
            assert_eq!(a.names()[*sa as usize], b.names()[*sb as usize]);
        }
    }

    #[test]
    fn lookup_uses_fast_range() {
        let m = named(3, |_| 1, 7);
        assert_eq!(m.place(KeyspaceId(u64::MAX)), m.table()[6]);
        for slot in 0..7u64 {
            // The smallest id of each slot: ⌈slot · 2^64 / 7⌉.
            let id = ((u128::from(slot) << 64).div_ceil(7)) as u64;
            assert_eq!(m.place(KeyspaceId(id)), m.table()[slot as usize]);
            if slot > 0 {
                assert_eq!(m.place(KeyspaceId(id - 1)), m.table()[slot as usize - 1]);
            }
        }
    }

    #[test]
    fn constructor_rejects_bad_input() {
        let none: [(&str, u32); 0] = [];
        assert_eq!(Maglev::new(none, 7).unwrap_err(), AlgoError::NoBuckets { algorithm: "maglev" });
        let err = Maglev::new([("a", 1), ("b", 0)], 7).unwrap_err();
        assert_eq!(err.to_string(), "maglev: weight of shard \"b\" must be positive and finite, got 0");
        let err = Maglev::new([("a", 1), ("a", 1)], 7).unwrap_err();
        assert!(matches!(err, AlgoError::DuplicateNode { .. }));
        for bad in [0, 1, 4, 9, 65535] {
            let err = Maglev::new([("a", 1)], bad).unwrap_err();
            assert_eq!(err.to_string(), format!("maglev: table size {bad} is not a prime"));
        }
        let err = Maglev::new([("a", 1), ("b", 1), ("c", 1)], 3).unwrap_err();
        assert_eq!(err.to_string(), "maglev: table size 3 must be larger than the number of shards (3)");
        assert!(Maglev::new([("a", 1)], 16_777_259).is_err());
        assert!(Maglev::new([("a", 1), ("b", 1)], 3).is_ok());
        assert!(Maglev::new([("a", 1)], 2).is_ok());
    }

    #[test]
    fn primality() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537) && is_prime(16_777_213) && !is_prime(16_777_215) && !is_prime(65539 * 3));
    }
}
