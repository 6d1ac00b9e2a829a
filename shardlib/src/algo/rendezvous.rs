//! Weighted rendezvous (highest random weight) hashing, with top-k.
//!
//! David G. Thaler and Chinya V. Ravishankar, "Using Name-Based Mappings to
//! Increase Hit Rates", IEEE/ACM Transactions on Networking 6(1), 1998; the
//! weights follow Christian Schindelhauer and Gunnar Schomaker, "Weighted
//! Distributed Hash Tables", SPAA 2005 (the logarithmic method).
//!
//! Every node scores every key; the key goes to the highest score. A node's
//! score depends only on the key and the node's own name, so adding a node
//! moves exactly the keys it now wins (onto it), removing one moves exactly its
//! own keys, and the order in which nodes are listed does not matter. A lookup
//! costs one hash per node: use it for tens of nodes, or when you need the
//! ranking itself (replicas, fallbacks: [`Rendezvous::top_k`]).
//!
//! # The exact scores
//!
//! For a node named `name` (UTF-8) and a keyspace id `id` (all `u64`
//! arithmetic mod 2⁶⁴, see [`mix`](super::mix) for `mix64` and `neg_ln_unit`):
//!
//! ```text
//! node_hash = xxh3_64(name, seed 0)
//! s         = mix64(id ^ node_hash)
//! score     = weight / neg_ln_unit(s)          (binary64 division, may overflow to +∞)
//! ```
//!
//! `neg_ln_unit(s)` is −ln u for `u = (2·(s >> 12) + 1)·2⁻⁵³` in (0, 1), an
//! Exp(1) variate, so `1/score` is exponential with rate `weight`, and the
//! smallest of these independent variates, the highest score, belongs to a
//! node with probability weight / Σ weights (exact up to the 2⁻⁵² granularity
//! of `u`).
//!
//! Nodes are ranked by `score`, higher first; equal scores by `s`, higher
//! first; equal `s` (only if two names share an xxh3 hash) by name, the
//! byte-wise smaller first.
//!
//! When all weights are equal, only `s` matters: `neg_ln_unit` never increases
//! as `s` grows (see [`mix`](super::mix)), so a higher `s` never scores lower, and
//! an equal score falls back to `s`. The fast path therefore compares `s` alone
//! (then the name) and skips the logarithm; it gives the same ranking, bit for
//! bit, as the formula above, and a unit test checks it. It costs about one
//! `mix64` per node; the weighted path adds a logarithm and two divisions
//! (roughly 6–7× slower).

use std::hint::select_unpredictable as select;

use super::mix::{mix64, neg_ln_unit, node_hash};
use super::{AlgoError, Placement};
use crate::key::KeyspaceId;

/// The name used in error messages.
const ALGORITHM: &str = "rendezvous";

/// Weighted rendezvous hashing over a set of named nodes.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    /// `node_hash` of each node, in byte-wise name order.
    hashes: Box<[u64]>,
    /// Each node's weight, in name order.
    sorted_weights: Box<[f64]>,
    /// For each node in name order, its position in the list given to `new`.
    index: Box<[u32]>,
    /// Names, in the given order.
    names: Box<[String]>,
    /// Weights, in the given order.
    weights: Box<[f64]>,
    /// All weights are equal: rank by `s` alone.
    uniform: bool,
}

/// A node's rank for one key: `score`, then `s`, both higher first, packed
/// so that one unsigned comparison orders them (a positive binary64's bits
/// order like its value, and +∞ above all finite values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank(u128);

impl Rank {
    #[inline]
    fn new(score: f64, s: u64) -> Rank {
        debug_assert!(score >= 0.0);
        Rank((u128::from(score.to_bits()) << 64) | u128::from(s))
    }
}

