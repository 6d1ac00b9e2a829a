//! A data-movement job as shardd shows it (`GET /v1/jobs/{id}`), read
//! leniently, and the ways shardctl prints it: one-line descriptions,
//! progress lines, the progress bar's message, the end-of-job summary, the
//! details of `jobs show` and the table of `jobs list`.
//!
//! Every field may be missing or null, and numbers may come as integers or
//! floats: a shardd that adds or leaves out fields does not break shardctl.

use std::io::{self, Write};

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::output::{Palette, TextTable};

/// A job, as far as shardctl reads it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Job {
    /// Its id, e.g. `j18c2f3a9b2e1`.
    #[serde(deserialize_with = "string")]
    pub id: String,
    /// The keyspace it works in.
    #[serde(deserialize_with = "string")]
    pub keyspace: String,
    /// `move`, `split` or `merge`.
    #[serde(deserialize_with = "string")]
    pub kind: String,
    /// The ranges it moves, by name.
    #[serde(deserialize_with = "strings")]
    pub ranges: Vec<String>,
    /// The shard the rows come from.
    #[serde(deserialize_with = "optional_string")]
    pub source: Option<String>,
    /// The shard the rows go to.
    #[serde(deserialize_with = "optional_string")]
    pub target: Option<String>,
    /// For a split: the range split.
    #[serde(deserialize_with = "optional_string")]
    pub split_range: Option<String>,
    /// For a split: the point chosen (hex digits of a keyspace id).
    #[serde(deserialize_with = "optional_string")]
    pub split_at: Option<String>,
    /// For a merge: the ranges merged, in order (`["80-a0", "a0-c0"]`).
    pub merge: Value,
    /// queued, running, succeeded, failed, cancelling, cancelled.
    #[serde(deserialize_with = "string")]
    pub status: String,
    /// The current phase (pending, precheck, copy, …, done).
    #[serde(deserialize_with = "string")]
    pub phase: String,
    /// Whether someone asked to cancel it.
    #[serde(deserialize_with = "boolean")]
    pub cancel_requested: bool,
    /// Why it failed: a string or an object with a message.
    pub error: Value,
    /// The job's own settings (`batch_rows`, `rows_per_second`).
    pub settings: Value,
    /// Row counts, rate and ETA.
    #[serde(deserialize_with = "nullable")]
    pub progress: Progress,
    /// When it was created (ms since the Unix epoch).
    #[serde(deserialize_with = "optional_u64")]
    pub created_at_ms: Option<u64>,
    /// When it last changed.
    #[serde(deserialize_with = "optional_u64")]
    pub updated_at_ms: Option<u64>,
    /// When it ended.
    #[serde(deserialize_with = "optional_u64")]
    pub finished_at_ms: Option<u64>,
    /// The phases it went through, in order.
    #[serde(deserialize_with = "nullable")]
    pub phases: Vec<PhaseSpan>,
    /// How long writes to the moved ranges were paused at the cutover.
    #[serde(deserialize_with = "optional_f64")]
    pub cutover_ms: Option<f64>,
}

/// How far a job has come.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Rows to copy (counted at the start of the copy).
    #[serde(deserialize_with = "optional_u64")]
    pub rows_total: Option<u64>,
    /// Their size.
    #[serde(deserialize_with = "optional_u64")]
    pub bytes_total: Option<u64>,
    /// Rows copied so far.
    #[serde(deserialize_with = "optional_u64")]
    pub rows_copied: Option<u64>,
    /// Captured changes not replayed yet.
    #[serde(deserialize_with = "optional_u64")]
    pub backlog: Option<u64>,
    /// Captured changes replayed.
    #[serde(deserialize_with = "optional_u64")]
    pub rows_replayed: Option<u64>,
    /// Rows compared between source and target.
    #[serde(deserialize_with = "optional_u64")]
    pub rows_verified: Option<u64>,
    /// Rows deleted from the source after the hand-over.
    #[serde(deserialize_with = "optional_u64")]
    pub rows_cleaned: Option<u64>,
    /// The current rate.
    #[serde(deserialize_with = "optional_f64")]
    pub rows_per_second: Option<f64>,
    /// The estimated time left in the current phase.
    #[serde(deserialize_with = "optional_f64")]
    pub eta_seconds: Option<f64>,
}

