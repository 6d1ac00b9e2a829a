//! Placement algorithms: from a keyspace id to a bucket (shard) index.
//!
//! Every algorithm here is deterministic across processes, platforms and
//! versions (only integer arithmetic and IEEE-754 basic operations, never the
//! platform's `ln` or `exp`), and a lookup never allocates.

use crate::key::KeyspaceId;

/// Maps keyspace ids to bucket indexes in `0..self.buckets()`.
pub trait Placement: Send + Sync {
    /// The bucket that owns `id`. Never allocates.
    fn place(&self, id: KeyspaceId) -> u32;

    /// The number of buckets.
    fn buckets(&self) -> u32;
}

/// A placement algorithm could not be built from its parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlgoError {
    /// The algorithm needs at least one bucket.
    #[error("{algorithm} needs at least one shard")]
    NoBuckets {
        /// The algorithm's name.
        algorithm: &'static str,
    },
    /// More buckets than the algorithm supports.
    #[error("{algorithm} supports at most {max} shards, got {got}")]
    TooManyBuckets {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The limit.
        max: u64,
        /// What was asked for.
        got: u64,
    },
    /// A weight that is zero, negative or not finite.
    #[error("{algorithm}: weight of shard {node:?} must be positive and finite, got {weight}")]
    BadWeight {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The node whose weight is wrong.
        node: String,
        /// The weight given.
        weight: f64,
    },
    /// Two nodes with the same name.
    #[error("{algorithm}: shard {node:?} is listed twice")]
    DuplicateNode {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The duplicated name.
        node: String,
    },
    /// Any other invalid parameter.
    #[error("{algorithm}: {message}")]
    InvalidParameter {
        /// The algorithm's name.
        algorithm: &'static str,
        /// What is wrong.
        message: String,
    },
}

pub mod jump;
pub mod jumpback;
pub mod maglev;
pub mod mix;
pub mod rendezvous;
pub mod ring;
