//! The rebalance planner: a pure, deterministic function from what the
//! cluster looks like (ranges with their rows, bytes and load; shards with
//! weights, capacities, zones and whether they take data) to a plan — the
//! splits, moves and merges that bring it back into balance while moving as
//! little data as possible.
//!
//! # Balance
//!
//! Each range has a *cost*: its rows, bytes, load (operations per second)
//! or a weighted mix of bytes and load ([`Cost`]). A shard's *share* is the
//! total cost times its weight over the weights of the shards that take
//! data. The *imbalance* is the largest cost/share over those shards (1.0 is
//! perfect; the peak-to-mean ratio when all weights are equal).
//!
//! # Algorithm
//!
//! 1. Ranges on shards that do not take data (draining, or listed in
//!    [`PlanOptions::drain`]) move to the shards with the lowest cost/share
//!    that have room, split at the data's median first when no shard has
//!    room for them whole (the right half moves; the left moves next plan).
//! 2. Reshard: while there are fewer ranges than
//!    [`PlanOptions::min_ranges`], the costliest range is split at its median
//!    (both halves stay; step 3 places them).
//! 3. Balance, only if the imbalance exceeds [`PlanOptions::threshold`]
//!    (hysteresis): repeatedly take the shard with the highest cost/share and
//!    move one of its ranges to the shard with the lowest, choosing the range
//!    that brings the pair's higher cost/share lowest (ties: fewer bytes, then
//!    key order). A move is only made if it lowers that pair's peak, so the
//!    imbalance never grows. When every range of the peak shard is too big to
//!    help, its costliest range is split where its right part carries about
//!    what would even the peak shard out with the least-loaded one (at the
//!    nearest of the data's quantiles, [`RangeInput::quantiles`]), and that
//!    part is placed. Stops at [`PlanOptions::target`] (below the threshold), or when
//!    nothing helps, or at [`PlanOptions::max_steps`].
//! 4. Optionally ([`PlanOptions::merge_below`]), runs of neighbouring ranges
//!    on one shard whose costs are each below that fraction of a shard's
//!    fair share are merged, as long as the merged cost stays below it
//!    (greedily, left to right — so the next plan finds nothing to merge).
//!
//! Applying a plan and planning again yields an empty plan whenever the plan
//! reached the threshold: the imbalance is then at most `target < threshold`,
//! drained shards are empty, the range count is reached, and merged runs
//! cannot grow further. A plan splits each range at most once, so a very
//! skewed layout (one range holding several shards' worth) can need more
//! than one round; each round only lowers the imbalance
//! (`shardctl rebalance` runs rounds until the plan is empty).
//!
//! Every range appears in at most one step (a split range's halves are not
//! touched again in the same plan), so the steps are independent jobs that
//! can run concurrently.
//!
//! The rows on each side of a split are estimated from the quantile it cuts
//! at; bytes and load are assumed to follow rows. A split part is not split
//! again in the same plan, so a reshard at most doubles the range count per
//! plan.
//!
//! # Cost
//!
//! Shard loads, byte counts and cost/share are kept up to date as steps are
//! chosen; shards sit in an ordered set by cost/share and each shard's
//! movable ranges in an ordered set by cost. A balancing step looks at the
//! few least-loaded shards ([`CANDIDATES`]) and, for each, at the ranges of
//! the peak shard whose cost is nearest the amount that would even the pair
//! out: O(log n) per step, so a million ranges on ten thousand shards plan in
//! well under the two seconds the issue asks for (docs/BENCHMARKS.md).

mod model;

pub use model::{Balance, Cost, PlanError, PlanInput, PlanOptions, RangeInput, ShardInput, Step, ZoneRule};

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use shardlib::{KeyRange, ShardId};

