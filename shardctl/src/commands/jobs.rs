//! `shardctl move|split|merge` and `shardctl jobs list|show|cancel|wait`:
//! data-movement jobs run by shardd (`/v1/keyspaces/{ks}/jobs`, `/v1/jobs`).
//!
//! Creating a job waits for it by default: shardctl polls `GET /v1/jobs/{id}`
//! until the job ends, with a progress bar on a terminal and plain lines
//! otherwise (both on standard error), then prints a summary (or, with
//! `-o json`, the final job). Ctrl-C only stops the waiting: the job keeps
//! running in shardd.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use shardlib::range::KeyRange;

use super::job_view::{Job, jobs_table, now_ms};
use super::{Online, Outcome, segment};
use crate::cli::{JobOptions, JobsCommand, MergeArgs, MoveArgs, OutputFormat, SplitArgs, SplitAt};
use crate::output::print_json;

/// How often a waiting shardctl asks for the job.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Without a terminal: at most one progress line this often (and one per phase).
pub(super) const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How long polls may keep failing (shardd restarting, a leader change)
/// before shardctl gives up waiting.
pub(super) const POLL_FAILURE_GRACE: Duration = Duration::from_secs(15);

/// `shardctl move`.
pub async fn run_move(args: &MoveArgs, online: &Online) -> anyhow::Result<Outcome> {
    let ranges: Vec<String> = args.ranges.iter().map(KeyRange::to_string).collect();
    let body = json!({ "kind": "move", "ranges": ranges, "to": args.to });
    create(online, &args.keyspace, body, &args.job).await
}

/// `shardctl split`.
pub async fn run_split(args: &SplitArgs, online: &Online) -> anyhow::Result<Outcome> {
    if let SplitAt::Point(point) = args.at {
        check_split_point(&args.range, point)?;
    }
    let mut body = json!({ "kind": "split", "range": args.range.to_string(), "at": args.at.api_value() });
    if let Some(to) = &args.to {
        body["to"] = json!(to);
    }
    create(online, &args.keyspace, body, &args.job).await
}

/// `shardctl merge`.
pub async fn run_merge(args: &MergeArgs, online: &Online) -> anyhow::Result<Outcome> {
    let (left, right) = (args.left, args.right);
    if left.end() != Some(right.start()) && right.end() != Some(left.start()) {
        anyhow::bail!(
            "cannot merge {left} and {right}: they are not neighbours (one must end where the other starts, \
             e.g. `merge 80-a0 a0-c0`)"
        );
    }
    let body = json!({ "kind": "merge", "ranges": [args.left.to_string(), args.right.to_string()] });
    create(online, &args.keyspace, body, &args.job).await
}

/// A split point must fall strictly inside the range, or one half is empty.
fn check_split_point(range: &KeyRange, point: u64) -> anyhow::Result<()> {
    let inside = point > range.start() && range.end().is_none_or(|end| point < end);
    if !inside {
        anyhow::bail!(
            "--at {} is not inside range {range}: the split point must be after its start and before its end",
            crate::cli::hex_bound(point)
        );
    }
    Ok(())
}

/// `shardctl jobs …`.
pub async fn run(command: JobsCommand, online: &Online) -> anyhow::Result<Outcome> {
    match command {
        JobsCommand::List { keyspace } => {
            let path = match &keyspace {
                Some(keyspace) => format!("/v1/jobs?keyspace={}", segment(keyspace)),
                None => "/v1/jobs".to_owned(),
            };
            let list = online.client.get(&path).await?;
            let jobs =
                list["jobs"].as_array().into_iter().flatten().map(Job::from_value).collect::<Result<Vec<_>, _>>()?;
            online.print(&list, |out| {
                if jobs.is_empty() {
                    return match &keyspace {
                        Some(keyspace) => writeln!(out, "no jobs in keyspace {keyspace}"),
                        None => writeln!(out, "no jobs"),
                    };
                }
                jobs_table(&jobs, &online.palette, now_ms()).print(out)
            })?;
            Ok(Outcome::Success)
        }
        JobsCommand::Show { id } => {
            let shown = online.client.get(&job_path(&id)).await?;
            let job = Job::from_value(&shown)?;
            online.print(&shown, |out| job.print_details(out, &online.palette, now_ms()))?;
            Ok(Outcome::Success)
        }
        JobsCommand::Cancel { id, wait } => {
            let answer = online.client.post(&format!("{}/cancel", job_path(&id)), &json!({})).await?;
            let job = Job::from_value(&answer)?;
            if wait {
                note(&format!("cancel requested for job {id}; waiting for it to stop"));
                return follow(online, &job.id, Expect::Cancelled).await;
            }
            online.print(&answer, |out| {
                writeln!(out, "cancel requested for job {} ({}, phase {})", job.id, job.status, job.phase)?;
                writeln!(out, "see it end with `shardctl jobs wait {}`", job.id)
            })?;
            Ok(Outcome::Success)
        }
        JobsCommand::Wait { id } => follow(online, &id, Expect::Succeeded).await,
    }
}

