//! Proves that routing allocates nothing: a counting global allocator
//! watches every lookup path of every placement algorithm.

#![allow(unsafe_code)] // a global allocator cannot be written without it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardlib::algo::Placement;
use shardlib::algo::rendezvous::Rendezvous;
use shardlib::{KeyspaceId, Router, ShardKey, SharedRouter, Topology, Uuid};

/// Counts allocations made by the current thread, so that other test
/// threads cannot disturb the count.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const TOPOLOGY: &str = r#"
cluster = "alloc-test"
epoch = 3

[keyspaces.ranges]
shards = [{ id = "a", primary = "sqlite://a.db" }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "hash_range", ranges = [{ range = "-80", shard = "a" }, { range = "80-", shard = "b", state = "frozen" }] }

[keyspaces.ordered]
shards = [{ id = "a", primary = "sqlite://a.db" }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "key_order", ranges = [{ range = { end = "n" }, shard = "a" }, { range = { start = "n" }, shard = "b" }] }

[keyspaces.ring]
shards = [{ id = "a", primary = "sqlite://a.db", weight = 2 }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "ring", vnodes = 64 }

[keyspaces.jump]
shards = [{ id = "a", primary = "sqlite://a.db" }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "jump" }

[keyspaces.jump_back]
shards = [{ id = "a", primary = "sqlite://a.db" }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "jump_back" }

[keyspaces.rendezvous]
shards = [{ id = "a", primary = "sqlite://a.db", weight = 3 }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "rendezvous" }

[keyspaces.maglev]
shards = [{ id = "a", primary = "sqlite://a.db" }, { id = "b", primary = "sqlite://b.db" }]
partitioning = { algorithm = "maglev", table_size = 251 }
"#;

#[test]
fn routing_allocates_nothing() {
    let topology = Topology::from_toml(TOPOLOGY).expect("valid test topology");
    let shared = SharedRouter::new(Router::compile(&topology).expect("compiles"));
    let string_keys: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    let uuid = Uuid([7; 16]);
    let names = ["ranges", "ordered", "ring", "jump", "jump_back", "rendezvous", "maglev"];
    // arc-swap sets up per-thread bookkeeping on first use; that one-off
    // allocation is not part of a lookup.
    drop(shared.load());

    let mut checksum = 0usize;
    let allocations = allocations_during(|| {
        for _ in 0..10 {
            let router = shared.load();
            for name in names {
                let keyspace = router.keyspace(name).expect("keyspace exists");
                for (i, key) in string_keys.iter().enumerate() {
                    checksum += keyspace.route(key.as_str()).as_str().len();
                    checksum += keyspace.route(&(i as u64)).as_str().len();
                    checksum += keyspace.route(&-(i as i64)).as_str().len();
                    checksum += keyspace.route(&[i as u8; 16]).as_str().len();
                    checksum += keyspace.route(&uuid).as_str().len();
                    let route = keyspace.lookup(key.as_str());
                    checksum += usize::from(route.frozen) + route.shard.as_str().len();
                    if let Some(shard) = keyspace.route_id(KeyspaceId((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))) {
                        checksum += shard.as_str().len();
                    }
                }
            }
        }
    });
    assert!(checksum > 0);
    assert_eq!(allocations, 0, "routing allocated {allocations} times");
}

#[test]
fn rendezvous_top_k_allocates_nothing() {
    let names: Vec<String> = (0..16).map(|i| format!("node-{i}")).collect();
    let rendezvous = Rendezvous::new(names.iter().map(|n| (n.as_str(), 1.0 + (n.len() % 3) as f64))).unwrap();
    let mut buffer = [0u32; 3];
    let mut checksum = 0u64;
    let allocations = allocations_during(|| {
        for i in 0..10_000u64 {
            let id = i.keyspace_id(0);
            checksum += u64::from(rendezvous.top_k(id, &mut buffer)[2]);
            checksum += u64::from(rendezvous.place(id));
        }
    });
    assert!(checksum > 0);
    assert_eq!(allocations, 0, "top-k allocated {allocations} times");
}