/// A plan: the steps and what they achieve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    /// The steps, in the order they were chosen (independent of each other).
    pub steps: Vec<Step>,
    /// Balance before.
    pub before: Balance,
    /// Balance after the steps, as estimated.
    pub after: Balance,
    /// Rows the steps move.
    pub rows_moved: u64,
    /// Bytes the steps move.
    pub bytes_moved: u64,
    /// Cost the steps move, in the chosen unit.
    pub cost_moved: f64,
    /// A lower bound of the cost any plan must move to bring every shard to
    /// at most `target` × its share (and empty drained shards).
    pub cost_lower_bound: f64,
    /// Estimated seconds to copy the bytes moved, one job at a time.
    pub estimated_seconds: f64,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// How many of the least-loaded shards a step considers as destinations.
pub const CANDIDATES: usize = 8;

/// A range while planning.
#[derive(Clone, Debug)]
struct Unit {
    range: KeyRange,
    shard: usize,
    rows: u64,
    bytes: u64,
    load: f64,
    cost: f64,
    /// Where it may be split: (point, fraction of its rows before it).
    cuts: Vec<(u64, f64)>,
    /// Touched by a step: not touched again.
    fixed: bool,
}

/// An order key for a non-negative float (its bits order like the value).
fn key(value: f64) -> u64 {
    value.max(0.0).to_bits()
}

struct State<'a> {
    options: &'a PlanOptions,
    shards: &'a [ShardInput],
    /// Whether shard `i` takes data.
    takes: Vec<bool>,
    /// Append-only: a split changes the left half in place and pushes the right.
    units: Vec<Unit>,
    loads: Vec<f64>,
    bytes: Vec<u64>,
    /// Each shard's share of the total cost (which steps do not change).
    shares: Vec<f64>,
    /// Shards that take data, by cost/share.
    by_ratio: BTreeSet<(u64, usize)>,
    /// Per shard: its movable units by cost.
    movable: Vec<BTreeSet<(u64, usize)>>,
    steps: Vec<Step>,
    /// Unit index of a split's right half → index of the split step.
    split_steps: BTreeMap<usize, usize>,
    /// Cuts of split units, to undo a split.
    split_cuts: BTreeMap<usize, Vec<(u64, f64)>>,
    cost_moved: f64,
    rows_moved: u64,
    bytes_moved: u64,
}

/// Plans the steps that balance `input`. Deterministic: the same input
/// gives the same plan.
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    input.validate()?;
    let options = &input.options;
    let index: BTreeMap<&ShardId, usize> = input.shards.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
    let takes: Vec<bool> = input.shards.iter().map(|s| s.takes_data && !options.drain.contains(&s.id)).collect();
    if !takes.iter().any(|t| *t) {
        return Err(PlanError::NoShardTakesData);
    }
    let mut units: Vec<Unit> = input
        .ranges
        .iter()
        .map(|r| Unit {
            range: r.range,
            shard: index[&r.shard],
            rows: r.rows,
            bytes: r.bytes,
            load: r.load,
            cost: options.cost.of(r.rows, r.bytes, r.load),
            cuts: r.cuts(),
            fixed: false,
        })
        .collect();
    units.sort_by_key(|u| u.range);
    let mut state = State::new(options, &input.shards, takes, units);
    let before = state.balance();
    let cost_lower_bound = state.lower_bound(before.imbalance);
    state.drain()?;
    state.reshard();
    if before.imbalance > options.threshold || before.stranded > 0.0 || !state.steps.is_empty() {
        state.rebalance();
    }
    state.merge();
    let after = state.balance();
    Ok(Plan {
        estimated_seconds: state.seconds(state.bytes_moved),
        steps: state.steps,
        before,
        after,
        rows_moved: state.rows_moved,
        bytes_moved: state.bytes_moved,
        cost_moved: state.cost_moved,
        cost_lower_bound,
    })
}

