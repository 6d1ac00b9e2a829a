//! Pool settings.

use std::time::Duration;

/// Settings of every shard pool of a [`ShardedPool`](super::ShardedPool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections per pool (per primary and per replica).
    pub max_connections: u32,
    /// Bound on opening one connection, used by
    /// [`ShardPool::ping`](super::ShardPool::ping) and
    /// [`ShardedPool::connect_all`](super::ShardedPool::connect_all).
    pub connect_timeout: Duration,
    /// Bound on getting a connection from a pool (including connecting).
    pub acquire_timeout: Duration,
    /// Longest a write waits for a frozen range to thaw, or for a newer epoch
    /// after a database fence rejected it.
    pub write_wait: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            write_wait: Duration::from_secs(2),
        }
    }
}
