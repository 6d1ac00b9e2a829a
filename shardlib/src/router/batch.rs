//! Grouping many keys by the shard that owns them.

use super::KeyspaceRouter;
use crate::id::ShardId;

/// Items grouped by owning shard, in the order shards are listed in the
/// topology; within a group items keep their input order.
#[derive(Debug)]
pub struct ShardBatches<'r, T> {
    router: &'r KeyspaceRouter,
    groups: Vec<Vec<T>>,
}

impl<'r, T> ShardBatches<'r, T> {
    pub(super) fn new(router: &'r KeyspaceRouter, groups: Vec<Vec<T>>) -> Self {
        ShardBatches { router, groups }
    }

    /// The non-empty groups with their shard.
    pub fn iter(&self) -> impl Iterator<Item = (&'r ShardId, &[T])> + '_ {
        let router = self.router;
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(move |(index, group)| (router.shard_at(index as u32), group.as_slice()))
    }

    /// The number of shards that received at least one item.
    pub fn shard_count(&self) -> usize {
        self.groups.iter().filter(|g| !g.is_empty()).count()
    }

    /// Consumes the batches, yielding owned groups.
    pub fn into_groups(self) -> impl Iterator<Item = (&'r ShardId, Vec<T>)> {
        let router = self.router;
        self.groups
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(move |(index, group)| (router.shard_at(index as u32), group))
    }
}
