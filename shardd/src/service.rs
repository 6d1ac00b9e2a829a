//! Topology operations: validation, read-modify-compare-and-set with a
//! bounded retry on conflict, and fencing by leadership.
//!
//! Every write reads a snapshot, changes one keyspace, validates the result
//! and writes it with [`Expect::Version`] (the version it read) and the
//! leader's [`Fence`]. A conflict (someone wrote in between) re-reads and
//! re-applies the change, up to [`MAX_ATTEMPTS`] times. A write made while
//! this process is not the leader fails with [`ServiceError::NotLeader`];
//! one made by a leader that has just been deposed is refused by the store
//! ([`StoreError::Fenced`]).
//!
//! # When a keyspace is empty
//!
//! `DELETE /v1/keyspaces/{name}` deletes only an *empty* keyspace: one
//! none of whose shards is `serving` (every shard is `draining` or
//! `removed`). A valid keyspace always has a live shard, and the ranges of
//! a range keyspace always cover the whole space, so "every shard removed"
//! or "no shard owns a range" can never hold; marking every shard
//! `draining` is the operator's explicit statement that the keyspace is
//! retired and its data moved or dropped.

use std::sync::Arc;
use std::time::Duration;

use shardlib::store::{ClientInfo, Expect, Fence, Snapshot, StoreError, TopologyStore};
use shardlib::topology::{Keyspace, Partitioning, RangeAssignment, RangeState, Shard, ShardState, TopologyError};
use shardlib::{Epoch, KeyRange, KeyspaceName, ShardId, Topology};

use crate::api::views::owned_ranges;
use crate::leader::LeaderHandle;
use crate::metrics::Metrics;

/// How many times a write is tried when it conflicts with another.
pub const MAX_ATTEMPTS: u32 = 8;

