//! Rebalance planning at scale: how long `shardd::planner::plan` takes for
//! 10,000 shards and 1,000,000 ranges (the issue's target: under 2 s), and
//! how much data its plans move compared with the minimum.
//!
//! Scenarios (deterministic: SplitMix64 from `--seed`; range `i` of
//! `KeyRange::uniform(ranges)` on shard `i % shards`, all weights 1, zones
//! `z0`–`z2` round-robin; each range with `--quantiles` evenly spaced
//! quantiles, as `shardd::rebalance::measure` reports them, the median being
//! the middle one; cost = rows, the default; bytes = 200 × rows, so the
//! moved/minimum ratio is the same in rows and in bytes):
//!
//! - `balanced`: rows per range uniform in 1e6 × [0.9, 1.1) — expect an empty
//!   plan;
//! - `skewed`: rows per range log-normal, median 1e6, σ = `--sigma` (1.0);
//! - `add`: the balanced cluster plus `--add` (5 % of the shards: 500) new, empty shards, with
//!   the default threshold (1.10) and target (1.05);
//! - `add-tight`: the same with threshold 1.02 and target 1.01;
//! - `drain`: the balanced cluster, draining its first `--drain` (1 %: 100) shards;
//! - `reshard`: the balanced cluster with `min_ranges` = `--reshard` (1.2) ×
//!   ranges.
//!
//! Each scenario runs with each `--max-steps` value: a number, `default`
//! (`PlanOptions::default().max_steps`, 256) or `complete` (no limit: the
//! plan stops at the target or when nothing helps). The input is built once
//! per scenario; only the call `plan(&input)` is timed, `--runs` times (fewer
//! when the runs of one row exceed `--budget` seconds; at least one).
//!
//! "Minimum" is the lower bound the planner documents
//! (`Plan::cost_lower_bound`): what lies above `target` × share on the shards
//! that take data (when the imbalance exceeds the threshold) plus everything
//! on draining shards. The program computes it from the input and checks that
//! shardd reports the same.
//!
//! `--planner exhaustive` (or `both`) runs [`exhaustive::plan`] instead of
//! (or besides) shardd's: the algorithm shardd's planner had before it was
//! made incremental — every balancing step tries *every* movable range of the
//! peak shard against *every* shard, where shardd now looks at the
//! [`shardd::planner::CANDIDATES`] least-loaded shards and the ranges nearest
//! the amount that evens a pair out — reimplemented with incremental loads
//! and segment trees so that it runs at this size. It is a reference for plan
//! quality (steps, moved/minimum, imbalance reached), not a second planner.
//! `--phases` prints where it spends its time.
//!
//! ```sh
//! cargo build --release -p shardkit-benches --bin plan_scale
//! target/release/plan_scale --runs 5                           # every scenario, default and complete plans
//! target/release/plan_scale --scenarios skewed --planner both  # shardd next to the exhaustive reference
//! target/release/plan_scale --shards 100 --ranges 10000        # the criterion bench's size
//! ```
//!
//! It prints a Markdown table (one row per scenario × max_steps × planner)
//! and progress on stderr. Besides wall time, each row gives the planning
//! thread's time on a CPU and waiting in the run queue (from
//! `/proc/thread-self/schedstat`): on a shared machine the wait is what
//! other processes added.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use shardd::planner::{Plan, PlanInput, PlanOptions, RangeInput, ShardInput, Step, plan};
use shardkit_benches::system::{Flags, Memory, load_average, machine, median, mib};
use shardlib::{KeyRange, ShardId};

/// This thread's time on a CPU and waiting for one (run queue), from
/// `/proc/thread-self/schedstat` (nanoseconds; Linux with schedstats).
fn sched() -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((Duration::from_nanos(fields.next()??), Duration::from_nanos(fields.next()??)))
}

/// Bytes per row of every range (bytes = rows × this).
const ROW_BYTES: u64 = 200;
/// Median rows per range.
const ROWS: f64 = 1.0e6;

/// SplitMix64: a small, deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The sizes and seeds of the scenarios.
#[derive(Clone, Debug)]
struct Params {
    shards: usize,
    ranges: u32,
    seed: u64,
    sigma: f64,
    add: usize,
    drain: usize,
    reshard: f64,
    quantiles: usize,
}

fn shard_id(i: usize) -> ShardId {
    ShardId::new(format!("s{i:05}")).expect("valid shard id")
}

fn shard(i: usize) -> ShardInput {
    ShardInput { id: shard_id(i), weight: 1, capacity_bytes: None, zone: Some(format!("z{}", i % 3)), takes_data: true }
}

/// `p.ranges` ranges over `p.shards` shards (range `i` on shard `i % shards`)
/// with `rows(rng)` rows each.
fn cluster(p: &Params, mut rows: impl FnMut(&mut Rng) -> u64) -> PlanInput {
    let mut rng = Rng(p.seed);
    let k = p.quantiles as u128;
    let ranges = KeyRange::uniform(p.ranges)
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let rows = rows(&mut rng);
            // What `shardd::rebalance::measure` reports for rows spread
            // evenly over the range: `k` evenly spaced quantiles, the median
            // being the middle one (the midpoint when there are none).
            let quantiles: Vec<u64> = if rows > 1 {
                (1..=k).map(|i| (u128::from(range.start()) + range.width() * i / (k + 1)) as u64).collect()
            } else {
                Vec::new()
            };
            let median = if quantiles.is_empty() {
                (rows > 1).then(|| range.midpoint())
            } else {
                Some(quantiles[quantiles.len() / 2])
            };
            RangeInput {
                range,
                shard: shard_id(i % p.shards),
                rows,
                bytes: rows * ROW_BYTES,
                load: 0.0,
                median,
                quantiles,
            }
        })
        .collect();
    PlanInput { shards: (0..p.shards).map(shard).collect(), ranges, options: PlanOptions::default() }
}