/// One phase of a job and when it ran.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PhaseSpan {
    /// The phase.
    #[serde(deserialize_with = "string")]
    pub phase: String,
    /// When it started (ms since the Unix epoch).
    #[serde(deserialize_with = "optional_u64")]
    pub started_at_ms: Option<u64>,
    /// When it ended; `None` while it runs.
    #[serde(deserialize_with = "optional_u64")]
    pub finished_at_ms: Option<u64>,
}

impl Job {
    /// Reads a job view from shardd's answer.
    pub fn from_value(value: &Value) -> anyhow::Result<Job> {
        let job: Job = Job::deserialize(value).context("shardd sent a job this shardctl cannot read")?;
        if job.id.is_empty() {
            anyhow::bail!("shardd sent a job without an id: {value}");
        }
        Ok(job)
    }

    /// Whether the job has ended (succeeded, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// What the job does, in one line: `move 80-c0 s1 → s2`,
    /// `split 80-c0 at a0, right half s1 → s4`, `merge 80-a0 + a0-c0`.
    pub fn describe(&self) -> String {
        let mut text = self.kind.clone();
        let ranges = self.range_names();
        if !ranges.is_empty() {
            let separator = if self.kind == "merge" { " + " } else { " " };
            text.push_str(&format!(" {}", ranges.join(separator)));
        }
        if let Some(point) = self.split_point() {
            text.push_str(&format!(" at {point}"));
        }
        let moves = self.source.is_some() && self.target.is_some() && self.source != self.target;
        if moves {
            let shards = self.shards_text();
            if self.kind == "split" {
                text.push_str(&format!(", right half {shards}"));
            } else {
                text.push_str(&format!(" {shards}"));
            }
        }
        text
    }

    /// The ranges the job works on: the range split, the two merged, or
    /// the ranges moved.
    pub fn range_names(&self) -> Vec<String> {
        if let Some(range) = &self.split_range {
            return vec![range.clone()];
        }
        let merged = self.merged();
        if !merged.is_empty() {
            return merged;
        }
        self.ranges.clone()
    }

    /// The ranges a merge job merges, in order (empty for other jobs).
    pub fn merged(&self) -> Vec<String> {
        self.merge.as_array().map(|ranges| ranges.iter().map(value_text).collect()).unwrap_or_default()
    }

    /// The split point written like a range bound (`a0`), if there is one.
    pub fn split_point(&self) -> Option<String> {
        let text = self.split_at.as_deref()?;
        match u64::from_str_radix(text, 16) {
            Ok(point) if text.len() == 16 => Some(crate::cli::hex_bound(point)),
            _ => Some(text.to_owned()),
        }
    }

    /// `s1 → s2`, or the one shard known, or `-`.
    pub fn shards_text(&self) -> String {
        match (&self.source, &self.target) {
            (Some(source), Some(target)) if source == target => source.clone(),
            (Some(source), Some(target)) => format!("{source} → {target}"),
            (Some(source), None) => source.clone(),
            (None, Some(target)) => format!("→ {target}"),
            (None, None) => "-".to_owned(),
        }
    }

    /// The share of rows copied, in percent: `None` while unknown.
    pub fn percent(&self) -> Option<f64> {
        if self.status == "succeeded" {
            return Some(100.0);
        }
        let total = self.progress.rows_total?;
        let copied = self.progress.rows_copied.unwrap_or(0);
        if total == 0 {
            return None;
        }
        Some((copied as f64 * 100.0 / total as f64).min(100.0))
    }