impl<'a> State<'a> {
    fn new(options: &'a PlanOptions, shards: &'a [ShardInput], takes: Vec<bool>, units: Vec<Unit>) -> Self {
        let n = shards.len();
        let mut loads = vec![0.0; n];
        let mut bytes = vec![0u64; n];
        let mut movable = vec![BTreeSet::new(); n];
        for (i, unit) in units.iter().enumerate() {
            loads[unit.shard] += unit.cost;
            bytes[unit.shard] += unit.bytes;
            movable[unit.shard].insert((key(unit.cost), i));
        }
        let total: f64 = loads.iter().sum();
        let weights: f64 = shards.iter().zip(&takes).filter(|(_, t)| **t).map(|(s, _)| f64::from(s.weight)).sum();
        let shares: Vec<f64> = shards
            .iter()
            .zip(&takes)
            .map(|(s, t)| if *t { total * f64::from(s.weight) / weights } else { 0.0 })
            .collect();
        let by_ratio = (0..n).filter(|i| takes[*i]).map(|i| (key(ratio(loads[i], shares[i])), i)).collect();
        State {
            options,
            shards,
            takes,
            units,
            loads,
            bytes,
            shares,
            by_ratio,
            movable,
            steps: Vec::new(),
            split_steps: BTreeMap::new(),
            split_cuts: BTreeMap::new(),
            cost_moved: 0.0,
            rows_moved: 0,
            bytes_moved: 0,
        }
    }

    fn ratio_of(&self, shard: usize) -> f64 {
        ratio(self.loads[shard], self.shares[shard])
    }

    /// Changes a shard's load and bytes, keeping `by_ratio` in order.
    fn adjust(&mut self, shard: usize, cost: f64, bytes: i128) {
        if self.takes[shard] {
            self.by_ratio.remove(&(key(self.ratio_of(shard)), shard));
        }
        self.loads[shard] = (self.loads[shard] + cost).max(0.0);
        self.bytes[shard] = (i128::from(self.bytes[shard]) + bytes).max(0) as u64;
        if self.takes[shard] {
            self.by_ratio.insert((key(self.ratio_of(shard)), shard));
        }
    }

    fn fix(&mut self, u: usize) {
        let unit = &self.units[u];
        self.movable[unit.shard].remove(&(key(unit.cost), u));
        self.units[u].fixed = true;
    }

    fn balance(&self) -> Balance {
        let total: f64 = self.loads.iter().sum::<f64>() + 0.0;
        let imbalance = (0..self.shards.len())
            .filter(|i| self.takes[*i])
            .map(|i| self.ratio_of(i))
            .fold(if total > 0.0 { 0.0 } else { 1.0 }, f64::max);
        let stranded = (0..self.shards.len()).filter(|i| !self.takes[*i]).map(|i| self.loads[i]).sum::<f64>() + 0.0;
        let per_shard = self.shards.iter().enumerate().map(|(i, s)| (s.id.clone(), self.loads[i])).collect();
        Balance { imbalance, stranded, total, per_shard }
    }

    /// Σ over shards of what lies above `target` × share (all of it on
    /// shards that take no data).
    fn lower_bound(&self, imbalance: f64) -> f64 {
        let target = if imbalance > self.options.threshold { self.options.target } else { f64::INFINITY };
        (0..self.shards.len())
            .map(|i| if self.takes[i] { (self.loads[i] - target * self.shares[i]).max(0.0) } else { self.loads[i] })
            .sum()
    }

    /// Whether shard `to` takes data, is another shard, and the zone rule
    /// allows `from → to` (capacity is checked per unit: [`Self::fits`]).
    fn may_receive(&self, from: usize, to: usize) -> bool {
        self.takes[to]
            && from != to
            && match self.options.zones {
                ZoneRule::Any => true,
                ZoneRule::SameZone => self.shards[to].zone == self.shards[from].zone,
            }
    }

    fn fits(&self, u: usize, to: usize) -> bool {
        self.shards[to].capacity_bytes.is_none_or(|capacity| self.bytes[to] + self.units[u].bytes <= capacity)
    }

    /// Up to [`CANDIDATES`] of the least-loaded shards that may receive from `from`.
    fn candidates(&self, from: usize) -> Vec<usize> {
        self.by_ratio.iter().map(|(_, s)| *s).filter(|to| self.may_receive(from, *to)).take(CANDIDATES).collect()
    }