pub(super) fn job_path(id: &str) -> String {
    format!("/v1/jobs/{}", segment(id))
}

/// Creates a job, then prints it (`--detach`) or waits for it.
async fn create(online: &Online, keyspace: &str, mut body: Value, options: &JobOptions) -> anyhow::Result<Outcome> {
    if let Some(batch_rows) = options.batch_rows {
        body["batch_rows"] = json!(batch_rows);
    }
    if let Some(rows_per_second) = options.rows_per_second {
        body["rows_per_second"] = json!(rows_per_second);
    }
    let created = online.client.post(&format!("/v1/keyspaces/{}/jobs", segment(keyspace)), &body).await?;
    let job = Job::from_value(&created)?;
    if options.detach {
        online.print(&created, |out| {
            writeln!(out, "created job {}: {} ({})", job.id, job.describe(), job.status)?;
            writeln!(out, "follow it with `shardctl jobs wait {0}`, stop it with `shardctl jobs cancel {0}`", job.id)
        })?;
        return Ok(Outcome::Success);
    }
    note(&format!("started job {} in keyspace {keyspace}: {}", job.id, job.describe()));
    follow(online, &job.id, Expect::Succeeded).await
}

/// Which end of a job counts as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The job should succeed (`move`, `split`, `merge`, `jobs wait`).
    Succeeded,
    /// The job should end cancelled (`jobs cancel --wait`).
    Cancelled,
}

/// Waits for job `id` to end, showing its progress; prints the summary (or
/// the final job as JSON) and returns the outcome. Ctrl-C stops waiting.
async fn follow(online: &Online, id: &str, expect: Expect) -> anyhow::Result<Outcome> {
    let mut display = Display::new(online.format);
    let interrupted = async {
        // Without a signal handler, waiting simply cannot be interrupted.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let ended = tokio::select! {
        ended = poll_until_finished(online, id, &mut display) => Some(ended),
        () = interrupted => None,
    };
    let (value, job) = match ended {
        Some(Ok(ended)) => ended,
        Some(Err(err)) => {
            display.abandon();
            return Err(err);
        }
        None => {
            display.abandon();
            note(&format!(
                "detached: job {id} keeps running in shardd; follow it with `shardctl jobs wait {id}`, \
                 stop it with `shardctl jobs cancel {id}`"
            ));
            return Ok(Outcome::Interrupted);
        }
    };
    display.finish();
    let wanted = match expect {
        Expect::Succeeded => "succeeded",
        Expect::Cancelled => "cancelled",
    };
    match online.format {
        OutputFormat::Json => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            print_json(&mut out, &value)?;
            out.flush()?;
            if job.status != wanted {
                let why = job.error_text().map(|e| format!(": {e}")).unwrap_or_default();
                note(&format!("job {} {}{why}", job.id, job.status));
            }
        }
        OutputFormat::Table => online.print(&value, |out| job.print_summary(out, &online.palette, now_ms()))?,
    }
    Ok(if job.status == wanted { Outcome::Success } else { Outcome::Negative })
}

