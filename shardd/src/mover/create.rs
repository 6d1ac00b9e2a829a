//! Turning an operator's request (move, split, merge) into a job, after
//! every check that can be made before anything changes.

use serde::Deserialize;
use shardlib::topology::{Keyspace, RangeState, Shard, ShardState};
use shardlib::{KeyRange, KeyspaceName, ShardId};

use super::engine::{self, Engine, EngineError, EngineOptions, MoveSpec};
use super::job::{Job, JobKind, JobSettings, Phase, Progress, Status, new_id, now_ms};
use crate::config::MoverOptions;
use crate::service::{ServiceError, find_assignment, hash_ranges};

/// The body of `POST /v1/keyspaces/{ks}/jobs`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobRequest {
    /// Move whole ranges (all owned by one shard) to another shard.
    Move {
        /// The ranges.
        ranges: Vec<KeyRange>,
        /// The target shard.
        to: ShardId,
        /// Rows per chunk.
        #[serde(default)]
        batch_rows: Option<u64>,
        /// Copy throttle.
        #[serde(default)]
        rows_per_second: Option<u64>,
    },
    /// Split a range at the data's median or at a point; optionally move the
    /// right half.
    Split {
        /// The range.
        range: KeyRange,
        /// `median` (default) or a hex keyspace-id boundary such as `a0`.
        #[serde(default)]
        at: Option<String>,
        /// Move the right half here.
        #[serde(default)]
        to: Option<ShardId>,
        /// Rows per chunk.
        #[serde(default)]
        batch_rows: Option<u64>,
        /// Copy throttle.
        #[serde(default)]
        rows_per_second: Option<u64>,
    },
    /// Merge neighbouring ranges: two of any owners, or more on one shard.
    Merge {
        /// The ranges (any order).
        ranges: Vec<KeyRange>,
        /// Rows per chunk.
        #[serde(default)]
        batch_rows: Option<u64>,
        /// Copy throttle.
        #[serde(default)]
        rows_per_second: Option<u64>,
    },
}

/// Why a job could not be created. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request is malformed or asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The keyspace, range or shard does not exist, or the range is busy.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A shard named as target does not exist.
    #[error("keyspace {keyspace} has no shard {shard}")]
    UnknownShard {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The shard.
        shard: ShardId,
    },
    /// Another job is moving (or about to move) an overlapping range.
    #[error("range {range} of keyspace {keyspace} is busy: job {job} ({status}) works on it")]
    Busy {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The range asked for.
        range: String,
        /// The other job.
        job: String,
        /// Its status.
        status: &'static str,
    },
    /// The databases are not fit for the move.
    #[error("precheck failed: {0}")]
    Precheck(String),
    /// A shard database could not be reached.
    #[error("{0}")]
    Database(String),
}

impl From<EngineError> for CreateError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Precheck(message) => CreateError::Precheck(message),
            EngineError::Database { .. } => CreateError::Database(error.to_string()),
        }
    }
}

