//! Rebalancing a keyspace: measure the ranges (rows and bytes from the
//! shard databases, load from what services report), plan
//! ([`crate::planner`]), and run the plan as jobs.
//!
//! Load comes from client registrations (`TopologyStore::register_client`):
//! a service that links shardlib reports, under its registration's value,
//! `{"load": {"<keyspace>": {"<range>": <operations per second>, …}}}`
//! (`ShardedPool::report_load` does this). shardd adds up every live
//! client's figures. A range reported by a client with an older topology
//! (one that was split since) is spread over today's ranges in proportion
//! to their overlap.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shardlib::topology::{Keyspace, RangeAssignment, ShardState};
use shardlib::{KeyRange, KeyspaceName, ShardId};

use crate::config::MoverOptions;
use crate::mover::engine::{self, EngineOptions};
use crate::mover::{CreateError, Job, JobRequest, Mover};
use crate::planner::{self, Cost, Plan, PlanInput, PlanOptions, RangeInput, ShardInput, Step, ZoneRule};
use crate::service::{ServiceError, hash_ranges};

/// How many quantiles of each range's keyspace ids are measured: splits cut
/// at one of them, so a split can take off 1/16 … 15/16 of a range.
pub const QUANTILES: usize = 15;

/// The body of `POST /v1/keyspaces/{name}/rebalance` (every field optional).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebalanceRequest {
    /// Plan only; start nothing.
    pub dry_run: bool,
    /// `rows` (default), `bytes`, `load` or `mix`.
    pub cost: Option<String>,
    /// With `cost = mix`: the weight of bytes (default 0.5).
    pub bytes_weight: Option<f64>,
    /// With `cost = mix`: the weight of load (default 0.5).
    pub load_weight: Option<f64>,
    /// Plan only above this imbalance (default 1.10).
    pub threshold: Option<f64>,
    /// Balance down to this (default 1.05).
    pub target: Option<f64>,
    /// Empty these shards.
    pub drain: Vec<ShardId>,
    /// Split until the keyspace has this many ranges (reshard).
    pub min_ranges: Option<usize>,
    /// `any` (default) or `same_zone`.
    pub zones: Option<ZoneRule>,
    /// Merge runs of small neighbours (fraction of a shard's fair share).
    pub merge_below: Option<f64>,
    /// At most this many steps.
    pub max_steps: Option<usize>,
    /// Rows per chunk of the jobs.
    pub batch_rows: Option<u64>,
    /// Copy throttle of each job.
    pub rows_per_second: Option<u64>,
}

/// The answer: the plan, the measurements it was made from, and the jobs
/// started (none for a dry run or an empty plan).
#[derive(Debug, Serialize)]
pub struct RebalanceOutcome {
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// The options planned with (threshold, target, cost, …).
    pub options: PlanOptions,
    /// What was measured.
    pub ranges: Vec<RangeInput>,
    /// The plan.
    pub plan: Plan,
    /// The jobs started, one per step.
    pub jobs: Vec<Job>,
}