impl Rendezvous {
    /// Rendezvous hashing over `(name, weight)` pairs.
    ///
    /// Node indexes (from [`Placement::place`] and [`Rendezvous::top_k`]) are
    /// positions in this list; which *node* wins does not depend on the order.
    /// Rejects an empty list, a weight that is not positive and finite, and a
    /// name listed twice.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, f64)>) -> Result<Self, AlgoError> {
        let mut names = Vec::new();
        let mut weights = Vec::new();
        for (name, weight) in nodes {
            if !(weight > 0.0 && weight.is_finite()) {
                return Err(AlgoError::BadWeight { algorithm: ALGORITHM, node: name.to_owned(), weight });
            }
            names.push(name.to_owned());
            weights.push(weight);
        }
        if names.is_empty() {
            return Err(AlgoError::NoBuckets { algorithm: ALGORITHM });
        }
        if u32::try_from(names.len()).is_err() {
            return Err(AlgoError::TooManyBuckets {
                algorithm: ALGORITHM,
                max: u64::from(u32::MAX),
                got: names.len() as u64,
            });
        }
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
        if let Some(pair) = order.windows(2).find(|p| names[p[0] as usize] == names[p[1] as usize]) {
            return Err(AlgoError::DuplicateNode { algorithm: ALGORITHM, node: names[pair[0] as usize].clone() });
        }
        let uniform = weights.iter().all(|w| w.to_bits() == weights[0].to_bits());
        Ok(Rendezvous {
            hashes: order.iter().map(|&i| node_hash(&names[i as usize])).collect(),
            sorted_weights: order.iter().map(|&i| weights[i as usize]).collect(),
            index: order.into_boxed_slice(),
            names: names.into_boxed_slice(),
            weights: weights.into_boxed_slice(),
            uniform,
        })
    }

    /// The number of nodes.
    #[inline]
    pub fn nodes(&self) -> usize {
        self.names.len()
    }

    /// The node names, in the order given to [`Rendezvous::new`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The node weights, in the order given to [`Rendezvous::new`].
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Whether all weights are equal (lookups then skip the logarithm).
    pub fn is_uniform(&self) -> bool {
        self.uniform
    }

    /// The best `min(out.len(), nodes)` nodes for `id`, best first, as indexes
    /// into the list given to [`Rendezvous::new`].
    ///
    /// Writes them to the front of `out` and returns that part; never
    /// allocates. The first one is [`Placement::place`]`(id)`; the indexes are
    /// distinct. Costs one score per node plus O(k) per insertion into the
    /// running top k (about k·(1 + ln(n/k)) insertions).
    #[inline]
    pub fn top_k<'o>(&self, id: KeyspaceId, out: &'o mut [u32]) -> &'o [u32] {
        self.top_k_with(id.0, out, !self.uniform)
    }

    /// Node `pos` (in name order)'s rank for `key`; with `weighted == false`
    /// the score is left at 0 and only `s` counts.
    #[inline(always)]
    fn rank(&self, pos: usize, key: u64, weighted: bool) -> Rank {
        let s = mix64(key ^ self.hashes[pos]);
        let score = if weighted { self.sorted_weights[pos] / neg_ln_unit(s) } else { 0.0 };
        Rank::new(score, s)
    }

    /// The winner's position in name order, comparing `s` only.
    #[inline]
    fn best_uniform(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_s = mix64(key ^ self.hashes[0]);
        for (pos, &h) in self.hashes.iter().enumerate().skip(1) {
            let s = mix64(key ^ h);
            // Strictly greater: on a tie the earlier (smaller) name stays.
            // Conditional moves: the outcome is random, a branch would mispredict.
            let better = s > best_s;
            best = select(better, pos, best);
            best_s = select(better, s, best_s);
        }
        best
    }

    /// The winner's position in name order, by the full weighted rank.
    #[inline]
    fn best_weighted(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_rank = self.rank(0, key, true);
        for pos in 1..self.hashes.len() {
            let rank = self.rank(pos, key, true);
            let better = rank > best_rank;
            best = select(better, pos, best);
            best_rank = select(better, rank, best_rank);
        }
        best
    }

    fn top_k_with<'o>(&self, key: u64, out: &'o mut [u32], weighted: bool) -> &'o [u32] {
        /// Ranks of the first `CACHED` entries of the running top k are kept on
        /// the stack; deeper entries are recomputed when compared.
        const CACHED: usize = 16;
        let k = out.len().min(self.hashes.len());
        let out = &mut out[..k];
        if k == 0 {
            return out;
        }
        if k <= SMALL_K {
            return self.top_small(key, out, weighted);
        }
        let mut cache = [Rank(0); CACHED];
        let rank_at = |cache: &[Rank; CACHED], out: &[u32], j: usize| {
            if j < CACHED { cache[j] } else { self.rank(out[j] as usize, key, weighted) }
        };
        // `out[..len]` holds positions in name order, best first. Nodes come in
        // name order, so on a tie the one already held (a smaller name) stays
        // ahead: only a strictly better rank moves past it.
        let mut len = 0;
        let mut worst = Rank(0);
        for pos in 0..self.hashes.len() {
            let rank = self.rank(pos, key, weighted);
            if len == k {
                if rank <= worst {
                    continue;
                }
                len -= 1;
            }
            let mut j = len;
            while j > 0 && rank > rank_at(&cache, out, j - 1) {
                out[j] = out[j - 1];
                if j < CACHED {
                    cache[j] = cache[j - 1];
                }
                j -= 1;
            }
            out[j] = pos as u32;
            if j < CACHED {
                cache[j] = rank;
            }
            len += 1;
            if len == k {
                worst = rank_at(&cache, out, k - 1);
            }
        }
        for slot in out.iter_mut() {
            *slot = self.index[*slot as usize];
        }
        out
    }

    /// [`Rendezvous::top_k`] for `out.len() ≤ SMALL_K` (and ≤ nodes): keeps the
    /// best `SMALL_K` in a small array updated with compare-and-select.
    #[inline]
    fn top_small<'o>(&self, key: u64, out: &'o mut [u32], weighted: bool) -> &'o [u32] {
        // Ranks are below 2¹²⁷ (a positive binary64 has the top bit clear), so
        // rank + 1 never wraps and 0 marks an empty place.
        let mut best = [0u128; SMALL_K];
        let mut at = [0u32; SMALL_K];
        // Score a chunk of nodes first (independent work the CPU overlaps),
        // then merge it into the running top list.
        let mut ranks = [0u128; CHUNK];
        for start in (0..self.hashes.len()).step_by(CHUNK) {
            let chunk = &mut ranks[..CHUNK.min(self.hashes.len() - start)];
            for (i, slot) in chunk.iter_mut().enumerate() {
                *slot = self.rank(start + i, key, weighted).0 + 1;
            }
            for (i, &rank) in chunk.iter().enumerate() {
                if rank <= best[SMALL_K - 1] {
                    continue; // the common case once the list has filled up
                }
                let pos = (start + i) as u32;
                // Insert into the descending list; a tie stays behind the
                // earlier (smaller) name.
                for j in (1..SMALL_K).rev() {
                    let (above, here) = (rank > best[j - 1], rank > best[j]);
                    best[j] = select(above, best[j - 1], select(here, rank, best[j]));
                    at[j] = select(above, at[j - 1], select(here, pos, at[j]));
                }
                let top = rank > best[0];
                best[0] = select(top, rank, best[0]);
                at[0] = select(top, pos, at[0]);
            }
        }
        for (slot, &pos) in out.iter_mut().zip(&at) {
            *slot = self.index[pos as usize];
        }
        out
    }
}

