//! Shard databases: one sqlx pool per shard, the `keyspace_id` column
//! convention, and routed writes that cooperate with range moves.
//!
//! Enabled by the `sql` feature (PostgreSQL and SQLite through
//! [`sqlx::Any`]; MySQL follows by enabling sqlx's `mysql` feature, the code
//! has no driver-specific paths besides [`schema`]'s quoting notes).
//!
//! - [`ShardedPool`] keeps one lazily connecting pool per shard (primary and
//!   replicas) of every keyspace in a [`Topology`](crate::Topology).
//!   [`ShardedPool::apply`] installs a newer topology: new shards get pools,
//!   removed shards' pools are closed once their in-flight connections are
//!   returned, and a changed DSN reopens the pool. [`ShardedPool::follow`]
//!   does this for every update of a [`TopologyWatcher`](crate::TopologyWatcher).
//! - [`ShardedPool::pool_for`] / [`ShardedPool::read_pool_for`] route a key to
//!   its shard's primary / a replica (else the primary).
//! - [`ShardedPool::execute_for_key`] runs a closure in a transaction on the
//!   owning shard's primary, handing it the transaction and the row's
//!   `keyspace_id` value
//!   ([`KeyspaceId::to_sql`](crate::KeyspaceId::to_sql)) to bind.
//!
//! # Credentials
//!
//! Topologies may store DSNs without passwords (shardd's API redacts them
//! anyway), so a service completes them with [`Credentials`] before a pool
//! connects: a closure, a per-shard map, or an environment variable such as
//! `PGPASSWORD`. A completed DSN is only ever handed to sqlx; errors and logs
//! show [`Dsn`](crate::topology::Dsn)'s redacted form.
//!
//! # Frozen ranges and fences
//!
//! While a range moves, its last step marks it `frozen` in a new epoch. A
//! write whose key falls in a frozen range waits (at most
//! [`PoolOptions::write_wait`], 2 s by default) for an epoch in which the range
//! is not frozen, then routes to the owner in that epoch; if none comes it
//! fails with [`SqlError::Frozen`], naming the range.
//!
//! The mover also fences the range on the old owner *in the database*, so a
//! client holding an old topology fails loudly instead of writing to the wrong
//! shard. **The fence contract**: a fenced write fails with
//!
//! - PostgreSQL: SQLSTATE [`FENCE_SQLSTATE`] (`SK001`), e.g.
//!   `RAISE EXCEPTION 'shardkit fenced: range 80-c0' USING ERRCODE = 'SK001'`;
//! - SQLite (and any database without custom SQLSTATEs): an error whose
//!   message starts with [`FENCE_MESSAGE_PREFIX`], e.g.
//!   `SELECT RAISE(ABORT, 'shardkit fenced: range 80-c0')`.
//!
//! Row triggers only fire for rows a statement touches, so an `UPDATE` or
//! `DELETE` that finds nothing on an old owner would pass them. Therefore
//! [`ShardedPool::execute_for_key`] also checks, inside the write's
//! transaction and after its statements, that no row of `shardkit_fences`
//! (the mover's record of fenced ranges, written in the transaction that
//! installs the triggers) covers the key; one more query per write, two on
//! a database that has the table. Writes through other paths must do the
//! same check to be safe against very stale topologies.
//!
//! On a fence error, the transaction is rolled back, the write waits (bounded
//! by `write_wait`) for a newer epoch, and retries **once** on the owner in
//! that epoch. It never retries on the shard that fenced it under the same
//! epoch: without a newer topology it fails with [`SqlError::Fenced`].

mod credentials;
mod error;
mod options;
mod pool;
pub mod schema;

pub use credentials::Credentials;
pub use error::SqlError;
pub use options::PoolOptions;
pub use pool::{ApplyReport, ShardPool, ShardTx, ShardedPool};
/// The sqlx this module is built on, re-exported so that services use the
/// same version.
pub use sqlx;

/// The SQLSTATE with which a database fence rejects a write (PostgreSQL:
/// `RAISE EXCEPTION … USING ERRCODE = 'SK001'`).
pub const FENCE_SQLSTATE: &str = "SK001";

/// The message prefix with which a database fence rejects a write where
/// custom SQLSTATEs are not available (SQLite: `RAISE(ABORT, 'shardkit fenced: …')`).
pub const FENCE_MESSAGE_PREFIX: &str = "shardkit fenced";

/// Whether `error` is a database fence rejecting a write (see the module docs).
pub fn is_fence_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code == FENCE_SQLSTATE) || db.message().starts_with(FENCE_MESSAGE_PREFIX)
        }
        // The fence-table check of `execute_for_key`.
        sqlx::Error::Protocol(message) => message.starts_with(FENCE_MESSAGE_PREFIX),
        _ => false,
    }
}