/// Why a rebalance did not start. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Jobs of this keyspace are still running.
    #[error("keyspace {keyspace} has unfinished jobs ({}): wait for them or cancel them first", jobs.join(", "))]
    Busy {
        /// The keyspace.
        keyspace: KeyspaceName,
        /// The jobs.
        jobs: Vec<String>,
    },
    /// No plan can satisfy the constraints.
    #[error(transparent)]
    Plan(#[from] planner::PlanError),
    /// Measuring or starting a job failed.
    #[error(transparent)]
    Create(#[from] CreateError),
}

impl From<ServiceError> for RebalanceError {
    fn from(error: ServiceError) -> Self {
        RebalanceError::Create(CreateError::Service(error))
    }
}

/// Measures, plans and (unless `dry_run`) starts the plan's jobs.
pub async fn rebalance(
    mover: &Mover,
    name: &KeyspaceName,
    request: &RebalanceRequest,
) -> Result<RebalanceOutcome, RebalanceError> {
    let options = plan_options(request)?;
    let (keyspace, running) = mover.keyspace_and_jobs(name).await?;
    for id in &options.drain {
        if keyspace.shard(id.as_str()).is_none() {
            return Err(CreateError::UnknownShard { keyspace: name.clone(), shard: id.clone() }.into());
        }
    }
    if !running.is_empty() && !request.dry_run {
        return Err(RebalanceError::Busy { keyspace: name.clone(), jobs: running });
    }
    let load = mover.reported_load(name).await?;
    let ranges = measure(&keyspace, name, &load, mover.options()).await?;
    let mut input = PlanInput { shards: shard_inputs(&keyspace), ranges, options };
    input.validate().map_err(|e| RebalanceError::Invalid(e.to_string()))?;
    input.normalise();
    let plan = planner::plan(&input)?;
    let jobs = if request.dry_run || plan.is_empty() {
        Vec::new()
    } else {
        let requests = plan.steps.iter().map(|step| job_request(step, request)).collect();
        mover.create_many(name, requests).await?
    };
    if !jobs.is_empty() {
        tracing::info!(keyspace = %name, jobs = jobs.len(), before = plan.before.imbalance, after = plan.after.imbalance,
            "rebalance started");
    }
    Ok(RebalanceOutcome { keyspace: name.clone(), options: input.options, ranges: input.ranges, plan, jobs })
}

fn plan_options(request: &RebalanceRequest) -> Result<PlanOptions, RebalanceError> {
    let defaults = PlanOptions::default();
    let cost = match request.cost.as_deref().unwrap_or("rows") {
        "rows" => Cost::Rows,
        "bytes" => Cost::Bytes,
        "load" => Cost::Load,
        "mix" => Cost::Mix {
            bytes_weight: request.bytes_weight.unwrap_or(0.5),
            load_weight: request.load_weight.unwrap_or(0.5),
            bytes_total: 0.0,
            load_total: 0.0,
        },
        other => {
            return Err(RebalanceError::Invalid(format!("unknown cost {other:?}: use rows, bytes, load or mix")));
        }
    };
    // A target given alone raises the default threshold with it.
    let threshold = request.threshold.unwrap_or_else(|| defaults.threshold.max(request.target.unwrap_or(1.0)));
    let target = request.target.unwrap_or_else(|| defaults.target.min(threshold));
    Ok(PlanOptions {
        cost,
        threshold,
        target,
        max_steps: request.max_steps.unwrap_or(defaults.max_steps),
        min_ranges: request.min_ranges.unwrap_or(0),
        drain: request.drain.iter().cloned().collect::<BTreeSet<_>>(),
        zones: request.zones.unwrap_or_default(),
        merge_below: request.merge_below,
        bytes_per_second: defaults.bytes_per_second,
    })
}

/// The planner's view of the shards: serving shards take data.
pub fn shard_inputs(keyspace: &Keyspace) -> Vec<ShardInput> {
    keyspace
        .shards
        .iter()
        .filter(|s| s.state != ShardState::Removed)
        .map(|s| ShardInput {
            id: s.id.clone(),
            weight: s.weight,
            capacity_bytes: s.capacity_bytes,
            zone: s.labels.zone.clone(),
            takes_data: s.state == ShardState::Serving,
        })
        .collect()
}

/// Rows, bytes and keyspace-id quantiles of every range, read from its
/// owner, plus the reported load.
pub async fn measure(
    keyspace: &Keyspace,
    name: &KeyspaceName,
    load: &[(KeyRange, f64)],
    options: &MoverOptions,
) -> Result<Vec<RangeInput>, RebalanceError> {
    let assignments: Vec<RangeAssignment> = hash_ranges(name, keyspace)?.to_vec();
    let connect = EngineOptions { connect_timeout: options.connect_timeout.get(), ..EngineOptions::default() };
    let mut ranges = Vec::with_capacity(assignments.len());
    for assignment in assignments {
        let shard = keyspace.shard(assignment.shard.as_str()).expect("valid topologies name existing owners");
        let (rows, bytes, quantiles) = if keyspace.tables.is_empty() {
            (0, 0, Vec::new())
        } else {
            let stats = engine::range_stats(shard, &keyspace.tables, assignment.range, &connect)
                .await
                .map_err(CreateError::from)?;
            let quantiles =
                engine::keyspace_id_quantiles(shard, &keyspace.tables, assignment.range, QUANTILES, &connect)
                    .await
                    .map_err(CreateError::from)?;
            (stats.rows, stats.bytes, quantiles)
        };
        let median = quantiles.len().eq(&QUANTILES).then(|| quantiles[QUANTILES / 2]);
        ranges.push(RangeInput {
            range: assignment.range,
            shard: assignment.shard.clone(),
            rows,
            bytes,
            load: load_of(assignment.range, load),
            median,
            quantiles,
        });
    }
    Ok(ranges)
}

/// The load of `range` from reported `(range, load)` pairs: each report
/// counts in proportion to its overlap with `range`.
pub fn load_of(range: KeyRange, reported: &[(KeyRange, f64)]) -> f64 {
    reported
        .iter()
        .filter(|(r, _)| r.overlaps(&range))
        .map(|(r, load)| {
            let start = r.start().max(range.start()) as u128;
            let end = r.end().map_or(1u128 << 64, u128::from).min(range.end().map_or(1u128 << 64, u128::from));
            load * (end.saturating_sub(start)) as f64 / r.width() as f64
        })
        .sum::<f64>()
        + 0.0
}

fn job_request(step: &Step, request: &RebalanceRequest) -> JobRequest {
    let (batch_rows, rows_per_second) = (request.batch_rows, request.rows_per_second);
    match step {
        Step::Move { range, to, .. } => {
            JobRequest::Move { ranges: vec![*range], to: to.clone(), batch_rows, rows_per_second }
        }
        Step::Split { range, at, to, .. } => JobRequest::Split {
            range: *range,
            at: Some(format!("{at:016x}")),
            to: to.clone(),
            batch_rows,
            rows_per_second,
        },
        Step::Merge { ranges, .. } => JobRequest::Merge { ranges: ranges.clone(), batch_rows, rows_per_second },
    }
}

/// Automatic rebalancing (see [`crate::config::RebalanceOptions`]): while
/// this process leads, every `interval` each range keyspace with tables is
/// measured and planned (a dry run); a keyspace whose imbalance has stayed
/// above the threshold for `sustain`, with no job running and no automatic
/// rebalance in the last `min_gap`, gets its plan started.
pub fn start_auto(
    mover: Mover,
    service: crate::service::TopologyService,
    leader: crate::leader::LeaderHandle,
    options: crate::config::RebalanceOptions,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !options.auto {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut above_since: std::collections::HashMap<KeyspaceName, std::time::Instant> = Default::default();
        let mut last_run: std::collections::HashMap<KeyspaceName, std::time::Instant> = Default::default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(options.interval.get()) => {}
                () = shutdown.cancelled() => return,
            }
            if !leader.is_leader() {
                above_since.clear();
                continue;
            }
            let Ok(snapshot) = service.snapshot().await else { continue };
            for (name, keyspace) in &snapshot.topology.keyspaces {
                if keyspace.tables.is_empty() || hash_ranges(name, keyspace).is_err() {
                    continue;
                }
                let request = RebalanceRequest {
                    dry_run: true,
                    cost: Some(options.cost.clone()),
                    threshold: Some(options.threshold),
                    ..RebalanceRequest::default()
                };
                let plan = match rebalance(&mover, name, &request).await {
                    Ok(outcome) => outcome.plan,
                    Err(error) => {
                        tracing::debug!(keyspace = %name, %error, "automatic rebalance: cannot plan");
                        continue;
                    }
                };
                if plan.before.imbalance <= options.threshold || plan.is_empty() {
                    above_since.remove(name);
                    continue;
                }
                let since = *above_since.entry(name.clone()).or_insert_with(std::time::Instant::now);
                let gap_ok = last_run.get(name).is_none_or(|t| t.elapsed() >= options.min_gap.get());
                if since.elapsed() < options.sustain.get() || !gap_ok {
                    continue;
                }
                let run = RebalanceRequest { dry_run: false, ..request };
                match rebalance(&mover, name, &run).await {
                    Ok(outcome) => {
                        tracing::info!(keyspace = %name, jobs = outcome.jobs.len(),
                            imbalance = outcome.plan.before.imbalance, "automatic rebalance started");
                        last_run.insert(name.clone(), std::time::Instant::now());
                        above_since.remove(name);
                    }
                    Err(error) => tracing::warn!(keyspace = %name, %error, "automatic rebalance could not start"),
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_load_spreads_over_todays_ranges() {
        let r = |s: &str| s.parse::<KeyRange>().unwrap();
        let reported = [(r("-80"), 100.0), (r("80-"), 40.0)];
        assert!((load_of(r("-40"), &reported) - 50.0).abs() < 1e-9);
        assert!((load_of(r("40-c0"), &reported) - 70.0).abs() < 1e-9);
        assert!((load_of(r("-"), &reported) - 140.0).abs() < 1e-9);
    }
}
