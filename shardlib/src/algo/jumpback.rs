//! JumpBackHash: consistent hashing onto numbered buckets in constant expected time.
//!
//! Otmar Ertl, "JumpBackHash: Say Goodbye to the Modulo Operation to Distribute
//! Keys Uniformly to Buckets", 2024, <https://arxiv.org/abs/2403.18682>; the
//! reference implementation is
//! `ConsistentHashing.jumpBackHash…()` in Dynatrace's hash4j (Java).
//!
//! # The idea
//!
//! Like jump hash, every key has a random set of *active* bucket indexes:
//! index 0 always, and index `i ≥ 1` independently with probability 1/(i + 1).
//! The key's bucket among `n` is its largest active index below `n`. Growing
//! `n` to `n + 1` changes the answer only when `n` itself is active (probability
//! 1/(n + 1)), and then the key moves to the new bucket `n`: the mapping is
//! consistent, and uniform. Jump hash walks the active indexes upwards, which
//! takes O(ln n) steps and floating point. JumpBackHash walks *down* from `n`,
//! one power-of-two range `[2ᵏ, 2ᵏ⁺¹)` at a time: each range holds an active
//! index with probability exactly 1/2, and its largest one is uniform over the
//! range, so one random bit per range and a few random bits for the offset
//! suffice. Expected work is constant and integer-only.
//!
//! # The exact algorithm
//!
//! The random values are the SplitMix64 sequence seeded with the key (see
//! [`mix`](super::mix)): `r_j = mix64(key + (j + 1)·GOLDEN_GAMMA)` for
//! `j = 0, 1, 2, …`, with `GOLDEN_GAMMA = 0x9E3779B97F4A7C15` and
//!
//! ```text
//! mix64(z): z = (z ^ (z >> 30)) · 0xBF58476D1CE4E5B9
//!           z = (z ^ (z >> 27)) · 0x94D049BB133111EB
//!           return z ^ (z >> 31)                          (all mod 2⁶⁴)
//! ```
//!
//! `lo32(v)` is the low 32 bits of `v`, `hi32(v) = v >> 32`; arithmetic below
//! is on unsigned 32-bit integers.
//!
//! ```text
//! if n ≤ 1: return 0
//! r = r_0
//! x = lo32(r ^ (r >> 32)) & (2^(⌊log2(n − 1)⌋ + 1) − 1)   bit k set: range k holds an active index
//! loop:
//!     if x == 0: return 0
//!     k = ⌊log2 x⌋;  lo = 2ᵏ                                  the highest range left
//!     v = hi32(r) if popcount(x) is odd, else lo32(r)
//!     b = lo + (v & (lo − 1))                                 the range's largest active index
//!     if b < n: return b
//!     (only the range containing n − 1 gets here: look below n inside it)
//!     repeat for j = 1, 2, …, 64:
//!         for c in lo32(r_j), hi32(r_j):
//!             c = c & (2·lo − 1)                              uniform in [0, 2ᵏ⁺¹)
//!             if c < lo: go to next_range                     no active index in [lo, n)
//!             if c < n: return c
//!     next_range: x = x ^ lo
//! ```
//!
//! This is hash4j's `ConsistentHashing.jumpBackHashSplitMix64()`, bit for bit:
//! it reproduces the checksum hash4j's own test pins over 1,000,000 random
//! `(key, n)` pairs (`0x23d7a0d288cd67e7`), and a few of those pairs are unit
//! tests here. One addition: the inner loop gives up after 64 steps (128
//! draws) and continues with the lower ranges, so a lookup makes at most 65
//! generator calls. Each draw ends the loop with probability > 1/2, so the cap
//! changes a result with probability < 2⁻¹²⁸ (never, in practice), and it keeps
//! the mapping consistent (the draws do not depend on `n`). hash4j takes `n`
//! up to 2³¹ − 1; the same steps work for every `u32`. The alternation between
//! the two halves of `r` keeps the offset used in a lower range independent of
//! the draws that rejected the upper one.

