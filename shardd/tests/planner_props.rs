//! The planner's invariants over random clusters: deterministic; never over
//! a shard's capacity; drained shards end empty; same-zone moves stay in
//! their zone; the imbalance never grows (without drains); applying a plan
//! and planning again gives an empty plan; and the cost moved stays within
//! twice the lower bound plus one range per step of slack.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shardd::planner::{Cost, Plan, PlanInput, PlanOptions, RangeInput, ShardInput, Step, ZoneRule, plan};
use shardlib::{KeyRange, ShardId};

fn id(i: usize) -> ShardId {
    ShardId::new(format!("s{i}")).unwrap()
}

prop_compose! {
    fn cluster()(
        shards in 2usize..9,
        ranges in 1u32..48,
        seed_rows in proptest::collection::vec(0u64..50_000, 48),
        owners in proptest::collection::vec(0usize..9, 48),
        weights in proptest::collection::vec(1u32..4, 12),
        zones in proptest::collection::vec(0u8..2, 12),
        cost in 0u8..3,
        new_shards in 0usize..3,
    ) -> PlanInput {
        let total = shards + new_shards;
        let shard_inputs = (0..total).map(|i| ShardInput {
            id: id(i),
            weight: weights[i],
            capacity_bytes: None,
            zone: Some(format!("z{}", zones[i])),
            takes_data: true,
        }).collect();
        let ranges = KeyRange::uniform(ranges).into_iter().enumerate().map(|(i, range)| {
            let rows = seed_rows[i];
            RangeInput {
                range,
                shard: id(owners[i] % shards),
                rows,
                bytes: rows * 120,
                load: (rows % 97) as f64,
                median: (rows > 1).then(|| range.midpoint()),
                quantiles: if rows > 16 { uniform_quantiles(range) } else { Vec::new() },
            }
        }).collect();
        let cost = match cost { 0 => Cost::Rows, 1 => Cost::Bytes, _ => Cost::Load };
        PlanInput { shards: shard_inputs, ranges, options: PlanOptions { cost, ..PlanOptions::default() } }
    }
}

/// The cluster after the plan's steps (split halves estimated as the planner does).
fn apply(input: &PlanInput, plan: &Plan) -> PlanInput {
    let mut next = input.clone();
    for step in &plan.steps {
        match step {
            Step::Move { range, to, .. } => {
                next.ranges.iter_mut().find(|r| r.range == *range).expect("moved range exists").shard = to.clone();
            }
            Step::Split { range, at, right, to, rows, bytes, .. } => {
                let i = next.ranges.iter().position(|r| r.range == *range).expect("split range exists");
                let r = next.ranges[i].clone();
                let (left, _) = range.split_at(*at).expect("valid point");
                let fraction = if r.rows > 0 { *rows as f64 / r.rows as f64 } else { 0.5 };
                let (rows_l, bytes_l) = (r.rows - rows, r.bytes - bytes);
                let median = |k: KeyRange, rows: u64| (rows > 1 && k.width() > 1).then(|| k.midpoint());
                let quantiles = |k: KeyRange, rows: u64| if rows > 16 { uniform_quantiles(k) } else { Vec::new() };
                next.ranges[i] = RangeInput {
                    range: left,
                    rows: rows_l,
                    bytes: bytes_l,
                    load: r.load * (1.0 - fraction),
                    median: median(left, rows_l),
                    quantiles: quantiles(left, rows_l),
                    ..r.clone()
                };
                let owner = to.clone().unwrap_or(r.shard.clone());
                next.ranges.insert(
                    i + 1,
                    RangeInput {
                        range: *right,
                        shard: owner,
                        rows: *rows,
                        bytes: *bytes,
                        load: r.load * fraction,
                        median: median(*right, *rows),
                        quantiles: quantiles(*right, *rows),
                    },
                );
            }
            Step::Merge { ranges, .. } => {
                let first = next.ranges.iter().position(|r| r.range == ranges[0]).expect("merged range exists");
                let merged: Vec<RangeInput> = next.ranges.drain(first..first + ranges.len()).collect();
                let range = KeyRange::new(ranges[0].start(), ranges[ranges.len() - 1].end()).unwrap();
                next.ranges.insert(
                    first,
                    RangeInput {
                        range,
                        shard: merged[0].shard.clone(),
                        rows: merged.iter().map(|r| r.rows).sum(),
                        bytes: merged.iter().map(|r| r.bytes).sum(),
                        load: merged.iter().map(|r| r.load).sum(),
                        median: Some(range.midpoint()),
                        quantiles: uniform_quantiles(range),
                    },
                );
            }
        }
    }
    for shard in &mut next.shards {
        if input.options.drain.contains(&shard.id) {
            shard.takes_data = false;
        }
    }
    next.options.drain.clear();
    next
}