    /// The error, if the job has one: shardd's message (with its code).
    pub fn error_text(&self) -> Option<String> {
        match &self.error {
            Value::Null => None,
            Value::String(message) if message.is_empty() => None,
            Value::String(message) => Some(message.clone()),
            Value::Object(object) => {
                let message = object.get("message").and_then(Value::as_str);
                let code = object.get("code").and_then(Value::as_str);
                match (code, message) {
                    (Some(code), Some(message)) => Some(format!("{message} ({code})")),
                    (None, Some(message)) => Some(message.to_owned()),
                    _ => Some(self.error.to_string()),
                }
            }
            other => Some(other.to_string()),
        }
    }

    /// `running` / `running (cancel requested)`.
    pub fn status_text(&self, palette: &Palette) -> String {
        let status = palette.state(&self.status);
        if self.cancel_requested && !matches!(self.status.as_str(), "cancelling" | "cancelled") {
            format!("{status} (cancel requested)")
        } else {
            status
        }
    }

    /// The progress in words: rows copied of the total, the other counts
    /// that have started, the rate, the ETA and the backlog.
    pub fn progress_text(&self) -> String {
        let progress = &self.progress;
        let mut parts = Vec::new();
        let copied = progress.rows_copied.unwrap_or(0);
        match (progress.rows_total, self.percent()) {
            // Nothing to copy (a split or merge that moves no rows).
            (Some(0), _) if copied == 0 => {}
            (Some(total), Some(percent)) => parts.push(format!("{copied}/{total} rows copied ({percent:.1}%)")),
            (Some(total), None) => parts.push(format!("{copied}/{total} rows copied")),
            (None, _) if progress.rows_copied.is_some() => parts.push(format!("{copied} rows copied")),
            (None, _) => {}
        }
        let counts = [
            (progress.rows_replayed, "replayed", "catch_up"),
            (progress.rows_verified, "verified", "verify"),
            (progress.rows_cleaned, "cleaned", "cleanup"),
        ];
        for (count, what, phase) in counts {
            if let Some(count) = count.filter(|n| *n > 0 || self.phase == phase) {
                parts.push(format!("{count} {what}"));
            }
        }
        parts.extend(self.rate_parts());
        parts.join(", ")
    }

    /// The progress bar's message: what the bar itself does not show.
    pub fn bar_message(&self) -> String {
        let progress = &self.progress;
        let mut parts = Vec::new();
        let counts = [
            (progress.rows_replayed, "replayed"),
            (progress.rows_verified, "verified"),
            (progress.rows_cleaned, "cleaned"),
        ];
        for (count, what) in counts {
            if let Some(count) = count.filter(|n| *n > 0) {
                parts.push(format!("{count} {what}"));
            }
        }
        parts.extend(self.rate_parts());
        if self.cancel_requested && self.status != "cancelling" {
            parts.push("cancel requested".to_owned());
        }
        parts.join("  ")
    }

    fn rate_parts(&self) -> Vec<String> {
        let progress = &self.progress;
        let mut parts = Vec::new();
        if let Some(rate) = progress.rows_per_second.filter(|r| r.is_finite() && *r >= 0.0) {
            parts.push(rate_text(rate));
        }
        if let Some(eta) = progress.eta_seconds.filter(|e| e.is_finite() && *e >= 0.0) {
            parts.push(format!("ETA {}", duration_text(eta * 1000.0)));
        }
        if let Some(backlog) = progress.backlog {
            parts.push(format!("backlog {backlog}"));
        }
        parts
    }

    /// One line of `jobs wait` without a terminal:
    /// `job J running, phase copy: 500/1000 rows copied (50.0%), …`.
    pub fn progress_line(&self) -> String {
        let mut line = format!("job {} {}", self.id, self.status);
        if self.cancel_requested && !matches!(self.status.as_str(), "cancelling" | "cancelled") {
            line.push_str(" (cancel requested)");
        }
        if !self.phase.is_empty() {
            line.push_str(&format!(", phase {}", self.phase));
        }
        let progress = self.progress_text();
        if !progress.is_empty() {
            line.push_str(&format!(": {progress}"));
        }
        line
    }

