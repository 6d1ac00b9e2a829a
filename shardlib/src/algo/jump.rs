//! Jump consistent hash.
//!
//! John Lamping and Eric Veach, "A Fast, Minimal Memory, Consistent Hash
//! Algorithm", 2014, <https://arxiv.org/abs/1406.2294>.
//!
//! A key's bucket for `n` buckets is found by following the key's pseudorandom
//! sequence of "jumps": the bucket changes, as `n` grows, exactly at the
//! buckets the sequence lands on, each time to the new bucket `n − 1`. Growing
//! `n` to `n + 1` therefore moves a fraction 1/(n + 1) of the keys, all onto
//! the new bucket, and shrinking `n` only moves the keys of the last bucket.
//! Buckets are numbered, not named: only the last bucket can be removed
//! without extra moves. It needs no memory and runs in O(ln n).
//!
//! [`jump_consistent_hash`] is the paper's reference code, bit for bit
//! (integers are 64-bit, `double` is IEEE-754 binary64, `/` and `*` exactly
//! rounded, the conversion to an integer truncates):
//!
//! ```text
//! b = −1; j = 0
//! while j < n:
//!     b = j
//!     key = key · 2862933555777941757 + 1          (mod 2⁶⁴)
//!     j = int64( double(b + 1) · (double(2³¹) / double((key >> 33) + 1)) )
//! return b
//! ```
//!
//! It agrees with Guava's `Hashing.consistentHash` and with
//! `github.com/dgryski/go-jump` (the unit tests pin their published vectors).

use super::{AlgoError, Placement};
use crate::key::KeyspaceId;

/// The paper's multiplier: the 64-bit linear congruential generator `key · A + 1`.
const LCG_MULTIPLIER: u64 = 2_862_933_555_777_941_757;

/// Jump consistent hash of `key` onto `buckets` buckets (Lamping & Veach, 2014).
///
/// Bit for bit the paper's reference code; see the [module docs](self).
/// `buckets == 0` returns 0 (the reference code would return −1); [`Jump::new`]
/// rejects it.
#[inline]
pub fn jump_consistent_hash(key: u64, buckets: u32) -> u32 {
    let n = i64::from(buckets);
    let mut key = key;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n {
        b = j;
        key = key.wrapping_mul(LCG_MULTIPLIER).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// Jump consistent hash as a [`Placement`] over a fixed number of buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Jump {
    buckets: u32,
}

impl Jump {
    /// The name used in error messages.
    const ALGORITHM: &'static str = "jump";

    /// The largest number of buckets: the paper's `int32_t` limit, 2³¹ − 1.
    pub const MAX_BUCKETS: u32 = i32::MAX as u32;

    /// Jump hash over `buckets` buckets, 1 ..= [`Jump::MAX_BUCKETS`].
    pub fn new(buckets: u32) -> Result<Jump, AlgoError> {
        if buckets == 0 {
            return Err(AlgoError::NoBuckets { algorithm: Self::ALGORITHM });
        }
        if buckets > Self::MAX_BUCKETS {
            return Err(AlgoError::TooManyBuckets {
                algorithm: Self::ALGORITHM,
                max: u64::from(Self::MAX_BUCKETS),
                got: u64::from(buckets),
            });
        }
        Ok(Jump { buckets })
    }
}

impl Placement for Jump {
    #[inline]
    fn place(&self, id: KeyspaceId) -> u32 {
        jump_consistent_hash(id.0, self.buckets)
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
    fn go_jump_test_vectors() {
        // github.com/dgryski/go-jump jump_test.go, "generated from the reference
        // C++ code": Hash(key, i + 1) for each listed i.
        let vectors: [(u64, &[u32]); 4] = [
            (0, &[0; 20]),
            (1, &[0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17]),
            (0xdeadbeef, &[0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16]),
            (0x0ddc0ffeebadf00d, &[0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15]),
        ];
        for (key, buckets) in vectors {
            for (i, &want) in buckets.iter().enumerate() {
                assert_eq!(jump_consistent_hash(key, i as u32 + 1), want, "key {key:#x}, n {}", i + 1);
            }
        }
    }

    #[test]
    fn guava_test_vectors() {
        // Guava HashingTest.testConsistentHash_linearCongruentialGeneratorCompatibility.
        for (key, want) in [(1, 55), (2, 62), (3, 8), (4, 45), (5, 59)] {
            assert_eq!(jump_consistent_hash(key, 100), want, "key {key}");
        }
    }

    #[test]
    fn golden_values() {
        // Pinned outputs at large bucket counts.
        assert_eq!(jump_consistent_hash(u64::MAX, 1 << 20), 589_430);
        assert_eq!(jump_consistent_hash(0x0123_4567_89AB_CDEF, 1000), 194);
        assert_eq!(jump_consistent_hash(0x0123_4567_89AB_CDEF, Jump::MAX_BUCKETS), 1_651_575_352);
    }

    #[test]
    fn growing_moves_keys_only_to_the_new_bucket() {
        for key in [0u64, 1, 42, 0xdeadbeef, u64::MAX] {
            let mut last = 0;
            for n in 1..=2000 {
                let b = jump_consistent_hash(key, n);
                assert!(b < n);
                assert!(b == last || b == n - 1, "key {key}, n {n}");
                last = b;
            }
        }
    }

    #[test]
    fn constructor_checks_the_bucket_count() {
        assert_eq!(Jump::new(0), Err(AlgoError::NoBuckets { algorithm: "jump" }));
        assert!(matches!(Jump::new(u32::MAX), Err(AlgoError::TooManyBuckets { max: 2147483647, .. })));
        let jump = Jump::new(Jump::MAX_BUCKETS).unwrap();
        assert_eq!(jump.buckets(), Jump::MAX_BUCKETS);
        assert_eq!(Jump::new(0).unwrap_err().to_string(), "jump needs at least one shard");
        let jump = Jump::new(100).unwrap();
        assert_eq!(jump.place(KeyspaceId(3)), 8);
    }
}