fn balanced(p: &Params) -> PlanInput {
    cluster(p, |rng| (ROWS * (0.9 + 0.2 * rng.unit())) as u64)
}

/// The scenarios, by name.
const SCENARIOS: [&str; 6] = ["balanced", "skewed", "add", "add-tight", "drain", "reshard"];

fn build(name: &str, p: &Params) -> PlanInput {
    match name {
        "balanced" => balanced(p),
        "skewed" => {
            let sigma = p.sigma;
            cluster(p, |rng| ((ROWS * (sigma * rng.normal()).exp()) as u64).max(1))
        }
        "add" | "add-tight" => {
            let mut input = balanced(p);
            input.shards.extend((p.shards..p.shards + p.add).map(shard));
            if name == "add-tight" {
                input.options.threshold = 1.02;
                input.options.target = 1.01;
            }
            input
        }
        "drain" => {
            let mut input = balanced(p);
            input.options.drain = (0..p.drain.min(p.shards - 1)).map(shard_id).collect();
            input
        }
        "reshard" => {
            let mut input = balanced(p);
            input.options.min_ranges = (f64::from(p.ranges) * p.reshard).ceil() as usize;
            input
        }
        other => unreachable!("unknown scenario {other}"),
    }
}

fn describe(name: &str, p: &Params) -> String {
    match name {
        "balanced" => "rows per range uniform in 1e6 × [0.9, 1.1)".into(),
        "skewed" => format!("rows per range log-normal, median 1e6, σ = {}", p.sigma),
        "add" => format!("balanced + {} empty shards (threshold 1.10, target 1.05)", p.add),
        "add-tight" => format!("balanced + {} empty shards, threshold 1.02, target 1.01", p.add),
        "drain" => format!("balanced, drain {} shards", p.drain.min(p.shards - 1)),
        "reshard" => format!("balanced, min_ranges = {} × ranges", p.reshard),
        _ => String::new(),
    }
}

/// Cost per shard, each shard's share, and whether it takes data.
fn loads_and_shares(input: &PlanInput) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let o = &input.options;
    let index: std::collections::HashMap<&str, usize> =
        input.shards.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let mut loads = vec![0.0; input.shards.len()];
    for r in &input.ranges {
        loads[index[r.shard.as_str()]] += o.cost.of(r.rows, r.bytes, r.load);
    }
    let takes: Vec<bool> = input.shards.iter().map(|s| s.takes_data && !o.drain.contains(&s.id)).collect();
    let total: f64 = loads.iter().sum();
    let weights: f64 = input.shards.iter().zip(&takes).filter(|(_, t)| **t).map(|(s, _)| f64::from(s.weight)).sum();
    let shares = input
        .shards
        .iter()
        .zip(&takes)
        .map(|(s, t)| if *t { total * f64::from(s.weight) / weights } else { 0.0 })
        .collect();
    (loads, shares, takes)
}

/// The least cost any plan must move: above `target` × share on shards that
/// take data (if the imbalance is above the threshold), all of it on the
/// others.
fn minimum(input: &PlanInput) -> f64 {
    let o = &input.options;
    let (loads, shares, takes) = loads_and_shares(input);
    let imbalance = (0..loads.len()).filter(|i| takes[*i]).map(|i| loads[i] / shares[i]).fold(0.0, f64::max);
    let target = if imbalance > o.threshold { o.target } else { f64::INFINITY };
    (0..loads.len()).map(|i| if takes[i] { (loads[i] - target * shares[i]).max(0.0) } else { loads[i] }).sum()
}

/// What a row of the table shows about a plan.
#[derive(Clone, Debug)]
struct Outcome {
    moves: usize,
    splits: usize,
    merges: usize,
    before: f64,
    after: f64,
    /// Cost left on shards that take no data.
    stranded: f64,
    cost_moved: f64,
    bytes_moved: u64,
    /// shardd's own lower bound (`None` for the reference).
    lower_bound: Option<f64>,
}

impl Outcome {
    fn of(plan: &Plan) -> Outcome {
        let count = |f: fn(&Step) -> bool| plan.steps.iter().filter(|s| f(s)).count();
        Outcome {
            moves: count(|s| matches!(s, Step::Move { .. })),
            splits: count(|s| matches!(s, Step::Split { .. })),
            merges: count(|s| matches!(s, Step::Merge { .. })),
            before: plan.before.imbalance,
            after: plan.after.imbalance,
            stranded: plan.after.stranded,
            cost_moved: plan.cost_moved,
            bytes_moved: plan.bytes_moved,
            lower_bound: Some(plan.cost_lower_bound),
        }
    }

    fn steps(&self) -> usize {
        self.moves + self.splits + self.merges
    }

    fn steps_text(&self) -> String {
        let mut text = format!("{} ({} moves, {} splits", self.steps(), self.moves, self.splits);
        if self.merges > 0 {
            text.push_str(&format!(", {} merges", self.merges));
        }
        text.push(')');
        text
    }