    /// How long each phase took (or has run so far, until `now_ms`), with
    /// whether it still runs.
    pub fn phase_durations(&self, now_ms: u64) -> Vec<(String, Option<f64>, bool)> {
        self.phases
            .iter()
            .map(|span| {
                let running = span.finished_at_ms.is_none() && !self.is_finished();
                let end = span.finished_at_ms.or(if running { Some(now_ms) } else { self.finished_at_ms });
                let took = match (span.started_at_ms, end) {
                    (Some(start), Some(end)) => Some(end.saturating_sub(start) as f64),
                    _ => None,
                };
                (span.phase.clone(), took, running)
            })
            .collect()
    }

    /// How long the whole job took (or has run so far, until `now_ms`).
    pub fn duration_ms(&self, now_ms: u64) -> Option<f64> {
        let start = self.created_at_ms?;
        let end = if self.is_finished() { self.finished_at_ms.or(self.updated_at_ms)? } else { now_ms };
        Some(end.saturating_sub(start) as f64)
    }

    /// The summary printed when a waited-for job ends.
    pub fn print_summary(&self, out: &mut dyn Write, palette: &Palette, now_ms: u64) -> io::Result<()> {
        writeln!(out, "job       {}  {}", self.id, self.describe())?;
        writeln!(out, "status    {}", self.status_text(palette))?;
        writeln!(out, "rows      {}", self.rows_summary())?;
        let phases: Vec<String> = self
            .phase_durations(now_ms)
            .into_iter()
            // `done` marks the end; it takes no time of its own.
            .filter(|(phase, _, _)| phase != "done")
            .filter_map(|(phase, took, _)| took.map(|ms| format!("{phase} {}", duration_text(ms))))
            .collect();
        let duration = self.duration_ms(now_ms).map_or("-".to_owned(), duration_text);
        if phases.is_empty() {
            writeln!(out, "duration  {duration}")?;
        } else {
            writeln!(out, "duration  {duration} ({})", phases.join(", "))?;
        }
        if let Some(cutover) = self.cutover_ms {
            writeln!(out, "cutover   writes paused {}", duration_text(cutover))?;
        }
        if let Some(error) = self.error_text() {
            writeln!(out, "error     {}", palette.bad(&error))?;
        }
        Ok(())
    }

