//! Rebalance planning, small enough for criterion: `shardd::planner::plan`
//! on 100 shards and 10,000 ranges, for regressions. The same scenarios at
//! 10,000 shards and a million ranges are `src/bin/plan_scale.rs`
//! (docs/BENCHMARKS.md, "Rebalance planning").
//!
//! Scenarios (deterministic; range `i` of `KeyRange::uniform` on shard
//! `i % 100`; 15 evenly spaced quantiles per range, as shardd measures them;
//! cost = rows; no step limit, so each plan is complete):
//!
//! - `balanced`: rows uniform in 1e6 × [0.9, 1.1) — an empty plan;
//! - `skewed`: rows log-normal (median 1e6, σ = 1);
//! - `add-tight`: balanced plus 5 empty shards, threshold 1.02, target 1.01;
//! - `drain`: balanced, draining one shard;
//! - `reshard`: balanced, `min_ranges` = 12,000.
//!
//! The input is built once per scenario; each iteration is one `plan` call
//! (the plan is dropped outside the timing). Run with
//! `cargo bench -p shardkit-benches --bench planner`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use shardd::planner::{PlanInput, PlanOptions, RangeInput, ShardInput, plan};
use shardlib::{KeyRange, ShardId};

const SHARDS: usize = 100;
const RANGES: u32 = 10_000;
/// Quantiles per range (`shardd::rebalance::QUANTILES`).
const QUANTILES: u128 = shardd::rebalance::QUANTILES as u128;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn shard(i: usize) -> ShardInput {
    ShardInput {
        id: ShardId::new(format!("s{i:05}")).expect("valid shard id"),
        weight: 1,
        capacity_bytes: None,
        zone: Some(format!("z{}", i % 3)),
        takes_data: true,
    }
}

fn cluster(mut rows: impl FnMut(&mut Rng) -> u64) -> PlanInput {
    let mut rng = Rng(42);
    let shards: Vec<ShardInput> = (0..SHARDS).map(shard).collect();
    let ranges = KeyRange::uniform(RANGES)
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let rows = rows(&mut rng);
            let quantiles: Vec<u64> = (1..=QUANTILES)
                .map(|q| (u128::from(range.start()) + range.width() * q / (QUANTILES + 1)) as u64)
                .collect();
            RangeInput {
                range,
                shard: shards[i % SHARDS].id.clone(),
                rows,
                bytes: rows * 200,
                load: 0.0,
                median: quantiles.get(quantiles.len() / 2).copied(),
                quantiles,
            }
        })
        .collect();
    PlanInput { shards, ranges, options: PlanOptions { max_steps: usize::MAX, ..PlanOptions::default() } }
}

fn balanced() -> PlanInput {
    cluster(|rng| (1.0e6 * (0.9 + 0.2 * rng.unit())) as u64)
}

fn scenarios() -> Vec<(&'static str, PlanInput)> {
    let skewed = cluster(|rng| ((1.0e6 * rng.normal().exp()) as u64).max(1));
    let mut add = balanced();
    add.shards.extend((SHARDS..SHARDS + SHARDS / 20).map(shard));
    add.options.threshold = 1.02;
    add.options.target = 1.01;
    let mut drain = balanced();
    drain.options.drain.insert(drain.shards[0].id.clone());
    let mut reshard = balanced();
    reshard.options.min_ranges = RANGES as usize * 6 / 5;
    vec![("balanced", balanced()), ("skewed", skewed), ("add-tight", add), ("drain", drain), ("reshard", reshard)]
}

fn bench_planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan-100x10k");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, input) in scenarios() {
        let steps = plan(&input).expect("a plan").steps.len();
        eprintln!("plan-100x10k/{name}: {steps} steps");
        group.bench_function(name, |b| {
            b.iter_batched(|| (), |()| plan(black_box(&input)).expect("a plan"), BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_planner);
criterion_main!(benches);
