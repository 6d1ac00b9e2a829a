//! Runs one job through its phases, saving its state in the store after
//! every step, so that a new leader resumes it where this one stopped.
//!
//! Every phase is idempotent: it is safe to run it again from its start,
//! whatever part of it had happened before a crash. Where a step changes the
//! topology (freeze, hand-over), the runner first looks at the topology to
//! see whether the step already happened.
//!
//! Errors of the databases are retried with backoff for
//! [`MoverOptions::retry_for`]; then, before hand-over, the job is undone
//! (ranges unfrozen, fence and capture dropped, target cleaned) and ends
//! `failed`; after hand-over it cannot be undone, so cleanup keeps being
//! retried by every leader until it completes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardlib::store::{Expect, StoreError, TopologyStore};
use shardlib::topology::{RangeState, Shard};
use tokio_util::sync::CancellationToken;

use super::engine::{ChangedKey, Engine, EngineError, EngineOptions, MoveSpec, Verified};
use super::failpoint;
use super::job::{COLLECTION, Job, JobKind, Phase, Status, now_ms};
use crate::config::MoverOptions;
use crate::leader::LeaderHandle;
use crate::metrics::Metrics;
use crate::service::{ServiceError, TopologyService, hash_ranges, keyspace_of};

/// How often progress is written to the store while copying.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// More keys than this changed since verification: verify everything again
/// inside the fence instead of key by key.
const MAX_TRACKED_KEYS: usize = 200_000;

/// Why a runner stopped without finishing the job.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This process stopped leading (or is shutting down); the next leader resumes.
    #[error("stopped: {0}")]
    Stopped(String),
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// Worth retrying (database or store unreachable, lock timeouts).
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help; the job is undone (before hand-over).
    #[error("{0}")]
    Fatal(String),
    /// Leadership lost or shutdown.
    #[error("{0}")]
    Stop(String),
    /// An operator asked to cancel.
    #[error("cancel requested")]
    Cancel,
}

impl From<EngineError> for StepError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Database { .. } => StepError::Transient(error.to_string()),
            EngineError::Precheck(_) => StepError::Fatal(error.to_string()),
        }
    }
}

