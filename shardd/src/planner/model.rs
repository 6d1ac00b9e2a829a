//! The planner's input and output types.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shardlib::{KeyRange, ShardId};

/// What a range costs, for balancing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cost {
    /// Rows.
    Rows,
    /// Bytes.
    Bytes,
    /// Operations per second reported by services.
    Load,
    /// `bytes_weight` × bytes share + `load_weight` × load share, each
    /// normalised by its total so the two units mix.
    Mix {
        /// Weight of bytes.
        bytes_weight: f64,
        /// Weight of load.
        load_weight: f64,
        /// Total bytes (normaliser; set by [`PlanInput::normalise`]).
        #[serde(default)]
        bytes_total: f64,
        /// Total load (normaliser).
        #[serde(default)]
        load_total: f64,
    },
}

impl Cost {
    /// The cost of a range.
    pub fn of(&self, rows: u64, bytes: u64, load: f64) -> f64 {
        match *self {
            Cost::Rows => rows as f64,
            Cost::Bytes => bytes as f64,
            Cost::Load => load,
            Cost::Mix { bytes_weight, load_weight, bytes_total, load_total } => {
                let b = if bytes_total > 0.0 { bytes as f64 / bytes_total } else { 0.0 };
                let l = if load_total > 0.0 { load / load_total } else { 0.0 };
                bytes_weight * b + load_weight * l
            }
        }
    }
}

/// Where ranges may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneRule {
    /// Anywhere.
    #[default]
    Any,
    /// Only to shards in the zone of the range's shard (data stays in its
    /// zone or data center).
    SameZone,
}

/// How to plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanOptions {
    /// What to balance.
    pub cost: Cost,
    /// Plan only when the imbalance (largest cost/share) is above this.
    pub threshold: f64,
    /// Balance down to this (≤ threshold: the gap is the hysteresis).
    pub target: f64,
    /// At most this many balancing steps (draining and resharding are not
    /// limited: they must finish for the plan to mean anything).
    pub max_steps: usize,
    /// Split until the keyspace has at least this many ranges (reshard).
    pub min_ranges: usize,
    /// Shards to empty (besides those not serving).
    pub drain: BTreeSet<ShardId>,
    /// Zone constraint of moves.
    pub zones: ZoneRule,
    /// Merge runs of neighbours on one shard whose costs are below this
    /// fraction of a shard's fair share (off when `None`).
    pub merge_below: Option<f64>,
    /// Copy speed for the time estimates, bytes per second.
    pub bytes_per_second: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            cost: Cost::Rows,
            threshold: 1.10,
            target: 1.05,
            max_steps: 256,
            min_ranges: 0,
            drain: BTreeSet::new(),
            zones: ZoneRule::Any,
            merge_below: None,
            bytes_per_second: 50.0e6,
        }
    }
}

/// A shard, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInput {
    /// The shard.
    pub id: ShardId,
    /// Relative capacity (its share of the total cost).
    pub weight: u32,
    /// The most bytes it may hold.
    pub capacity_bytes: Option<u64>,
    /// Its zone.
    pub zone: Option<String>,
    /// Whether it takes data (serving); ranges leave shards that do not.
    pub takes_data: bool,
}

/// A range, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeInput {
    /// The range.
    pub range: KeyRange,
    /// Its owner.
    pub shard: ShardId,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Operations per second.
    pub load: f64,
    /// The median keyspace id of its rows; `None` when unknown or empty.
    /// (Keyspace ids are written as 16 hex digits in JSON.)
    #[serde(default, with = "hex_point::option")]
    pub median: Option<u64>,
    /// Evenly spaced quantiles of its rows' keyspace ids, ascending: with
    /// `k` of them, the `i`-th (from 1) has `i/(k+1)` of the rows before it.
    /// Splits cut at one of these (or the median), so a split can take off
    /// the share a shard needs rather than always half. Empty: only the
    /// median is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_point::list")]
    pub quantiles: Vec<u64>,
}

impl RangeInput {
    /// The points a split may cut at, each with the fraction of the rows
    /// before it, ascending, strictly inside the range.
    pub fn cuts(&self) -> Vec<(u64, f64)> {
        let k = self.quantiles.len() as f64;
        let mut cuts: Vec<(u64, f64)> =
            self.quantiles.iter().enumerate().map(|(i, q)| (*q, (i as f64 + 1.0) / (k + 1.0))).collect();
        if let Some(median) = self.median
            && !self.quantiles.contains(&median)
        {
            cuts.push((median, 0.5));
        }
        cuts.retain(|(point, _)| self.range.split_at(*point).is_ok());
        cuts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        cuts.dedup_by_key(|c| c.0);
        cuts
    }
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The shards.
    pub shards: Vec<ShardInput>,
    /// The ranges (together: the whole keyspace).
    pub ranges: Vec<RangeInput>,
    /// How to plan.
    pub options: PlanOptions,
}

