//! A rebalance answer as shardd shows it (`POST /v1/keyspaces/{ks}/rebalance`),
//! read leniently, and the ways shardctl prints it: the table of steps, the
//! totals, the imbalance before and after with each shard's cost, the jobs
//! started, and the summary once they have ended.
//!
//! As with jobs, every field may be missing or null: a shardd that adds or
//! leaves out fields does not break shardctl. An imbalance of `null` is
//! read as infinite (JSON has no infinity: a shard that takes no data but
//! still holds some has an infinite cost over its share of zero).

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::job_view::{
    Job, bytes_text, duration_text, optional_f64, optional_string, optional_u64, string, strings, value_text,
};
use crate::cli::CostKind;
use crate::output::{Palette, TextTable};

/// shardd's default `threshold` (the answer does not repeat the one used).
pub const DEFAULT_THRESHOLD: f64 = 1.10;

/// A rebalance answer: the measured ranges, the plan and the jobs started.
#[derive(Debug, Default, Clone)]
pub struct Rebalanced {
    /// The keyspace.
    pub keyspace: String,
    /// The ranges as measured.
    pub ranges: Vec<RangeView>,
    /// The plan.
    pub plan: PlanView,
    /// The jobs started (none for a dry run or an empty plan), in step order.
    pub jobs: Vec<Job>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawRebalanced {
    #[serde(deserialize_with = "string")]
    keyspace: String,
    #[serde(deserialize_with = "super::job_view::nullable")]
    ranges: Vec<RangeView>,
    #[serde(deserialize_with = "super::job_view::nullable")]
    plan: PlanView,
    #[serde(deserialize_with = "super::job_view::nullable")]
    jobs: Vec<Value>,
}

/// One measured range.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RangeView {
    /// Its name (`80-c0`).
    #[serde(deserialize_with = "string")]
    pub range: String,
    /// Its owner.
    #[serde(deserialize_with = "string")]
    pub shard: String,
    /// Rows.
    #[serde(deserialize_with = "optional_u64")]
    pub rows: Option<u64>,
    /// Bytes.
    #[serde(deserialize_with = "optional_u64")]
    pub bytes: Option<u64>,
    /// Reported operations per second.
    #[serde(deserialize_with = "optional_f64")]
    pub load: Option<f64>,
}

/// The plan.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PlanView {
    /// The steps, each one job.
    #[serde(deserialize_with = "super::job_view::nullable")]
    pub steps: Vec<StepView>,
    /// The balance now.
    #[serde(deserialize_with = "super::job_view::nullable")]
    pub before: BalanceView,
    /// The balance the steps should reach.
    #[serde(deserialize_with = "super::job_view::nullable")]
    pub after: BalanceView,
    /// Rows the steps move.
    #[serde(deserialize_with = "optional_u64")]
    pub rows_moved: Option<u64>,
    /// Bytes the steps move.
    #[serde(deserialize_with = "optional_u64")]
    pub bytes_moved: Option<u64>,
    /// Cost the steps move, in the plan's unit.
    #[serde(deserialize_with = "optional_f64")]
    pub cost_moved: Option<f64>,
    /// The least cost any plan must move.
    #[serde(deserialize_with = "optional_f64")]
    pub cost_lower_bound: Option<f64>,
    /// Estimated copy time, one job at a time.
    #[serde(deserialize_with = "optional_f64")]
    pub estimated_seconds: Option<f64>,
}

/// One step: `move`, `split` or `merge`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct StepView {
    /// `move`, `split` or `merge`.
    #[serde(deserialize_with = "string")]
    pub kind: String,
    /// The range moved or split.
    #[serde(deserialize_with = "optional_string")]
    pub range: Option<String>,
    /// The ranges merged.
    #[serde(deserialize_with = "strings")]
    pub ranges: Vec<String>,
    /// A move's source.
    #[serde(deserialize_with = "optional_string")]
    pub from: Option<String>,
    /// A move's target, or where a split's right half goes.
    #[serde(deserialize_with = "optional_string")]
    pub to: Option<String>,
    /// The shard of a split or merge.
    #[serde(deserialize_with = "optional_string")]
    pub shard: Option<String>,
    /// A split's point (16 hex digits).
    #[serde(deserialize_with = "optional_string")]
    pub at: Option<String>,
    /// A split's right half.
    #[serde(deserialize_with = "optional_string")]
    pub right: Option<String>,
    /// Rows moved (a split: its right half's, estimated).
    #[serde(deserialize_with = "optional_u64")]
    pub rows: Option<u64>,
    /// Bytes moved (a split: its right half's, estimated).
    #[serde(deserialize_with = "optional_u64")]
    pub bytes: Option<u64>,
    /// Estimated copy time of a move.
    #[serde(deserialize_with = "optional_f64")]
    pub seconds: Option<f64>,
}