/// 15 quantiles of rows spread evenly over `range`.
fn uniform_quantiles(range: KeyRange) -> Vec<u64> {
    (1..16u128).map(|i| (range.start() as u128 + range.width() * i / 16) as u64).collect()
}

fn bytes_on(input: &PlanInput, shard: &ShardId) -> u64 {
    input.ranges.iter().filter(|r| &r.shard == shard).map(|r| r.bytes).sum()
}

fn touched(plan: &Plan) -> Vec<KeyRange> {
    plan.steps
        .iter()
        .flat_map(|s| match s {
            Step::Move { range, .. } | Step::Split { range, .. } => vec![*range],
            Step::Merge { ranges, .. } => ranges.clone(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn deterministic(input in cluster()) {
        prop_assert_eq!(plan(&input), plan(&input));
    }

    #[test]
    fn balances_without_growing_the_peak_and_is_idempotent(input in cluster()) {
        let first = plan(&input).unwrap();
        prop_assert!(first.after.imbalance <= first.before.imbalance + 1e-9, "{:?} → {:?}", first.before, first.after);
        if first.before.imbalance > input.options.threshold {
            // Reaching the threshold may be impossible (one range bigger
            // than a share); otherwise the plan gets there.
        } else {
            prop_assert!(first.is_empty());
        }
        let touched = touched(&first);
        let distinct: BTreeSet<_> = touched.iter().collect();
        prop_assert_eq!(distinct.len(), touched.len(), "a range in two steps");
        let next = apply(&input, &first);
        let second = plan(&next).unwrap();
        prop_assert!(
            second.is_empty() || second.before.imbalance > input.options.threshold,
            "second plan not empty although balanced: {:?}", second
        );
        if first.after.imbalance <= input.options.threshold {
            prop_assert!(second.is_empty(), "oscillation: {:?}", second);
        }
    }

    #[test]
    fn moved_cost_is_near_the_minimum(input in cluster()) {
        let plan = plan(&input).unwrap();
        let largest = input.ranges.iter().map(|r| input.options.cost.of(r.rows, r.bytes, r.load)).fold(0.0, f64::max);
        let moves = plan.steps.len() as f64;
        // Whole ranges move, so each step may overshoot by at most one range.
        prop_assert!(
            plan.cost_moved <= 2.0 * plan.cost_lower_bound + moves.min(3.0) * largest + 1e-6,
            "moved {} with lower bound {} (largest range {})", plan.cost_moved, plan.cost_lower_bound, largest
        );
    }

    #[test]
    fn capacity_drains_and_zones_hold(mut input in cluster(), drain in 0usize..9, cap in 0u64..3) {
        let shards = input.shards.len();
        let drained = id(drain % shards);
        input.options.drain.insert(drained.clone());
        let average = input.ranges.iter().map(|r| r.bytes).sum::<u64>() / shards as u64 + 1;
        for shard in &mut input.shards {
            shard.capacity_bytes = Some(average * (2 + cap));
        }
        let Ok(first) = plan(&input) else { return Ok(()) };
        let next = apply(&input, &first);
        for shard in &input.shards {
            let before = bytes_on(&input, &shard.id);
            let after = bytes_on(&next, &shard.id);
            prop_assert!(after <= before.max(shard.capacity_bytes.unwrap()), "{} over capacity", shard.id);
        }
        let left: u64 = next.ranges.iter().filter(|r| r.shard == drained).map(|r| r.rows).sum();
        let had: u64 = input.ranges.iter().filter(|r| r.shard == drained).map(|r| r.rows).sum();
        // Everything leaves, except what had to be split for lack of room
        // (at most half of each range that did not fit).
        prop_assert!(left <= had / 2 + 1, "{left} of {had} rows left on the drained shard");

        input.options.drain.clear();
        input.options.zones = ZoneRule::SameZone;
        let zoned = plan(&input).unwrap();
        for step in &zoned.steps {
            let (from, to) = match step {
                Step::Move { from, to, .. } => (from.clone(), to.clone()),
                Step::Split { shard, to: Some(to), .. } => (shard.clone(), to.clone()),
                _ => continue,
            };
            let zone = |id: &ShardId| input.shards.iter().find(|s| &s.id == id).unwrap().zone.clone();
            prop_assert_eq!(zone(&from), zone(&to));
        }
    }
}

// Clusters of small ranges: every range costs less than (threshold − target)
// × the least share. Then, while the peak is above the threshold, moving any
// range of the peak shard to the least-loaded shard (at or below its share)
// lowers the pair's peak and leaves that shard below 1 + (threshold − target)
// ≤ threshold. A planner that sends ranges there never pushes a shard above
// the threshold with ranges it may not move again in the same plan, so the
// peak shard always has a range to give: the plan reaches the threshold, and
// should move little more than the minimum.

prop_compose! {
    /// A cluster of 2–9 shards (plus up to two new, empty ones), equal or mixed
    /// weights, rows per range in [500, 2000], load piled on the first `busy`
    /// shards for about half the ranges, and more than 4 × Σ weights / (least
    /// weight × (threshold − target)) ranges, so that every range costs less
    /// than (threshold − target) × the least share. No zone rule, capacity or
    /// drain; no step limit.
    fn small_ranges_cluster()(
        shards in 2usize..10,
        new_shards in 0usize..3,
        weights in proptest::collection::vec(1u32..5, 11),
        equal_weights in any::<bool>(),
        levels in 0usize..2,
        spread in 1.0f64..2.0,
        busy in 1usize..10,
        bytes in any::<bool>(),
        seed in any::<u64>(),
    ) -> PlanInput {
        let total = shards + new_shards;
        let weight = |i: usize| if equal_weights { 1 } else { weights[i] };
        let (threshold, target) = [(1.10, 1.05), (1.3, 1.1)][levels];
        let sum: u32 = (0..total).map(weight).sum();
        let least = (0..total).map(weight).min().unwrap();
        let count = (4.0 * f64::from(sum) / f64::from(least) / (threshold - target) * spread).ceil() as u32 + 1;
        // SplitMix64 from the seed: the rows and owners of `count` ranges.
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let ranges = KeyRange::uniform(count).into_iter().enumerate().map(|(i, range)| {
            let rows = 500 + next() % 1501;
            let owner = if next() % 2 == 0 { i % shards } else { (next() % busy.min(shards) as u64) as usize };
            RangeInput {
                range,
                shard: id(owner),
                rows,
                bytes: rows * 120,
                load: 0.0,
                median: Some(range.midpoint()),
                quantiles: uniform_quantiles(range),
            }
        }).collect();
        let shard_inputs = (0..total).map(|i| ShardInput {
            id: id(i),
            weight: weight(i),
            capacity_bytes: None,
            zone: None,
            takes_data: true,
        }).collect();
        let options = PlanOptions {
            cost: if bytes { Cost::Bytes } else { Cost::Rows },
            threshold,
            target,
            max_steps: usize::MAX,
            ..PlanOptions::default()
        };
        PlanInput { shards: shard_inputs, ranges, options }
    }
}

/// The largest range's cost and the least share (of the shards taking data).
fn largest_and_least_share(input: &PlanInput) -> (f64, f64) {
    let cost = |r: &RangeInput| input.options.cost.of(r.rows, r.bytes, r.load);
    let total: f64 = input.ranges.iter().map(cost).sum();
    let weights: u32 = input.shards.iter().map(|s| s.weight).sum();
    let least = input.shards.iter().map(|s| s.weight).min().unwrap();
    let largest = input.ranges.iter().map(cost).fold(0.0, f64::max);
    (largest, total * f64::from(least) / f64::from(weights))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With small ranges the plan reaches the threshold. (It did not in
    /// about a quarter of such clusters — 3,174 of 11,443 in the exploration
    /// behind docs/BENCHMARKS.md, "Rebalance planning" — until `best_move`
    /// broke ties of the pair's peak by the destination's cost/share.)
    #[test]
    fn small_ranges_reach_the_threshold(input in small_ranges_cluster()) {
        let (largest, least_share) = largest_and_least_share(&input);
        let o = &input.options;
        prop_assert!(largest < (o.threshold - o.target) * least_share, "generator: a range is not small");
        let plan = plan(&input).unwrap();
        prop_assert!(
            plan.after.imbalance <= o.threshold + 1e-9,
            "stopped at {} > threshold {} (from {}, {} steps)", plan.after.imbalance, o.threshold, plan.before.imbalance, plan.steps.len()
        );
    }

    /// With small ranges the plan moves at most 2 × the minimum: the most
    /// seen with the tie-break is 1.77 × (median 1.01) over 11,443 such
    /// clusters of 2–22 shards (2.66 × before it).
    #[test]
    fn small_ranges_move_at_most_twice_the_minimum(input in small_ranges_cluster()) {
        let plan = plan(&input).unwrap();
        prop_assert!(
            plan.cost_moved <= 2.0 * plan.cost_lower_bound + 1e-6,
            "moved {} for a minimum of {}", plan.cost_moved, plan.cost_lower_bound
        );
    }
}