impl PlanInput {
    /// Fills the normalisers of [`Cost::Mix`] from the ranges.
    pub fn normalise(&mut self) {
        if let Cost::Mix { bytes_total, load_total, .. } = &mut self.options.cost {
            *bytes_total = self.ranges.iter().map(|r| r.bytes as f64).sum();
            *load_total = self.ranges.iter().map(|r| r.load).sum();
        }
    }

    /// Checks the input: known shards, sane options. Errors are
    /// [`PlanError::Invalid`] or [`PlanError::UnknownShard`].
    pub fn validate(&self) -> Result<(), PlanError> {
        let ids: BTreeSet<&ShardId> = self.shards.iter().map(|s| &s.id).collect();
        if ids.len() != self.shards.len() {
            return Err(PlanError::Invalid("a shard is listed twice".into()));
        }
        for range in &self.ranges {
            if !ids.contains(&range.shard) {
                return Err(PlanError::UnknownShard { range: range.range.to_string(), shard: range.shard.clone() });
            }
            if !range.load.is_finite() || range.load < 0.0 {
                return Err(PlanError::Invalid(format!("range {}: load must be a number ≥ 0", range.range)));
            }
        }
        for id in &self.options.drain {
            if !ids.contains(id) {
                return Err(PlanError::Invalid(format!("cannot drain {id}: no such shard")));
            }
        }
        if self.shards.iter().any(|s| s.weight == 0) {
            return Err(PlanError::Invalid("shard weights must be at least 1".into()));
        }
        let o = &self.options;
        if !(o.threshold >= 1.0 && o.target >= 1.0 && o.target <= o.threshold) {
            return Err(PlanError::Invalid(format!(
                "need 1 ≤ target ≤ threshold, got target {} and threshold {}",
                o.target, o.threshold
            )));
        }
        if o.merge_below.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
            return Err(PlanError::Invalid("merge_below must be a positive fraction".into()));
        }
        Ok(())
    }
}

/// One step of a plan; each becomes one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Move a range.
    Move {
        /// The range.
        range: KeyRange,
        /// From.
        from: ShardId,
        /// To.
        to: ShardId,
        /// Rows it holds.
        rows: u64,
        /// Bytes it holds.
        bytes: u64,
        /// Estimated copy time, seconds.
        seconds: f64,
    },
    /// Split a range at the data's median; the right half moves to `to`
    /// when given.
    Split {
        /// The range.
        range: KeyRange,
        /// The split point (the right half's first keyspace id).
        #[serde(with = "hex_point")]
        at: u64,
        /// Its owner.
        shard: ShardId,
        /// The right half.
        right: KeyRange,
        /// Where the right half moves, if anywhere.
        to: Option<ShardId>,
        /// Rows of the right half (estimate).
        rows: u64,
        /// Bytes of the right half (estimate).
        bytes: u64,
    },
    /// Merge neighbouring ranges of one shard.
    Merge {
        /// The ranges, in order.
        ranges: Vec<KeyRange>,
        /// Their shard.
        shard: ShardId,
    },
}

impl Step {
    /// The right half, for a split.
    pub fn right_half(&self) -> Option<KeyRange> {
        match self {
            Step::Split { right, .. } => Some(*right),
            _ => None,
        }
    }
}

mod hex_point {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }

    pub mod option {
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

    pub mod list {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(values: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(values.iter().map(|v| format!("{v:016x}")))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
            let texts: Vec<String> = Vec::deserialize(deserializer)?;
            texts.iter().map(|t| u64::from_str_radix(t, 16).map_err(serde::de::Error::custom)).collect()
        }
    }
}

/// How balanced a layout is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// The largest cost/share over the shards that take data (1.0 =
    /// perfect; with equal weights, peak over mean).
    pub imbalance: f64,
    /// Cost still on shards that take no data (draining): it must move.
    pub stranded: f64,
    /// Total cost.
    pub total: f64,
    /// Each shard's cost.
    pub per_shard: Vec<(ShardId, f64)>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The input is inconsistent.
    #[error("invalid planner input: {0}")]
    Invalid(String),
    /// A range names a shard that is not listed.
    #[error("range {range} is on shard {shard}, which is not in the keyspace")]
    UnknownShard {
        /// The range.
        range: String,
        /// Its shard.
        shard: ShardId,
    },
    /// Every shard is draining.
    #[error("no shard takes data: every shard is draining")]
    NoShardTakesData,
    /// A range must leave its shard but fits nowhere, even split.
    #[error("range {range} must leave shard {shard}, but no shard has room for it (capacity or zone rules)")]
    NoRoom {
        /// The range.
        range: String,
        /// Its shard.
        shard: ShardId,
    },
}
