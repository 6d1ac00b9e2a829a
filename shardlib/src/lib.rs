//! # shardlib
//!
//! Routes keys to shards, identically in every process.
//!
//! A *keyspace* is a set of tables sharded by one key. Every key becomes a
//! 64-bit **keyspace id** (`xxh3_64` of the key's canonical bytes with the
//! keyspace's seed, see [`key`] and `docs/HASHING.md`), and a **placement**
//! maps the id to a **shard** (one database):
//!
//! - [`range::RangeMap`]: Vitess-style ranges of the keyspace-id space
//!   (`-80`, `80-c0`, `c0-`), each owned by a shard. Managed keyspaces use
//!   these: splitting, merging and moving ranges is how data is resharded
//!   and rebalanced. [`range::KeyOrderMap`] is the same over raw key bytes,
//!   for keyspaces that need range scans.
//! - [`algo`]: stateless algorithms for numbered or named buckets — a
//!   consistent-hash ring with virtual nodes ([`algo::ring`], which can also
//!   express itself as a range map), jump consistent hash ([`algo::jump`]),
//!   constant-time JumpBackHash ([`algo::jumpback`]), weighted rendezvous with
//!   top-k ([`algo::rendezvous`]) and weighted Maglev ([`algo::maglev`]).
//!
//! All of them are deterministic across processes, platforms and versions,
//! and a lookup never allocates.
//!
//! A [`Topology`] (cluster → keyspaces → shards → ranges, at an epoch) is
//! plain serde data, read from JSON or TOML and validated with clear errors.
//! A [`Router`] is compiled from one topology snapshot; [`SharedRouter`]
//! publishes the current router with an atomic pointer swap, so lookups
//! never block and never see half of a change.
//!
//! ```
//! use shardlib::{Router, SharedRouter, Topology};
//!
//! let topology = Topology::from_toml(r#"
//!     cluster = "example"
//!     epoch = 1
//!     [keyspaces.users]
//!     shards = [
//!         { id = "s0", primary = "postgres://app:secret@db0/users" },
//!         { id = "s1", primary = "postgres://app:secret@db1/users" },
//!     ]
//!     partitioning = { algorithm = "hash_range", ranges = [
//!         { range = "-80", shard = "s0" },
//!         { range = "80-", shard = "s1" },
//!     ] }
//! "#)?;
//! let router = SharedRouter::new(Router::compile(&topology)?);
//!
//! let current = router.load();
//! let users = current.keyspace("users")?;
//! assert_eq!(users.route("alice").as_str(), "s0"); // keyspace id 0x4da1… < 0x80…
//! assert_eq!(users.route(&42u64).as_str(), "s0");
//!
//! // Many keys at once, grouped by shard:
//! for (shard, keys) in users.group_by_shard(["alice", "bob", "carol"], |k| *k).iter() {
//!     println!("{shard}: {keys:?}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod algo;
pub mod id;
pub mod key;
pub mod range;
pub mod router;
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "store")]
pub mod store;
pub mod topology;
#[cfg(feature = "store")]
pub mod watch;

pub use id::{Epoch, KeyspaceName, ShardId};
pub use key::{Key, KeyType, KeyspaceId, ShardKey, Uuid};
pub use range::{KeyOrderMap, KeyOrderRange, KeyRange, RangeError, RangeMap};
pub use router::{KeyspaceRouter, Route, RouteError, Router, SharedRouter};
pub use topology::{Topology, TopologyError};
#[cfg(feature = "store")]
pub use watch::{Source, TopologyUpdate, TopologyWatcher, WatchError, WatchOptions};
