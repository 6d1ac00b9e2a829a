//! # shardlib
//!
//! Routes keys to shards. (Overview in progress.)

pub mod algo;
pub mod id;
pub mod key;
pub mod range;
pub mod router;
pub mod topology;

pub use id::{Epoch, KeyspaceName, ShardId};
pub use key::{Key, KeyType, KeyspaceId, ShardKey, Uuid};
pub use range::{KeyOrderMap, KeyOrderRange, KeyRange, RangeError, RangeMap};
pub use router::{KeyspaceRouter, Route, RouteError, Router, SharedRouter};
pub use topology::{Topology, TopologyError};