/// How balanced the keyspace is.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BalanceView {
    /// The largest cost over fair share; `null` in JSON is infinite.
    #[serde(deserialize_with = "imbalance")]
    pub imbalance: Option<f64>,
    /// Total cost.
    #[serde(deserialize_with = "optional_f64")]
    pub total: Option<f64>,
    /// Each shard's cost, in shardd's order.
    #[serde(deserialize_with = "per_shard")]
    pub per_shard: Vec<(String, Option<f64>)>,
}

impl Rebalanced {
    /// Reads shardd's answer.
    pub fn from_value(value: &Value) -> anyhow::Result<Rebalanced> {
        let raw =
            RawRebalanced::deserialize(value).context("shardd sent a rebalance answer this shardctl cannot read")?;
        let jobs = raw.jobs.iter().map(Job::from_value).collect::<Result<Vec<_>, _>>()?;
        Ok(Rebalanced { keyspace: raw.keyspace, ranges: raw.ranges, plan: raw.plan, jobs })
    }

    /// The rows each job should copy, from its step (0 when none move or
    /// when steps and jobs do not line up).
    pub fn planned_rows(&self) -> Vec<u64> {
        if self.plan.steps.len() != self.jobs.len() {
            return vec![0; self.jobs.len()];
        }
        self.plan.steps.iter().map(|step| if step.moves_rows() { step.rows.unwrap_or(0) } else { 0 }).collect()
    }

    /// How many shards own at least one range.
    pub fn shards_with_ranges(&self) -> usize {
        self.ranges.iter().map(|r| r.shard.as_str()).collect::<std::collections::BTreeSet<_>>().len()
    }
}

impl StepView {
    /// Whether the step copies rows to another shard.
    pub fn moves_rows(&self) -> bool {
        match self.kind.as_str() {
            "move" => true,
            "split" => self.to.is_some() && self.to != self.shard,
            _ => false,
        }
    }

    /// `80-c0`, `80-c0 at a0` or `80-a0 + a0-c0`.
    pub fn range_text(&self) -> String {
        let range = self.range.clone().unwrap_or_else(|| "-".to_owned());
        match self.kind.as_str() {
            "split" => match self.split_point() {
                Some(point) => format!("{range} at {point}"),
                None => range,
            },
            "merge" if !self.ranges.is_empty() => self.ranges.join(" + "),
            _ if self.range.is_none() && !self.ranges.is_empty() => self.ranges.join(" "),
            _ => range,
        }
    }

    /// The split point written like a range bound (`a0`).
    pub fn split_point(&self) -> Option<String> {
        let text = self.at.as_deref()?;
        match u64::from_str_radix(text, 16) {
            Ok(point) if text.len() == 16 => Some(crate::cli::hex_bound(point)),
            _ => Some(text.to_owned()),
        }
    }

    /// `s1 → s5` for what moves, else the one shard.
    pub fn shards_text(&self) -> String {
        let owner = self.from.as_ref().or(self.shard.as_ref());
        match (owner, &self.to) {
            (Some(from), Some(to)) if from != to => format!("{from} → {to}"),
            (Some(from), _) => from.clone(),
            (None, Some(to)) => format!("→ {to}"),
            (None, None) => "-".to_owned(),
        }
    }
}

