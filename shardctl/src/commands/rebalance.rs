//! `shardctl rebalance`, `shardctl reshard` and `shardctl shard drain`: plans
//! made and started by shardd (`POST /v1/keyspaces/{ks}/rebalance`).
//!
//! shardd measures every range, plans the splits, moves and merges, and
//! starts one job per step. shardctl prints the plan (`--dry-run`), or the
//! started jobs (`--detach`), or waits for all of them: one progress bar
//! per job plus an overall one on a terminal, plain lines otherwise (both on
//! standard error). Ctrl-C only stops the waiting. Once the jobs have ended,
//! shardctl measures the keyspace again (a dry run) and prints a summary:
//! jobs, rows moved, duration, and the imbalance before and after.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::job_view::{Job, now_ms};
use super::jobs::{LINE_INTERVAL, POLL_FAILURE_GRACE, POLL_INTERVAL, job_path, note};
use super::plan_view::{CostUnit, DEFAULT_THRESHOLD, Rebalanced, RunSummary, ratio_text};
use super::{Online, Outcome, segment, text};
use crate::cli::{CostKind, DrainArgs, OutputFormat, PlanArgs, PlanRunArgs, RebalanceArgs, ReshardArgs};

/// What the plans are for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Goal {
    /// `rebalance`: bring every shard within the threshold.
    Balance,
    /// `shard drain`: empty this shard.
    Drain(String),
    /// `reshard`: at least this many ranges, spread.
    Reshard(u64),
}

/// One command's plan request and how to report on it.
struct Task<'a> {
    keyspace: &'a str,
    /// The request body, without `dry_run`.
    body: Value,
    goal: Goal,
    unit: CostUnit,
    threshold: f64,
    detach: bool,
    /// At most this many plans.
    max_rounds: usize,
    /// `shard drain`: shardd's answer to the state change.
    state: Option<Value>,
}

/// `shardctl rebalance`.
pub async fn run_rebalance(args: &RebalanceArgs, online: &Online) -> anyhow::Result<Outcome> {
    let task = Task::new(&args.keyspace, Goal::Balance, &args.plan, &args.run)?;
    if args.dry_run {
        return dry_run(online, &task).await;
    }
    execute(online, &task).await
}

/// `shardctl reshard`.
pub async fn run_reshard(args: &ReshardArgs, online: &Online) -> anyhow::Result<Outcome> {
    let mut task = Task::new(&args.keyspace, Goal::Reshard(args.shards), &args.plan, &args.run)?;
    task.body["min_ranges"] = json!(args.shards);
    let shards = list_shards(online, &args.keyspace).await?;
    let serving = shards.iter().filter(|s| s["state"] == "serving").count();
    if (serving as u64) < args.shards {
        note(&format!(
            "note: keyspace {0} has {serving} serving shards, fewer than {1}: add the new shards first \
             (`shardctl shard add ID -k {0} --primary URL`); ranges are only spread over serving shards",
            args.keyspace, args.shards
        ));
    }
    if args.dry_run {
        return dry_run(online, &task).await;
    }
    execute(online, &task).await
}