    /// `batches of 10000 rows, at most 500 rows/s` from the job's settings.
    fn settings_text(&self) -> Option<String> {
        let batch = self.settings.get("batch_rows").and_then(Value::as_u64);
        let rate = self.settings.get("rows_per_second").and_then(Value::as_u64);
        let mut parts = Vec::new();
        if let Some(batch) = batch {
            parts.push(format!("batches of {batch} rows"));
        }
        match rate {
            Some(0) => parts.push("unthrottled".to_owned()),
            Some(rate) => parts.push(format!("at most {rate} rows/s")),
            None => {}
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// `1000 copied of 1000 (97.7 KiB), 10 replayed, 1000 verified, 1000 cleaned`.
    fn rows_summary(&self) -> String {
        let progress = &self.progress;
        let mut text = format!("{} copied", progress.rows_copied.unwrap_or(0));
        if let Some(total) = progress.rows_total {
            text.push_str(&format!(" of {total}"));
        }
        if let Some(bytes) = progress.bytes_total {
            text.push_str(&format!(" ({})", bytes_text(bytes)));
        }
        let counts = [
            (progress.rows_replayed, "replayed"),
            (progress.rows_verified, "verified"),
            (progress.rows_cleaned, "cleaned"),
        ];
        for (count, what) in counts {
            if let Some(count) = count {
                text.push_str(&format!(", {count} {what}"));
            }
        }
        text
    }

    /// Everything about the job, for `jobs show`.
    pub fn print_details(&self, out: &mut dyn Write, palette: &Palette, now_ms: u64) -> io::Result<()> {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        writeln!(out, "job        {}", self.id)?;
        writeln!(out, "keyspace   {}", self.keyspace)?;
        writeln!(out, "kind       {}", self.kind)?;
        let moving = if self.ranges.is_empty() { "- (no rows move)".to_owned() } else { self.ranges.join(" ") };
        writeln!(out, "moving     {moving}")?;
        writeln!(out, "source     {}", or_dash(&self.source))?;
        writeln!(out, "target     {}", or_dash(&self.target))?;
        if let Some(range) = &self.split_range {
            writeln!(out, "split      {range}")?;
        }
        if let Some(point) = self.split_point() {
            writeln!(out, "split at   {point}")?;
        }
        let merged = self.merged();
        if !merged.is_empty() {
            writeln!(out, "merge      {}", merged.join(" + "))?;
        }
        writeln!(out, "status     {}", self.status_text(palette))?;
        writeln!(out, "phase      {}", if self.phase.is_empty() { "-" } else { &self.phase })?;
        let progress = self.progress_text();
        writeln!(out, "progress   {}", if progress.is_empty() { "-" } else { &progress })?;
        writeln!(out, "rows       {}", self.rows_summary())?;
        if let Some(settings) = self.settings_text() {
            writeln!(out, "settings   {settings}")?;
        }
        let when = |ms: Option<u64>| match ms {
            Some(ms) => format!("{} ({} ago)", utc_text(ms), age_text(now_ms.saturating_sub(ms))),
            None => "-".to_owned(),
        };
        writeln!(out, "created    {}", when(self.created_at_ms))?;
        writeln!(out, "updated    {}", when(self.updated_at_ms))?;
        writeln!(out, "finished   {}", when(self.finished_at_ms))?;
        let duration = self.duration_ms(now_ms).map_or("-".to_owned(), duration_text);
        writeln!(out, "duration   {duration}{}", if self.is_finished() { "" } else { " so far" })?;
        if let Some(cutover) = self.cutover_ms {
            writeln!(out, "cutover    writes paused {}", duration_text(cutover))?;
        }
        if let Some(error) = self.error_text() {
            writeln!(out, "error      {}", palette.bad(&error))?;
        }
        if !self.phases.is_empty() {
            writeln!(out)?;
            let mut table = TextTable::new(&["phase", "started", "duration"]);
            table.align_right(1).align_right(2);
            for ((phase, took, running), span) in self.phase_durations(now_ms).into_iter().zip(&self.phases) {
                let started = match (span.started_at_ms, self.created_at_ms) {
                    (Some(start), Some(created)) => format!("+{}", duration_text(start.saturating_sub(created) as f64)),
                    (Some(start), None) => utc_text(start),
                    (None, _) => "-".to_owned(),
                };
                let took = if phase == "done" { "-".to_owned() } else { took.map_or("-".to_owned(), duration_text) };
                table.row(vec![phase, started, if running { format!("{took} (running)") } else { took }]);
            }
            table.print(out)?;
        }
        Ok(())
    }
}

/// The table of `jobs list`.
pub fn jobs_table(jobs: &[Job], palette: &Palette, now_ms: u64) -> TextTable {
    let mut table =
        TextTable::new(&["id", "keyspace", "kind", "ranges", "shards", "status", "phase", "progress", "age"]);
    table.align_right(7).align_right(8);
    for job in jobs {
        let names = job.range_names();
        let ranges = if names.is_empty() { "-".to_owned() } else { names.join(",") };
        let progress = job.percent().map_or("-".to_owned(), |p| format!("{p:.1}%"));
        let age = job.created_at_ms.map_or("-".to_owned(), |ms| age_text(now_ms.saturating_sub(ms)));
        table.row(vec![
            job.id.clone(),
            job.keyspace.clone(),
            job.kind.clone(),
            ranges,
            job.shards_text(),
            job.status_text(palette),
            if job.phase.is_empty() { "-".to_owned() } else { job.phase.clone() },
            progress,
            age,
        ]);
    }
    table
}

/// A duration for people: `350ms`, `2.1s`, `3m05s`, `1h02m`.
pub fn duration_text(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".to_owned();
    }
    if ms < 1000.0 {
        return format!("{}ms", ms.round() as u64);
    }
    let seconds = ms / 1000.0;
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let seconds = seconds.round() as u64;
    if seconds < 3600 {
        return format!("{}m{:02}s", seconds / 60, seconds % 60);
    }
    format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60)
}

