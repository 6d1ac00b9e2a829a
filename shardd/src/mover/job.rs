//! A job: what moves, where it stands, and how it went. Stored as a JSON
//! document in the store's `jobs` collection; this struct is also the API's
//! view of it (jobs hold no secrets).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shardlib::{Epoch, KeyRange, KeyspaceName, ShardId};

/// The store collection that holds jobs.
pub const COLLECTION: &str = "jobs";

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Moves ranges from one shard to another.
    Move,
    /// Splits a range; the right half may then move to another shard.
    Split,
    /// Merges neighbouring ranges: two of different owners (the right one
    /// first moves to the left one's shard), or any number on one shard.
    Merge,
}

/// The step a job is in. Steps run in this order; a step that has nothing
/// to do is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a slot.
    Pending,
    /// Splitting the range in the topology (split jobs).
    Split,
    /// Checking both databases before any data moves.
    Precheck,
    /// Installing change capture on the source.
    Capture,
    /// Copying the rows.
    Copy,
    /// Replaying the change log until its backlog is small.
    CatchUp,
    /// Comparing source and target chunk by chunk.
    Verify,
    /// Range frozen, database fence on the source, last changes drained and
    /// checked: writes to the range wait during this step.
    Fence,
    /// The target owns the range from a new epoch on.
    HandOver,
    /// Deleting the moved rows from the source; dropping capture.
    Cleanup,
    /// Merging the two ranges in the topology (merge jobs).
    Merge,
    /// Finished.
    Done,
}

impl Phase {
    /// The name used in JSON, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Split => "split",
            Phase::Precheck => "precheck",
            Phase::Capture => "capture",
            Phase::Copy => "copy",
            Phase::CatchUp => "catch_up",
            Phase::Verify => "verify",
            Phase::Fence => "fence",
            Phase::HandOver => "hand_over",
            Phase::Cleanup => "cleanup",
            Phase::Merge => "merge",
            Phase::Done => "done",
        }
    }

    /// Every phase, in order.
    pub const ALL: [Phase; 12] = [
        Phase::Pending,
        Phase::Split,
        Phase::Precheck,
        Phase::Capture,
        Phase::Copy,
        Phase::CatchUp,
        Phase::Verify,
        Phase::Fence,
        Phase::HandOver,
        Phase::Cleanup,
        Phase::Merge,
        Phase::Done,
    ];
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, not started.
    Queued,
    /// Running (or about to be resumed by the leader).
    Running,
    /// Finished: the target owns the ranges.
    Succeeded,
    /// Stopped by an error; the previous state was restored (see `error`).
    Failed,
    /// Cancel requested; the job is undoing its work.
    Cancelling,
    /// Cancelled; the previous state was restored.
    Cancelled,
}

impl Status {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Counters of a job, for people and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Rows in the moving ranges when the job started (estimate).
    pub rows_total: u64,
    /// Bytes of those rows (estimate).
    pub bytes_total: u64,
    /// Rows copied so far.
    pub rows_copied: u64,
    /// Change-log entries not yet replayed.
    pub backlog: u64,
    /// Rows re-read from the source and applied by replays.
    pub rows_replayed: u64,
    /// Rows compared by verification.
    pub rows_verified: u64,
    /// Rows deleted from the source after hand-over (or from the target on cancel).
    pub rows_cleaned: u64,
    /// The copy rate, rows per second.
    pub rows_per_second: Option<f64>,
    /// Estimated seconds until the copy completes.
    pub eta_seconds: Option<f64>,
}

/// When a phase ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseSpan {
    /// The phase.
    pub phase: Phase,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds; `None` while running.
    pub finished_at_ms: Option<u64>,
}

/// Per-job settings (the daemon's `[mover]` settings by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSettings {
    /// Rows per chunk or batch.
    pub batch_rows: u64,
    /// Copy throttle (0 = none).
    pub rows_per_second: u64,
}