use super::mix::{GOLDEN_GAMMA, mix64};
use super::{AlgoError, Placement};
use crate::key::KeyspaceId;

/// How many generator calls the inner loop may make before giving up on a range.
const MAX_INNER_STEPS: u32 = 64;

/// JumpBackHash of `key` onto `buckets` buckets: consistent, uniform, O(1) expected.
///
/// `buckets` may be any `u32`; 0 and 1 both return 0. The exact algorithm,
/// including its random generator, is in the [module docs](self).
#[inline]
pub fn jump_back_hash(key: u64, buckets: u32) -> u32 {
    if buckets <= 1 {
        return 0;
    }
    jump_back_hash_masked(key, buckets, range_bits(buckets))
}

/// `2^(⌊log2(n − 1)⌋ + 1) − 1`: one bit per power-of-two range below `n`
/// (for `n ≥ 2`). Depends only on `n`, so [`JumpBack`] computes it once.
#[inline]
const fn range_bits(buckets: u32) -> u32 {
    u32::MAX >> (buckets - 1).leading_zeros()
}

/// [`jump_back_hash`] for `buckets ≥ 2`, with `range_bits(buckets)` given.
#[inline]
fn jump_back_hash_masked(key: u64, buckets: u32, range_bits: u32) -> u32 {
    debug_assert!(buckets >= 2);
    let mut state = key.wrapping_add(GOLDEN_GAMMA);
    let r = mix64(state);
    let mut x = ((r ^ (r >> 32)) as u32) & range_bits;
    loop {
        if x == 0 {
            return 0;
        }
        let lo = 1u32 << (31 - x.leading_zeros());
        let v = if x.count_ones() & 1 == 1 { (r >> 32) as u32 } else { r as u32 };
        let b = lo | (v & (lo - 1));
        if b < buckets {
            return b;
        }
        let range_mask = lo | (lo - 1);
        for _ in 0..MAX_INNER_STEPS {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let r = mix64(state);
            let c = (r as u32) & range_mask;
            if c < lo {
                break;
            }
            if c < buckets {
                return c;
            }
            let c = ((r >> 32) as u32) & range_mask;
            if c < lo {
                break;
            }
            if c < buckets {
                return c;
            }
        }
        x ^= lo;
    }
}

/// JumpBackHash as a [`Placement`] over a fixed number of buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JumpBack {
    buckets: u32,
    /// `range_bits(buckets)`, or 0 for one bucket (every key maps to 0).
    range_bits: u32,
}

impl JumpBack {
    /// JumpBackHash over `buckets` buckets (at least 1; any `u32` is supported).
    pub fn new(buckets: u32) -> Result<JumpBack, AlgoError> {
        if buckets == 0 {
            return Err(AlgoError::NoBuckets { algorithm: "jump_back" });
        }
        let range_bits = if buckets == 1 { 0 } else { range_bits(buckets) };
        Ok(JumpBack { buckets, range_bits })
    }
}

impl Placement for JumpBack {
    #[inline]
    fn place(&self, id: KeyspaceId) -> u32 {
        if self.range_bits == 0 {
            return 0;
        }
        jump_back_hash_masked(id.0, self.buckets, self.range_bits)
    }