impl From<ServiceError> for StepError {
    fn from(error: ServiceError) -> Self {
        match &error {
            ServiceError::NotLeader | ServiceError::Store(StoreError::Fenced { .. }) => {
                StepError::Stop(error.to_string())
            }
            ServiceError::Store(e) if e.is_transient() => StepError::Transient(error.to_string()),
            ServiceError::Contended { .. } => StepError::Transient(error.to_string()),
            _ => StepError::Fatal(error.to_string()),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::from(ServiceError::Store(error))
    }
}

/// What the runner needs from the daemon.
#[derive(Clone)]
pub struct Context {
    /// The topology store (jobs are documents in it).
    pub store: Arc<dyn TopologyStore>,
    /// Topology operations, fenced by leadership.
    pub service: TopologyService,
    /// Leadership.
    pub leader: LeaderHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub options: MoverOptions,
}

/// Runs `job` (last stored at `version`) until it ends or `stop` fires.
/// `cancel` fires when an operator asks to cancel it.
pub async fn run(
    ctx: Context,
    job: Job,
    version: shardlib::Epoch,
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Result<Job, RunError> {
    let mut runner = Runner { ctx, job, version, stop, cancel, engine: None, changed: None, fence_started: None };
    let result = runner.drive().await;
    if let Some(engine) = runner.engine.take() {
        engine.close().await;
    }
    runner.ctx.metrics.job_stopped(&runner.job);
    result.map(|()| runner.job)
}

struct Runner {
    ctx: Context,
    job: Job,
    version: shardlib::Epoch,
    stop: CancellationToken,
    cancel: CancellationToken,
    engine: Option<Engine>,
    /// Keys replayed since verification started (`None`: unknown, e.g.
    /// after a restart, so the fence verifies everything).
    changed: Option<BTreeSet<ChangedKey>>,
    fence_started: Option<Instant>,
}

impl Runner {
    async fn drive(&mut self) -> Result<(), RunError> {
        if self.job.status == Status::Queued {
            self.job.status = Status::Running;
            self.job.owner = Some(self.ctx.leader.me().member_id.clone());
            self.save().await?;
        }
        loop {
            if self.job.status.is_terminal() {
                return Ok(());
            }
            if self.job.status == Status::Cancelling {
                return self.undo().await;
            }
            let phase = self.job.phase;
            match self.with_retry(phase).await {
                Ok(()) => {}
                Err(StepError::Stop(why)) => return Err(RunError::Stopped(why)),
                Err(StepError::Cancel) => {
                    if self.job.cancellable() {
                        tracing::info!(job = %self.job.id, phase = phase.as_str(), "cancel requested; undoing");
                        self.job.status = Status::Cancelling;
                        self.job.cancel_requested = true;
                        self.save().await?;
                    } else {
                        tracing::info!(job = %self.job.id, "cancel requested after hand-over; finishing");
                    }
                }
                Err(StepError::Transient(why) | StepError::Fatal(why)) => {
                    if self.job.cancellable() {
                        tracing::warn!(job = %self.job.id, phase = phase.as_str(), error = %why, "job failed; undoing");
                        self.job.status = Status::Cancelling;
                        self.job.error = Some(format!("{} failed: {why}", phase.as_str()));
                        self.save().await?;
                    } else {
                        // After hand-over the target owns the rows; only
                        // cleanup is left, and it must not be abandoned.
                        tracing::error!(job = %self.job.id, phase = phase.as_str(), error = %why,
                            "step after hand-over keeps failing; will retry");
                        self.job.error = Some(format!("{} keeps failing (retrying): {why}", phase.as_str()));
                        self.save().await?;
                        self.pause(self.ctx.options.retry_for.get()).await?;
                    }
                }
            }
        }
    }

    /// Runs the current phase, retrying transient errors with backoff for
    /// `retry_for`.
    async fn with_retry(&mut self, phase: Phase) -> Result<(), StepError> {
        let deadline = Instant::now() + self.ctx.options.retry_for.get();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.step(phase).await {
                Err(StepError::Transient(why)) if Instant::now() < deadline => {
                    tracing::warn!(job = %self.job.id, phase = phase.as_str(), error = %why, retry_in = ?delay, "step failed; retrying");
                    // A broken connection is reopened on the next attempt.
                    if let Some(engine) = self.engine.take() {
                        engine.close().await;
                    }
                    self.pause_step(delay).await?;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    async fn step(&mut self, phase: Phase) -> Result<(), StepError> {
        self.check()?;
        failpoint::hit(&format!("before:{}", phase.as_str()), &self.stop, &self.cancel).await;
        self.check()?;
        match phase {
            Phase::Pending => {
                let next = match self.job.kind {
                    JobKind::Split => Phase::Split,
                    _ if self.job.moves_data() => Phase::Precheck,
                    JobKind::Merge => Phase::Merge,
                    _ => Phase::Done,
                };
                self.advance(next).await
            }
            Phase::Split => {
                if let (Some(range), Some(at)) = (self.job.split_range, self.job.split_at) {
                    self.ctx.service.split_range(&self.job.keyspace, range, at).await?;
                }
                let next = if self.job.moves_data() { Phase::Precheck } else { Phase::Done };
                self.advance(next).await
            }
            Phase::Precheck => {
                let spec = self.spec().await?;
                let found = self.engine().await?.precheck(&spec).await?;
                self.job.progress.rows_total = found.rows;
                self.job.progress.bytes_total = found.bytes;
                self.advance(Phase::Capture).await
            }
            Phase::Capture => {
                let spec = self.spec().await?;
                self.engine().await?.install_capture(&spec).await?;
                self.advance(Phase::Copy).await
            }
            Phase::Copy => self.copy().await,
            Phase::CatchUp => {
                let spec = self.spec().await?;
                self.catch_up(&spec, self.ctx.options.cutover_backlog).await?;
                self.advance(Phase::Verify).await
            }
            Phase::Verify => {
                let spec = self.spec().await?;
                self.changed = Some(BTreeSet::new());
                let batch = self.job.settings.batch_rows;
                let verified = self.engine().await?.verify_all(&spec, batch).await?;
                self.check_verified(&verified)?;
                self.catch_up(&spec, self.ctx.options.cutover_backlog).await?;
                self.advance(Phase::Fence).await
            }
            Phase::Fence => self.fence().await,
            Phase::HandOver => self.hand_over().await,
            Phase::Cleanup => {
                let spec = self.spec().await?;
                self.engine().await?.drop_capture(&spec).await?;
                loop {
                    let batch = self.job.settings.batch_rows;
                    let deleted = self.engine().await?.cleanup_source_step(&spec, batch).await?;
                    if deleted == 0 {
                        break;
                    }
                    self.job.progress.rows_cleaned += deleted;
                    self.save_now_and_then().await?;
                }
                let next = if self.job.kind == JobKind::Merge { Phase::Merge } else { Phase::Done };
                self.advance(next).await
            }
            Phase::Merge => {
                if let Some(ranges) = &self.job.merge {
                    self.ctx.service.merge_ranges(&self.job.keyspace, ranges).await?;
                }
                self.advance(Phase::Done).await
            }
            Phase::Done => {
                self.job.finish(Status::Succeeded, None);
                self.save().await.map_err(|e| StepError::Stop(e.to_string()))?;
                tracing::info!(job = %self.job.id, cutover_ms = ?self.job.cutover_ms, "job succeeded");
                Ok(())
            }
        }
    }

    /// Copies table after table, chunk after chunk, throttled.
    async fn copy(&mut self) -> Result<(), StepError> {
        let spec = self.spec().await?;
        let started = Instant::now();
        let copied_before = self.job.progress.rows_copied;
        let rate_limit = self.job.settings.rows_per_second;
        while self.job.copy_table < spec.tables.len() {
            self.check()?;
            let (table, batch) = (self.job.copy_table, self.job.settings.batch_rows);
            let step = self.engine().await?.copy_step(&spec, table, batch).await?;
            self.job.progress.rows_copied += step.rows;
            let copied_now = self.job.progress.rows_copied - copied_before;
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let rate = copied_now as f64 / elapsed;
            self.job.progress.rows_per_second = Some(rate);
            let left = self.job.progress.rows_total.saturating_sub(self.job.progress.rows_copied);
            self.job.progress.eta_seconds = (rate > 0.0).then(|| left as f64 / rate);
            if step.table_done {
                self.job.copy_table += 1;
            }
            self.save_now_and_then().await?;
            failpoint::hit("copy:chunk", &self.stop, &self.cancel).await;
            if rate_limit > 0 {
                // The throttle: stay at or under rows_per_second on average.
                let due = Duration::from_secs_f64(copied_now as f64 / rate_limit as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    self.pause_step(wait).await?;
                }
            }
        }
        self.job.progress.eta_seconds = Some(0.0);
        self.advance(Phase::CatchUp).await
    }

    /// Replays the change log until at most `threshold` entries are left.
    async fn catch_up(&mut self, spec: &MoveSpec, threshold: u64) -> Result<(), StepError> {
        let batch = self.job.settings.batch_rows;
        loop {
            self.check()?;
            let step = self.engine().await?.replay_step(spec, batch).await?;
            self.job.progress.rows_replayed += step.keys.len() as u64;
            self.track(step.keys);
            let backlog = self.engine().await?.backlog(spec).await?;
            self.job.progress.backlog = backlog;
            self.save_now_and_then().await?;
            if backlog <= threshold && step.entries < batch {
                return Ok(());
            }
        }
    }

    fn track(&mut self, keys: Vec<ChangedKey>) {
        if let Some(changed) = &mut self.changed {
            changed.extend(keys);
            if changed.len() > MAX_TRACKED_KEYS {
                self.changed = None;
            }
        }
    }

    /// Freeze → database fence → drain → verify the rows changed since
    /// verification. Writes to the ranges wait from the freeze until the
    /// hand-over, so nothing here may be slow.
    async fn fence(&mut self) -> Result<(), StepError> {
        let spec = self.spec().await?;
        if self.owned_by_target().await? {
            // The hand-over happened before a restart.
            return self.advance(Phase::HandOver).await;
        }
        self.fence_started = Some(Instant::now());
        let written = self
            .ctx
            .service
            .set_ranges(&self.job.keyspace, &self.job.ranges, &self.job.source, &self.job.source, RangeState::Frozen)
            .await?;
        self.job.frozen_epoch = Some(written.epoch);
        self.engine().await?.install_fence(&spec).await?;
        failpoint::hit("fence:frozen", &self.stop, &self.cancel).await;
        self.check()?;
        // Drain: nothing new can be logged once the fence is in, so this ends.
        loop {
            let batch = self.job.settings.batch_rows;
            let step = self.engine().await?.replay_step(&spec, batch).await?;
            self.job.progress.rows_replayed += step.keys.len() as u64;
            let drained = step.entries == 0;
            self.track(step.keys);
            if drained {
                break;
            }
        }
        self.job.progress.backlog = 0;
        let verified = match &self.changed {
            Some(keys) => {
                let keys: Vec<ChangedKey> = keys.iter().cloned().collect();
                self.engine().await?.verify_keys(&spec, &keys).await?
            }
            None => {
                let batch = self.job.settings.batch_rows;
                self.engine().await?.verify_all(&spec, batch).await?
            }
        };
        self.check_verified(&verified)?;
        // Fences an earlier move left on the target for these ranges go
        // before the target owns them, or the writes released by the
        // hand-over would be rejected there.
        self.engine().await?.drop_target_fences(&spec).await?;
        // The hand-over follows at once; its state is saved with it.
        self.job.enter(Phase::HandOver);
        self.hand_over().await
    }

    async fn hand_over(&mut self) -> Result<(), StepError> {
        let spec = self.spec().await?;
        let written = self
            .ctx
            .service
            .set_ranges(&self.job.keyspace, &self.job.ranges, &self.job.source, &self.job.target, RangeState::Serving)
            .await?;
        failpoint::hit("hand_over:written", &self.stop, &self.cancel).await;
        self.check_stop()?;
        self.job.handed_over_epoch = Some(written.epoch);
        if let Some(started) = self.fence_started.take() {
            let pause = started.elapsed();
            self.job.cutover_ms = Some(pause.as_millis() as u64);
            self.ctx.metrics.observe_cutover(pause);
        }
        self.job.error = None;
        self.save().await.map_err(|e| StepError::Stop(e.to_string()))?;
        tracing::info!(job = %self.job.id, epoch = %written.epoch, cutover_ms = ?self.job.cutover_ms, "ranges handed over");
        // Again, for a hand-over resumed after a restart (idempotent).
        self.engine().await?.drop_target_fences(&spec).await?;
        self.advance(Phase::Cleanup).await
    }

    fn check_verified(&mut self, verified: &Verified) -> Result<(), StepError> {
        self.job.progress.rows_verified += verified.rows;
        if verified.mismatches.is_empty() {
            return Ok(());
        }
        let first: Vec<String> =
            verified.mismatches.iter().take(5).map(|m| format!("{}: {}", m.table, m.what)).collect();
        Err(StepError::Fatal(format!(
            "verification found {} difference(s) between source and target: {}",
            verified.mismatches.len(),
            first.join("; ")
        )))
    }

    /// Undoes the job (cancel, or failure before hand-over): unfreezes the
    /// ranges, drops fence and capture, cleans the target.
    async fn undo(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + self.ctx.options.retry_for.get();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.undo_once().await {
                Ok(true) => {
                    let status = if self.job.cancel_requested { Status::Cancelled } else { Status::Failed };
                    let error = self.job.error.take();
                    self.job.finish(status, error);
                    self.save().await?;
                    tracing::info!(job = %self.job.id, status = status.as_str(), "job undone");
                    return Ok(());
                }
                Ok(false) => {
                    // The hand-over had happened: the job can only go forward.
                    tracing::warn!(job = %self.job.id, "the target owns the ranges already; finishing instead of undoing");
                    self.job.status = Status::Running;
                    self.job.phase = Phase::HandOver;
                    self.save().await?;
                    return Box::pin(self.drive()).await;
                }
                Err(StepError::Stop(why)) => return Err(RunError::Stopped(why)),
                Err(error) => {
                    tracing::warn!(job = %self.job.id, %error, "undo failed; retrying");
                    if let Some(engine) = self.engine.take() {
                        engine.close().await;
                    }
                    if Instant::now() >= deadline {
                        // Leave it cancelling: the next pass (or leader) retries.
                        self.pause(self.ctx.options.retry_for.get()).await?;
                    } else {
                        self.pause(delay).await?;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// One attempt at undoing; `Ok(false)` if the target already owns the ranges.
    async fn undo_once(&mut self) -> Result<bool, StepError> {
        if self.stop.is_cancelled() {
            return Err(StepError::Stop("shutting down".into()));
        }
        if !self.job.moves_data() || self.job.phase <= Phase::Precheck {
            // Nothing was installed in the databases.
            self.unsplit().await?;
            return Ok(true);
        }
        if self.owned_by_target().await? {
            return Ok(false);
        }
        let spec = self.spec().await?;
        if self.job.frozen_epoch.is_some() || self.job.phase >= Phase::Fence {
            self.ctx
                .service
                .set_ranges(
                    &self.job.keyspace,
                    &self.job.ranges,
                    &self.job.source,
                    &self.job.source,
                    RangeState::Serving,
                )
                .await?;
        }
        self.engine().await?.drop_fence(&spec).await?;
        self.engine().await?.drop_capture(&spec).await?;
        loop {
            let batch = self.job.settings.batch_rows;
            let deleted = self.engine().await?.clean_target_step(&spec, batch).await?;
            if deleted == 0 {
                break;
            }
            self.job.progress.rows_cleaned += deleted;
        }
        self.unsplit().await?;
        Ok(true)
    }

    /// A cancelled split job puts the range back together (both halves are
    /// on the source again and serving).
    async fn unsplit(&mut self) -> Result<(), StepError> {
        let (Some(range), Some(at)) = (self.job.split_range, self.job.split_at) else { return Ok(()) };
        let Ok((left, right)) = range.split_at(at) else { return Ok(()) };
        let snapshot = self.ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, &self.job.keyspace)?;
        let assignments = hash_ranges(&self.job.keyspace, keyspace)?;
        let split =
            [left, right].iter().all(|half| assignments.iter().any(|a| a.range == *half && a.shard == self.job.source));
        if split {
            self.ctx.service.merge_ranges(&self.job.keyspace, &[left, right]).await?;
        }
        Ok(())
    }

    /// Whether the topology shows every moving range owned by the target.
    async fn owned_by_target(&self) -> Result<bool, StepError> {
        let snapshot = self.ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, &self.job.keyspace)?;
        let assignments = hash_ranges(&self.job.keyspace, keyspace)?;
        Ok(self.job.ranges.iter().all(|r| assignments.iter().any(|a| a.range == *r && a.shard == self.job.target)))
    }

    async fn spec(&self) -> Result<MoveSpec, StepError> {
        let snapshot = self.ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, &self.job.keyspace)?;
        Ok(MoveSpec {
            job: self.job.id.clone(),
            keyspace: self.job.keyspace.to_string(),
            tables: keyspace.tables.clone(),
            ranges: self.job.ranges.clone(),
        })
    }

    /// The engine, connected on first use (and again after an error).
    async fn engine(&mut self) -> Result<&Engine, StepError> {
        if self.engine.is_none() {
            let (source, target) = self.shards().await?;
            let options =
                EngineOptions { connect_timeout: self.ctx.options.connect_timeout.get(), ..EngineOptions::default() };
            self.engine = Some(Engine::connect(&source, &target, &options).await?);
        }
        Ok(self.engine.as_ref().expect("connected above"))
    }

    async fn shards(&self) -> Result<(Shard, Shard), StepError> {
        let snapshot = self.ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, &self.job.keyspace)?;
        let find = |id: &shardlib::ShardId| {
            keyspace
                .shard(id.as_str())
                .cloned()
                .ok_or_else(|| StepError::Fatal(format!("keyspace {} has no shard {id} any more", self.job.keyspace)))
        };
        Ok((find(&self.job.source)?, find(&self.job.target)?))
    }

    /// Fails with `Stop` when leadership is lost or the process stops.
    fn check_stop(&self) -> Result<(), StepError> {
        if self.stop.is_cancelled() || !self.ctx.leader.is_leader() {
            return Err(StepError::Stop("no longer the leader, or shutting down".into()));
        }
        Ok(())
    }

    /// Fails with `Stop` or `Cancel` when either was asked for.
    fn check(&self) -> Result<(), StepError> {
        if self.stop.is_cancelled() || !self.ctx.leader.is_leader() {
            return Err(StepError::Stop("no longer the leader, or shutting down".into()));
        }
        if (self.cancel.is_cancelled() || self.job.cancel_requested) && self.job.cancellable() {
            return Err(StepError::Cancel);
        }
        Ok(())
    }

    async fn advance(&mut self, phase: Phase) -> Result<(), StepError> {
        tracing::info!(job = %self.job.id, from = self.job.phase.as_str(), to = phase.as_str(), "job phase");
        self.job.enter(phase);
        if phase == Phase::Done {
            // Done and succeeded in one write: no reader sees "running, done".
            self.job.finish(Status::Succeeded, None);
            tracing::info!(job = %self.job.id, cutover_ms = ?self.job.cutover_ms, "job succeeded");
        }
        self.save().await.map_err(|e| StepError::Stop(e.to_string()))
    }

    async fn save_now_and_then(&mut self) -> Result<(), StepError> {
        self.ctx.metrics.job_progress(&self.job);
        if now_ms().saturating_sub(self.job.updated_at_ms) >= SAVE_EVERY.as_millis() as u64 {
            self.save().await.map_err(|e| StepError::Stop(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes the job with compare-and-set; a concurrent write can only be a
    /// cancel request, which is taken over.
    async fn save(&mut self) -> Result<(), RunError> {
        self.ctx.metrics.job_progress(&self.job);
        for _ in 0..8 {
            let fence = self.ctx.leader.fence().ok_or_else(|| RunError::Stopped("not the leader".into()))?;
            self.job.updated_at_ms = now_ms();
            let value = serde_json::to_value(&self.job).expect("jobs serialize");
            match self
                .ctx
                .store
                .put_document(COLLECTION, &self.job.id, &value, Expect::Version(self.version), &fence)
                .await
            {
                Ok(version) => {
                    self.version = version;
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => {
                    let stored = self.ctx.store.get_document(COLLECTION, &self.job.id).await.map_err(stopped)?;
                    let Some(stored) = stored else {
                        return Err(RunError::Stopped("the job was deleted".into()));
                    };
                    if let Ok(theirs) = serde_json::from_value::<Job>(stored.value) {
                        self.job.cancel_requested |= theirs.cancel_requested;
                    }
                    self.version = stored.version;
                }
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(stopped(error)),
            }
        }
        Err(RunError::Stopped("the job document kept changing".into()))
    }

    /// Waits `delay` (a backoff or the throttle) unless stopped.
    async fn pause(&self, delay: Duration) -> Result<(), RunError> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(RunError::Stopped("shutting down".into())),
        }
    }

    async fn pause_step(&self, delay: Duration) -> Result<(), StepError> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(StepError::Stop("shutting down".into())),
            () = self.cancel.cancelled() => Err(StepError::Cancel),
        }
    }
}

fn stopped(error: StoreError) -> RunError {
    RunError::Stopped(error.to_string())
}