impl PlanView {
    /// The estimated copy time of `bytes`, at the plan's speed (the plan
    /// estimates its bytes at one speed).
    fn seconds_for(&self, bytes: u64) -> Option<f64> {
        let (total, seconds) = (self.bytes_moved?, self.estimated_seconds?);
        (total > 0).then(|| seconds * bytes as f64 / total as f64)
    }

    /// `2 splits, 1 move`.
    pub fn step_counts(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.kind.as_str()).or_default() += 1;
        }
        let order = ["split", "move", "merge"];
        let mut kinds: Vec<&str> = order.iter().copied().filter(|k| counts.contains_key(k)).collect();
        kinds.extend(counts.keys().copied().filter(|k| !order.contains(k)));
        kinds
            .iter()
            .map(|kind| {
                let n = counts[kind];
                if n == 1 { format!("1 {kind}") } else { format!("{n} {kind}s") }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The table of steps.
    pub fn steps_table(&self) -> TextTable {
        let mut table = TextTable::new(&["step", "kind", "range", "shards", "rows", "bytes", "est. time"]);
        table.align_right(0).align_right(4).align_right(5).align_right(6);
        for (number, step) in self.steps.iter().enumerate() {
            let moves = step.moves_rows();
            let rows = if moves { step.rows.map_or("-".to_owned(), |r| r.to_string()) } else { "-".to_owned() };
            let bytes = if moves { step.bytes.map_or("-".to_owned(), bytes_text) } else { "-".to_owned() };
            let seconds = match (moves, step.seconds) {
                (false, _) => None,
                (true, Some(seconds)) => Some(seconds),
                (true, None) => step.bytes.and_then(|b| self.seconds_for(b)),
            };
            let time = seconds.map_or("-".to_owned(), |s| duration_text(s * 1000.0));
            table.row(vec![
                (number + 1).to_string(),
                step.kind.clone(),
                step.range_text(),
                step.shards_text(),
                rows,
                bytes,
                time,
            ]);
        }
        table
    }

    /// Each shard's cost before and after.
    pub fn balance_table(&self, unit: CostUnit) -> TextTable {
        let before = format!("{} before", unit.header());
        let after = format!("{} after", unit.header());
        let mut table = TextTable::new(&["shard", &before, &after]);
        table.align_right(1).align_right(2);
        let mut shards: Vec<&str> = self.before.per_shard.iter().map(|(s, _)| s.as_str()).collect();
        for (shard, _) in &self.after.per_shard {
            if !shards.contains(&shard.as_str()) {
                shards.push(shard);
            }
        }
        let cost = |balance: &BalanceView, shard: &str| {
            balance
                .per_shard
                .iter()
                .find(|(s, _)| s == shard)
                .and_then(|(_, c)| *c)
                .map_or("-".to_owned(), |c| unit.number(c))
        };
        for shard in shards {
            table.row(vec![shard.to_owned(), cost(&self.before, shard), cost(&self.after, shard)]);
        }
        table
    }

    /// The plan: its steps, totals and balance.
    pub fn print(&self, out: &mut dyn Write, unit: CostUnit, threshold: f64) -> io::Result<()> {
        self.steps_table().print(out)?;
        if self.steps.iter().any(|s| s.kind == "split") {
            writeln!(
                out,
                "(a split cuts its range at the point shown; its rows and bytes are the right half's, estimated)"
            )?;
        }
        writeln!(out)?;
        let mut moving = match (self.rows_moved, self.bytes_moved) {
            (Some(rows), Some(bytes)) => format!("{rows} rows ({})", bytes_text(bytes)),
            (Some(rows), None) => format!("{rows} rows"),
            (None, Some(bytes)) => bytes_text(bytes),
            (None, None) => "-".to_owned(),
        };
        if unit != CostUnit::Rows
            && let Some(cost) = self.cost_moved
        {
            moving.push_str(&format!(", cost {}", unit.amount(cost)));
        }
        writeln!(out, "moving     {moving}")?;
        if let Some(bound) = self.cost_lower_bound {
            writeln!(out, "at least   {} must move (lower bound of any plan)", unit.amount(bound))?;
        }
        let time = self.estimated_seconds.map_or("-".to_owned(), |s| duration_text(s * 1000.0));
        writeln!(out, "est. time  {time} (copying one job at a time)")?;
        writeln!(
            out,
            "imbalance  {} → {} (threshold {threshold:.2})",
            ratio_text(self.before.imbalance),
            ratio_text(self.after.imbalance)
        )?;
        writeln!(out)?;
        self.balance_table(unit).print(out)
    }

    /// Why an empty plan is empty.
    pub fn nothing_to_do(&self, threshold: f64) -> String {
        match self.before.imbalance {
            Some(imbalance) if imbalance <= threshold => {
                format!("balanced: imbalance {} ≤ threshold {threshold:.2}; nothing to do", ratio_text(Some(imbalance)))
            }
            imbalance => format!(
                "imbalance {} > threshold {threshold:.2}, but no split or move lowers it (ranges too big and \
                 unsplittable, or no shard may take them); nothing to do",
                ratio_text(imbalance)
            ),
        }
    }
}

/// The unit of a plan's costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostUnit {
    /// Rows.
    Rows,
    /// Bytes.
    Bytes,
    /// Operations per second.
    Load,
    /// A unitless mix of shares.
    Mix,
}