/// Polls the job until it has ended; returns it as shardd sent it and as read.
async fn poll_until_finished(online: &Online, id: &str, display: &mut Display) -> anyhow::Result<(Value, Job)> {
    let path = job_path(id);
    let mut seen = false;
    let mut failing_since: Option<Instant> = None;
    loop {
        match online.client.get(&path).await {
            Ok(value) => {
                let job = Job::from_value(&value)?;
                if failing_since.take().is_some() {
                    display.note("shardd answers again");
                }
                seen = true;
                display.update(&job);
                if job.is_finished() {
                    return Ok((value, job));
                }
            }
            // A job that cannot be read at all (a wrong id) is an error at once.
            Err(err) if !seen => return Err(err),
            Err(err) => {
                let since = *failing_since.get_or_insert_with(|| {
                    display.note(&format!("{err:#}; retrying"));
                    Instant::now()
                });
                if since.elapsed() >= POLL_FAILURE_GRACE {
                    return Err(err.context(format!(
                        "stopped waiting for job {id}, which may still be running: \
                         follow it with `shardctl jobs wait {id}`"
                    )));
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Where progress goes while waiting: a bar on a terminal, lines otherwise.
enum Display {
    Bar { bar: ProgressBar, phase: String, counting: bool },
    Lines { last: Option<(String, String, bool)>, printed_at: Instant },
}

impl Display {
    fn new(format: OutputFormat) -> Display {
        if format == OutputFormat::Table && io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(spinner_style())
                .with_prefix("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Bar { bar, phase: String::new(), counting: false }
        } else {
            Display::Lines { last: None, printed_at: Instant::now() }
        }
    }

    fn update(&mut self, job: &Job) {
        match self {
            Display::Bar { bar, phase, counting } => {
                if *phase != job.phase {
                    if !phase.is_empty() {
                        bar.println(format!("  {phase} done"));
                    }
                    phase.clone_from(&job.phase);
                    bar.set_prefix(job.phase.clone());
                }
                // A bar once the rows to copy are counted; a spinner before.
                if let Some(total) = job.progress.rows_total.filter(|total| *total > 0) {
                    if !*counting {
                        bar.set_style(bar_style());
                        *counting = true;
                    }
                    let copied = job.progress.rows_copied.unwrap_or(0);
                    bar.set_length(total.max(copied));
                    bar.set_position(copied);
                }
                bar.set_message(job.bar_message());
            }
            Display::Lines { last, printed_at } => {
                let state = (job.status.clone(), job.phase.clone(), job.cancel_requested);
                let changed = last.as_ref() != Some(&state);
                if changed || printed_at.elapsed() >= LINE_INTERVAL {
                    note(&job.progress_line());
                    *last = Some(state);
                    *printed_at = Instant::now();
                }
            }
        }
    }

    /// A message that does not disturb the bar.
    fn note(&self, message: &str) {
        match self {
            Display::Bar { bar, .. } => bar.suspend(|| note(message)),
            Display::Lines { .. } => note(message),
        }
    }

    fn finish(&self) {
        if let Display::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }

    /// Leaves the bar as it was, and the cursor on the next line.
    fn abandon(&self) {
        if let Display::Bar { bar, .. } = self {
            bar.abandon();
            note("");
        }
    }
}

pub(super) fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:<10} {msg}").expect("the template is valid")
}

pub(super) fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:<10} [{bar:30}] {pos}/{len} rows ({percent}%)  {msg}")
        .expect("the template is valid")
        .progress_chars("=> ")
}

/// A line on standard error (progress and notes stay off standard output).
pub(super) fn note(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(name: &str) -> KeyRange {
        name.parse().unwrap()
    }

    #[test]
    fn split_points_must_fall_inside_the_range() {
        assert!(check_split_point(&range("80-c0"), 0xa0 << 56).is_ok());
        assert!(check_split_point(&range("c0-"), 0xf0 << 56).is_ok());
        assert!(check_split_point(&range("-80"), 1).is_ok());
        for (name, point) in [("80-c0", 0x80 << 56), ("80-c0", 0xc0 << 56), ("80-c0", 0xd0 << 56), ("80-", 0x10 << 56)]
        {
            let err = check_split_point(&range(name), point).unwrap_err().to_string();
            assert!(err.contains(&format!("is not inside range {name}")), "{err}");
        }
    }
}