/// Up to this many, [`Rendezvous::top_k`] keeps the running best branch-free.
const SMALL_K: usize = 4;

/// [`Rendezvous::top_k`] scores this many nodes at a time into a stack buffer.
const CHUNK: usize = 16;

impl Placement for Rendezvous {
    #[inline]
    fn place(&self, id: KeyspaceId) -> u32 {
        let pos = if self.uniform { self.best_uniform(id.0) } else { self.best_weighted(id.0) };
        self.index[pos]
    }

    #[inline]
    fn buckets(&self) -> u32 {
        self.names.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::mix::GOLDEN_GAMMA;

    fn keys(count: usize, seed: u64) -> impl Iterator<Item = u64> {
        (0..count as u64).map(move |i| mix64(seed.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA))))
    }

    fn named(n: usize, weight: impl Fn(usize) -> f64) -> Rendezvous {
        let names: Vec<String> = (0..n).map(|i| format!("shard-{i}")).collect();
        Rendezvous::new(names.iter().enumerate().map(|(i, s)| (s.as_str(), weight(i)))).unwrap()
    }

    #[test]
    fn golden_values() {
        // Pinned outputs (cross-checked with an independent Python transcription
        // of the module docs): a change here changes routing.
        let uniform = named(16, |_| 1.0);
        let weighted = named(16, |i| 1.0 + i as f64);
        let mut out = [0u32; 4];
        for (id, want_uniform, want_weighted, want_top) in [
            (0u64, 15, 15, [15, 11, 8, 14]),
            (1, 1, 12, [12, 14, 8, 1]),
            (0xdeadbeef, 9, 9, [9, 13, 7, 1]),
            (u64::MAX, 6, 14, [14, 6, 13, 9]),
        ] {
            assert_eq!(uniform.place(KeyspaceId(id)), want_uniform, "uniform, id {id:#x}");
            assert_eq!(weighted.place(KeyspaceId(id)), want_weighted, "weighted, id {id:#x}");
            assert_eq!(weighted.top_k(KeyspaceId(id), &mut out), want_top, "top 4, id {id:#x}");
        }
    }

    #[test]
    fn fast_path_ranks_exactly_like_the_weighted_formula() {
        for n in [1, 2, 3, 16, 50] {
            for w in [1.0, 0.25, 7.5, 1e300, 5e-324] {
                let r = named(n, |_| w);
                assert!(r.is_uniform());
                let (mut fast, mut slow) = ([0u32; 8], [0u32; 8]);
                for key in keys(2000, n as u64) {
                    assert_eq!(r.best_uniform(key), r.best_weighted(key), "n {n}, w {w}, key {key:#x}");
                    assert_eq!(r.top_k_with(key, &mut fast, false), r.top_k_with(key, &mut slow, true));
                }
            }
        }
    }

    #[test]
    fn equal_scores_fall_back_to_s() {
        // With w = f64::MAX the score w / E overflows to +inf whenever E < 1,
        // so "a" and "b" often tie on score; then the higher s wins.
        let r = Rendezvous::new([("b", f64::MAX), ("a", f64::MAX), ("c", 1.0)]).unwrap();
        for key in keys(100, 9) {
            let s_a = mix64(key ^ node_hash("a"));
            let s_b = mix64(key ^ node_hash("b"));
            let want = if s_b > s_a { 0 } else { 1 };
            let (score_a, score_b) = (f64::MAX / neg_ln_unit(s_a), f64::MAX / neg_ln_unit(s_b));
            if score_a == score_b {
                assert_eq!(r.place(KeyspaceId(key)), want);
            }
        }
    }

    #[test]
    fn order_of_the_list_does_not_change_the_winner() {
        let a = Rendezvous::new([("x", 1.0), ("y", 2.0), ("z", 3.0)]).unwrap();
        let b = Rendezvous::new([("z", 3.0), ("x", 1.0), ("y", 2.0)]).unwrap();
        let (mut ta, mut tb) = ([0u32; 3], [0u32; 3]);
        for key in keys(1000, 1) {
            let id = KeyspaceId(key);
            assert_eq!(a.names()[a.place(id) as usize], b.names()[b.place(id) as usize]);
            let ranked_a: Vec<&str> = a.top_k(id, &mut ta).iter().map(|&i| a.names()[i as usize].as_str()).collect();
            let ranked_b: Vec<&str> = b.top_k(id, &mut tb).iter().map(|&i| b.names()[i as usize].as_str()).collect();
            assert_eq!(ranked_a, ranked_b);
        }
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        // Covers the branch-free path (k ≤ 4), the insertion path with cached
        // and recomputed ranks (k > 16), and several chunks (n > 16).
        for n in [1, 3, 5, 17, 40] {
            let r = named(n, |i| 1.0 + (i % 3) as f64);
            let mut out = [0u32; 41];
            for key in keys(50, n as u64) {
                for weighted in [false, true] {
                    let mut all: Vec<(Rank, usize)> = (0..n).map(|p| (r.rank(p, key, weighted), p)).collect();
                    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let want: Vec<u32> = all.iter().map(|&(_, p)| r.index[p]).collect();
                    for k in 1..=n + 1 {
                        let got = r.top_k_with(key, &mut out[..k], weighted);
                        assert_eq!(got, &want[..k.min(n)], "n {n}, k {k}, weighted {weighted}");
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_handles_short_and_long_buffers() {
        let r = named(5, |i| (i + 1) as f64);
        let id = KeyspaceId(42);
        assert!(r.top_k(id, &mut []).is_empty());
        let mut long = [u32::MAX; 9];
        let all = r.top_k(id, &mut long).to_vec();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], r.place(id));
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
        assert_eq!(long[5..], [u32::MAX; 4]);
        let mut two = [0u32; 2];
        assert_eq!(r.top_k(id, &mut two), &all[..2]);
    }

    #[test]
    fn constructor_rejects_bad_input() {
        let none: [(&str, f64); 0] = [];
        assert_eq!(Rendezvous::new(none).unwrap_err(), AlgoError::NoBuckets { algorithm: "rendezvous" });
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Rendezvous::new([("a", 1.0), ("b", bad)]).unwrap_err();
            assert!(matches!(err, AlgoError::BadWeight { ref node, .. } if node == "b"), "{err}");
        }
        let err = Rendezvous::new([("a", 1.0), ("b", 1.0), ("a", 2.0)]).unwrap_err();
        assert_eq!(err.to_string(), "rendezvous: shard \"a\" is listed twice");
        let r = Rendezvous::new([("a", 1.0), ("b", 2.0)]).unwrap();
        assert_eq!((r.nodes(), r.buckets(), r.is_uniform()), (2, 2, false));
        assert_eq!(r.weights(), [1.0, 2.0]);
    }
}