    /// Moves unit `u` to shard `to` (a `Move` step, or the `to` of the split
    /// that made it).
    fn relocate(&mut self, u: usize, to: usize) {
        self.fix(u);
        let (from, cost, range, rows, bytes) = {
            let unit = &self.units[u];
            (unit.shard, unit.cost, unit.range, unit.rows, unit.bytes)
        };
        self.adjust(from, -cost, -i128::from(bytes));
        self.adjust(to, cost, i128::from(bytes));
        self.units[u].shard = to;
        self.cost_moved += cost;
        self.rows_moved += rows;
        self.bytes_moved += bytes;
        let target = self.shards[to].id.clone();
        if let Some(&step) = self.split_steps.get(&u) {
            if let Step::Split { to: split_to, .. } = &mut self.steps[step] {
                *split_to = Some(target);
            }
            return;
        }
        let seconds = self.seconds(bytes);
        self.steps.push(Step::Move { range, from: self.shards[from].id.clone(), to: target, rows, bytes, seconds });
    }

    fn seconds(&self, bytes: u64) -> f64 {
        if self.options.bytes_per_second > 0.0 { bytes as f64 / self.options.bytes_per_second } else { 0.0 }
    }

    /// Splits unit `u` at the cut nearest to leaving `left_fraction` of its
    /// rows on the left: the left part stays (fixed), the right part is a
    /// new movable unit. Returns its index, or `None` if `u` cannot be split.
    fn split(&mut self, u: usize, left_fraction: f64) -> Option<usize> {
        let unit = self.units[u].clone();
        if unit.fixed {
            return None;
        }
        let &(at, fraction) = unit
            .cuts
            .iter()
            .min_by(|a, b| (a.1 - left_fraction).abs().total_cmp(&(b.1 - left_fraction).abs()).then(a.0.cmp(&b.0)))?;
        let (left, right) = unit.range.split_at(at).ok()?;
        self.fix(u);
        let part = |n: u64| {
            let l = ((n as f64) * fraction).round() as u64;
            (l.min(n), n - l.min(n))
        };
        let (rows_l, rows_r) = part(unit.rows);
        let (bytes_l, bytes_r) = part(unit.bytes);
        let (load_l, load_r) = (unit.load * fraction, unit.load * (1.0 - fraction));
        let cost = |rows, bytes, load| self.options.cost.of(rows, bytes, load);
        let (cost_l, cost_r) = (cost(rows_l, bytes_l, load_l), cost(rows_r, bytes_r, load_r));
        self.units[u] = Unit {
            range: left,
            rows: rows_l,
            bytes: bytes_l,
            load: load_l,
            cost: cost_l,
            cuts: Vec::new(),
            fixed: true,
            ..unit.clone()
        };
        let r = self.units.len();
        self.units.push(Unit {
            range: right,
            rows: rows_r,
            bytes: bytes_r,
            load: load_r,
            cost: cost_r,
            cuts: Vec::new(),
            fixed: false,
            ..unit.clone()
        });
        self.movable[unit.shard].insert((key(cost_r), r));
        self.adjust(unit.shard, cost_l + cost_r - unit.cost, 0);
        self.split_steps.insert(r, self.steps.len());
        self.steps.push(Step::Split {
            range: unit.range,
            at,
            shard: self.shards[unit.shard].id.clone(),
            right,
            to: None,
            rows: rows_r,
            bytes: bytes_r,
        });
        self.split_cuts.insert(u, unit.cuts);
        Some(r)
    }

    /// Undoes the last split (of unit `u`, whose right half is the last unit).
    fn unsplit(&mut self, u: usize) {
        let Some(Step::Split { range, .. }) = self.steps.pop() else { return };
        let r = self.units.len() - 1;
        self.split_steps.remove(&r);
        let right = self.units.pop().expect("the right half is the last unit");
        self.movable[right.shard].remove(&(key(right.cost), r));
        let left = self.units[u].clone();
        let cost = self.options.cost.of(left.rows + right.rows, left.bytes + right.bytes, left.load + right.load);
        self.adjust(left.shard, cost - left.cost - right.cost, 0);
        self.units[u] = Unit {
            range,
            rows: left.rows + right.rows,
            bytes: left.bytes + right.bytes,
            load: left.load + right.load,
            cost,
            cuts: self.split_cuts.remove(&u).unwrap_or_default(),
            fixed: false,
            ..left
        };
        self.movable[self.units[u].shard].insert((key(cost), u));
    }