    /// Why the plan stopped.
    fn stopped(&self, input: &PlanInput) -> &'static str {
        let o = &input.options;
        if self.steps() == 0 && self.before <= o.threshold && self.stranded <= 0.0 {
            "balanced (≤ threshold)"
        } else if self.after <= o.target + 1e-12 && self.stranded <= 0.0 {
            "done (≤ target)"
        } else if self.steps() >= o.max_steps {
            "max_steps"
        } else {
            "nothing helps"
        }
    }
}

fn ratio_text(moved: f64, minimum: f64) -> String {
    if minimum > 0.0 {
        format!("{:.3}", moved / minimum)
    } else if moved > 0.0 {
        "∞ (minimum 0)".into()
    } else {
        "— (0 / 0)".into()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planner {
    Shardd,
    Exhaustive,
}

impl Planner {
    fn name(self) -> &'static str {
        match self {
            Planner::Shardd => "shardd",
            Planner::Exhaustive => "exhaustive (reference)",
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plan_scale: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut flags = Flags::parse(std::env::args().skip(1))?;
    let shards = flags.value("shards", 10_000usize)?;
    let p = Params {
        shards,
        ranges: flags.value("ranges", 1_000_000u32)?,
        seed: flags.value("seed", 42u64)?,
        sigma: flags.value("sigma", 1.0f64)?,
        add: flags.value("add", (shards / 20).max(1))?,
        drain: flags.value("drain", (shards / 100).max(1))?,
        reshard: flags.value("reshard", 1.2f64)?,
        quantiles: flags.value("quantiles", shardd::rebalance::QUANTILES)?,
    };
    let runs = flags.value("runs", 3usize)?.max(1);
    let budget = Duration::from_secs_f64(flags.value("budget", 120.0f64)?);
    let scenarios: Vec<String> = match flags.text("scenarios")? {
        None => SCENARIOS.iter().map(|s| s.to_string()).collect(),
        Some(list) => list.split(',').map(str::to_owned).collect(),
    };
    for s in &scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            return Err(format!("unknown scenario {s:?} (known: {})", SCENARIOS.join(", ")).into());
        }
    }
    let max_steps: Vec<usize> = flags
        .text("max-steps")?
        .unwrap_or_else(|| "default,complete".into())
        .split(',')
        .map(|m| match m {
            "default" => Ok(PlanOptions::default().max_steps),
            "complete" => Ok(usize::MAX),
            n => n.parse::<usize>().map_err(|e| format!("--max-steps {n:?}: {e}")),
        })
        .collect::<Result<_, _>>()?;
    let planners = match flags.text("planner")?.as_deref().unwrap_or("shardd") {
        "shardd" => vec![Planner::Shardd],
        "exhaustive" => vec![Planner::Exhaustive],
        "both" => vec![Planner::Shardd, Planner::Exhaustive],
        other => return Err(format!("--planner {other:?}: use shardd, exhaustive or both").into()),
    };
    let phases = flags.switch("phases")?;
    flags.finish()?;
    if p.shards < 2 || p.ranges == 0 {
        return Err("need at least 2 shards and 1 range".into());
    }

    println!("# Rebalance planning: {} shards, {} ranges, {} quantiles per range\n", p.shards, p.ranges, p.quantiles);
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average().unwrap_or_default());
    println!("seed {}, runs {runs} (budget {} s per row)\n", p.seed, budget.as_secs_f64());
    println!(
        "| scenario | max_steps | planner | runs | median | min – max | on CPU (median) | run-queue wait (median) | steps | imbalance before → after | stopped | moved / minimum | GB moved |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|");
    let mut phase_lines = Vec::new();
    let mut warnings = Vec::new();
    for name in &scenarios {
        let started = Instant::now();
        let base = build(name, &p);
        let least = minimum(&base);
        eprintln!("[{name}] input built in {:.2} s: {}", started.elapsed().as_secs_f64(), describe(name, &p));
        for &limit in &max_steps {
            let mut input = base.clone();
            input.options.max_steps = limit;
            let limit_text = if limit == usize::MAX { "complete".to_owned() } else { limit.to_string() };
            for &planner in &planners {
                let mut times = Vec::new();
                let mut cpu = Vec::new();
                let mut waits = Vec::new();
                let mut last = None;
                let row_start = Instant::now();
                for run in 0..runs {
                    if run > 0 && row_start.elapsed() > budget {
                        break;
                    }
                    let s0 = sched();
                    let t = Instant::now();
                    let outcome = match planner {
                        Planner::Shardd => {
                            let plan = plan(&input)?;
                            let took = t.elapsed();
                            let outcome = Outcome::of(&plan);
                            drop(plan);
                            (outcome, took)
                        }
                        Planner::Exhaustive => {
                            let (result, phase) =
                                exhaustive::plan(&input).ok_or("input not supported by the reference")?;
                            let result = result?;
                            let took = t.elapsed();
                            if phases && run == 0 {
                                let parts: Vec<String> = phase
                                    .iter()
                                    .map(|(what, d)| format!("{what} {:.0} ms", d.as_secs_f64() * 1e3))
                                    .collect();
                                phase_lines.push(format!("- {name}, max_steps {limit_text}: {}", parts.join(", ")));
                            }
                            (result.outcome(), took)
                        }
                    };
                    let (outcome, took) = outcome;
                    if let (Some((c0, w0)), Some((c1, w1))) = (s0, sched()) {
                        cpu.push((c1 - c0).as_secs_f64());
                        waits.push((w1 - w0).as_secs_f64());
                    }
                    eprintln!(
                        "[{name} max_steps={limit_text} {}] run {}: {:.3} s ({:.3} s on CPU, {:.3} s waiting for one), {} steps",
                        planner.name(),
                        run + 1,
                        took.as_secs_f64(),
                        cpu.last().copied().unwrap_or(f64::NAN),
                        waits.last().copied().unwrap_or(f64::NAN),
                        outcome.steps()
                    );
                    times.push(took.as_secs_f64());
                    last = Some(outcome);
                }
                let outcome = last.expect("at least one run");
                if let Some(bound) = outcome.lower_bound
                    && (bound - least).abs() > 1e-9 * least.max(1.0)
                {
                    warnings.push(format!("{name}: shardd's cost_lower_bound {bound} ≠ {least} computed here"));
                }
                let med = median(&times).unwrap_or(f64::NAN);
                let (min, max) = times.iter().fold((f64::INFINITY, 0.0f64), |(a, b), t| (a.min(*t), b.max(*t)));
                let on_cpu = median(&cpu).map_or("?".to_owned(), |c| format!("{c:.3} s"));
                let waited = median(&waits).map_or("?".to_owned(), |w| format!("{w:.3} s"));
                println!(
                    "| {name} | {limit_text} | {} | {} | {med:.3} s | {min:.3} – {max:.3} s | {on_cpu} | {waited} | {} | {:.4} → {:.4}{} | {} | {} | {:.1} |",
                    planner.name(),
                    times.len(),
                    outcome.steps_text(),
                    outcome.before,
                    outcome.after,
                    if outcome.stranded > 0.0 {
                        format!(" ({:.0} left on drained shards)", outcome.stranded)
                    } else {
                        String::new()
                    },
                    outcome.stopped(&input),
                    ratio_text(outcome.cost_moved, least),
                    outcome.bytes_moved as f64 / 1e9,
                );
            }
        }
    }
    println!();
    for name in &scenarios {
        println!("- `{name}`: {}", describe(name, &p));
    }
    if !phase_lines.is_empty() {
        println!("\nReference phases (first run):\n");
        for line in &phase_lines {
            println!("{line}");
        }
    }
    for w in &warnings {
        println!("\nwarning: {w}");
    }
    if let Some(m) = Memory::now() {
        println!("\npeak resident memory: {:.0} MiB", mib(m.hwm_kib));
    }
    println!("load average at end: {}", load_average().unwrap_or_default());
    Ok(())
}