impl CostUnit {
    /// The unit of `--cost` (rows when not given, like shardd).
    pub fn of(cost: Option<CostKind>) -> CostUnit {
        match cost {
            None | Some(CostKind::Rows) => CostUnit::Rows,
            Some(CostKind::Bytes) => CostUnit::Bytes,
            Some(CostKind::Load) => CostUnit::Load,
            Some(CostKind::Mix) => CostUnit::Mix,
        }
    }

    /// The column header's word.
    pub fn header(self) -> &'static str {
        match self {
            CostUnit::Rows => "rows",
            CostUnit::Bytes => "bytes",
            CostUnit::Load => "ops/s",
            CostUnit::Mix => "cost",
        }
    }

    /// A cost for a table cell: `800`, `78.1 KiB`, `12.5`, `0.250`.
    pub fn number(self, cost: f64) -> String {
        if !cost.is_finite() {
            return "∞".to_owned();
        }
        match self {
            CostUnit::Rows => format!("{}", cost.round().max(0.0) as u64),
            CostUnit::Bytes => bytes_text(cost.round().max(0.0) as u64),
            CostUnit::Load => format!("{cost:.1}"),
            CostUnit::Mix => format!("{cost:.3}"),
        }
    }

    /// A cost in words: `800 rows`, `78.1 KiB`, `12.5 ops/s`, `0.250 (mix)`.
    pub fn amount(self, cost: f64) -> String {
        let number = self.number(cost);
        match self {
            CostUnit::Rows => format!("{number} rows"),
            CostUnit::Bytes => number,
            CostUnit::Load => format!("{number} ops/s"),
            CostUnit::Mix => format!("{number} (mix)"),
        }
    }
}

/// An imbalance: `1.03`, `∞`, or `-` when unknown.
pub fn ratio_text(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{r:.2}"),
        Some(_) => "∞".to_owned(),
        None => "-".to_owned(),
    }
}

/// What waiting for a plan's jobs came to.
pub struct RunSummary<'a> {
    /// The jobs, as they ended.
    pub jobs: &'a [Job],
    /// The imbalance measured before the first plan.
    pub before: Option<f64>,
    /// The imbalance the last plan aimed at.
    pub planned: Option<f64>,
    /// The imbalance measured after the jobs (`None`: not measured).
    pub measured: Option<f64>,
    /// How long the waiting took, when the jobs do not say.
    pub elapsed_ms: f64,
}