    /// Step 1: empty the shards that take no data.
    fn drain(&mut self) -> Result<(), PlanError> {
        let mut leaving: Vec<usize> =
            (0..self.units.len()).filter(|u| !self.takes[self.units[*u].shard] && !self.units[*u].fixed).collect();
        leaving.sort_by_key(|u| self.units[*u].range);
        for u in leaving {
            if let Some(to) = self.best_destination(u) {
                self.relocate(u, to);
                continue;
            }
            // No room for it whole: split and move the right half; the left
            // stays (the next plan moves it).
            let no_room = |state: &Self, u: usize| PlanError::NoRoom {
                range: state.units[u].range.to_string(),
                shard: state.shards[state.units[u].shard].id.clone(),
            };
            let Some(right) = self.split(u, 0.5) else { return Err(no_room(self, u)) };
            match self.best_destination(right) {
                Some(to) => self.relocate(right, to),
                None => return Err(no_room(self, right)),
            }
        }
        Ok(())
    }

    /// The allowed shard with the lowest cost/share after taking unit `u`.
    fn best_destination(&self, u: usize) -> Option<usize> {
        let unit = &self.units[u];
        self.by_ratio
            .iter()
            .map(|(_, s)| *s)
            .filter(|to| self.may_receive(unit.shard, *to) && self.fits(u, *to))
            .take(CANDIDATES)
            .min_by(|a, b| {
                let ra = ratio(self.loads[*a] + unit.cost, self.shares[*a]);
                let rb = ratio(self.loads[*b] + unit.cost, self.shares[*b]);
                ra.total_cmp(&rb).then(a.cmp(b))
            })
    }

    /// Step 2: split the costliest ranges until there are `min_ranges`.
    fn reshard(&mut self) {
        let mut heap: BinaryHeap<(u64, std::cmp::Reverse<usize>)> = (0..self.units.len())
            .filter(|u| !self.units[*u].fixed && !self.units[*u].cuts.is_empty())
            .map(|u| (key(self.units[u].cost), std::cmp::Reverse(u)))
            .collect();
        while self.units.len() < self.options.min_ranges {
            let Some((_, std::cmp::Reverse(u))) = heap.pop() else { return };
            self.split(u, 0.5);
        }
    }

    /// Step 3: move ranges from the peak shard until `target` is reached.
    fn rebalance(&mut self) {
        let bound = self.options.max_steps.saturating_mul(4).max(16);
        for _ in 0..bound {
            if self.steps.len() >= self.options.max_steps {
                return;
            }
            let Some(&(_, src)) = self.by_ratio.last() else { return };
            let peak = self.ratio_of(src);
            // (peak > target ≥ 1 implies a positive total.)
            if peak <= self.options.target {
                return;
            }
            if let Some((u, to)) = self.best_move(src, peak) {
                self.relocate(u, to);
                continue;
            }
            // Every range of the peak shard is too big to help: split one so
            // that its right part is what evens the peak shard out with the
            // least-loaded one, and place that part.
            let Some(&dst) = self.candidates(src).first() else { return };
            let (ls, ts, ld, td) = (self.loads[src], self.shares[src], self.loads[dst], self.shares[dst]);
            let even = (ls * td - ld * ts) / (ts + td);
            let splittable = self.movable[src]
                .iter()
                .rev()
                .map(|(_, u)| *u)
                .find(|u| !self.units[*u].cuts.is_empty() && self.units[*u].cost > even);
            let Some(u) = splittable else { return };
            let left_fraction = 1.0 - even / self.units[u].cost;
            let Some(right) = self.split(u, left_fraction) else { return };
            match self.best_move_of(right, src, peak) {
                Some((_, to)) => self.relocate(right, to),
                None => {
                    self.unsplit(u);
                    return;
                }
            }
        }
    }

