//! Shared fixtures for the placement benchmarks in `benches/placement.rs`.
//!
//! Every benchmark measures the same thing: *one 16-byte key → one shard*,
//! hashing included. To keep branch predictors and caches honest, each
//! benchmark cycles through a fixed set of [`KEY_COUNT`] distinct
//! pseudo-random keys ([`KeyCycle`]) instead of looking up one key over and
//! over. The set is generated from a fixed seed, so every run (and every
//! algorithm, ours or a peer's) sees exactly the same keys in the same order.
//!
//! Node names come from [`node_names`] (`shard-000`, `shard-001`, …), so that
//! name-based algorithms (ring, rendezvous, Maglev) hash the same strings in
//! every implementation.

/// The number of distinct keys a [`KeyCycle`] cycles through (a power of two).
pub const KEY_COUNT: usize = 1024;

/// The seed of the default key set.
pub const KEY_SEED: u64 = 0x5eed_5eed_5eed_5eed;

/// One step of SplitMix64: advances `state` and returns a well-mixed word.
#[inline]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` distinct pseudo-random 16-byte keys, reproducible from `seed`.
///
/// Each key is two SplitMix64 outputs; since SplitMix64 is a bijection of its
/// counter, the keys of one set are distinct (checked in debug builds).
pub fn keys(count: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut state = seed;
    let out: Vec<[u8; 16]> = (0..count)
        .map(|_| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
            key[8..].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
            key
        })
        .collect();
    debug_assert!({
        let mut sorted = out.clone();
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] != w[1])
    });
    out
}

/// Node names `shard-000`, `shard-001`, … (`count` of them).
pub fn node_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("shard-{i:03}")).collect()
}

/// A fixed set of keys handed out round-robin, one per benchmark iteration.
#[derive(Debug, Clone)]
pub struct KeyCycle {
    keys: Vec<[u8; 16]>,
    next: usize,
}

impl KeyCycle {
    /// The default set: [`KEY_COUNT`] keys from [`KEY_SEED`].
    pub fn new() -> Self {
        Self::with_keys(keys(KEY_COUNT, KEY_SEED))
    }

    /// Cycles through `keys`, whose length must be a non-zero power of two.
    pub fn with_keys(keys: Vec<[u8; 16]>) -> Self {
        assert!(keys.len().is_power_of_two(), "key count must be a power of two");
        Self { keys, next: 0 }
    }

    /// The next key (wrapping around at the end of the set).
    #[inline(always)]
    pub fn next_key(&mut self) -> &[u8; 16] {
        let i = self.next;
        self.next = (i + 1) & (self.keys.len() - 1);
        &self.keys[i]
    }

    /// All keys of the set, in order.
    pub fn keys(&self) -> &[[u8; 16]] {
        &self.keys
    }
}

impl Default for KeyCycle {
    fn default() -> Self {
        Self::new()
    }
}

/// Helpers of the whole-system programs in `src/bin/` (propagation, scale).
pub mod system;

/// Helpers of the data-moving programs in `src/bin/` (copy_rate, cutover).
pub mod moving;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_reproducible() {
        let a = keys(KEY_COUNT, KEY_SEED);
        let b = keys(KEY_COUNT, KEY_SEED);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KEY_COUNT);
    }

    #[test]
    fn cycle_wraps() {
        let mut cycle = KeyCycle::with_keys(keys(4, 1));
        let first = *cycle.next_key();
        for _ in 0..3 {
            cycle.next_key();
        }
        assert_eq!(*cycle.next_key(), first);
    }

    #[test]
    fn names_are_zero_padded() {
        assert_eq!(node_names(2), ["shard-000", "shard-001"]);
    }
}
