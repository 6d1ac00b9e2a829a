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

/// A way to hash one key under a seed, the seed, and the expected id.
type Vector<'a> = (&'a dyn Fn(u64) -> KeyspaceId, u64, u64);

#[test]
fn keyspace_ids_match_the_reference_xxh3() {
    let cases: &[Vector<'_>] = &[
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

#[test]
fn placements_of_named_shards_are_pinned() {
    use shardlib::algo::Placement;
    use shardlib::algo::jump::Jump;
    use shardlib::algo::jumpback::JumpBack;
    use shardlib::algo::maglev::{DEFAULT_TABLE_SIZE, Maglev};
    use shardlib::algo::rendezvous::Rendezvous;
    use shardlib::algo::ring::HashRing;
    use shardlib::range::{KeyRange, RangeMap};

    // Ten shards named "0" … "9", weight 1, as `shardctl route -n 10` builds them.
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let weighted = || names.iter().map(|n| (n.as_str(), 1u32));
    let ranges = RangeMap::new(KeyRange::uniform(10).into_iter().zip(0u32..).collect()).unwrap();
    let placements: [(&str, Box<dyn Placement>, [u32; 4]); 6] = [
        ("jump", Box::new(Jump::new(10).unwrap()), [9, 5, 6, 6]),
        ("jump_back", Box::new(JumpBack::new(10).unwrap()), [4, 5, 2, 8]),
        ("ring", Box::new(HashRing::new(weighted(), 160).unwrap()), [3, 9, 1, 6]),
        ("rendezvous", Box::new(Rendezvous::new(names.iter().map(|n| (n.as_str(), 1.0))).unwrap()), [6, 0, 6, 6]),
        ("maglev", Box::new(Maglev::new(weighted(), DEFAULT_TABLE_SIZE).unwrap()), [7, 3, 8, 9]),
        ("hash_range", Box::new(Ranges(ranges)), [3, 0, 8, 1]),
    ];
    for (algorithm, placement, expected) in placements {
        let got = ["alice", "bob", "carol", "dave"].map(|key| placement.place(key.keyspace_id(0)));
        assert_eq!(got, expected, "{algorithm}");
    }
}

/// A map of equal ranges seen as a numbered placement.
struct Ranges(shardlib::range::RangeMap<u32>);

impl shardlib::algo::Placement for Ranges {
    fn place(&self, id: KeyspaceId) -> u32 {
        *self.0.lookup(id)
    }
    fn buckets(&self) -> u32 {
        self.0.len() as u32
    }
}
