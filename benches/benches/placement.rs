//! Placement benchmarks: shardlib's algorithms side by side with peer crates.
//!
//! Every benchmark measures one lookup *16-byte key → shard, hashing
//! included*, cycling through the same fixed set of 1024 pseudo-random keys
//! ([`shardkit_benches::KeyCycle`]). Inputs and outputs go through
//! [`std::hint::black_box`].
//!
//! - shardlib turns the key into a keyspace id with
//!   `KeyspaceId::from_canonical_bytes(&key, 0)` (one-shot xxh3-64) and then
//!   places the id.
//! - A peer that takes `impl Hash` gets the `[u8; 16]` through its own hasher
//!   (its hashing is part of its cost); a peer that takes a `u64` gets the
//!   same xxh3-64 of the key as shardlib. `docs/BENCHMARKS.md` lists which is
//!   which and the results.
//!
//! Run with `cargo bench -p shardkit-benches --bench placement`; a filter
//! after `--` selects groups, e.g. `-- ring`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use shardkit_benches::{KeyCycle, node_names};
use shardlib::KeyspaceId;
use shardlib::ShardKey;
use shardlib::algo::Placement;
use shardlib::algo::jump::Jump;
use shardlib::algo::jumpback::JumpBack;
use shardlib::algo::maglev::{DEFAULT_TABLE_SIZE, Maglev};
use shardlib::algo::rendezvous::Rendezvous;
use shardlib::algo::ring::HashRing;
use shardlib::range::{KeyRange, RangeMap};
use xxhash_rust::xxh3::xxh3_64;

/// Buckets of the jump-family groups.
const JUMP_BUCKETS: u32 = 1024;
/// Shards of the ring group.
const RING_SHARDS: usize = 100;
/// Virtual nodes per shard in the ring group.
const RING_VNODES: u32 = 160;
/// Shards of the Maglev group.
const MAGLEV_SHARDS: usize = 100;

/// Benchmarks one lookup per iteration: `lookup(next key of the cycle)`.
fn bench_lookup<O>(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, mut lookup: impl FnMut(&[u8; 16]) -> O) {
    let mut keys = KeyCycle::new();
    group.bench_function(id, |b| b.iter(|| lookup(black_box(keys.next_key()))));
}

/// shardlib's key → keyspace id step (one-shot xxh3-64, seed 0).
#[inline(always)]
fn keyspace_id(key: &[u8; 16]) -> KeyspaceId {
    KeyspaceId::from_canonical_bytes(key, 0)
}

/// A key hashed with std's `DefaultHasher` (SipHash-1-3, zero keys), the way
/// `impl Hash` peers hash it.
#[inline(always)]
fn std_hash(key: &[u8; 16]) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Hashing alone: what every lookup below pays before placement.
fn hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash");
    bench_lookup(&mut g, "ours-from_canonical_bytes", keyspace_id);
    bench_lookup(&mut g, "ours-shardkey", |k| k.as_slice().keyspace_id(0));
    bench_lookup(&mut g, "xxh3_64", |k| xxh3_64(k));
    bench_lookup(&mut g, "std-siphash13", std_hash);
    g.finish();
}

/// Jump consistent hash, 1024 buckets.
fn jump(c: &mut Criterion) {
    let mut g = c.benchmark_group("jump-1024");
    let ours = Jump::new(JUMP_BUCKETS).expect("jump");
    bench_lookup(&mut g, "ours", |k| ours.place(keyspace_id(k)));
    let jumphash = jumphash::JumpHasher::new_with_keys(0, 0);
    bench_lookup(&mut g, "jumphash", |k| jumphash.slot(k, JUMP_BUCKETS));
    bench_lookup(&mut g, "jumpch", |k| {
        let mut hasher = jumpch::JumpHasher::<DefaultHasher>::new(JUMP_BUCKETS);
        k.hash(&mut hasher);
        hasher.finish()
    });
    bench_lookup(&mut g, "jumpch-xxh3", |k| jumpch::hash(xxh3_64(k), JUMP_BUCKETS));
    g.finish();
}

/// Constant-time members of the jump family, 1024 buckets.
fn jumpback(c: &mut Criterion) {
    let mut g = c.benchmark_group("jumpback-1024");
    let ours = JumpBack::new(JUMP_BUCKETS).expect("jumpback");
    bench_lookup(&mut g, "ours", |k| ours.place(keyspace_id(k)));
    let last = u64::from(JUMP_BUCKETS - 1);
    bench_lookup(&mut g, "fliphash-xxh3", |k| fliphash::fliphash_64(xxh3_64(k), ..=last));
    bench_lookup(&mut g, "fliphash_xxh3_64", |k| fliphash::fliphash_xxh3_64(k, ..=last));
    let full = anchorhash::Builder::default().with_resources(0..JUMP_BUCKETS).build::<&[u8; 16]>(JUMP_BUCKETS as u16);
    bench_lookup(&mut g, "anchorhash-full", |k| full.get_resource(k).copied());
    let headroom =
        anchorhash::Builder::default().with_resources(0..JUMP_BUCKETS).build::<&[u8; 16]>(2 * JUMP_BUCKETS as u16);
    bench_lookup(&mut g, "anchorhash-half", |k| headroom.get_resource(k).copied());
    g.finish();
}