/// `shardctl shard drain`: marks the shard draining, then moves its ranges
/// away (unless `--no-move`, which the caller handles).
pub async fn run_drain(args: &DrainArgs, online: &Online) -> anyhow::Result<Outcome> {
    let (keyspace, id) = (args.keyspace.as_str(), args.id.as_str());
    let mut task = Task::new(keyspace, Goal::Drain(id.to_owned()), &args.plan, &args.run)?;
    task.body["drain"] = json!([id]);
    let shards = list_shards(online, keyspace).await?;
    let Some(shard) = shards.iter().find(|s| s["id"] == id) else {
        let ids: Vec<String> = shards.iter().map(|s| text(s, "id")).collect();
        anyhow::bail!("keyspace {keyspace} has no shard {id} (its shards: {})", ids.join(", "));
    };
    let owned: Vec<&str> = shard["ranges"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if args.dry_run {
        if owned.is_empty() {
            online.print(shard, |out| writeln!(out, "shard {id} owns no ranges: draining it moves nothing"))?;
            return Ok(Outcome::Success);
        }
        return dry_run(online, &task).await;
    }
    let changed = put_state(online, keyspace, id, "draining").await?;
    if online.format == OutputFormat::Table {
        let mut out = io::stdout().lock();
        writeln!(out, "shard {id} of keyspace {keyspace} is now draining (epoch {})", text(&changed, "epoch"))?;
        out.flush()?;
    }
    if owned.is_empty() {
        online.print(&changed, |out| {
            writeln!(
                out,
                "it owns no ranges: nothing to move; remove it with `shardctl shard remove {id} -k {keyspace}`"
            )
        })?;
        return Ok(Outcome::Success);
    }
    task.state = Some(changed);
    execute(online, &task).await.with_context(|| {
        format!(
            "shard {id} is now draining, but not all of its ranges were moved (see `shardctl jobs list -k \
             {keyspace}`; run `shardctl shard drain {id} -k {keyspace}` again)"
        )
    })
}

impl<'a> Task<'a> {
    fn new(keyspace: &'a str, goal: Goal, plan: &PlanArgs, run: &PlanRunArgs) -> anyhow::Result<Task<'a>> {
        Ok(Task {
            keyspace,
            body: request_body(plan, run)?,
            goal,
            unit: CostUnit::of(plan.cost),
            threshold: plan.threshold.unwrap_or(DEFAULT_THRESHOLD),
            detach: run.detach,
            max_rounds: usize::try_from(run.max_rounds).unwrap_or(usize::MAX),
            state: None,
        })
    }

    /// The command that makes this plan (for hints).
    fn command(&self) -> String {
        match &self.goal {
            Goal::Balance => format!("shardctl rebalance -k {}", self.keyspace),
            Goal::Drain(id) => format!("shardctl shard drain {id} -k {}", self.keyspace),
            Goal::Reshard(n) => format!("shardctl reshard -k {} --shards {n}", self.keyspace),
        }
    }

    /// Asks shardd for a plan (and, unless `dry_run`, to start it).
    async fn request(&self, online: &Online, dry_run: bool) -> anyhow::Result<Value> {
        let mut body = self.body.clone();
        body["dry_run"] = json!(dry_run);
        online.client.post(&format!("/v1/keyspaces/{}/rebalance", segment(self.keyspace)), &body).await
    }

    /// Why an empty plan is empty, for this goal.
    fn nothing_to_do(&self, view: &Rebalanced) -> String {
        let balance = view.plan.nothing_to_do(self.threshold);
        match &self.goal {
            Goal::Balance => balance,
            Goal::Drain(id) => match view.ranges.iter().filter(|r| &r.shard == id).count() {
                0 => format!("shard {id} owns no ranges; {balance}"),
                n => format!("shard {id} still owns {n} ranges, but nothing can take them; {balance}"),
            },
            Goal::Reshard(n) => {
                let ranges = view.ranges.len();
                if ranges as u64 >= *n {
                    format!("{ranges} ranges (at least {n}); {balance}")
                } else {
                    format!("{ranges} ranges, fewer than {n}, but none can be split (too few rows); {balance}")
                }
            }
        }
    }
}

/// The request body from the options (only what was given: shardd fills
/// in its defaults).
fn request_body(plan: &PlanArgs, run: &PlanRunArgs) -> anyhow::Result<Value> {
    let mut body = json!({});
    if let Some(cost) = plan.cost {
        body["cost"] = json!(cost.api_value());
    }
    if (plan.bytes_weight.is_some() || plan.load_weight.is_some()) && plan.cost != Some(CostKind::Mix) {
        anyhow::bail!("--bytes-weight and --load-weight weigh the parts of a mixed cost: add --cost mix");
    }
    let threshold = plan.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if let Some(target) = plan.target.filter(|target| *target > threshold) {
        anyhow::bail!(
            "--target {target} is above the threshold {threshold}: the target must be at most the threshold \
             (raise --threshold, or lower --target)"
        );
    }
    let fields = [
        ("bytes_weight", plan.bytes_weight.map(|v| json!(v))),
        ("load_weight", plan.load_weight.map(|v| json!(v))),
        ("threshold", plan.threshold.map(|v| json!(v))),
        ("target", plan.target.map(|v| json!(v))),
        ("max_steps", plan.max_steps.map(|v| json!(v))),
        ("zones", plan.zones.map(|v| json!(v.api_value()))),
        ("merge_below", plan.merge_below.map(|v| json!(v))),
        ("batch_rows", run.batch_rows.map(|v| json!(v))),
        ("rows_per_second", run.rows_per_second.map(|v| json!(v))),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    Ok(body)
}

async fn list_shards(online: &Online, keyspace: &str) -> anyhow::Result<Vec<Value>> {
    let list = online.client.get(&format!("/v1/keyspaces/{}/shards", segment(keyspace))).await?;
    Ok(list["shards"].as_array().cloned().unwrap_or_default())
}

async fn put_state(online: &Online, keyspace: &str, id: &str, state: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/keyspaces/{}/shards/{}/state", segment(keyspace), segment(id));
    online.client.put(&path, &json!({ "state": state })).await
}

/// Prints the plan of a dry run (or why there is none).
async fn dry_run(online: &Online, task: &Task<'_>) -> anyhow::Result<Outcome> {
    let value = task.request(online, true).await?;
    let view = Rebalanced::from_value(&value)?;
    online.print(&value, |out| print_plan(out, task, &view))?;
    Ok(Outcome::Success)
}

fn print_plan(out: &mut dyn Write, task: &Task<'_>, view: &Rebalanced) -> io::Result<()> {
    if view.plan.steps.is_empty() {
        return writeln!(out, "{}", task.nothing_to_do(view));
    }
    let keyspace = if view.keyspace.is_empty() { task.keyspace } else { view.keyspace.as_str() };
    let steps = plural(view.plan.steps.len(), "step");
    writeln!(out, "plan for keyspace {keyspace}: {steps} ({})", view.plan.step_counts())?;
    writeln!(out)?;
    view.plan.print(out, task.unit, task.threshold)
}

/// Starts the plan, then prints its jobs (`--detach`) or waits for them
/// and prints the summary. Once all jobs of a plan have succeeded, the
/// keyspace is measured again (a dry run); while that finds a new plan, it
/// is started too, up to `max_rounds` plans.
async fn execute(online: &Online, task: &Task<'_>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let rounds = task.max_rounds;
    let mut first: Option<(Value, Rebalanced)> = None;
    let mut ended: Vec<(Value, Job)> = Vec::new();
    let mut planned_after = None;
    let mut measured: Option<anyhow::Result<(Value, Rebalanced)>> = None;
    let mut rounds_run = 0;
    for round in 1..=rounds {
        let value = task.request(online, false).await?;
        let view = Rebalanced::from_value(&value)?;
        if view.jobs.is_empty() {
            if first.is_none() {
                online.print(&value, |out| writeln!(out, "{}", task.nothing_to_do(&view)))?;
                return Ok(Outcome::Success);
            }
            break;
        }
        rounds_run = round;
        if task.detach {
            online.print(&value, |out| {
                print_plan(out, task, &view)?;
                writeln!(out)?;
                writeln!(out, "started {} in keyspace {}:", jobs_text(view.jobs.len()), task.keyspace)?;
                for job in &view.jobs {
                    writeln!(out, "  {}  {}", job.id, job.describe())?;
                }
                writeln!(
                    out,
                    "follow them with `shardctl jobs wait {}` (one job) or `shardctl jobs list -k {}`",
                    view.jobs[0].id, task.keyspace
                )
            })?;
            return Ok(Outcome::Success);
        }
        announce(task, round, &view);
        let initial: Vec<(Value, Job)> =
            value["jobs"].as_array().into_iter().flatten().cloned().zip(view.jobs.iter().cloned()).collect();
        match wait_all(online, task.keyspace, initial, view.planned_rows()).await? {
            Waited::Ended(jobs) => ended.extend(jobs),
            Waited::Interrupted(unfinished) => {
                let example = unfinished.first().map_or("ID", String::as_str);
                note(&format!(
                    "detached: {} keep{} running in shardd ({}); follow with `shardctl jobs wait {example}`",
                    jobs_text(unfinished.len()),
                    if unfinished.len() == 1 { "s" } else { "" },
                    unfinished.join(", ")
                ));
                return Ok(Outcome::Interrupted);
            }
        }
        planned_after = view.plan.after.imbalance;
        if first.is_none() {
            first = Some((value, view));
        }
        // Measure again: a dry run with the same options.
        let again = match task.request(online, true).await {
            Ok(value) => Rebalanced::from_value(&value).map(|view| (value, view)),
            Err(err) => Err(err),
        };
        let all_succeeded = ended.iter().all(|(_, job)| job.status == "succeeded");
        let more = all_succeeded && round < rounds && matches!(&again, Ok((_, view)) if !view.plan.steps.is_empty());
        if more && let Ok((_, view)) = &again {
            note(&format!(
                "measured again: imbalance {}, {} ranges; a new plan has {} (round {} of at most {rounds})",
                ratio_text(view.plan.before.imbalance),
                view.ranges.len(),
                plural(view.plan.steps.len(), "step"),
                round + 1
            ));
        }
        measured = Some(again);
        if !more {
            break;
        }
    }
    let Some((first_value, first_view)) = first else { unreachable!("the first round either returned or ran jobs") };
    let measured = match measured {
        Some(Ok(measured)) => Some(measured),
        Some(Err(err)) => {
            note(&format!("could not measure the keyspace after the jobs: {err:#}"));
            None
        }
        None => None,
    };
    let jobs: Vec<Job> = ended.iter().map(|(_, job)| job.clone()).collect();
    let summary = RunSummary {
        jobs: &jobs,
        before: first_view.plan.before.imbalance,
        planned: planned_after,
        measured: measured.as_ref().and_then(|(_, view)| view.plan.before.imbalance),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let mut result = first_value;
    result["jobs"] = Value::Array(ended.iter().map(|(value, _)| value.clone()).collect());
    result["measured"] = measured.as_ref().map_or(Value::Null, |(value, _)| value["plan"]["before"].clone());
    result["rounds"] = json!(rounds_run);
    if let Some(state) = &task.state {
        result["shard_state"] = state.clone();
    }
    online.print(&result, |out| {
        summary.print(out, &online.palette, now_ms())?;
        if rounds_run > 1 {
            writeln!(
                out,
                "plans      {rounds_run} (each measured and started once the previous one's jobs succeeded)"
            )?;
        }
        print_goal(out, task, measured.as_ref().map(|(_, view)| view))
    })?;
    if online.format == OutputFormat::Json {
        for job in jobs.iter().filter(|job| job.status != "succeeded") {
            let why = job.error_text().map(|e| format!(": {e}")).unwrap_or_default();
            note(&format!("job {} {}{why}", job.id, job.status));
        }
    }
    Ok(if summary.all_succeeded() { Outcome::Success } else { Outcome::Negative })
}

/// The summary's last lines: what became of the goal.
fn print_goal(out: &mut dyn Write, task: &Task<'_>, measured: Option<&Rebalanced>) -> io::Result<()> {
    let Some(view) = measured else { return Ok(()) };
    match &task.goal {
        Goal::Balance => {}
        Goal::Drain(id) => {
            let owned: Vec<&str> = view.ranges.iter().filter(|r| &r.shard == id).map(|r| r.range.as_str()).collect();
            if owned.is_empty() {
                writeln!(
                    out,
                    "shard      {id} owns nothing now: remove it with `shardctl shard remove {id} -k {}`",
                    task.keyspace
                )?;
            } else {
                writeln!(out, "shard      {id} still owns {}: run `{}` again", owned.join(" "), task.command())?;
            }
        }
        Goal::Reshard(n) => {
            let ranges = view.ranges.len();
            let shards = view.shards_with_ranges();
            let asked =
                if ranges as u64 >= *n { format!("at least {n} asked") } else { format!("fewer than {n} asked") };
            writeln!(out, "ranges     {ranges} over {shards} shards ({asked})")?;
        }
    }
    if !view.plan.steps.is_empty() {
        writeln!(
            out,
            "next       a new plan has {} (imbalance {} → {}): run `{}` again",
            plural(view.plan.steps.len(), "step"),
            ratio_text(view.plan.before.imbalance),
            ratio_text(view.plan.after.imbalance),
            task.command()
        )?;
    }
    Ok(())
}

/// `1 job`, `3 jobs`.
fn jobs_text(n: usize) -> String {
    plural(n, "job")
}

/// `1 step`, `3 steps`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// Says on standard error which jobs started.
fn announce(task: &Task<'_>, round: usize, view: &Rebalanced) {
    let rows = view.plan.rows_moved.map(|r| format!(", {r} rows to move")).unwrap_or_default();
    let round = if round > 1 { format!(" (round {round})") } else { String::new() };
    note(&format!(
        "started {} in keyspace {}{round}: imbalance {} → {} planned{rows}",
        jobs_text(view.jobs.len()),
        task.keyspace,
        ratio_text(view.plan.before.imbalance),
        ratio_text(view.plan.after.imbalance),
    ));
    for job in &view.jobs {
        note(&format!("  {}  {}", job.id, job.describe()));
    }
}

/// How waiting for a plan's jobs ended.
enum Waited {
    /// Every job ended; here they are as they ended.
    Ended(Vec<(Value, Job)>),
    /// Ctrl-C: these jobs had not ended.
    Interrupted(Vec<String>),
}

/// Waits for every job, showing their progress; Ctrl-C stops waiting.
async fn wait_all(
    online: &Online,
    keyspace: &str,
    mut latest: Vec<(Value, Job)>,
    planned_rows: Vec<u64>,
) -> anyhow::Result<Waited> {
    let mut display = Display::new(online.format, &latest, planned_rows);
    let interrupted = async {
        // Without a signal handler, waiting simply cannot be interrupted.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let polled = tokio::select! {
        polled = poll_all(online, keyspace, &mut latest, &mut display) => Some(polled),
        () = interrupted => None,
    };
    match polled {
        Some(Ok(())) => {
            display.finish();
            Ok(Waited::Ended(latest))
        }
        Some(Err(err)) => {
            display.abandon();
            Err(err)
        }
        None => {
            display.abandon();
            let unfinished = latest.iter().filter(|(_, job)| !job.is_finished()).map(|(_, job)| job.id.clone());
            Ok(Waited::Interrupted(unfinished.collect()))
        }
    }
}

/// Polls the keyspace's jobs until all of `latest` have ended.
async fn poll_all(
    online: &Online,
    keyspace: &str,
    latest: &mut [(Value, Job)],
    display: &mut Display,
) -> anyhow::Result<()> {
    let list_path = format!("/v1/jobs?keyspace={}", segment(keyspace));
    let mut failing_since: Option<Instant> = None;
    loop {
        match fetch(online, &list_path, latest).await {
            Ok(()) => {
                if failing_since.take().is_some() {
                    display.note("shardd answers again");
                }
                display.update(latest);
                if latest.iter().all(|(_, job)| job.is_finished()) {
                    return Ok(());
                }
            }
            Err(err) => {
                let since = *failing_since.get_or_insert_with(|| {
                    display.note(&format!("{err:#}; retrying"));
                    Instant::now()
                });
                if since.elapsed() >= POLL_FAILURE_GRACE {
                    let unfinished: Vec<&str> =
                        latest.iter().filter(|(_, job)| !job.is_finished()).map(|(_, job)| job.id.as_str()).collect();
                    return Err(err.context(format!(
                        "stopped waiting for jobs {}, which may still be running: follow them with \
                         `shardctl jobs list -k {keyspace}`",
                        unfinished.join(", ")
                    )));
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads the unfinished jobs of `latest` again: from the keyspace's list,
/// one by one for any the list leaves out.
async fn fetch(online: &Online, list_path: &str, latest: &mut [(Value, Job)]) -> anyhow::Result<()> {
    let list = online.client.get(list_path).await?;
    let mut by_id: HashMap<String, Value> =
        list["jobs"].as_array().into_iter().flatten().map(|job| (text(job, "id"), job.clone())).collect();
    for slot in latest.iter_mut().filter(|(_, job)| !job.is_finished()) {
        let value = match by_id.remove(&slot.1.id) {
            Some(value) => value,
            None => online.client.get(&job_path(&slot.1.id)).await?,
        };
        let job = Job::from_value(&value)?;
        *slot = (value, job);
    }
    Ok(())
}

/// `2/5 jobs ended, 1 running, 2 queued; 300/900 rows copied`.
fn overall_text(jobs: &[(Value, Job)], planned_rows: &[u64]) -> String {
    let count = |statuses: &[&str]| jobs.iter().filter(|(_, j)| statuses.contains(&j.status.as_str())).count();
    let ended = jobs.iter().filter(|(_, j)| j.is_finished()).count();
    let running = count(&["running", "cancelling"]);
    let queued = count(&["queued"]);
    let copied: u64 = jobs.iter().map(|(_, j)| j.progress.rows_copied.unwrap_or(0)).sum();
    let total: u64 = jobs
        .iter()
        .enumerate()
        .map(|(i, (_, j))| j.progress.rows_total.unwrap_or_else(|| planned_rows.get(i).copied().unwrap_or(0)))
        .sum();
    format!("{ended}/{} jobs ended, {running} running, {queued} queued; {copied}/{total} rows copied", jobs.len())
}

/// Where progress goes while waiting: bars on a terminal, lines otherwise.
enum Display {
    Bars { multi: MultiProgress, overall: ProgressBar, bars: Vec<JobBar>, planned_rows: Vec<u64> },
    Lines { last: Vec<Option<(String, String, bool)>>, ended: usize, printed_at: Instant, planned_rows: Vec<u64> },
}

/// One job's bar.
struct JobBar {
    bar: ProgressBar,
    /// Whether it shows rows (once the rows to copy are counted).
    counting: bool,
    done: bool,
}

/// A job waiting for its rows to be counted.
const JOB_SPINNER: &str = "{spinner} {prefix:<40!} {msg}";
/// A job copying rows.
const JOB_BAR: &str = "{spinner} {prefix:<40!} [{bar:20}] {pos}/{len} rows  {msg}";
/// A job that has ended.
const JOB_DONE: &str = "  {prefix:<40!} {msg}";
/// The overall bar: jobs ended of all.
const OVERALL_BAR: &str = "{spinner} {prefix:<40!} [{bar:20}] {msg}";

impl Display {
    fn new(format: OutputFormat, jobs: &[(Value, Job)], planned_rows: Vec<u64>) -> Display {
        if format == OutputFormat::Table && io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bars = jobs
                .iter()
                .map(|(_, job)| {
                    let bar = ProgressBar::new_spinner().with_style(style(JOB_SPINNER)).with_prefix(format!(
                        "{} {}",
                        job.id,
                        job.describe()
                    ));
                    JobBar { bar: multi.add(bar), counting: false, done: false }
                })
                .collect();
            let overall = ProgressBar::new(jobs.len() as u64)
                .with_style(style(OVERALL_BAR).progress_chars("=> "))
                .with_prefix("all jobs");
            let overall = multi.add(overall);
            overall.enable_steady_tick(Duration::from_millis(120));
            Display::Bars { multi, overall, bars, planned_rows }
        } else {
            Display::Lines { last: vec![None; jobs.len()], ended: 0, printed_at: Instant::now(), planned_rows }
        }
    }

    fn update(&mut self, jobs: &[(Value, Job)]) {
        match self {
            Display::Bars { overall, bars, planned_rows, .. } => {
                for (slot, (_, job)) in bars.iter_mut().zip(jobs) {
                    update_bar(slot, job);
                }
                overall.set_position(jobs.iter().filter(|(_, j)| j.is_finished()).count() as u64);
                overall.set_message(overall_text(jobs, planned_rows));
            }
            Display::Lines { last, ended, printed_at, planned_rows } => {
                for (seen, (_, job)) in last.iter_mut().zip(jobs) {
                    let state = (job.status.clone(), job.phase.clone(), job.cancel_requested);
                    if seen.as_ref() != Some(&state) {
                        note(&job.progress_line());
                        *seen = Some(state);
                    }
                }
                let now_ended = jobs.iter().filter(|(_, j)| j.is_finished()).count();
                if now_ended != *ended || printed_at.elapsed() >= LINE_INTERVAL {
                    note(&format!("all jobs: {}", overall_text(jobs, planned_rows)));
                    *ended = now_ended;
                    *printed_at = Instant::now();
                }
            }
        }
    }

    /// A message that does not disturb the bars.
    fn note(&self, message: &str) {
        match self {
            Display::Bars { multi, .. } => multi.suspend(|| note(message)),
            Display::Lines { .. } => note(message),
        }
    }

    fn finish(&self) {
        if let Display::Bars { multi, overall, bars, .. } = self {
            for slot in bars {
                slot.bar.finish_and_clear();
            }
            overall.finish_and_clear();
            let _ = multi.clear();
        }
    }

    /// Leaves the bars as they were, and the cursor on the next line.
    fn abandon(&self) {
        if let Display::Bars { overall, bars, .. } = self {
            for slot in bars {
                slot.bar.abandon();
            }
            overall.abandon();
            note("");
        }
    }
}

fn update_bar(slot: &mut JobBar, job: &Job) {
    if slot.done {
        return;
    }
    if job.is_finished() {
        slot.bar.set_style(style(JOB_DONE));
        let error = job.error_text().map(|e| format!(": {e}")).unwrap_or_default();
        slot.bar.finish_with_message(format!("{}{error}", job.status));
        slot.done = true;
        return;
    }
    if let Some(total) = job.progress.rows_total.filter(|total| *total > 0) {
        if !slot.counting {
            slot.bar.set_style(style(JOB_BAR).progress_chars("=> "));
            slot.counting = true;
        }
        let copied = job.progress.rows_copied.unwrap_or(0);
        slot.bar.set_length(total.max(copied));
        slot.bar.set_position(copied);
    }
    let phase = if job.phase.is_empty() { job.status.as_str() } else { job.phase.as_str() };
    let details = job.bar_message();
    slot.bar.set_message(if details.is_empty() { phase.to_owned() } else { format!("{phase}  {details}") });
    slot.bar.tick();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("the template is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, ZoneChoice};
    use clap::Parser;

    fn body(args: &[&str]) -> anyhow::Result<Value> {
        let mut line = vec!["shardctl", "rebalance", "-k", "users"];
        line.extend(args);
        let cli = Cli::try_parse_from(line).unwrap();
        let Command::Rebalance(args) = cli.command else { panic!("not rebalance") };
        request_body(&args.plan, &args.run)
    }

    #[test]
    fn the_request_carries_only_what_was_given() {
        assert_eq!(body(&[]).unwrap(), json!({}));
        assert_eq!(
            body(&[
                "--cost",
                "mix",
                "--bytes-weight",
                "0.7",
                "--load-weight",
                "0.3",
                "--threshold",
                "1.2",
                "--target",
                "1.1",
                "--max-steps",
                "5",
                "--zones",
                "same-zone",
                "--merge-below",
                "0.1",
                "--batch-rows",
                "50",
                "--rows-per-second",
                "300"
            ])
            .unwrap(),
            json!({"cost": "mix", "bytes_weight": 0.7, "load_weight": 0.3, "threshold": 1.2, "target": 1.1,
                   "max_steps": 5, "zones": "same_zone", "merge_below": 0.1, "batch_rows": 50,
                   "rows_per_second": 300})
        );
        assert_eq!(ZoneChoice::Any.api_value(), "any");
    }

    #[test]
    fn contradictory_options_are_refused_before_asking_shardd() {
        let err = body(&["--target", "1.2"]).unwrap_err().to_string();
        assert!(err.contains("--target 1.2 is above the threshold 1.1"), "{err}");
        assert!(body(&["--target", "1.2", "--threshold", "1.3"]).is_ok());
        let err = body(&["--bytes-weight", "1"]).unwrap_err().to_string();
        assert!(err.contains("add --cost mix"), "{err}");
        for bad in [
            &["--threshold", "0.9"][..],
            &["--threshold", "x"],
            &["--target", "NaN"],
            &["--merge-below", "0"],
            &["--max-steps", "0"],
            &["--zones", "same_zone"],
            &["--cost", "cpu"],
            &["--dry-run", "--detach"],
        ] {
            let mut line = vec!["shardctl", "rebalance", "-k", "users"];
            line.extend(bad);
            assert!(Cli::try_parse_from(line).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["shardctl", "reshard", "-k", "u", "--shards", "0"]).is_err());
        assert!(Cli::try_parse_from(["shardctl", "reshard", "-k", "u"]).is_err(), "--shards is required");
        assert!(Cli::try_parse_from(["shardctl", "shard", "drain", "s1", "-k", "u", "--no-move", "--detach"]).is_err());
        let cli = Cli::try_parse_from(["shardctl", "shard", "drain", "s1", "-k", "u", "--no-move"]).unwrap();
        let Command::Shard(crate::cli::ShardCommand::Drain(drain)) = cli.command else { panic!("not drain") };
        assert!(drain.no_move && !drain.dry_run && !drain.run.detach);
    }

    #[test]
    fn the_bar_templates_are_valid() {
        for template in [JOB_SPINNER, JOB_BAR, JOB_DONE, OVERALL_BAR] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn the_overall_line_counts_jobs_and_rows() {
        let job = |status: &str, progress: Value| {
            let value = json!({"id": "j", "status": status, "progress": progress});
            (value.clone(), Job::from_value(&value).unwrap())
        };
        let jobs = [
            job("succeeded", json!({"rows_total": 400, "rows_copied": 400})),
            job("running", json!({"rows_total": 200, "rows_copied": 50})),
            job("queued", json!(null)),
        ];
        assert_eq!(overall_text(&jobs, &[400, 200, 300]), "1/3 jobs ended, 1 running, 1 queued; 450/900 rows copied");
        assert_eq!(overall_text(&jobs, &[]), "1/3 jobs ended, 1 running, 1 queued; 450/600 rows copied");
    }
}
