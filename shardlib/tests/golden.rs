//! Golden vectors: the routing of these keys must never change. A change
//! here moves users' data to other shards, so it is a breaking change that
//! needs a new keyspace seed or algorithm name, never a silent edit.
//!
//! The keyspace ids and jump buckets were computed by an independent
//! implementation (Python's `xxhash` package, which wraps the reference C
//! library, and the Python transcription of Lamping & Veach in
//! docs/HASHING.md); the other algorithms' outputs are pinned from this
//! implementation and documented in docs/HASHING.md.

use shardlib::algo::jump::jump_consistent_hash;
use shardlib::{Key, KeyspaceId, ShardKey, Uuid};

#[test]
fn keyspace_ids_match_the_reference_xxh3() {
    let cases: &[(&dyn Fn(u64) -> KeyspaceId, u64, u64)] = &[
        (&|s| "alice".keyspace_id(s), 0, 5593767425381308080),
        (&|s| "alice".keyspace_id(s), 1, 7609801631743587685),
        (&|s| "alice".keyspace_id(s), 42, 9203602360671217190),
        (&|s| "bob".keyspace_id(s), 0, 1442208253991303397),
        (&|s| "carol".keyspace_id(s), 0, 16356433469892447140),
        (&|s| "".keyspace_id(s), 0, 3244421341483603138),
        (&|s| "grüße".keyspace_id(s), 0, 6288829393002020013),
        (&|s| "x".repeat(300).keyspace_id(s), 0, 11948529612910769492),
        (&|s| "x".repeat(300).keyspace_id(s), 7, 7327251444594653761),
        (&|s| 0u64.keyspace_id(s), 0, 14374147212387527897),
        (&|s| 1u64.keyspace_id(s), 0, 17540194650411207667),
        (&|s| 42u64.keyspace_id(s), 0, 3337142596522283180),
        (&|s| 42u32.keyspace_id(s), 0, 3337142596522283180),
        (&|s| u64::MAX.keyspace_id(s), 0, 5841669975847748627),
        (&|s| (-1i64).keyspace_id(s), 0, 5841669975847748627),
        (&|s| (-42i64).keyspace_id(s), 0, 17120161371623954849),
        (&|s| (-42i16).keyspace_id(s), 0, 17120161371623954849),
        (&|s| core::array::from_fn::<u8, 16, _>(|i| i as u8).keyspace_id(s), 0, 9463720498221773019),
        (&|s| "123e4567-e89b-12d3-a456-426614174000".parse::<Uuid>().unwrap().keyspace_id(s), 0, 843390039161665528),
        (&|s| (7u64, "ab").keyspace_id(s), 0, 5466899900431916546),
        (&|s| Key::Composite(vec![Key::U64(7), Key::Str("ab".into())]).keyspace_id(s), 0, 5466899900431916546),
    ];
    for (i, (hash, seed, expected)) in cases.iter().enumerate() {
        assert_eq!(hash(*seed), KeyspaceId(*expected), "vector {i}");
    }
}

#[test]
fn jump_matches_the_reference_transcription() {
    // (keyspace id of the key, buckets, bucket) from docs/HASHING.md's Python.
    let cases = [
        (5593767425381308080u64, 1000u32, 367u32), // "alice"
        (1442208253991303397, 1000, 355),          // "bob"
        (16356433469892447140, 1000, 999),         // "carol"
        (3244421341483603138, 1000, 241),          // ""
    ];
    for (key, buckets, bucket) in cases {
        assert_eq!(jump_consistent_hash(key, buckets), bucket, "jump({key}, {buckets})");
    }
}
