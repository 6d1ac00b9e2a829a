//! The mover: while this process leads, it runs the stored jobs (at most
//! `max_jobs` at once, oldest first) and resumes those a previous leader
//! left unfinished. When leadership is lost every runner stops at its next
//! check, leaving its job to the next leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardlib::KeyspaceName;
use shardlib::store::{Expect, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::create::{CreateError, JobRequest, prepare};
use super::job::{COLLECTION, Job, Status};
use super::runner::{self, Context};
use crate::service::{ServiceError, keyspace_of};

/// How often the leader looks for jobs it is not told about (e.g. written
/// by a previous leader's last moments). New jobs and cancels wake it at once.
const RESCAN: Duration = Duration::from_secs(2);

/// How many times a cancel request retries when the job document changes
/// under it (the runner saving progress).
const CANCEL_ATTEMPTS: u32 = 20;

/// Handle to the mover, shared with the API.
#[derive(Clone)]
pub struct Mover {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    wake: Notify,
    /// Running jobs: id → token fired by a cancel request.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Serializes job creation, so that two requests cannot both pass the
    /// "range busy" check.
    creating: tokio::sync::Mutex<()>,
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such job.
    #[error("job {0} does not exist")]
    NotFound(String),
    /// It has ended.
    #[error("job {id} has ended ({status})")]
    Finished {
        /// The job.
        id: String,
        /// How it ended.
        status: &'static str,
    },
    /// The target owns the ranges already; the job can only finish.
    #[error("job {0} has handed the ranges over already; it can only finish")]
    TooLate(String),
    /// The store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl Mover {
    /// Starts the mover's loop; it ends when `shutdown` fires.
    pub fn start(ctx: Context, shutdown: CancellationToken) -> (Mover, tokio::task::JoinHandle<()>) {
        let inner = Arc::new(Inner {
            ctx,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(supervise(inner.clone(), shutdown));
        (Mover { inner }, task)
    }

    /// Every job, oldest first (optionally of one keyspace).
    pub async fn list(&self, keyspace: Option<&str>) -> Result<Vec<Job>, ServiceError> {
        let mut jobs: Vec<Job> = load_all(&self.inner.ctx).await?.into_iter().map(|(job, _)| job).collect();
        if let Some(keyspace) = keyspace {
            jobs.retain(|j| j.keyspace.as_str() == keyspace);
        }
        Ok(jobs)
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, ServiceError> {
        Ok(load(&self.inner.ctx, id).await?.map(|(job, _)| job))
    }

    /// Checks and stores a new job, then wakes the runner loop.
    pub async fn create(&self, name: &KeyspaceName, request: JobRequest) -> Result<Job, CreateError> {
        let ctx = &self.inner.ctx;
        let fence = ctx.leader.fence().ok_or(ServiceError::NotLeader)?;
        let _one_at_a_time = self.inner.creating.lock().await;
        let snapshot = ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, name)?;
        let active: Vec<Job> =
            load_all(ctx).await?.into_iter().map(|(job, _)| job).filter(|j| !j.status.is_terminal()).collect();
        let job = prepare(name, keyspace, request, &active, &ctx.options).await?;
        let value = serde_json::to_value(&job).expect("jobs serialize");
        ctx.store
            .put_document(COLLECTION, &job.id, &value, Expect::Absent, &fence)
            .await
            .map_err(ServiceError::Store)?;
        tracing::info!(job = %job.id, keyspace = %name, kind = ?job.kind,
            ranges = ?job.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
            source = %job.source, target = %job.target, "job created");
        self.inner.wake.notify_one();
        Ok(job)
    }

    /// Checks every request (as one batch: their ranges may not overlap each
    /// other either), then stores them all; nothing is stored if any check
    /// fails.
    pub async fn create_many(&self, name: &KeyspaceName, requests: Vec<JobRequest>) -> Result<Vec<Job>, CreateError> {
        let ctx = &self.inner.ctx;
        let fence = ctx.leader.fence().ok_or(ServiceError::NotLeader)?;
        let _one_at_a_time = self.inner.creating.lock().await;
        let snapshot = ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, name)?;
        let mut active: Vec<Job> =
            load_all(ctx).await?.into_iter().map(|(job, _)| job).filter(|j| !j.status.is_terminal()).collect();
        let mut jobs = Vec::with_capacity(requests.len());
        for request in requests {
            let job = prepare(name, keyspace, request, &active, &ctx.options).await?;
            active.push(job.clone());
            jobs.push(job);
        }
        for job in &jobs {
            let value = serde_json::to_value(job).expect("jobs serialize");
            ctx.store
                .put_document(COLLECTION, &job.id, &value, Expect::Absent, &fence)
                .await
                .map_err(ServiceError::Store)?;
        }
        tracing::info!(keyspace = %name, jobs = jobs.len(), "jobs created");
        self.inner.wake.notify_one();
        Ok(jobs)
    }

    /// The keyspace and the ids of its unfinished jobs.
    pub async fn keyspace_and_jobs(
        &self,
        name: &KeyspaceName,
    ) -> Result<(shardlib::topology::Keyspace, Vec<String>), ServiceError> {
        let snapshot = self.inner.ctx.service.snapshot().await?;
        let (keyspace, _) = keyspace_of(&snapshot, name)?;
        let running = self
            .list(Some(name.as_str()))
            .await?
            .into_iter()
            .filter(|j| !j.status.is_terminal())
            .map(|j| j.id)
            .collect();
        Ok((keyspace.clone(), running))
    }

    /// The load services report for the ranges of `keyspace`, summed over
    /// the live client registrations (see [`crate::rebalance`]).
    pub async fn reported_load(&self, keyspace: &KeyspaceName) -> Result<Vec<(shardlib::KeyRange, f64)>, ServiceError> {
        let clients = self.inner.ctx.service.clients().await?;
        let mut load = Vec::new();
        for client in clients {
            let Some(ranges) =
                client.value.get("load").and_then(|l| l.get(keyspace.as_str())).and_then(|l| l.as_object())
            else {
                continue;
            };
            for (range, ops) in ranges {
                if let (Ok(range), Some(ops)) = (range.parse::<shardlib::KeyRange>(), ops.as_f64())
                    && ops.is_finite()
                    && ops >= 0.0
                {
                    load.push((range, ops));
                }
            }
        }
        Ok(load)
    }

    /// The mover's settings.
    pub fn options(&self) -> &crate::config::MoverOptions {
        &self.inner.ctx.options
    }

    /// Asks a job to cancel: it undoes its work and ends `cancelled`.
    pub async fn cancel(&self, id: &str) -> Result<Job, CancelError> {
        let ctx = &self.inner.ctx;
        // Whether this call has already told the runner: it may then finish
        // undoing (and save) before the request itself is recorded.
        let mut signalled = false;
        for attempt in 0..CANCEL_ATTEMPTS {
            if attempt > 0 {
                // The runner saves progress now and then: let it finish.
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            }
            let fence = ctx.leader.fence().ok_or(ServiceError::NotLeader)?;
            let Some((mut job, version)) = load(ctx, id).await? else {
                return Err(CancelError::NotFound(id.to_owned()));
            };
            if job.status.is_terminal() {
                if signalled && job.status == Status::Cancelled {
                    return Ok(job);
                }
                return Err(CancelError::Finished { id: id.to_owned(), status: job.status.as_str() });
            }
            if !job.cancellable() {
                return Err(CancelError::TooLate(id.to_owned()));
            }
            if let Some(token) = self.inner.running.lock().expect("not poisoned").get(id) {
                token.cancel();
                signalled = true;
            }
            if job.cancel_requested {
                return Ok(job);
            }
            job.cancel_requested = true;
            let value = serde_json::to_value(&job).expect("jobs serialize");
            match ctx.store.put_document(COLLECTION, id, &value, Expect::Version(version), &fence).await {
                Ok(_) => {
                    tracing::info!(job = %id, "cancel requested");
                    self.inner.wake.notify_one();
                    return Ok(job);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ServiceError::Store(e).into()),
            }
        }
        Err(ServiceError::Contended { keyspace: KeyspaceName::new("jobs").expect("valid"), attempts: CANCEL_ATTEMPTS }
            .into())
    }
}

async fn load(ctx: &Context, id: &str) -> Result<Option<(Job, shardlib::Epoch)>, ServiceError> {
    let Some(document) = ctx.store.get_document(COLLECTION, id).await? else {
        return Ok(None);
    };
    let job = serde_json::from_value(document.value)
        .map_err(|e| ServiceError::Store(StoreError::Backend { message: format!("job {id} is not readable: {e}") }))?;
    Ok(Some((job, document.version)))
}

async fn load_all(ctx: &Context) -> Result<Vec<(Job, shardlib::Epoch)>, ServiceError> {
    let mut jobs = Vec::new();
    for document in ctx.store.list_documents(COLLECTION).await? {
        match serde_json::from_value::<Job>(document.value) {
            Ok(job) => jobs.push((job, document.version)),
            Err(error) => tracing::warn!(job = %document.id, %error, "skipping an unreadable job document"),
        }
    }
    jobs.sort_by(|a, b| (a.0.created_at_ms, &a.0.id).cmp(&(b.0.created_at_ms, &b.0.id)));
    Ok(jobs)
}

/// Leads → runs jobs; stops leading → stops them.
async fn supervise(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut election = inner.ctx.leader.subscribe();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if inner.ctx.leader.is_leader() {
            let term = shutdown.child_token();
            run_term(&inner, &term, &mut election).await;
            term.cancel();
        } else {
            tokio::select! {
                changed = election.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// One leadership term: start jobs as slots free up until leadership ends.
async fn run_term(
    inner: &Arc<Inner>,
    term: &CancellationToken,
    election: &mut tokio::sync::watch::Receiver<crate::leader::ElectionState>,
) {
    let mut runners: JoinSet<(String, Result<Job, runner::RunError>)> = JoinSet::new();
    loop {
        if inner.ctx.leader.is_leader() && !term.is_cancelled() {
            start_jobs(inner, term, &mut runners).await;
        }
        inner.ctx.metrics.set_jobs_running(runners.len());
        tokio::select! {
            Some(done) = runners.join_next(), if !runners.is_empty() => {
                if let Ok((id, result)) = done {
                    inner.running.lock().expect("not poisoned").remove(&id);
                    match result {
                        Ok(job) => tracing::info!(job = %id, status = job.status.as_str(), "job runner finished"),
                        Err(error) => tracing::info!(job = %id, %error, "job runner stopped"),
                    }
                }
            }
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(RESCAN) => {}
            changed = election.changed() => {
                if changed.is_err() || !inner.ctx.leader.is_leader() {
                    break;
                }
            }
            () = term.cancelled() => break,
        }
    }
    term.cancel();
    while let Some(done) = runners.join_next().await {
        if let Ok((id, _)) = done {
            inner.running.lock().expect("not poisoned").remove(&id);
        }
    }
    inner.ctx.metrics.set_jobs_running(0);
}

async fn start_jobs(
    inner: &Arc<Inner>,
    term: &CancellationToken,
    runners: &mut JoinSet<(String, Result<Job, runner::RunError>)>,
) {
    let jobs = match load_all(&inner.ctx).await {
        Ok(jobs) => jobs,
        Err(error) => {
            tracing::warn!(%error, "cannot list jobs; retrying");
            return;
        }
    };
    for (job, version) in jobs {
        if job.status.is_terminal() || runners.len() >= inner.ctx.options.max_jobs {
            continue;
        }
        let cancel = {
            let mut running = inner.running.lock().expect("not poisoned");
            if running.contains_key(&job.id) {
                continue;
            }
            let token = CancellationToken::new();
            running.insert(job.id.clone(), token.clone());
            token
        };
        if job.status != Status::Queued {
            tracing::info!(job = %job.id, phase = job.phase.as_str(), status = job.status.as_str(), "resuming job");
        }
        let ctx = inner.ctx.clone();
        let stop = term.child_token();
        let id = job.id.clone();
        runners.spawn(async move { (id, runner::run(ctx, job, version, stop, cancel).await) });
    }
}