/// A job, as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `j` + creation time and a random suffix, hex (`[a-z0-9]`, sortable by time).
    pub id: String,
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// What it does.
    pub kind: JobKind,
    /// The ranges whose rows move (empty when no data moves, e.g. a split
    /// that keeps both halves on one shard).
    pub ranges: Vec<KeyRange>,
    /// The shard the rows leave.
    pub source: ShardId,
    /// The shard the rows go to.
    pub target: ShardId,
    /// Split jobs: the range split.
    #[serde(default)]
    pub split_range: Option<KeyRange>,
    /// Split jobs: where the range is cut (the right half's first keyspace id).
    #[serde(default, with = "opt_hex")]
    pub split_at: Option<u64>,
    /// Merge jobs: the ranges merged, in key order.
    #[serde(default)]
    pub merge: Option<Vec<KeyRange>>,
    /// Lifecycle.
    pub status: Status,
    /// Current step.
    pub phase: Phase,
    /// Whether an operator asked to cancel.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Why the job failed (or what cancelling undid).
    #[serde(default)]
    pub error: Option<String>,
    /// Settings.
    pub settings: JobSettings,
    /// Counters.
    #[serde(default)]
    pub progress: Progress,
    /// Copy checkpoint: the table being copied (index in the keyspace's tables).
    #[serde(default)]
    pub copy_table: usize,
    /// The epoch at which the ranges were frozen.
    #[serde(default)]
    pub frozen_epoch: Option<Epoch>,
    /// The epoch at which the target took the ranges over.
    #[serde(default)]
    pub handed_over_epoch: Option<Epoch>,
    /// How long writes to the ranges paused: freeze → hand-over, in ms.
    #[serde(default)]
    pub cutover_ms: Option<u64>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
    /// Unix milliseconds.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// Phase history.
    #[serde(default)]
    pub phases: Vec<PhaseSpan>,
    /// Who is running it (the leader's member id).
    #[serde(default)]
    pub owner: Option<String>,
}

impl Job {
    /// Whether the job moves rows at all.
    pub fn moves_data(&self) -> bool {
        !self.ranges.is_empty() && self.source != self.target
    }

    /// Whether the job's moving ranges overlap `ranges`.
    pub fn overlaps(&self, ranges: &[KeyRange]) -> bool {
        let mine = self.ranges.iter().chain(self.split_range.iter()).chain(self.merge.iter().flatten());
        mine.into_iter().any(|a| ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Enters `phase`, closing the span of the previous one.
    pub fn enter(&mut self, phase: Phase) {
        let now = now_ms();
        if let Some(last) = self.phases.last_mut().filter(|s| s.finished_at_ms.is_none()) {
            last.finished_at_ms = Some(now);
        }
        self.phase = phase;
        if phase != Phase::Done {
            self.phases.push(PhaseSpan { phase, started_at_ms: now, finished_at_ms: None });
        }
    }

    /// Ends the job with `status`.
    pub fn finish(&mut self, status: Status, error: Option<String>) {
        let now = now_ms();
        if let Some(last) = self.phases.last_mut().filter(|s| s.finished_at_ms.is_none()) {
            last.finished_at_ms = Some(now);
        }
        self.status = status;
        self.error = error;
        self.finished_at_ms = Some(now);
        self.progress.eta_seconds = None;
    }

    /// Whether a cancel can still undo the job: only before the target owns
    /// the ranges.
    pub fn cancellable(&self) -> bool {
        !self.status.is_terminal() && self.phase < Phase::HandOver && self.handed_over_epoch.is_none()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A new job id: `j` + 11 hex digits of Unix milliseconds + 4 random hex
/// digits. Sorts by creation time; valid as a store id and inside SQL
/// identifiers.
pub fn new_id() -> String {
    let ms = now_ms();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let noise = xorshift(u64::from(nanos) ^ u64::from(std::process::id()) << 32 ^ ms);
    format!("j{ms:011x}{:04x}", noise & 0xffff)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A keyspace id written as 16 hex digits.
mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&format!("{v:016x}")),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| u64::from_str_radix(&t, 16).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_names_and_sort_by_time() {
        let a = new_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        shardlib::id::validate_name("job id", &a).unwrap();
    }

    #[test]
    fn phases_are_ordered_and_named() {
        for pair in Phase::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        let json = serde_json::to_string(&Phase::CatchUp).unwrap();
        assert_eq!(json, "\"catch_up\"");
        assert_eq!(Phase::CatchUp.as_str(), "catch_up");
    }
}