/// A topology operation failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No keyspace with this name.
    #[error("keyspace {0} does not exist")]
    KeyspaceNotFound(KeyspaceName),
    /// The keyspace has no shard with this id.
    #[error("keyspace {keyspace} has no shard {shard}")]
    ShardNotFound {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The shard asked for.
        shard: ShardId,
    },
    /// A keyspace with this name exists already.
    #[error("keyspace {0} already exists")]
    KeyspaceExists(KeyspaceName),
    /// The keyspace has a shard with this id already.
    #[error("keyspace {keyspace} already has a shard {shard}")]
    ShardExists {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The shard id.
        shard: ShardId,
    },
    /// The keyspace still has serving shards (see the module docs).
    #[error(
        "keyspace {keyspace} is not empty: shards {} are serving (mark every shard draining or removed first)",
        join(serving)
    )]
    KeyspaceNotEmpty {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// Its serving shards.
        serving: Vec<ShardId>,
    },
    /// A shard cannot be removed while it owns ranges.
    #[error("shard {shard} of keyspace {keyspace} still owns ranges {}: move them first", ranges.join(", "))]
    ShardOwnsRanges {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The shard.
        shard: ShardId,
        /// The ranges it owns.
        ranges: Vec<String>,
    },
    /// The submitted keyspace or shard breaks a rule.
    #[error(transparent)]
    Invalid(TopologyError),
    /// The change would leave the keyspace breaking a rule (e.g. removing
    /// the last live shard).
    #[error("the change would make the keyspace invalid: {0}")]
    InvalidChange(TopologyError),
    /// This process is not the leader.
    #[error("this process is not the leader")]
    NotLeader,
    /// The keyspace does not place keys by hash ranges, so ranges cannot move.
    #[error("keyspace {keyspace} uses {algorithm}: only hash_range keyspaces have ranges that move")]
    NotRangePartitioned {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// Its algorithm.
        algorithm: &'static str,
    },
    /// No assignment is exactly this range.
    #[error("keyspace {keyspace} has no range {range} (its ranges: {})", known.join(", "))]
    RangeNotFound {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The range asked for.
        range: String,
        /// The keyspace's ranges (at most the first 32).
        known: Vec<String>,
    },
    /// The range is not in the state a step expects (wrong owner, frozen).
    #[error("keyspace {keyspace}: range {range} {problem}")]
    RangeState {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The range.
        range: String,
        /// What is wrong, e.g. "is owned by s2, not s1".
        problem: String,
    },
    /// Every attempt conflicted with a concurrent write.
    #[error("keyspace {keyspace} kept changing: gave up after {attempts} attempts")]
    Contended {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(ids: &[ShardId]) -> String {
    ids.iter().map(ShardId::as_str).collect::<Vec<_>>().join(", ")
}

/// What a change did to a keyspace.
enum Outcome {
    Changed,
    Unchanged,
}

/// The result of a write: the keyspace as written and its new version.
#[derive(Debug, Clone)]
pub struct Written {
    /// The epoch of the write (the keyspace's new version); the current
    /// version when nothing had to change.
    pub epoch: Epoch,
    /// The keyspace as it is now.
    pub keyspace: Keyspace,
}

/// The topology operations of the API.
#[derive(Clone)]
pub struct TopologyService {
    store: Arc<dyn TopologyStore>,
    cluster: String,
    leader: LeaderHandle,
    metrics: Arc<Metrics>,
}

impl TopologyService {
    /// Operations on `store`, fenced by `leader`.
    pub fn new(store: Arc<dyn TopologyStore>, cluster: String, leader: LeaderHandle, metrics: Arc<Metrics>) -> Self {
        TopologyService { store, cluster, leader, metrics }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TopologyStore> {
        &self.store
    }

    fn counted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
            self.metrics.store_error(error);
        }
        result
    }

    /// The live client registrations, ordered by id.
    pub async fn clients(&self) -> Result<Vec<ClientInfo>, ServiceError> {
        Ok(self.counted(self.store.list_clients().await)?)
    }

    /// The current topology.
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        let snapshot = self.counted(self.store.snapshot().await)?;
        self.metrics.observe_epoch(snapshot.topology.epoch.0);
        Ok(snapshot)
    }

    /// The topology at `epoch`.
    pub async fn snapshot_at(&self, epoch: Epoch) -> Result<Snapshot, ServiceError> {
        Ok(self.counted(self.store.snapshot_at(epoch).await)?)
    }

    fn fence(&self) -> Result<Fence, ServiceError> {
        self.leader.fence().ok_or(ServiceError::NotLeader)
    }

    /// Creates a keyspace; fails if one of that name exists.
    pub async fn create_keyspace(&self, name: &KeyspaceName, keyspace: Keyspace) -> Result<Written, ServiceError> {
        validate(&self.cluster, name, &keyspace).map_err(ServiceError::Invalid)?;
        let fence = self.fence()?;
        match self.counted(self.store.put_keyspace(name, &keyspace, Expect::Absent, &fence).await) {
            Ok(epoch) => {
                tracing::info!(keyspace = %name, %epoch, "keyspace created");
                Ok(Written { epoch, keyspace })
            }
            Err(StoreError::Conflict { .. }) => Err(ServiceError::KeyspaceExists(name.clone())),
            Err(StoreError::Invalid(e)) => Err(ServiceError::Invalid(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an empty keyspace (see the module docs).
    pub async fn delete_keyspace(&self, name: &KeyspaceName) -> Result<Epoch, ServiceError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let fence = self.fence()?;
            let snapshot = self.snapshot().await?;
            let (keyspace, version) = keyspace_of(&snapshot, name)?;
            let serving: Vec<ShardId> =
                keyspace.shards.iter().filter(|s| s.state == ShardState::Serving).map(|s| s.id.clone()).collect();
            if !serving.is_empty() {
                return Err(ServiceError::KeyspaceNotEmpty { keyspace: name.clone(), serving });
            }
            match self.counted(self.store.delete_keyspace(name, Expect::Version(version), &fence).await) {
                Ok(epoch) => {
                    tracing::info!(keyspace = %name, %epoch, "keyspace deleted");
                    return Ok(epoch);
                }
                Err(StoreError::Conflict { .. }) => backoff(name, attempt).await,
                Err(StoreError::NotFound { .. }) => return Err(ServiceError::KeyspaceNotFound(name.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contended { keyspace: name.clone(), attempts: MAX_ATTEMPTS })
    }

    /// Adds a shard to a keyspace. In a range keyspace it owns nothing until
    /// ranges are moved to it; with a stateless algorithm it takes its share
    /// of keys at once.
    pub async fn add_shard(&self, name: &KeyspaceName, shard: Shard) -> Result<Written, ServiceError> {
        let written = self
            .update(name, ServiceError::Invalid, |keyspace| {
                if keyspace.shard(shard.id.as_str()).is_some() {
                    return Err(ServiceError::ShardExists { keyspace: name.clone(), shard: shard.id.clone() });
                }
                keyspace.shards.push(shard.clone());
                Ok(Outcome::Changed)
            })
            .await?;
        tracing::info!(keyspace = %name, shard = %shard.id, epoch = %written.epoch, "shard added");
        Ok(written)
    }

    /// Sets a shard's lifecycle state. `removed` is refused while the shard
    /// owns ranges; setting the state it has already changes nothing.
    pub async fn set_shard_state(
        &self,
        name: &KeyspaceName,
        shard: &ShardId,
        state: ShardState,
    ) -> Result<Written, ServiceError> {
        let written = self
            .update(name, ServiceError::InvalidChange, |keyspace| {
                let owned = owned_ranges(keyspace, shard);
                let Some(target) = keyspace.shards.iter_mut().find(|s| &s.id == shard) else {
                    return Err(ServiceError::ShardNotFound { keyspace: name.clone(), shard: shard.clone() });
                };
                if target.state == state {
                    return Ok(Outcome::Unchanged);
                }
                if state == ShardState::Removed && !owned.is_empty() {
                    return Err(ServiceError::ShardOwnsRanges {
                        keyspace: name.clone(),
                        shard: shard.clone(),
                        ranges: owned,
                    });
                }
                target.state = state;
                Ok(Outcome::Changed)
            })
            .await?;
        tracing::info!(keyspace = %name, %shard, state = ?state, epoch = %written.epoch, "shard state set");
        Ok(written)
    }

    /// Sets owner and state of `ranges` (whole assignments of a hash-range
    /// keyspace), which must be owned by `from` or already by `to`:
    /// freezing (`from == to`, Frozen), hand-over (`to`, Serving) and
    /// unfreezing (`from`, Serving) of a move. Idempotent: when every range
    /// is already as asked, nothing is written.
    pub async fn set_ranges(
        &self,
        name: &KeyspaceName,
        ranges: &[KeyRange],
        from: &ShardId,
        to: &ShardId,
        state: RangeState,
    ) -> Result<Written, ServiceError> {
        let written = self
            .update(name, ServiceError::InvalidChange, |keyspace| {
                let assignments = hash_ranges_mut(name, keyspace)?;
                let mut changed = false;
                for range in ranges {
                    let a = find_range(name, assignments, range)?;
                    if a.shard != *from && a.shard != *to {
                        return Err(ServiceError::RangeState {
                            keyspace: name.clone(),
                            range: range.to_string(),
                            problem: format!("is owned by {}, not {from}", a.shard),
                        });
                    }
                    if a.shard != *to || a.state != state {
                        a.shard = to.clone();
                        a.state = state;
                        changed = true;
                    }
                }
                Ok(if changed { Outcome::Changed } else { Outcome::Unchanged })
            })
            .await?;
        tracing::info!(keyspace = %name, ranges = ?ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
            shard = %to, state = ?state, epoch = %written.epoch, "ranges set");
        Ok(written)
    }

    /// Splits the serving range `range` at `at`; both halves keep its owner.
    /// Idempotent: when the two halves exist already, nothing is written.
    pub async fn split_range(&self, name: &KeyspaceName, range: KeyRange, at: u64) -> Result<Written, ServiceError> {
        let (left, right) = range.split_at(at).map_err(|e| ServiceError::RangeState {
            keyspace: name.clone(),
            range: range.to_string(),
            problem: format!("cannot be split: {e}"),
        })?;
        self.update(name, ServiceError::InvalidChange, |keyspace| {
            let assignments = hash_ranges_mut(name, keyspace)?;
            if assignments.iter().any(|a| a.range == left) && assignments.iter().any(|a| a.range == right) {
                return Ok(Outcome::Unchanged);
            }
            let index = position_of(name, assignments, &range)?;
            let original = assignments[index].clone();
            if original.state != RangeState::Serving {
                return Err(ServiceError::RangeState {
                    keyspace: name.clone(),
                    range: range.to_string(),
                    problem: "is frozen by a move".into(),
                });
            }
            assignments[index].range = left;
            assignments.insert(index + 1, RangeAssignment { range: right, ..original });
            Ok(Outcome::Changed)
        })
        .await
    }

    /// Merges neighbouring `ranges` (in key order), which must have one
    /// owner and be serving. Idempotent: when their union exists, nothing is
    /// written.
    pub async fn merge_ranges(&self, name: &KeyspaceName, ranges: &[KeyRange]) -> Result<Written, ServiceError> {
        let problem = |problem: String| ServiceError::RangeState {
            keyspace: name.clone(),
            range: ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + "),
            problem,
        };
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Err(problem("cannot be merged: no ranges".into()));
        };
        let union = KeyRange::new(first.start(), last.end()).map_err(|e| problem(format!("cannot be merged: {e}")))?;
        if ranges.windows(2).any(|w| w[0].end() != Some(w[1].start())) {
            return Err(problem("cannot be merged: they are not neighbours in key order".into()));
        }
        self.update(name, ServiceError::InvalidChange, |keyspace| {
            let assignments = hash_ranges_mut(name, keyspace)?;
            if assignments.iter().any(|a| a.range == union) {
                return Ok(Outcome::Unchanged);
            }
            let first_index = position_of(name, assignments, first)?;
            let run = &assignments[first_index..first_index + ranges.len()];
            if run.iter().zip(ranges).any(|(a, r)| a.range != *r) {
                return Err(problem("cannot be merged: they are not the keyspace's consecutive ranges".into()));
            }
            let owner = &run[0].shard;
            if run.iter().any(|a| a.shard != *owner || a.state != RangeState::Serving) {
                let owners: Vec<String> = run.iter().map(|a| a.shard.to_string()).collect();
                return Err(problem(format!(
                    "cannot be merged: owners {} (all must be one serving shard)",
                    owners.join(", ")
                )));
            }
            assignments[first_index].range = union;
            assignments.drain(first_index + 1..first_index + ranges.len());
            Ok(Outcome::Changed)
        })
        .await
    }

    /// Reads, changes and writes one keyspace with compare-and-set,
    /// retrying on conflict. `invalid` classifies a result that breaks a rule.
    async fn update(
        &self,
        name: &KeyspaceName,
        invalid: fn(TopologyError) -> ServiceError,
        mut change: impl FnMut(&mut Keyspace) -> Result<Outcome, ServiceError>,
    ) -> Result<Written, ServiceError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let fence = self.fence()?;
            let snapshot = self.snapshot().await?;
            let (current, version) = keyspace_of(&snapshot, name)?;
            let mut keyspace = current.clone();
            if let Outcome::Unchanged = change(&mut keyspace)? {
                return Ok(Written { epoch: version, keyspace });
            }
            validate(&self.cluster, name, &keyspace).map_err(invalid)?;
            match self.counted(self.store.put_keyspace(name, &keyspace, Expect::Version(version), &fence).await) {
                Ok(epoch) => return Ok(Written { epoch, keyspace }),
                Err(StoreError::Conflict { .. }) => backoff(name, attempt).await,
                Err(StoreError::Invalid(e)) => return Err(invalid(e)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contended { keyspace: name.clone(), attempts: MAX_ATTEMPTS })
    }
}

/// The keyspace `name` of a snapshot, with its version.
pub fn keyspace_of<'s>(snapshot: &'s Snapshot, name: &KeyspaceName) -> Result<(&'s Keyspace, Epoch), ServiceError> {
    let keyspace = snapshot.topology.keyspaces.get(name).ok_or_else(|| ServiceError::KeyspaceNotFound(name.clone()))?;
    let version = snapshot.versions.get(name).copied().unwrap_or(snapshot.topology.epoch);
    Ok((keyspace, version))
}

/// The range assignments of a hash-range keyspace.
pub fn hash_ranges<'k>(name: &KeyspaceName, keyspace: &'k Keyspace) -> Result<&'k [RangeAssignment], ServiceError> {
    match &keyspace.partitioning {
        Partitioning::HashRange { ranges } => Ok(ranges),
        other => Err(ServiceError::NotRangePartitioned { keyspace: name.clone(), algorithm: other.algorithm() }),
    }
}