/// An age in the largest whole unit: `12s`, `3m`, `2h`, `4d`.
pub fn age_text(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// `1234 rows/s`, `12.3k rows/s`, `1.2M rows/s`.
pub fn rate_text(rows_per_second: f64) -> String {
    if rows_per_second < 10_000.0 {
        format!("{} rows/s", rows_per_second.round() as u64)
    } else if rows_per_second < 10_000_000.0 {
        format!("{:.1}k rows/s", rows_per_second / 1000.0)
    } else {
        format!("{:.1}M rows/s", rows_per_second / 1_000_000.0)
    }
}

/// `512 B`, `97.7 KiB`, `1.5 GiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A time in UTC: `2025-11-30 01:02:03 UTC`.
pub fn utc_text(ms: u64) -> String {
    let seconds = ms / 1000;
    let (year, month, day) = civil_date(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The Gregorian date of a day counted from 1970-01-01, through 400-year
/// cycles that start on March 1st (so that the leap day ends a year).
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    const DAYS_PER_CYCLE: u64 = 146_097;
    // Days from 0000-03-01 to 1970-01-01.
    let days = days_since_epoch + 719_468;
    let cycle = days / DAYS_PER_CYCLE;
    let day_of_cycle = days % DAYS_PER_CYCLE;
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / (DAYS_PER_CYCLE - 1)) / 365;
    let day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    // Months counted from March: 0 = March … 11 = February.
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = cycle * 400 + year_of_cycle + u64::from(month <= 2);
    (year, month, day)
}

/// The time now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(optional_string(d)?.unwrap_or_default())
}

pub(super) fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        other => Some(value_text(&other)),
    })
}

pub(super) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().map(value_text).collect(),
        Value::Null => Vec::new(),
        other => vec![value_text(&other)],
    })
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(d)?.as_bool().unwrap_or(false))
}

pub(super) fn optional_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Value::deserialize(d)?.as_f64())
}

