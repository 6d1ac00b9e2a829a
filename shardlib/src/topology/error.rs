//! Why a topology was rejected.

use crate::algo::AlgoError;
use crate::range::RangeError;

/// A topology could not be read, or breaks a rule. Every variant names the
/// keyspace, shard, range or table at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    /// The document is not valid JSON or TOML, or has the wrong shape.
    #[error("cannot parse topology {format}: {message}")]
    Parse {
        /// "json" or "toml".
        format: &'static str,
        /// The parser's message, with line and column where known.
        message: String,
    },
    /// The topology could not be written out.
    #[error("cannot write topology as {format}: {message}")]
    Serialize {
        /// "json" or "toml".
        format: &'static str,
        /// The serializer's message.
        message: String,
    },
    /// A topology file could not be read.
    #[error("cannot read topology file {path}: {message}")]
    Io {
        /// The file's path.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// No keyspace with this name.
    #[error("unknown keyspace {keyspace:?}")]
    UnknownKeyspace {
        /// The name asked for.
        keyspace: String,
    },
    /// The cluster name is empty.
    #[error("the cluster name is empty")]
    EmptyClusterName,
    /// A keyspace without shards.
    #[error("keyspace {keyspace}: has no shards")]
    NoShards {
        /// The keyspace.
        keyspace: String,
    },
    /// Two shards of one keyspace share an id.
    #[error("keyspace {keyspace}: shard {shard:?} is listed twice")]
    DuplicateShard {
        /// The keyspace.
        keyspace: String,
        /// The repeated id.
        shard: String,
    },
    /// A shard's settings are wrong.
    #[error("keyspace {keyspace}, shard {shard}: {reason}")]
    InvalidShard {
        /// The keyspace.
        keyspace: String,
        /// The shard.
        shard: String,
        /// What is wrong.
        reason: String,
    },
    /// A range names a shard the keyspace does not have.
    #[error("keyspace {keyspace}, range {range}: unknown shard {shard:?}")]
    UnknownShard {
        /// The keyspace.
        keyspace: String,
        /// The range that names it.
        range: String,
        /// The unknown shard id.
        shard: String,
    },
    /// A range is owned by a shard in state `removed`.
    #[error("keyspace {keyspace}, range {range}: owner {shard:?} is removed")]
    RemovedOwner {
        /// The keyspace.
        keyspace: String,
        /// The range.
        range: String,
        /// The removed shard.
        shard: String,
    },
    /// The ranges do not cover the space exactly once.
    #[error("keyspace {keyspace}: {source}")]
    Range {
        /// The keyspace.
        keyspace: String,
        /// The range problem, naming the range.
        #[source]
        source: RangeError,
    },
    /// The placement algorithm rejects its parameters.
    #[error("keyspace {keyspace}: {source}")]
    Algorithm {
        /// The keyspace.
        keyspace: String,
        /// The algorithm's complaint.
        #[source]
        source: AlgoError,
    },
    /// A table definition is wrong.
    #[error("keyspace {keyspace}, table {table:?}: {reason}")]
    InvalidTable {
        /// The keyspace.
        keyspace: String,
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
}