fn hash_ranges_mut<'k>(
    name: &KeyspaceName,
    keyspace: &'k mut Keyspace,
) -> Result<&'k mut Vec<RangeAssignment>, ServiceError> {
    match &mut keyspace.partitioning {
        Partitioning::HashRange { ranges } => Ok(ranges),
        other => Err(ServiceError::NotRangePartitioned { keyspace: name.clone(), algorithm: other.algorithm() }),
    }
}

/// The assignment that is exactly `range`, or [`ServiceError::RangeNotFound`].
pub fn find_assignment<'a>(
    name: &KeyspaceName,
    assignments: &'a [RangeAssignment],
    range: &KeyRange,
) -> Result<&'a RangeAssignment, ServiceError> {
    assignments.iter().find(|a| a.range == *range).ok_or_else(|| range_not_found(name, assignments, range))
}

fn find_range<'a>(
    name: &KeyspaceName,
    assignments: &'a mut [RangeAssignment],
    range: &KeyRange,
) -> Result<&'a mut RangeAssignment, ServiceError> {
    let index = position_of(name, assignments, range)?;
    Ok(&mut assignments[index])
}

fn position_of(name: &KeyspaceName, assignments: &[RangeAssignment], range: &KeyRange) -> Result<usize, ServiceError> {
    assignments.iter().position(|a| a.range == *range).ok_or_else(|| range_not_found(name, assignments, range))
}

fn range_not_found(name: &KeyspaceName, assignments: &[RangeAssignment], range: &KeyRange) -> ServiceError {
    ServiceError::RangeNotFound {
        keyspace: name.clone(),
        range: range.to_string(),
        known: assignments.iter().take(32).map(|a| a.range.to_string()).collect(),
    }
}

/// Validates `keyspace` as the only keyspace of a topology of `cluster`.
fn validate(cluster: &str, name: &KeyspaceName, keyspace: &Keyspace) -> Result<(), TopologyError> {
    let mut topology = Topology::new(cluster);
    topology.keyspaces.insert(name.clone(), keyspace.clone());
    topology.validate()
}

/// Waits a little before retrying a conflicting write: 5 ms doubling per
/// attempt, plus up to as much again of jitter so that racing writers spread.
async fn backoff(name: &KeyspaceName, attempt: u32) {
    let base = 5u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos(),
    ) % base.max(1);
    tracing::debug!(keyspace = %name, attempt, "write conflicted; retrying");
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}