impl RunSummary<'_> {
    /// Whether every job succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.jobs.iter().all(|j| j.status == "succeeded")
    }

    /// `3 succeeded, 0 failed` (and `, 1 cancelled` if any were).
    pub fn counts(&self) -> String {
        let count = |status: &str| self.jobs.iter().filter(|j| j.status == status).count();
        let (succeeded, cancelled) = (count("succeeded"), count("cancelled"));
        let failed = self.jobs.len() - succeeded - cancelled;
        let mut text = format!("{succeeded} succeeded, {failed} failed");
        if cancelled > 0 {
            text.push_str(&format!(", {cancelled} cancelled"));
        }
        text
    }

    /// Rows copied by the jobs that succeeded.
    pub fn rows_moved(&self) -> u64 {
        self.jobs.iter().filter(|j| j.status == "succeeded").filter_map(|j| j.progress.rows_copied).sum()
    }

    /// From the first job's creation to the last one's end.
    pub fn duration_ms(&self) -> f64 {
        let start = self.jobs.iter().filter_map(|j| j.created_at_ms).min();
        let end = self.jobs.iter().filter_map(|j| j.finished_at_ms.or(j.updated_at_ms)).max();
        match (start, end) {
            (Some(start), Some(end)) if end >= start => (end - start) as f64,
            _ => self.elapsed_ms,
        }
    }

    /// A row per job, then the totals.
    pub fn print(&self, out: &mut dyn Write, palette: &Palette, now_ms: u64) -> io::Result<()> {
        let mut table = TextTable::new(&["job", "what", "status", "rows", "duration"]);
        table.align_right(3).align_right(4);
        for job in self.jobs {
            let rows = job.progress.rows_copied.unwrap_or(0).to_string();
            let duration = job.duration_ms(now_ms).map_or("-".to_owned(), duration_text);
            table.row(vec![job.id.clone(), job.describe(), job.status_text(palette), rows, duration]);
        }
        table.print(out)?;
        writeln!(out)?;
        writeln!(out, "jobs       {}", self.counts())?;
        writeln!(out, "rows       {} moved", self.rows_moved())?;
        writeln!(out, "duration   {}", duration_text(self.duration_ms()))?;
        let measured = match self.measured {
            Some(measured) => ratio_text(Some(measured)),
            None => "- (could not measure)".to_owned(),
        };
        writeln!(
            out,
            "imbalance  {} → {measured} (measured after the jobs; planned {})",
            ratio_text(self.before),
            ratio_text(self.planned)
        )?;
        for job in self.jobs {
            if let Some(error) = job.error_text() {
                writeln!(out, "error      {}: {}", job.id, palette.bad(&error))?;
            }
        }
        Ok(())
    }
}

fn imbalance<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => Some(f64::INFINITY),
        other => other.as_f64(),
    })
}