    #[inline]
    fn buckets(&self) -> u32 {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash4j_vectors() {
        // The first (hash, n) pairs of hash4j's checksum test (SplittableRandom
        // seeded 0x0a55871a9d9103b7); the whole 1,000,000-pair checksum matched
        // hash4j's jumpBackHashSplitMix64 when this was written.
        let cases: [(u64, u32, u32); 11] = [
            (0x4970_f709_50f2_6232, 111, 1),
            (0x7d6d_e3f7_f5a8_f56d, 63, 27),
            (0xaec6_e2df_0aa0_b7c6, 18, 9),
            (0xa640_7414_f982_afc4, 16319, 9461),
            (0xdd99_f0af_53e3_1a6f, 225_454_712, 214_257_092),
            (0xf983_64e3_5900_6c97, 5678, 1759),
            (0x9d76_a1ab_a8a4_0ea2, 32_024_546, 15_170_337),
            (0x321c_c767_9a2c_1ddf, 1345, 1030),
            (0x97e1_b2e0_6896_a7e2, 3198, 2226),
            (0x919e_9adc_10c4_2417, 1_038_890_280, 828_691_262),
            (0x1de7_46dd_9b60_9982, 80034, 38874),
        ];
        for (key, n, want) in cases {
            assert_eq!(jump_back_hash(key, n), want, "key {key:#x}, n {n}");
        }
    }

    #[test]
    fn placement_agrees_with_the_function() {
        let mut key = 7u64;
        for n in (1..=2050).chain([u32::MAX - 1, u32::MAX]) {
            let placement = JumpBack::new(n).unwrap();
            for _ in 0..8 {
                key = mix64(key.wrapping_add(GOLDEN_GAMMA));
                assert_eq!(placement.place(KeyspaceId(key)), jump_back_hash(key, n), "key {key:#x}, n {n}");
            }
        }
    }

    #[test]
    fn golden_values() {
        // Pinned outputs (cross-checked with an independent Python transcription
        // of the module docs): a change here changes routing.
        let cases: [(u64, u32, u32); 8] = [
            (0, 2, 0),
            (0, 1024, 313),
            (1, 1024, 492),
            (0xdeadbeef, 10, 7),
            (0xdeadbeef, 1000, 923),
            (0x0123_4567_89AB_CDEF, 1 << 20, 407_559),
            (u64::MAX, 3, 2),
            (u64::MAX, u32::MAX, 3_839_455_607),
        ];
        for (key, n, want) in cases {
            assert_eq!(jump_back_hash(key, n), want, "key {key:#x}, n {n}");
        }
    }

    #[test]
    fn growing_moves_keys_only_to_the_new_bucket() {
        let mut key = 0u64;
        for _ in 0..200 {
            key = mix64(key.wrapping_add(GOLDEN_GAMMA));
            let mut last = 0;
            for n in 1..=3000 {
                let b = jump_back_hash(key, n);
                assert!(b < n);
                assert!(b == last || b == n - 1, "key {key:#x}, n {n}");
                last = b;
            }
        }
    }

    #[test]
    fn large_bucket_counts_stay_in_range_and_consistent() {
        let mut key = 1u64;
        for n in [(1u32 << 31) - 1, 1 << 31, (1 << 31) + 1, u32::MAX - 1, u32::MAX] {
            for _ in 0..2000 {
                key = mix64(key.wrapping_add(GOLDEN_GAMMA));
                let b = jump_back_hash(key, n);
                assert!(b < n);
                // b is the largest active index below n: b + 1 buckets keep it,
                // b buckets must move it lower.
                assert_eq!(jump_back_hash(key, b + 1), b);
                assert!(b == 0 || jump_back_hash(key, b) < b);
            }
        }
    }

    #[test]
    fn uniform_over_a_non_power_of_two() {
        // 3 buckets sharing 30 000 keys: each within 6 sigma of 10 000.
        let mut counts = [0u32; 3];
        for i in 0..30_000u64 {
            counts[jump_back_hash(mix64(i), 3) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 6.0 * 81.7, "{counts:?}");
        }
    }

    #[test]
    fn constructor_rejects_zero() {
        assert_eq!(JumpBack::new(0), Err(AlgoError::NoBuckets { algorithm: "jump_back" }));
        assert_eq!(JumpBack::new(u32::MAX).unwrap().buckets(), u32::MAX);
        let jb = JumpBack::new(1000).unwrap();
        assert_eq!(jb.place(KeyspaceId(0xdeadbeef)), jump_back_hash(0xdeadbeef, 1000));
    }
}
