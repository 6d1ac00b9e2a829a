//! Errors of the shard pools. DSNs in them are always redacted.

use std::time::Duration;

use crate::id::{Epoch, ShardId};
use crate::router::RouteError;
use crate::topology::TopologyError;

/// An error of [`ShardedPool`](super::ShardedPool) and its helpers.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The keyspace is not in the installed topology.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The topology given to `apply` does not compile.
    #[error("invalid topology: {0}")]
    Topology(#[from] TopologyError),
    /// `apply` was given a topology older than the installed one.
    #[error("topology epoch {offered} is older than the installed epoch {installed}")]
    StaleEpoch {
        /// The installed epoch.
        installed: Epoch,
        /// The refused epoch.
        offered: Epoch,
    },
    /// The route names a shard without a pool (e.g. a removed shard).
    #[error("keyspace {keyspace}: shard {shard} has no pool")]
    NoPool {
        /// The keyspace.
        keyspace: String,
        /// The shard.
        shard: ShardId,
    },
    /// A pool could not be created (e.g. an unparsable DSN).
    #[error("shard {shard} ({dsn}): cannot create a pool: {source}")]
    Open {
        /// The shard.
        shard: ShardId,
        /// The redacted DSN.
        dsn: String,
        /// What sqlx reported.
        source: Box<sqlx::Error>,
    },
    /// Connecting to or querying a shard failed.
    #[error("shard {shard} ({dsn}): {source}")]
    Database {
        /// The shard.
        shard: ShardId,
        /// The redacted DSN.
        dsn: String,
        /// What sqlx reported.
        source: Box<sqlx::Error>,
    },
    /// Connecting to a shard took longer than the connect timeout.
    #[error("shard {shard} ({dsn}): no connection within {timeout:?}")]
    ConnectTimeout {
        /// The shard.
        shard: ShardId,
        /// The redacted DSN.
        dsn: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The key's range stayed frozen (a move is cutting over) for the whole
    /// write wait.
    #[error("keyspace {keyspace}: range {range} stayed frozen for {waited:?} (epoch {epoch}); write not attempted")]
    Frozen {
        /// The keyspace.
        keyspace: String,
        /// The frozen range.
        range: String,
        /// The last epoch seen.
        epoch: Epoch,
        /// How long the write waited.
        waited: Duration,
    },
    /// A database fence on the owner rejected the write, and no newer
    /// topology routed it elsewhere (see the fence contract in [`super`]).
    #[error("keyspace {keyspace}: shard {shard} fenced the write to range {range} at epoch {epoch}: {source}")]
    Fenced {
        /// The keyspace.
        keyspace: String,
        /// The shard whose fence rejected the write.
        shard: ShardId,
        /// The range.
        range: String,
        /// The epoch of the last attempt.
        epoch: Epoch,
        /// The fence error.
        source: Box<sqlx::Error>,
    },
    /// An identifier that would reach SQL is not a plain identifier.
    #[error("invalid SQL identifier {0:?}: expected [A-Za-z_][A-Za-z0-9_]* of at most 63 bytes")]
    InvalidIdentifier(String),
}