/// Checks `request` against `keyspace` and the running jobs and returns the
/// job to store. Moves are prechecked against both databases; a median
/// split reads the owner's data.
pub async fn prepare(
    name: &KeyspaceName,
    keyspace: &Keyspace,
    request: JobRequest,
    active: &[Job],
    options: &MoverOptions,
) -> Result<Job, CreateError> {
    let assignments = hash_ranges(name, keyspace)?;
    let serving = |range: &KeyRange| -> Result<ShardId, CreateError> {
        let assignment = find_assignment(name, assignments, range)?;
        if assignment.state != RangeState::Serving {
            return Err(ServiceError::RangeState {
                keyspace: name.clone(),
                range: range.to_string(),
                problem: "is frozen (a move is cutting over)".into(),
            }
            .into());
        }
        Ok(assignment.shard.clone())
    };
    let target_shard = |id: &ShardId| -> Result<&Shard, CreateError> {
        let shard = keyspace
            .shard(id.as_str())
            .ok_or_else(|| CreateError::UnknownShard { keyspace: name.clone(), shard: id.clone() })?;
        if shard.state != ShardState::Serving {
            return Err(CreateError::Invalid(format!(
                "shard {id} of keyspace {name} is {}: it cannot take ranges",
                shard_state(shard.state)
            )));
        }
        Ok(shard)
    };
    let connect = EngineOptions { connect_timeout: options.connect_timeout.get(), ..EngineOptions::default() };

    let (kind, ranges, source, target, split, merge, settings) = match request {
        JobRequest::Move { ranges, to, batch_rows, rows_per_second } => {
            if ranges.is_empty() {
                return Err(CreateError::Invalid("a move needs at least one range".into()));
            }
            let source = serving(&ranges[0])?;
            for range in &ranges[1..] {
                let owner = serving(range)?;
                if owner != source {
                    return Err(CreateError::Invalid(format!(
                        "ranges of one move must have one owner: {} is on {source}, {range} on {owner}",
                        ranges[0]
                    )));
                }
            }
            target_shard(&to)?;
            if to == source {
                return Err(CreateError::Invalid(format!(
                    "shard {to} already owns {}: the target must be another shard",
                    join(&ranges)
                )));
            }
            (JobKind::Move, ranges, source, to, None, None, (batch_rows, rows_per_second))
        }
        JobRequest::Split { range, at, to, batch_rows, rows_per_second } => {
            let owner = serving(&range)?;
            let owner_shard = keyspace.shard(owner.as_str()).expect("validated topologies name existing owners");
            let point = match at.as_deref().unwrap_or("median") {
                "median" => median(owner_shard, keyspace, range, &connect).await?,
                text => parse_point(text)?,
            };
            if range.split_at(point).is_err() {
                return Err(CreateError::Invalid(format!(
                    "split point {point:016x} is not inside range {range} (it must be after its start and before its end)"
                )));
            }
            let (_, right) = range.split_at(point).expect("checked above");
            let target = match to {
                Some(to) => {
                    target_shard(&to)?;
                    to
                }
                None => owner.clone(),
            };
            let moving = if target == owner { Vec::new() } else { vec![right] };
            (JobKind::Split, moving, owner, target, Some((range, point)), None, (batch_rows, rows_per_second))
        }
        JobRequest::Merge { mut ranges, batch_rows, rows_per_second } => {
            if ranges.len() < 2 {
                return Err(CreateError::Invalid(format!("a merge takes two or more ranges, got {}", ranges.len())));
            }
            ranges.sort();
            for pair in ranges.windows(2) {
                if pair[0].end() != Some(pair[1].start()) {
                    return Err(CreateError::Invalid(format!("ranges {} and {} are not neighbours", pair[0], pair[1])));
                }
            }
            let owners = ranges.iter().map(&serving).collect::<Result<Vec<_>, _>>()?;
            let (left_owner, right_owner) = (owners[0].clone(), owners[owners.len() - 1].clone());
            let moving = if owners.iter().all(|o| *o == left_owner) {
                Vec::new()
            } else if ranges.len() == 2 {
                vec![ranges[1]]
            } else {
                return Err(CreateError::Invalid(format!(
                    "ranges {} have different owners: merge more than two ranges only on one shard",
                    join(&ranges)
                )));
            };
            let source = if moving.is_empty() { left_owner.clone() } else { right_owner };
            (JobKind::Merge, moving, source, left_owner, None, Some(ranges), (batch_rows, rows_per_second))
        }
    };

    let settings = JobSettings {
        batch_rows: settings.0.unwrap_or(options.batch_rows).clamp(1, 1_000_000),
        rows_per_second: settings.1.unwrap_or(options.rows_per_second),
    };
    let mut job = Job {
        id: new_id(),
        keyspace: name.clone(),
        kind,
        ranges,
        source,
        target,
        split_range: split.map(|(range, _)| range),
        split_at: split.map(|(_, at)| at),
        merge,
        status: Status::Queued,
        phase: Phase::Pending,
        cancel_requested: false,
        error: None,
        settings,
        progress: Progress::default(),
        copy_table: 0,
        frozen_epoch: None,
        handed_over_epoch: None,
        cutover_ms: None,
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
        finished_at_ms: None,
        phases: Vec::new(),
        owner: None,
    };

    let mine: Vec<KeyRange> =
        job.ranges.iter().copied().chain(job.split_range).chain(job.merge.iter().flatten().copied()).collect();
    if let Some(other) = active.iter().find(|j| j.keyspace == *name && !j.status.is_terminal() && j.overlaps(&mine)) {
        return Err(CreateError::Busy {
            keyspace: name.clone(),
            range: join(&mine),
            job: other.id.clone(),
            status: other.status.as_str(),
        });
    }

    if job.moves_data() {
        if keyspace.tables.is_empty() {
            return Err(CreateError::Invalid(format!(
                "keyspace {name} declares no tables: list them (name, key_columns) so that their rows can move"
            )));
        }
        let source = keyspace.shard(job.source.as_str()).expect("owners exist");
        let target = keyspace.shard(job.target.as_str()).expect("checked above");
        let engine = Engine::connect(source, target, &connect).await?;
        let spec = MoveSpec {
            job: job.id.clone(),
            keyspace: name.to_string(),
            tables: keyspace.tables.clone(),
            ranges: job.ranges.clone(),
        };
        let checked = engine.precheck(&spec).await;
        engine.close().await;
        let found = checked?;
        job.progress.rows_total = found.rows;
        job.progress.bytes_total = found.bytes;
        if let Some(capacity) = target.capacity_bytes {
            check_room(keyspace, assignments, target, found.bytes, capacity, &connect).await?;
        }
    }
    Ok(job)
}