pub(super) fn optional_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(value.as_u64().or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CREATED: u64 = 1_764_464_523_123;

    fn sample() -> Value {
        json!({
            "id": "j18c2f3a9b2e1", "keyspace": "users", "kind": "move", "ranges": ["80-c0"],
            "source": "s1", "target": "s2", "split_at": null, "merge": null,
            "status": "running", "phase": "copy", "cancel_requested": false, "error": null,
            "progress": {"rows_total": 1000, "bytes_total": 100000, "rows_copied": 500, "backlog": 3,
                         "rows_replayed": 10, "rows_verified": 0, "rows_cleaned": 0,
                         "rows_per_second": 1234.5, "eta_seconds": 0.4},
            "created_at_ms": CREATED, "updated_at_ms": CREATED + 877, "finished_at_ms": null,
            "phases": [{"phase": "precheck", "started_at_ms": CREATED + 10, "finished_at_ms": CREATED + 77},
                       {"phase": "copy", "started_at_ms": CREATED + 77, "finished_at_ms": null}],
            "cutover_ms": null, "settings": {"batch_rows": 100, "rows_per_second": 0}, "owner": "m1"
        })
    }

    fn finished() -> Value {
        let mut value = sample();
        value["status"] = json!("succeeded");
        value["phase"] = json!("done");
        value["progress"] = json!({"rows_total": 1000, "bytes_total": 100000, "rows_copied": 1000, "backlog": 0,
                                   "rows_replayed": 10, "rows_verified": 1000, "rows_cleaned": 1000,
                                   "rows_per_second": null, "eta_seconds": null});
        value["finished_at_ms"] = json!(CREATED + 3200);
        value["phases"] = json!([
            {"phase": "precheck", "started_at_ms": CREATED + 10, "finished_at_ms": CREATED + 77},
            {"phase": "copy", "started_at_ms": CREATED + 77, "finished_at_ms": CREATED + 2177},
            {"phase": "cleanup", "started_at_ms": CREATED + 2177, "finished_at_ms": CREATED + 3200},
            {"phase": "done", "started_at_ms": CREATED + 3200, "finished_at_ms": null}
        ]);
        value["cutover_ms"] = json!(42.4);
        value
    }

    fn render(print: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn plain() -> Palette {
        Palette::new(crate::cli::ColorChoice::Never)
    }

    #[test]
    fn a_view_is_read_leniently() {
        let job = Job::from_value(&sample()).unwrap();
        assert_eq!(job.ranges, ["80-c0"]);
        assert_eq!(job.progress.rows_per_second, Some(1234.5));
        assert_eq!(job.phases.len(), 2);
        assert!(!job.is_finished());

        // Missing, null and oddly typed fields, and unknown ones, are fine.
        let job = Job::from_value(&json!({"id": "j1", "status": "queued", "progress": null, "phases": null,
                                           "ranges": null, "rows": 3, "created_at_ms": 1.7e12,
                                           "cutover_ms": 12}))
        .unwrap();
        assert_eq!(job.progress, Progress::default());
        assert!(job.phases.is_empty() && job.ranges.is_empty());
        assert_eq!(job.created_at_ms, Some(1_700_000_000_000));
        assert_eq!(job.cutover_ms, Some(12.0));
        assert_eq!(job.progress_text(), "");
        assert_eq!(job.progress_line(), "job j1 queued");
        assert!(Job::from_value(&json!({"status": "queued"})).unwrap_err().to_string().contains("without an id"));
    }

    #[test]
    fn progress_lines_say_phase_rows_rate_eta_and_backlog() {
        let job = Job::from_value(&sample()).unwrap();
        assert_eq!(
            job.progress_line(),
            "job j18c2f3a9b2e1 running, phase copy: 500/1000 rows copied (50.0%), 10 replayed, 1235 rows/s, \
             ETA 400ms, backlog 3"
        );
        assert_eq!(job.bar_message(), "10 replayed  1235 rows/s  ETA 400ms  backlog 3");

        let mut value = sample();
        value["phase"] = json!("verify");
        value["cancel_requested"] = json!(true);
        value["progress"]["rows_per_second"] = json!(null);
        value["progress"]["eta_seconds"] = json!(75.0);
        let job = Job::from_value(&value).unwrap();
        assert_eq!(
            job.progress_line(),
            "job j18c2f3a9b2e1 running (cancel requested), phase verify: 500/1000 rows copied (50.0%), \
             10 replayed, 0 verified, ETA 1m15s, backlog 3"
        );
        assert!(job.bar_message().ends_with("cancel requested"));
    }

    #[test]
    fn descriptions_name_ranges_and_shards() {
        let job = Job::from_value(&sample()).unwrap();
        assert_eq!(job.describe(), "move 80-c0 s1 → s2");
        let split = Job::from_value(&json!({"id": "j2", "kind": "split", "ranges": ["a0-c0"], "split_range": "80-c0",
                                             "split_at": "a000000000000000", "source": "s1", "target": "s4"}))
        .unwrap();
        assert_eq!(split.describe(), "split 80-c0 at a0, right half s1 → s4");
        assert_eq!(split.range_names(), ["80-c0"]);
        let split = Job::from_value(&json!({"id": "j2", "kind": "split", "ranges": [], "split_range": "80-c0",
                                             "split_at": "9f3a000000000001", "source": "s1", "target": "s1"}))
        .unwrap();
        assert_eq!(split.describe(), "split 80-c0 at 9f3a000000000001");
        assert_eq!(split.shards_text(), "s1");
        assert_eq!(split.progress_text(), "");
        let merge = Job::from_value(&json!({"id": "j3", "kind": "merge", "ranges": ["a0-c0"],
                                             "merge": ["80-a0", "a0-c0"], "source": "s2",
                                             "target": "s1"}))
        .unwrap();
        assert_eq!(merge.describe(), "merge 80-a0 + a0-c0 s2 → s1");
    }

    #[test]
    fn the_summary_has_status_rows_durations_and_cutover() {
        let job = Job::from_value(&finished()).unwrap();
        let text = render(|out| job.print_summary(out, &plain(), CREATED + 99_999));
        assert_eq!(
            text,
            "job       j18c2f3a9b2e1  move 80-c0 s1 → s2\n\
             status    succeeded\n\
             rows      1000 copied of 1000 (97.7 KiB), 10 replayed, 1000 verified, 1000 cleaned\n\
             duration  3.2s (precheck 67ms, copy 2.1s, cleanup 1.0s)\n\
             cutover   writes paused 42ms\n"
        );

        let mut value = sample();
        value["status"] = json!("failed");
        value["error"] = json!({"code": "verify_mismatch", "message": "3 rows differ"});
        value["finished_at_ms"] = json!(CREATED + 1000);
        let job = Job::from_value(&value).unwrap();
        let text = render(|out| job.print_summary(out, &plain(), CREATED + 99_999));
        assert!(text.contains("status    failed\n"), "{text}");
        assert!(text.contains("duration  1.0s (precheck 67ms, copy 923ms)\n"), "{text}");
        assert!(text.ends_with("error     3 rows differ (verify_mismatch)\n"), "{text}");
        assert!(!text.contains("cutover"), "{text}");
    }

    #[test]
    fn details_show_phases_with_durations() {
        let job = Job::from_value(&sample()).unwrap();
        let text = render(|out| job.print_details(out, &plain(), CREATED + 5_000));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "job        j18c2f3a9b2e1");
        assert!(lines.contains(&"status     running"), "{text}");
        assert!(lines.contains(&"moving     80-c0"), "{text}");
        assert!(lines.contains(&"settings   batches of 100 rows, unthrottled"), "{text}");
        assert!(lines.contains(&"created    2025-11-30 01:02:03 UTC (5s ago)"), "{text}");
        assert!(lines.contains(&"finished   -"), "{text}");
        assert!(lines.contains(&"duration   5.0s so far"), "{text}");
        let phases: Vec<Vec<&str>> =
            lines.iter().skip_while(|l| !l.starts_with("PHASE")).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(phases[0], ["PHASE", "STARTED", "DURATION"]);
        assert_eq!(phases[1], ["precheck", "+10ms", "67ms"]);
        assert_eq!(phases[2], ["copy", "+77ms", "4.9s", "(running)"]);
    }

    #[test]
    fn the_list_table_has_a_row_per_job() {
        let jobs = [Job::from_value(&sample()).unwrap(), Job::from_value(&finished()).unwrap()];
        let table = jobs_table(&jobs, &plain(), CREATED + 125_000);
        let text = render(|out| table.print(out));
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["ID", "KEYSPACE", "KIND", "RANGES", "SHARDS", "STATUS", "PHASE", "PROGRESS", "AGE"]);
        assert_eq!(
            rows[1],
            ["j18c2f3a9b2e1", "users", "move", "80-c0", "s1", "→", "s2", "running", "copy", "50.0%", "2m"]
        );
        assert_eq!(rows[2][7..], ["succeeded", "done", "100.0%", "2m"]);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(duration_text(0.4), "0ms");
        assert_eq!(duration_text(999.0), "999ms");
        assert_eq!(duration_text(2100.0), "2.1s");
        assert_eq!(duration_text(185_000.0), "3m05s");
        assert_eq!(duration_text(3_720_000.0), "1h02m");
        assert_eq!(duration_text(f64::NAN), "-");
        assert_eq!(age_text(59_999), "59s");
        assert_eq!(age_text(3 * 86_400_000), "3d");
        assert_eq!(rate_text(1234.5), "1235 rows/s");
        assert_eq!(rate_text(12_345.0), "12.3k rows/s");
        assert_eq!(rate_text(12_345_678.0), "12.3M rows/s");
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(100_000), "97.7 KiB");
        assert_eq!(bytes_text(3 << 30), "3.0 GiB");
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(CREATED), "2025-11-30 01:02:03 UTC");
    }
}