/// The planner shardd had before it was made incremental, as a reference
/// for plan quality: the same four phases (drain, reshard, balance, merge)
/// and the same choices, but each balancing step tries every movable range
/// of the peak shard against every shard (the move that brings the pair's
/// peak lowest; ties: fewer bytes, then key order; destinations: the first
/// by index that reaches that peak), and splits cut at the median only.
/// Checked step for step against that planner's code on 20,000 random
/// clusters (rows or bytes costs, weights, zones, drains, reshards, merges).
///
/// The search is exhaustive but not slow: loads per shard are kept up to
/// date (exact: costs in rows or bytes are integers, which f64 sums exactly
/// below 2^53); each shard keeps its ranges in key order; a segment tree
/// over the shards' −cost/share finds the peak shard; per class of shards
/// with one weight (and zone, for `same_zone`), a segment tree over loads
/// answers "the first shard by index that can take cost c and stay at or
/// below a" and "the least loaded shard" in O(log S). A balancing step costs
/// O(k · classes · log S) for the k ranges of the peak shard.
///
/// Unsupported (returns `None`): shard capacities and costs other than rows
/// or bytes.
mod exhaustive {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use shardd::planner::{Cost, PlanInput, PlanOptions, ShardInput, ZoneRule};
    use shardlib::KeyRange;

    use super::Outcome;