fn per_shard<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Option<f64>)>, D::Error> {
    let cost = |v: &Value| match v {
        Value::Null => Some(f64::INFINITY),
        other => other.as_f64(),
    };
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if !pair.is_empty() => Some((value_text(&pair[0]), pair.get(1).and_then(cost))),
                Value::Object(object) => {
                    let shard = object.get("shard").or_else(|| object.get("id"))?;
                    Some((value_text(shard), object.get("cost").and_then(cost)))
                }
                _ => None,
            })
            .collect(),
        Value::Object(object) => object.iter().map(|(shard, c)| (shard.clone(), cost(c))).collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A dry run as shardd answers it: a split whose right half moves, a
    /// move, a merge.
    fn sample() -> Value {
        json!({
            "keyspace": "users",
            "ranges": [
                {"range": "-40", "shard": "s1", "rows": 800, "bytes": 81920, "load": 0.0, "median": 2305843009213693952u64},
                {"range": "40-80", "shard": "s2", "rows": 200, "bytes": 20480, "load": 0.0, "median": null},
                {"range": "80-c0", "shard": "s3", "rows": 200, "bytes": 20480, "load": 0.0, "median": null},
                {"range": "c0-", "shard": "s4", "rows": 800, "bytes": 81920, "load": 0.0, "median": null}
            ],
            "plan": {
                "steps": [
                    {"kind": "split", "range": "-40", "at": "2000000000000000", "shard": "s1", "right": "20-40",
                     "to": "s5", "rows": 400, "bytes": 40960},
                    {"kind": "move", "range": "40-80", "from": "s2", "to": "s3", "rows": 200, "bytes": 20480,
                     "seconds": 0.00041},
                    {"kind": "merge", "ranges": ["c0-e0", "e0-"], "shard": "s4"}
                ],
                "before": {"imbalance": 2.0, "total": 2000.0,
                           "per_shard": [["s1", 800.0], ["s2", 200.0], ["s3", 200.0], ["s4", 800.0], ["s5", 0.0]]},
                "after": {"imbalance": 2.0, "total": 2000.0,
                          "per_shard": [["s1", 400.0], ["s2", 0.0], ["s3", 400.0], ["s4", 800.0], ["s5", 400.0]]},
                "rows_moved": 600, "bytes_moved": 61440, "cost_moved": 600.0, "cost_lower_bound": 760.0,
                "estimated_seconds": 0.0012288
            },
            "jobs": []
        })
    }

    fn render(print: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn words(text: &str) -> Vec<Vec<&str>> {
        text.lines().map(|l| l.split_whitespace().collect()).collect()
    }

    #[test]
    fn an_answer_is_read_leniently() {
        let view = Rebalanced::from_value(&sample()).unwrap();
        assert_eq!(view.keyspace, "users");
        assert_eq!(view.ranges.len(), 4);
        assert_eq!(view.plan.steps.len(), 3);
        assert_eq!(view.plan.before.per_shard[0], ("s1".to_owned(), Some(800.0)));
        assert_eq!(view.shards_with_ranges(), 4);
        assert!(view.jobs.is_empty() && view.planned_rows().is_empty());
        assert_eq!(view.plan.step_counts(), "1 split, 1 move, 1 merge");

        let view = Rebalanced::from_value(&json!({"plan": {"steps": null, "before": {"imbalance": null}},
                                                  "jobs": [{"id": "j1", "status": "queued"}]}))
        .unwrap();
        assert_eq!(view.plan.before.imbalance, Some(f64::INFINITY), "null is infinite");
        assert_eq!(view.plan.after.imbalance, None, "missing is unknown");
        assert_eq!(view.jobs[0].id, "j1");
        assert_eq!(view.planned_rows(), [0], "no steps to go by");
        assert!(Rebalanced::from_value(&json!({"jobs": [{"status": "queued"}]})).is_err());
    }

    #[test]
    fn the_plan_table_has_a_row_per_step() {
        let view = Rebalanced::from_value(&sample()).unwrap();
        let text = render(|out| view.plan.steps_table().print(out));
        assert_eq!(
            words(&text),
            [
                vec!["STEP", "KIND", "RANGE", "SHARDS", "ROWS", "BYTES", "EST.", "TIME"],
                vec!["1", "split", "-40", "at", "20", "s1", "→", "s5", "400", "40.0", "KiB", "1ms"],
                vec!["2", "move", "40-80", "s2", "→", "s3", "200", "20.0", "KiB", "0ms"],
                vec!["3", "merge", "c0-e0", "+", "e0-", "s4", "-", "-", "-"],
            ]
        );
        // Numbers are right-aligned: the columns end together.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1].find("split"), lines[0].find("KIND"));
        assert!(lines[1].ends_with("1ms") && lines[2].ends_with("0ms"));
        // A split whose halves both stay moves nothing.
        let stays = StepView {
            kind: "split".into(),
            range: Some("80-".into()),
            at: Some("c000000000000000".into()),
            shard: Some("s2".into()),
            rows: Some(10),
            ..StepView::default()
        };
        assert!(!stays.moves_rows());
        assert_eq!(stays.range_text(), "80- at c0");
        assert_eq!(stays.shards_text(), "s2");
    }

    #[test]
    fn the_plan_prints_totals_and_each_shard_before_and_after() {
        let view = Rebalanced::from_value(&sample()).unwrap();
        let text = render(|out| view.plan.print(out, CostUnit::Rows, 1.1));
        assert!(
            text.contains("\n(a split cuts its range at the point shown; its rows and bytes are the right half's"),
            "{text}"
        );
        assert!(text.contains("\nmoving     600 rows (60.0 KiB)\n"), "{text}");
        assert!(text.contains("\nat least   760 rows must move (lower bound of any plan)\n"), "{text}");
        assert!(text.contains("\nest. time  1ms (copying one job at a time)\n"), "{text}");
        assert!(text.contains("\nimbalance  2.00 → 2.00 (threshold 1.10)\n"), "{text}");
        let shards: Vec<Vec<&str>> = words(&text).into_iter().skip_while(|w| w.first() != Some(&"SHARD")).collect();
        assert_eq!(shards[0], ["SHARD", "ROWS", "BEFORE", "ROWS", "AFTER"]);
        assert_eq!(shards[1], ["s1", "800", "400"]);
        assert_eq!(shards[5], ["s5", "0", "400"]);

        let text = render(|out| view.plan.print(out, CostUnit::Bytes, 1.25));
        assert!(text.contains("\nmoving     600 rows (60.0 KiB), cost 600 B\n"), "{text}");
        assert!(text.contains("(threshold 1.25)"), "{text}");
        assert_eq!(CostUnit::Load.amount(12.25), "12.2 ops/s");
        assert_eq!(CostUnit::Mix.amount(0.25), "0.250 (mix)");
        assert_eq!(CostUnit::Rows.number(f64::INFINITY), "∞");
    }

    #[test]
    fn an_empty_plan_says_why() {
        let mut plan = PlanView::default();
        plan.before.imbalance = Some(1.03);
        assert_eq!(plan.nothing_to_do(DEFAULT_THRESHOLD), "balanced: imbalance 1.03 ≤ threshold 1.10; nothing to do");
        plan.before.imbalance = Some(1.6);
        assert!(plan.nothing_to_do(1.1).starts_with("imbalance 1.60 > threshold 1.10, but no split or move lowers it"));
        plan.before.imbalance = Some(f64::INFINITY);
        assert!(plan.nothing_to_do(1.1).starts_with("imbalance ∞ > threshold"));
    }

    #[test]
    fn the_summary_counts_jobs_rows_and_time() {
        let job = |id: &str, status: &str, copied: u64, created: u64, finished: u64| {
            Job::from_value(&json!({"id": id, "kind": "move", "ranges": ["40-80"], "source": "s2", "target": "s3",
                                    "status": status, "progress": {"rows_copied": copied, "rows_total": copied},
                                    "created_at_ms": created, "finished_at_ms": finished,
                                    "error": if status == "failed" { json!({"code": "verify_mismatch",
                                                                             "message": "3 rows differ"}) }
                                             else { Value::Null }}))
            .unwrap()
        };
        let jobs = [job("j1", "succeeded", 400, 1_000, 3_000), job("j2", "succeeded", 200, 1_100, 4_500)];
        let summary =
            RunSummary { jobs: &jobs, before: Some(2.0), planned: Some(1.0), measured: Some(1.004), elapsed_ms: 9.0 };
        assert!(summary.all_succeeded());
        let text = render(|out| summary.print(out, &Palette::new(crate::cli::ColorChoice::Never), 10_000));
        let lines = words(&text);
        assert_eq!(lines[0], ["JOB", "WHAT", "STATUS", "ROWS", "DURATION"]);
        assert_eq!(lines[1], ["j1", "move", "40-80", "s2", "→", "s3", "succeeded", "400", "2.0s"]);
        assert!(text.contains("\njobs       2 succeeded, 0 failed\n"), "{text}");
        assert!(text.contains("\nrows       600 moved\n"), "{text}");
        assert!(text.contains("\nduration   3.5s\n"), "{text}");
        assert!(text.ends_with("\nimbalance  2.00 → 1.00 (measured after the jobs; planned 1.00)\n"), "{text}");

        let jobs = [job("j1", "succeeded", 400, 1_000, 3_000), job("j2", "failed", 10, 1_100, 1_500)];
        let summary =
            RunSummary { jobs: &jobs, before: Some(2.0), planned: Some(1.0), measured: None, elapsed_ms: 9.0 };
        assert!(!summary.all_succeeded());
        let text = render(|out| summary.print(out, &Palette::new(crate::cli::ColorChoice::Never), 10_000));
        assert!(text.contains("\njobs       1 succeeded, 1 failed\n"), "{text}");
        assert!(text.contains("\nrows       400 moved\n"), "{text}");
        assert!(text.contains("2.00 → - (could not measure)"), "{text}");
        assert!(text.ends_with("\nerror      j2: 3 rows differ (verify_mismatch)\n"), "{text}");
    }
}
