//! Scenarios; the invariants over random inputs are in
//! shardd/tests/planner_props.rs.

use std::collections::BTreeSet;

use super::*;

fn shard(id: &str) -> ShardInput {
    ShardInput { id: ShardId::new(id).unwrap(), weight: 1, capacity_bytes: None, zone: None, takes_data: true }
}

/// `n` equal ranges; range i on shard `owner(i)` with `rows(i)` rows.
fn ranges(n: u32, owner: impl Fn(usize) -> &'static str, rows: impl Fn(usize) -> u64) -> Vec<RangeInput> {
    KeyRange::uniform(n)
        .into_iter()
        .enumerate()
        .map(|(i, range)| RangeInput {
            range,
            shard: ShardId::new(owner(i)).unwrap(),
            rows: rows(i),
            bytes: rows(i) * 100,
            load: 0.0,
            median: Some(range.midpoint()),
            quantiles: uniform_quantiles(range),
        })
        .collect()
}

/// 15 quantiles of rows spread evenly over `range`.
fn uniform_quantiles(range: KeyRange) -> Vec<u64> {
    (1..16u128).map(|i| (range.start() as u128 + range.width() * i / 16) as u64).collect()
}

fn apply(input: &PlanInput, plan: &Plan) -> PlanInput {
    let mut next = input.clone();
    for step in &plan.steps {
        match step {
            Step::Move { range, to, .. } => {
                next.ranges.iter_mut().find(|r| r.range == *range).unwrap().shard = to.clone();
            }
            Step::Split { range, at, right, to, rows, bytes, .. } => {
                let i = next.ranges.iter().position(|r| r.range == *range).unwrap();
                let r = next.ranges[i].clone();
                let (left, _) = range.split_at(*at).unwrap();
                let fraction = if r.rows > 0 { *rows as f64 / r.rows as f64 } else { 0.5 };
                next.ranges[i] = RangeInput {
                    range: left,
                    rows: r.rows - rows,
                    bytes: r.bytes - bytes,
                    load: r.load * (1.0 - fraction),
                    median: Some(left.midpoint()),
                    quantiles: uniform_quantiles(left),
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
                        median: Some(right.midpoint()),
                        quantiles: uniform_quantiles(*right),
                    },
                );
            }
            Step::Merge { ranges, .. } => {
                let first = next.ranges.iter().position(|r| r.range == ranges[0]).unwrap();
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
    next.options.drain.clear();
    next
}

#[test]
fn a_balanced_cluster_needs_nothing() {
    let input = PlanInput {
        shards: vec![shard("a"), shard("b")],
        ranges: ranges(8, |i| if i % 2 == 0 { "a" } else { "b" }, |_| 1000),
        options: PlanOptions::default(),
    };
    let plan = plan(&input).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert!((plan.before.imbalance - 1.0).abs() < 1e-9);
}

#[test]
fn a_new_shard_takes_its_share_and_a_second_plan_is_empty() {
    let mut input = PlanInput {
        shards: vec![shard("a"), shard("b"), shard("c"), shard("d")],
        ranges: ranges(16, |i| ["a", "b", "c", "d"][i % 4], |i| 1000 + (i as u64 % 4) * 500),
        options: PlanOptions::default(),
    };
    input.shards.push(shard("e"));
    let first = plan(&input).unwrap();
    assert!(!first.is_empty());
    assert!(first.after.imbalance <= input.options.threshold, "{:?}", first.after);
    // Close to the least data any plan must move.
    let largest = input.ranges.iter().map(|r| r.rows as f64).fold(0.0, f64::max);
    assert!(first.cost_moved <= 2.0 * first.cost_lower_bound + largest, "{first:#?}");
    let second = plan(&apply(&input, &first)).unwrap();
    assert!(second.is_empty(), "{second:?}");
}

#[test]
fn draining_moves_everything_off_and_respects_capacity() {
    let mut input = PlanInput {
        shards: vec![shard("a"), shard("b"), shard("c")],
        ranges: ranges(6, |i| ["a", "b", "c"][i % 3], |_| 1000),
        options: PlanOptions::default(),
    };
    input.options.drain.insert(ShardId::new("c").unwrap());
    input.shards[0].capacity_bytes = Some(200_000);
    let plan = plan(&input).unwrap();
    let after = apply(&input, &plan);
    assert!(after.ranges.iter().all(|r| r.shard.as_str() != "c"));
    let bytes_a: u64 = after.ranges.iter().filter(|r| r.shard.as_str() == "a").map(|r| r.bytes).sum();
    assert!(bytes_a <= 200_000);
}

#[test]
fn reshard_four_to_eight_splits_at_medians_and_spreads() {
    let mut input = PlanInput {
        shards: ["a", "b", "c", "d"].into_iter().map(shard).collect(),
        ranges: ranges(4, |i| ["a", "b", "c", "d"][i], |_| 4000),
        options: PlanOptions { min_ranges: 8, ..PlanOptions::default() },
    };
    for id in ["e", "f", "g", "h"] {
        input.shards.push(shard(id));
    }
    let plan = plan(&input).unwrap();
    let after = apply(&input, &plan);
    assert_eq!(after.ranges.len(), 8);
    let owners: BTreeSet<&str> = after.ranges.iter().map(|r| r.shard.as_str()).collect();
    assert_eq!(owners.len(), 8, "{plan:#?}");
    assert!(plan.after.imbalance <= 1.05 + 1e-9);
}

#[test]
fn one_huge_range_is_split_to_balance() {
    let input = PlanInput {
        shards: vec![shard("a"), shard("b")],
        ranges: ranges(2, |_| "a", |i| if i == 0 { 10_000 } else { 100 }),
        options: PlanOptions::default(),
    };
    let plan = plan(&input).unwrap();
    assert!(plan.steps.iter().any(|s| matches!(s, Step::Split { to: Some(_), .. })), "{plan:#?}");
    assert!(plan.after.imbalance < plan.before.imbalance);
}

#[test]
fn same_zone_rule_keeps_ranges_in_their_zone() {
    let mut shards = vec![shard("a1"), shard("a2"), shard("b1")];
    shards[0].zone = Some("a".into());
    shards[1].zone = Some("a".into());
    shards[2].zone = Some("b".into());
    let input = PlanInput {
        shards,
        ranges: ranges(8, |i| if i < 6 { "a1" } else { "b1" }, |_| 1000),
        options: PlanOptions { zones: ZoneRule::SameZone, ..PlanOptions::default() },
    };
    let plan = plan(&input).unwrap();
    assert!(!plan.is_empty());
    for step in &plan.steps {
        if let Step::Move { to, .. } = step {
            assert_eq!(to.as_str(), "a2");
        }
    }
}

#[test]
fn tiny_neighbours_merge_once() {
    let mut input = PlanInput {
        shards: vec![shard("a"), shard("b")],
        ranges: ranges(8, |i| if i < 4 { "a" } else { "b" }, |i| if i % 4 == 0 { 4000 } else { 10 }),
        options: PlanOptions { merge_below: Some(0.05), ..PlanOptions::default() },
    };
    input.options.threshold = 1.5;
    let first = plan(&input).unwrap();
    assert!(first.steps.iter().any(|s| matches!(s, Step::Merge { .. })), "{first:#?}");
    let second = plan(&apply(&input, &first)).unwrap();
    assert!(second.is_empty(), "{second:#?}");
}

#[test]
fn bad_input_is_refused() {
    let input = PlanInput {
        shards: vec![shard("a")],
        ranges: ranges(2, |i| if i == 0 { "a" } else { "zz" }, |_| 1),
        options: PlanOptions::default(),
    };
    assert!(matches!(plan(&input), Err(PlanError::UnknownShard { .. })));
    let all_draining = PlanInput {
        shards: vec![shard("a")],
        ranges: ranges(1, |_| "a", |_| 1),
        options: PlanOptions { drain: [ShardId::new("a").unwrap()].into(), ..PlanOptions::default() },
    };
    assert_eq!(plan(&all_draining), Err(PlanError::NoShardTakesData));
}