    /// One step, with shards by index.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Record {
        /// A move.
        Move { range: KeyRange, from: usize, to: usize, rows: u64, bytes: u64 },
        /// A split at `at`; the right half moves to `to` if given.
        Split { range: KeyRange, at: u64, shard: usize, right: KeyRange, to: Option<usize>, rows: u64, bytes: u64 },
        /// A merge.
        Merge { ranges: Vec<KeyRange>, shard: usize },
    }

    /// A plan of the reference.
    #[derive(Clone, Debug)]
    pub struct Reference {
        pub steps: Vec<Record>,
        pub takes: Vec<bool>,
        pub shares: Vec<f64>,
        pub loads_before: Vec<f64>,
        pub loads_after: Vec<f64>,
        pub bytes_moved: u64,
        pub cost_moved: f64,
    }

    impl Reference {
        /// The largest cost/share, over all shards (`all`, the old
        /// definition: a draining shard with data counts as ∞) or over those
        /// that take data.
        pub fn imbalance(&self, loads: &[f64], all: bool) -> f64 {
            let total: f64 = loads.iter().sum();
            (0..loads.len())
                .filter(|i| self.takes[*i] || (all && loads[*i] > 0.0))
                .map(|i| ratio(loads[i], self.shares[i]))
                .fold(if total > 0.0 { 0.0 } else { 1.0 }, f64::max)
        }

        /// What the table shows.
        pub fn outcome(&self) -> Outcome {
            let count = |f: fn(&Record) -> bool| self.steps.iter().filter(|s| f(s)).count();
            Outcome {
                moves: count(|s| matches!(s, Record::Move { .. })),
                splits: count(|s| matches!(s, Record::Split { .. })),
                merges: count(|s| matches!(s, Record::Merge { .. })),
                before: self.imbalance(&self.loads_before, false),
                after: self.imbalance(&self.loads_after, false),
                stranded: (0..self.takes.len()).filter(|i| !self.takes[*i]).map(|i| self.loads_after[i]).sum(),
                cost_moved: self.cost_moved,
                bytes_moved: self.bytes_moved,
                lower_bound: None,
            }
        }
    }

    #[derive(Clone, Debug)]
    struct Unit {
        range: KeyRange,
        shard: usize,
        rows: u64,
        bytes: u64,
        load: f64,
        median: Option<u64>,
        fixed: bool,
        /// The split step whose right half this is.
        split_step: Option<usize>,
    }

    /// A segment tree over `n` leaves keeping the minimum (or, negated, the
    /// maximum) of each subtree; ties go to the leftmost leaf.
    struct MinTree {
        size: usize,
        v: Vec<f64>,
    }

    impl MinTree {
        fn new(values: &[f64]) -> MinTree {
            let size = values.len().next_power_of_two().max(1);
            let mut v = vec![f64::INFINITY; 2 * size];
            v[size..size + values.len()].copy_from_slice(values);
            for i in (1..size).rev() {
                v[i] = v[2 * i].min(v[2 * i + 1]);
            }
            MinTree { size, v }
        }

        fn set(&mut self, leaf: usize, value: f64) {
            let mut i = leaf + self.size;
            self.v[i] = value;
            while i > 1 {
                i /= 2;
                self.v[i] = self.v[2 * i].min(self.v[2 * i + 1]);
            }
        }

        /// The leftmost leaf holding the minimum, if finite.
        fn min_first(&self) -> Option<(usize, f64)> {
            let m = self.v[1];
            if !m.is_finite() {
                return None;
            }
            let mut i = 1;
            while i < self.size {
                i = if self.v[2 * i] <= self.v[2 * i + 1] { 2 * i } else { 2 * i + 1 };
            }
            Some((i - self.size, m))
        }

        /// The leftmost leaf whose value satisfies `ok`, which must be
        /// monotone (if `ok(x)` then `ok(y)` for every `y ≤ x`).
        fn first(&self, ok: impl Fn(f64) -> bool) -> Option<usize> {
            if !self.v[1].is_finite() || !ok(self.v[1]) {
                return None;
            }
            let mut i = 1;
            while i < self.size {
                i = if ok(self.v[2 * i]) { 2 * i } else { 2 * i + 1 };
            }
            Some(i - self.size)
        }
    }

    /// Shards of one weight (and zone, with `same_zone`).
    struct Class {
        members: Vec<usize>,
        /// The share of each member that takes data (0 if none does).
        share: f64,
        loads: MinTree,
    }

    struct State<'a> {
        options: &'a PlanOptions,
        shards: &'a [ShardInput],
        takes: Vec<bool>,
        units: Vec<Unit>,
        /// Unit ids of each shard, in key order.
        on: Vec<Vec<usize>>,
        loads: Vec<f64>,
        shares: Vec<f64>,
        /// −cost/share of the shards that take data (−∞ otherwise): its
        /// minimum is the peak.
        peak: MinTree,
        classes: Vec<Class>,
        /// Shard → (class, position in it).
        class_of: Vec<(usize, usize)>,
        /// Shard → the classes it may send to.
        reach: Vec<Vec<usize>>,
        steps: Vec<Record>,
        cost_moved: f64,
        bytes_moved: u64,
    }

    fn ratio(load: f64, share: f64) -> f64 {
        if share > 0.0 {
            load / share
        } else if load > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }

    /// The phases and how long each took.
    pub type Phases = Vec<(&'static str, Duration)>;

    /// Plans; also returns the time of each phase. `None` for inputs the
    /// reference does not handle; `Err` where the old planner failed (every
    /// shard draining, no room).
    pub fn plan(input: &PlanInput) -> Option<(Result<Reference, String>, Phases)> {
        if input.shards.iter().any(|s| s.capacity_bytes.is_some())
            || !matches!(input.options.cost, Cost::Rows | Cost::Bytes)
        {
            return None;
        }
        let mut phases = Vec::new();
        let result = plan_supported(input, &mut phases);
        Some((result, phases))
    }

    fn plan_supported(input: &PlanInput, phases: &mut Phases) -> Result<Reference, String> {
        let mut clock = Instant::now();
        let mut lap = |what: &'static str, phases: &mut Vec<(&'static str, Duration)>| {
            let now = Instant::now();
            phases.push((what, now - clock));
            clock = now;
        };
        input.validate().map_err(|e| e.to_string())?;
        lap("validate", phases);
        let options = &input.options;
        let index: HashMap<&str, usize> = input.shards.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let takes: Vec<bool> = input.shards.iter().map(|s| s.takes_data && !options.drain.contains(&s.id)).collect();
        if !takes.iter().any(|t| *t) {
            return Err("no shard takes data".into());
        }
        let mut units: Vec<Unit> = input
            .ranges
            .iter()
            .map(|r| Unit {
                range: r.range,
                shard: index[r.shard.as_str()],
                rows: r.rows,
                bytes: r.bytes,
                load: r.load,
                median: r.median,
                fixed: false,
                split_step: None,
            })
            .collect();
        units.sort_by_key(|u| u.range);
        let n = input.shards.len();
        let mut on = vec![Vec::new(); n];
        let mut loads = vec![0.0; n];
        for (id, unit) in units.iter().enumerate() {
            on[unit.shard].push(id);
            loads[unit.shard] += options.cost.of(unit.rows, unit.bytes, unit.load);
        }
        lap("index + sort", phases);
        let total: f64 = loads.iter().sum();
        let weights: f64 = input.shards.iter().zip(&takes).filter(|(_, t)| **t).map(|(s, _)| f64::from(s.weight)).sum();
        let shares: Vec<f64> = input
            .shards
            .iter()
            .zip(&takes)
            .map(|(s, t)| if *t { total * f64::from(s.weight) / weights } else { 0.0 })
            .collect();
        // Classes: one weight (and one zone with same_zone).
        let mut keys: Vec<(u32, Option<&str>)> = Vec::new();
        let mut class_of = Vec::with_capacity(n);
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, s) in input.shards.iter().enumerate() {
            let key = (s.weight, if options.zones == ZoneRule::SameZone { s.zone.as_deref() } else { None });
            let c = match keys.iter().position(|k| *k == key) {
                Some(c) => c,
                None => {
                    keys.push(key);
                    members.push(Vec::new());
                    keys.len() - 1
                }
            };
            class_of.push((c, members[c].len()));
            members[c].push(i);
        }
        let classes: Vec<Class> = members
            .into_iter()
            .map(|m| {
                let values: Vec<f64> = m.iter().map(|i| if takes[*i] { loads[*i] } else { f64::INFINITY }).collect();
                let share = m.iter().find(|i| takes[**i]).map_or(0.0, |i| shares[*i]);
                Class { loads: MinTree::new(&values), share, members: m }
            })
            .collect();
        let reach: Vec<Vec<usize>> = input
            .shards
            .iter()
            .map(|s| {
                (0..keys.len()).filter(|c| options.zones == ZoneRule::Any || keys[*c].1 == s.zone.as_deref()).collect()
            })
            .collect();
        let peak_values: Vec<f64> =
            (0..n).map(|i| if takes[i] { -ratio(loads[i], shares[i]) } else { f64::INFINITY }).collect();
        let mut state = State {
            options,
            shards: &input.shards,
            takes,
            units,
            on,
            loads,
            shares,
            peak: MinTree::new(&peak_values),
            classes,
            class_of,
            reach,
            steps: Vec::new(),
            cost_moved: 0.0,
            bytes_moved: 0,
        };
        let loads_before = state.loads.clone();
        let before = state.imbalance();
        lap("trees + balance", phases);
        state.drain()?;
        lap("drain", phases);
        state.reshard();
        lap("reshard", phases);
        if before > options.threshold || !state.steps.is_empty() {
            state.rebalance(total);
        }
        lap("rebalance", phases);
        state.merge();
        lap("merge", phases);
        Ok(Reference {
            steps: state.steps,
            loads_after: state.loads,
            takes: state.takes,
            shares: state.shares,
            loads_before,
            bytes_moved: state.bytes_moved,
            cost_moved: state.cost_moved,
        })
    }

    impl State<'_> {
        fn cost(&self, unit: &Unit) -> f64 {
            self.options.cost.of(unit.rows, unit.bytes, unit.load)
        }

        /// The old planner's imbalance: over shards that take data or hold some.
        fn imbalance(&self) -> f64 {
            let total: f64 = self.loads.iter().sum();
            (0..self.shards.len())
                .filter(|i| self.takes[*i] || self.loads[*i] > 0.0)
                .map(|i| ratio(self.loads[i], self.shares[i]))
                .fold(if total > 0.0 { 0.0 } else { 1.0 }, f64::max)
        }

        /// Updates the trees after shard `i`'s load changed.
        fn touch(&mut self, i: usize) {
            if self.takes[i] {
                let (c, pos) = self.class_of[i];
                self.classes[c].loads.set(pos, self.loads[i]);
                self.peak.set(i, -ratio(self.loads[i], self.shares[i]));
            }
        }

        /// Takes shard `i` out of the destination trees (or puts it back).
        fn exclude(&mut self, i: usize, out: bool) {
            if self.takes[i] {
                let (c, pos) = self.class_of[i];
                self.classes[c].loads.set(pos, if out { f64::INFINITY } else { self.loads[i] });
            }
        }

        fn insert_on(&mut self, shard: usize, u: usize) {
            let start = self.units[u].range;
            let list = &self.on[shard];
            let at = list.partition_point(|v| self.units[*v].range < start);
            self.on[shard].insert(at, u);
        }

        fn remove_on(&mut self, shard: usize, u: usize) {
            let start = self.units[u].range;
            let list = &self.on[shard];
            let at = list.partition_point(|v| self.units[*v].range < start);
            debug_assert_eq!(list[at], u);
            self.on[shard].remove(at);
        }

        fn relocate(&mut self, u: usize, to: usize) {
            let cost = self.cost(&self.units[u]);
            let from = self.units[u].shard;
            self.remove_on(from, u);
            self.units[u].shard = to;
            self.units[u].fixed = true;
            self.insert_on(to, u);
            self.loads[from] -= cost;
            self.loads[to] += cost;
            self.touch(from);
            self.touch(to);
            let (range, rows, bytes) = (self.units[u].range, self.units[u].rows, self.units[u].bytes);
            self.cost_moved += cost;
            self.bytes_moved += bytes;
            if let Some(k) = self.units[u].split_step
                && let Record::Split { to: split_to, .. } = &mut self.steps[k]
            {
                *split_to = Some(to);
                return;
            }
            self.steps.push(Record::Move { range, from, to, rows, bytes });
        }

        fn split(&mut self, u: usize) -> Option<usize> {
            let unit = self.units[u].clone();
            if unit.fixed {
                return None;
            }
            let at = unit.median?;
            let (left, right) = unit.range.split_at(at).ok()?;
            let half = |n: u64| (n / 2, n - n / 2);
            let (rows_l, rows_r) = half(unit.rows);
            let (bytes_l, bytes_r) = half(unit.bytes);
            self.units[u] = Unit {
                range: left,
                rows: rows_l,
                bytes: bytes_l,
                load: unit.load / 2.0,
                median: None,
                fixed: true,
                ..unit.clone()
            };
            let r = self.units.len();
            self.units.push(Unit {
                range: right,
                rows: rows_r,
                bytes: bytes_r,
                load: unit.load / 2.0,
                median: None,
                fixed: false,
                split_step: Some(self.steps.len()),
                ..unit
            });
            self.insert_on(unit.shard, r);
            self.steps.push(Record::Split {
                range: unit.range,
                at,
                shard: unit.shard,
                right,
                to: None,
                rows: rows_r,
                bytes: bytes_r,
            });
            Some(r)
        }

        fn unsplit(&mut self, u: usize, r: usize) {
            let Some(Record::Split { range, at, .. }) = self.steps.pop() else { return };
            debug_assert_eq!(r, self.units.len() - 1);
            let shard = self.units[r].shard;
            self.remove_on(shard, r);
            let right = self.units.pop().expect("the right half");
            let left = &mut self.units[u];
            left.range = range;
            left.rows += right.rows;
            left.bytes += right.bytes;
            left.load += right.load;
            left.fixed = false;
            left.median = Some(at);
        }

        /// The shard that may take unit `u` with the lowest cost/share after
        /// taking it (ties: lowest index).
        fn best_destination(&self, u: usize) -> Option<usize> {
            let cost = self.cost(&self.units[u]);
            let mut best: Option<(f64, usize)> = None;
            for &c in &self.reach[self.units[u].shard] {
                let class = &self.classes[c];
                if let Some((pos, load)) = class.loads.min_first() {
                    let to = class.members[pos];
                    let r = ratio(load + cost, self.shares[to]);
                    if best.is_none_or(|(b, i)| r.total_cmp(&b).then(to.cmp(&i)).is_lt()) {
                        best = Some((r, to));
                    }
                }
            }
            best.map(|(_, to)| to)
        }

        fn drain(&mut self) -> Result<(), String> {
            let mut todo: Vec<usize> =
                (0..self.shards.len()).filter(|i| !self.takes[*i]).flat_map(|i| self.on[i].iter().copied()).collect();
            todo.sort_by_key(|u| self.units[*u].range);
            for u in todo {
                if self.units[u].fixed {
                    continue;
                }
                match self.best_destination(u) {
                    Some(to) => self.relocate(u, to),
                    None => {
                        let no_room = |s: &Self, u: usize| {
                            format!("no room for {} of {}", s.units[u].range, s.shards[s.units[u].shard].id)
                        };
                        let Some(right) = self.split(u) else { return Err(no_room(self, u)) };
                        match self.best_destination(right) {
                            Some(to) => self.relocate(right, to),
                            None => return Err(no_room(self, right)),
                        }
                    }
                }
            }
            Ok(())
        }

        fn reshard(&mut self) {
            if self.units.len() >= self.options.min_ranges {
                return;
            }
            let mut candidates: Vec<(f64, usize)> = (0..self.units.len())
                .filter(|u| !self.units[*u].fixed && self.units[*u].median.is_some())
                .map(|u| (self.cost(&self.units[u]), u))
                .collect();
            candidates.sort_by(|(ca, a), (cb, b)| {
                cb.total_cmp(ca).then_with(|| self.units[*a].range.cmp(&self.units[*b].range))
            });
            for (_, u) in candidates {
                if self.units.len() >= self.options.min_ranges || self.split(u).is_none() {
                    return;
                }
            }
        }

        /// The old planner's choice of destination for unit `u` on `src`:
        /// scanning every shard by index, the one that brings the pair's peak
        /// lowest, keeping an earlier one unless a later one is lower by
        /// more than 1e-12; `None` unless below `peak − 1e-9`. `src` must be
        /// out of the trees.
        ///
        /// Pair values within 1e-12 of each other count as equal here (the
        /// lowest index wins), which is what that scan does whenever distinct
        /// values lie more than 2e-12 apart — true of integer costs and shares
        /// below 1e11 (ratios then differ by at least 1/share), except for
        /// values that are equal but rounded differently, which this treats
        /// alike as well.
        fn best_move_of(&self, u: usize, src: usize, peak: f64) -> Option<usize> {
            const EPS: f64 = 1e-12;
            let cost = self.cost(&self.units[u]);
            if cost <= 0.0 {
                return None;
            }
            let a = ratio(self.loads[src] - cost, self.shares[src]);
            if a >= peak - 1e-9 {
                return None;
            }
            // The pair is max(a, b), b the destination's ratio after: every
            // shard with b ≤ a gives the least pair, a; the first of them
            // wins.
            let reach = &self.reach[src];
            let mut first: Option<usize> = None;
            for &c in reach {
                let class = &self.classes[c];
                if let Some(pos) = class.loads.first(|load| ratio(load + cost, class.share) <= a + EPS) {
                    let to = class.members[pos];
                    if first.is_none_or(|f| to < f) {
                        first = Some(to);
                    }
                }
            }
            if first.is_some() {
                return first;
            }
            // Otherwise the pair is b: the least loaded shard of each class
            // (its members share one share), the first of the least.
            let least: Vec<(f64, usize)> = reach
                .iter()
                .filter_map(|&c| {
                    let class = &self.classes[c];
                    let (pos, load) = class.loads.min_first()?;
                    Some((ratio(load + cost, class.share), class.members[pos]))
                })
                .collect();
            let m = least.iter().map(|(b, _)| *b).fold(f64::INFINITY, f64::min);
            least.iter().filter(|(b, _)| *b <= m + EPS && *b < peak - 1e-9).map(|(_, to)| *to).min()
        }

        fn best_move(&self, src: usize, peak: f64) -> Option<(usize, usize)> {
            let mut best: Option<(f64, u64, usize, usize)> = None;
            for &u in &self.on[src] {
                let unit = &self.units[u];
                if unit.fixed {
                    continue;
                }
                if let Some(to) = self.best_move_of(u, src, peak) {
                    let cost = self.cost(unit);
                    let pair = ratio(self.loads[src] - cost, self.shares[src])
                        .max(ratio(self.loads[to] + cost, self.shares[to]));
                    let better = match best {
                        None => true,
                        Some((p, bytes, _, _)) => pair < p - 1e-12 || ((pair - p).abs() <= 1e-12 && unit.bytes < bytes),
                    };
                    if better {
                        best = Some((pair, unit.bytes, u, to));
                    }
                }
            }
            best.map(|(_, _, u, to)| (u, to))
        }

        fn rebalance(&mut self, total: f64) {
            for _ in 0..self.options.max_steps.saturating_mul(4).max(1) {
                if self.steps.len() >= self.options.max_steps {
                    return;
                }
                if total <= 0.0 {
                    return;
                }
                let Some((src, neg)) = self.peak.min_first() else { return };
                let peak = -neg;
                if peak <= self.options.target {
                    return;
                }
                self.exclude(src, true);
                if let Some((u, to)) = self.best_move(src, peak) {
                    self.exclude(src, false);
                    self.relocate(u, to);
                    continue;
                }
                let mut costliest: Option<(f64, usize)> = None;
                for &u in &self.on[src] {
                    let unit = &self.units[u];
                    if unit.fixed || unit.median.is_none() {
                        continue;
                    }
                    let cost = self.cost(unit);
                    if costliest.is_none_or(|(c, _)| cost.total_cmp(&c).is_gt()) {
                        costliest = Some((cost, u));
                    }
                }
                let Some((_, u)) = costliest else {
                    self.exclude(src, false);
                    return;
                };
                let Some(right) = self.split(u) else {
                    self.exclude(src, false);
                    return;
                };
                let to = self.best_move_of(right, src, peak);
                self.exclude(src, false);
                match to {
                    Some(to) => self.relocate(right, to),
                    None => {
                        self.unsplit(u, right);
                        return;
                    }
                }
            }
        }

        /// shardd's merge, over the units in key order.
        fn merge(&mut self) {
            let Some(below) = self.options.merge_below else { return };
            let mut units = std::mem::take(&mut self.units);
            units.sort_by_key(|u| u.range);
            if units.len() < 2 {
                self.units = units;
                return;
            }
            let total: f64 = units.iter().map(|u| self.cost(u)).sum();
            let limit = below * total / self.takes.iter().filter(|t| **t).count() as f64;
            let mut u = 0;
            while u < units.len() {
                let mut run = vec![u];
                let mut sum = self.cost(&units[u]);
                if units[u].fixed || sum >= limit {
                    u += 1;
                    continue;
                }
                let mut next = u + 1;
                while next < units.len() {
                    let (prev, cand) = (&units[next - 1], &units[next]);
                    let cost = self.cost(cand);
                    let adjacent = prev.range.end() == Some(cand.range.start());
                    if !adjacent || cand.fixed || cand.shard != prev.shard || cost >= limit || sum + cost >= limit {
                        break;
                    }
                    sum += cost;
                    run.push(next);
                    next += 1;
                }
                if run.len() >= 2 {
                    let ranges: Vec<KeyRange> = run.iter().map(|i| units[*i].range).collect();
                    let shard = units[u].shard;
                    let merged =
                        KeyRange::new(ranges[0].start(), ranges[ranges.len() - 1].end()).expect("adjacent ranges");
                    let (rows, bytes, load) = run.iter().fold((0, 0, 0.0), |(r, b, l), i| {
                        let unit = &units[*i];
                        (r + unit.rows, b + unit.bytes, l + unit.load)
                    });
                    let first = units[u].clone();
                    units.drain(u + 1..next);
                    units[u] = Unit { range: merged, rows, bytes, load, median: None, fixed: true, ..first };
                    self.steps.push(Record::Merge { ranges, shard });
                    u += 1;
                } else {
                    u = next;
                }
            }
            self.units = units;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::MinTree;

        #[test]
        fn min_tree_finds_the_leftmost() {
            let mut t = MinTree::new(&[5.0, 3.0, 3.0, 9.0, 1.0]);
            assert_eq!(t.min_first(), Some((4, 1.0)));
            t.set(4, 7.0);
            assert_eq!(t.min_first(), Some((1, 3.0)));
            assert_eq!(t.first(|v| v <= 6.0), Some(0));
            assert_eq!(t.first(|v| v <= 4.0), Some(1));
            assert_eq!(t.first(|v| v <= 0.5), None);
        }
    }
}