/// Room on the target: what its ranges hold now plus what moves must stay
/// within its `capacity_bytes`.
async fn check_room(
    keyspace: &Keyspace,
    assignments: &[shardlib::topology::RangeAssignment],
    target: &Shard,
    moving: u64,
    capacity: u64,
    options: &EngineOptions,
) -> Result<(), CreateError> {
    let mut held = 0u64;
    for assignment in assignments.iter().filter(|a| a.shard == target.id) {
        held += engine::range_stats(target, &keyspace.tables, assignment.range, options).await?.bytes;
    }
    if held + moving > capacity {
        return Err(CreateError::Precheck(format!(
            "no room on shard {}: it holds about {held} bytes, the move brings {moving}, and its capacity_bytes is {capacity}",
            target.id
        )));
    }
    Ok(())
}

async fn median(
    shard: &Shard,
    keyspace: &Keyspace,
    range: KeyRange,
    options: &EngineOptions,
) -> Result<u64, CreateError> {
    if keyspace.tables.is_empty() {
        return Err(CreateError::Invalid("a median split needs the keyspace's tables (or give --at POINT)".into()));
    }
    let median = engine::median_keyspace_id(shard, &keyspace.tables, range, options).await?;
    let Some(median) = median else {
        return Err(CreateError::Invalid(format!(
            "range {range} has no rows on shard {}: give a split point (--at POINT)",
            shard.id
        )));
    };
    if median == range.start() {
        // Cutting at the first row would leave the left half empty; cut
        // just after it instead so both halves are valid ranges.
        return Ok(median.saturating_add(1));
    }
    Ok(median)
}

/// Reads a split point: hex digits of a keyspace-id boundary, left-aligned
/// like range names (`a0` = `a000000000000000`).
pub fn parse_point(text: &str) -> Result<u64, CreateError> {
    let digits = text.trim();
    let valid = !digits.is_empty() && digits.len() <= 16 && digits.chars().all(|c| c.is_ascii_hexdigit());
    if !valid {
        return Err(CreateError::Invalid(format!(
            "invalid split point {text:?}: write `median` or 1 to 16 hex digits, left-aligned like range bounds (a0 = a000000000000000)"
        )));
    }
    let value = u64::from_str_radix(digits, 16).expect("validated hex");
    Ok(value << (4 * (16 - digits.len())))
}

fn shard_state(state: ShardState) -> &'static str {
    match state {
        ShardState::Serving => "serving",
        ShardState::Draining => "draining",
        ShardState::Removed => "removed",
    }
}

fn join(ranges: &[KeyRange]) -> String {
    ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_left_aligned_hex() {
        assert_eq!(parse_point("a0").unwrap(), 0xa000_0000_0000_0000);
        assert_eq!(parse_point("8").unwrap(), 0x8000_0000_0000_0000);
        assert_eq!(parse_point("0123456789abcdef").unwrap(), 0x0123_4567_89ab_cdef);
        assert!(parse_point("xyz").is_err());
        assert!(parse_point("").is_err());
        assert!(parse_point("00112233445566778").is_err());
    }
}