/// Sorted range starts for `n` ranges, the first 0: `n` equal ranges
/// (`even`) or `n` ranges cut at distinct pseudo-random points, as after
/// splits at hash-like boundaries (`random`).
fn range_starts(n: usize, even: bool) -> Vec<u64> {
    if even {
        return (0..n).map(|i| (((i as u128) << 64) / n as u128) as u64).collect();
    }
    let mut starts: Vec<u64> = shardkit_benches::keys(n - 1, n as u64)
        .iter()
        .map(|k| u64::from_le_bytes(k[..8].try_into().expect("8 bytes")))
        .chain([0])
        .collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), n, "boundaries must be distinct");
    starts
}

/// Range maps with 256 and 4096 ranges, against `partition_point` on a
/// sorted `Vec<u64>` of range starts.
fn range_map(c: &mut Criterion) {
    for n in [256usize, 4096] {
        let mut g = c.benchmark_group(format!("range-{n}"));
        for (layout, even) in [("even", true), ("random", false)] {
            let starts = range_starts(n, even);
            let ranges: Vec<(KeyRange, u32)> = starts
                .iter()
                .enumerate()
                .map(|(i, &start)| {
                    let range = KeyRange::new(start, starts.get(i + 1).copied()).expect("range");
                    (range, i as u32)
                })
                .collect();
            let owners: Vec<u32> = (0..n as u32).collect();

            let ours = RangeMap::new(ranges).expect("range map");
            bench_lookup(&mut g, &format!("ours-{layout}"), |k| *ours.lookup(keyspace_id(k)));
            bench_lookup(&mut g, &format!("partition_point-{layout}"), |k| {
                let id = keyspace_id(k).0;
                owners[starts.partition_point(|&s| s <= id) - 1]
            });
        }
        g.finish();
    }
}

/// Consistent-hash rings, 100 shards × 160 virtual nodes.
fn ring(c: &mut Criterion) {
    let names = node_names(RING_SHARDS);
    let mut g = c.benchmark_group("ring-100x160");

    let ours = HashRing::new(names.iter().map(|n| (n.as_str(), 1)), RING_VNODES).expect("ring");
    bench_lookup(&mut g, "ours", |k| ours.place(keyspace_id(k)));

    let mut hashring = hashring::HashRing::new();
    hashring.batch_add(names.iter().flat_map(|n| (0..RING_VNODES).map(move |v| (n.as_str(), v))).collect());
    bench_lookup(&mut g, "hashring", |k| hashring.get(k).map(|&(name, _)| name));

    let chr = consistent_hash_ring::RingBuilder::default()
        .vnodes(RING_VNODES as usize)
        .nodes_iter(names.iter().map(String::as_str))
        .build();
    bench_lookup(&mut g, "consistent_hash_ring", |k| *chr.get(k));
    g.finish();
}

/// Weight of node `i` in the mixed-weight rendezvous benchmarks: 1, 2, 3, 4, 1, …
fn mixed_weight(i: usize) -> f64 {
    (i % 4 + 1) as f64
}

/// Rendezvous hashing over 16 and 100 shards: all weights equal (ours vs
/// `rendezvous_hash`'s plain nodes) and mixed weights 1–4 (ours vs its
/// `WeightedNode`s).
fn rendezvous(c: &mut Criterion) {
    use rendezvous_hash::{Capacity, RendezvousNodes, WeightedNode};
    for n in [16usize, 100] {
        let names = node_names(n);
        let mut g = c.benchmark_group(format!("rendezvous-{n}"));

        let ours = Rendezvous::new(names.iter().map(|n| (n.as_str(), 1.0))).expect("rendezvous");
        bench_lookup(&mut g, "ours", |k| ours.place(keyspace_id(k)));
        let mut plain = RendezvousNodes::default();
        for name in &names {
            plain.insert(name.as_str());
        }
        bench_lookup(&mut g, "rendezvous_hash", |k| plain.calc_candidates(k).next().copied());

        let ours_weighted =
            Rendezvous::new(names.iter().enumerate().map(|(i, n)| (n.as_str(), mixed_weight(i)))).expect("rendezvous");
        bench_lookup(&mut g, "ours-weighted", |k| ours_weighted.place(keyspace_id(k)));
        let mut weighted = RendezvousNodes::default();
        for (i, name) in names.iter().enumerate() {
            let capacity = Capacity::new(mixed_weight(i)).expect("capacity");
            weighted.insert(WeightedNode::new(name.as_str(), capacity));
        }
        bench_lookup(&mut g, "rendezvous_hash-weighted", |k| weighted.calc_candidates(k).next().map(|n| n.node));
        g.finish();
    }
}

/// Maglev, 100 shards, both tables of (about) `DEFAULT_TABLE_SIZE` entries.
fn maglev(c: &mut Criterion) {
    use maglev::ConsistentHasher;
    let names = node_names(MAGLEV_SHARDS);
    let mut g = c.benchmark_group("maglev-100");

    let ours = Maglev::new(names.iter().map(|n| (n.as_str(), 1)), DEFAULT_TABLE_SIZE).expect("maglev");
    bench_lookup(&mut g, "ours", |k| ours.place(keyspace_id(k)));

    let peer = maglev::Maglev::with_capacity(names.iter().map(String::as_str), DEFAULT_TABLE_SIZE as usize);
    bench_lookup(&mut g, "maglev", |k| peer.get(k).copied());
    g.finish();
}

/// Modest settings: the whole suite runs in a few minutes on two cores.
fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(50)
}

criterion_group! {
    name = placement;
    config = config();
    targets = hash, jump, jumpback, range_map, ring, rendezvous, maglev
}
criterion_main!(placement);