    /// The move off `src` that brings the pair's peak lowest, if below `peak`.
    fn best_move(&self, src: usize, peak: f64) -> Option<(usize, usize)> {
        let (ls, ts) = (self.loads[src], self.shares[src]);
        // (pair peak, destination's cost/share after, bytes, unit, shard):
        // when the source side decides the pair's peak, destinations tie on
        // it, and the least-loaded one must win, or some shards fill up to
        // the source's level with ranges fixed for the rest of the plan
        // while others stay empty.
        let mut best: Option<(f64, f64, u64, usize, usize)> = None;
        for to in self.candidates(src) {
            let (ld, td) = (self.loads[to], self.shares[to]);
            // The cost that evens the pair out.
            let even = (ls * td - ld * ts) / (ts + td);
            if even <= 0.0 {
                continue;
            }
            let below = self.movable[src].range(..=(key(even), usize::MAX)).rev().take(2);
            let above = self.movable[src].range((key(even), usize::MAX)..).take(2);
            for &(_, u) in below.chain(above) {
                if !self.fits(u, to) {
                    continue;
                }
                let unit = &self.units[u];
                let after = ratio(ld + unit.cost, td);
                let pair = ratio(ls - unit.cost, ts).max(after);
                if pair >= peak - 1e-9 {
                    continue;
                }
                let candidate = (pair, after, unit.bytes, u, to);
                let better = best.is_none_or(|b| candidate.partial_cmp(&b) == Some(std::cmp::Ordering::Less));
                if better {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, _, _, u, to)| (u, to))
    }

    /// The destination for unit `u` (on `src`) that brings the pair's peak
    /// lowest, if below `peak`.
    fn best_move_of(&self, u: usize, src: usize, peak: f64) -> Option<(f64, usize)> {
        let unit = &self.units[u];
        if unit.cost <= 0.0 {
            return None;
        }
        self.candidates(src)
            .into_iter()
            .filter(|to| self.fits(u, *to))
            .map(|to| {
                let pair = ratio(self.loads[src] - unit.cost, self.shares[src])
                    .max(ratio(self.loads[to] + unit.cost, self.shares[to]));
                (pair, to)
            })
            .filter(|(pair, _)| *pair < peak - 1e-9)
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
    }

    /// Step 4: merge runs of tiny neighbours on one shard.
    fn merge(&mut self) {
        let Some(below) = self.options.merge_below else { return };
        // A fraction of a shard's fair share: merging does not change it,
        // so the next plan finds the same limit and nothing more to merge.
        let total: f64 = self.loads.iter().sum();
        let limit = below * total / self.takes.iter().filter(|t| **t).count() as f64;
        let mut order: Vec<usize> = (0..self.units.len()).collect();
        order.sort_by_key(|u| self.units[*u].range);
        let mut i = 0;
        while i < order.len() {
            let first = order[i];
            let mut sum = self.units[first].cost;
            let mut end = i + 1;
            if !self.units[first].fixed && sum < limit {
                while end < order.len() {
                    let (prev, cand) = (&self.units[order[end - 1]], &self.units[order[end]]);
                    let adjacent = prev.range.end() == Some(cand.range.start());
                    if !adjacent || cand.fixed || cand.shard != prev.shard || sum + cand.cost >= limit {
                        break;
                    }
                    sum += cand.cost;
                    end += 1;
                }
            }
            if end - i >= 2 {
                let run: Vec<usize> = order[i..end].to_vec();
                let ranges: Vec<KeyRange> = run.iter().map(|u| self.units[*u].range).collect();
                for u in &run {
                    self.fix(*u);
                }
                let shard = self.shards[self.units[first].shard].id.clone();
                self.steps.push(Step::Merge { ranges, shard });
            }
            i = end;
        }
    }
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

#[cfg(test)]
mod tests;
