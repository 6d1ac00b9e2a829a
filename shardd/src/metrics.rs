//! The daemon's metrics, served at `/metrics` in the Prometheus text format
//! (version 0.0.4).
//!
//! Each [`Server`](crate::Server) has its own registry (no global state), so
//! several servers can run in one test process.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `shardd_leader` | gauge | 1 while this process leads, else 0 |
//! | `shardd_topology_epoch` | gauge | the latest topology epoch seen |
//! | `shardd_watchers` | gauge | open `/v1/watch` streams |
//! | `shardd_http_requests_total` | counter | `route`, `status` |
//! | `shardd_http_request_duration_seconds` | histogram | `route` |
//! | `shardd_store_errors_total` | counter | `kind` (`unavailable`, `conflict`, `fenced`, …) |
//! | `shardd_job_rows_copied` | gauge | `job`, `keyspace`: rows copied by a running job |
//! | `shardd_job_rows_total` | gauge | `job`, `keyspace`: rows the job moves (estimate) |
//! | `shardd_job_backlog` | gauge | `job`, `keyspace`: change-log entries not yet replayed |
//! | `shardd_job_eta_seconds` | gauge | `job`, `keyspace`: estimated seconds left in the copy |
//! | `shardd_job_phase` | gauge | `job`, `keyspace`, `phase`: 1 for the phase a running job is in |
//! | `shardd_jobs_running` | gauge | jobs this leader runs now |
//! | `shardd_jobs_finished_total` | counter | `kind`, `status` (`succeeded`, `failed`, `cancelled`) |
//! | `shardd_job_cutover_seconds` | histogram | how long writes to moving ranges paused (freeze → hand-over) |
//!
//! A job's series are removed when it ends, so finished jobs do not pile up.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shardlib::store::StoreError;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Request-duration buckets, in seconds: 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    keyspace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobPhaseLabels {
    job: String,
    keyspace: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobEndLabels {
    kind: &'static str,
    status: &'static str,
}

/// The per-job gauges.
#[derive(Debug, Default)]
struct JobMetrics {
    rows_copied: Family<JobLabels, Gauge>,
    rows_total: Family<JobLabels, Gauge>,
    backlog: Family<JobLabels, Gauge>,
    eta: Family<JobLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    phase: Family<JobPhaseLabels, Gauge>,
    running: Gauge,
    finished: Family<JobEndLabels, Counter>,
}

/// Cutover buckets, in seconds: 5 ms to 10 s.
const CUTOVER_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    epoch: Gauge,
    watchers: Gauge,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    store_errors: Family<KindLabels, Counter>,
    jobs: JobMetrics,
    cutover: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let leader = Gauge::default();
        let epoch = Gauge::default();
        let watchers = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register("shardd_leader", "Whether this process is the leader (1) or not (0)", leader.clone());
        registry.register("shardd_topology_epoch", "The latest topology epoch this process has seen", epoch.clone());
        registry.register("shardd_watchers", "Open /v1/watch event streams", watchers.clone());
        registry.register("shardd_http_requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register(
            "shardd_http_request_duration_seconds",
            "Time to answer HTTP requests (to the response head for streams), by route",
            durations.clone(),
        );
        registry.register(
            "shardd_store_errors",
            "Topology store operations that failed, by kind",
            store_errors.clone(),
        );
        // Every kind starts at 0, so that rates and alerts see it before the first error.
        for kind in STORE_ERROR_KINDS {
            drop(store_errors.get_or_create(&KindLabels { kind }));
        }
        let jobs = JobMetrics::default();
        registry.register("shardd_job_rows_copied", "Rows copied by a running job", jobs.rows_copied.clone());
        registry.register("shardd_job_rows_total", "Rows a running job moves (estimate)", jobs.rows_total.clone());
        registry.register(
            "shardd_job_backlog",
            "Change-log entries a running job has not replayed",
            jobs.backlog.clone(),
        );
        registry.register("shardd_job_eta_seconds", "Estimated seconds left in a job's copy", jobs.eta.clone());
        registry.register("shardd_job_phase", "1 for the phase a running job is in", jobs.phase.clone());
        registry.register("shardd_jobs_running", "Jobs this leader runs now", jobs.running.clone());
        registry.register("shardd_jobs_finished", "Jobs that ended, by kind and status", jobs.finished.clone());
        let cutover = Histogram::new(CUTOVER_BUCKETS);
        registry.register(
            "shardd_job_cutover_seconds",
            "How long writes to moving ranges paused, from freeze to hand-over",
            cutover.clone(),
        );
        Metrics { registry, leader, epoch, watchers, requests, durations, store_errors, jobs, cutover }
    }

    /// Publishes a running job's progress.
    pub fn job_progress(&self, job: &crate::mover::Job) {
        let labels = JobLabels { job: job.id.clone(), keyspace: job.keyspace.to_string() };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.jobs.rows_copied.get_or_create(&labels).set(gauge(job.progress.rows_copied));
        self.jobs.rows_total.get_or_create(&labels).set(gauge(job.progress.rows_total));
        self.jobs.backlog.get_or_create(&labels).set(gauge(job.progress.backlog));
        self.jobs.eta.get_or_create(&labels).set(job.progress.eta_seconds.unwrap_or(0.0));
        for phase in crate::mover::Phase::ALL {
            let labels =
                JobPhaseLabels { job: job.id.clone(), keyspace: job.keyspace.to_string(), phase: phase.as_str() };
            if phase == job.phase {
                self.jobs.phase.get_or_create(&labels).set(1);
            } else {
                self.jobs.phase.remove(&labels);
            }
        }
    }

    /// Removes a job's series (it stopped running here) and, if it ended,
    /// counts it.
    pub fn job_stopped(&self, job: &crate::mover::Job) {
        let labels = JobLabels { job: job.id.clone(), keyspace: job.keyspace.to_string() };
        self.jobs.rows_copied.remove(&labels);
        self.jobs.rows_total.remove(&labels);
        self.jobs.backlog.remove(&labels);
        self.jobs.eta.remove(&labels);
        for phase in crate::mover::Phase::ALL {
            self.jobs.phase.remove(&JobPhaseLabels {
                job: job.id.clone(),
                keyspace: job.keyspace.to_string(),
                phase: phase.as_str(),
            });
        }
        if job.status.is_terminal() {
            let kind = match job.kind {
                crate::mover::JobKind::Move => "move",
                crate::mover::JobKind::Split => "split",
                crate::mover::JobKind::Merge => "merge",
            };
            self.jobs.finished.get_or_create(&JobEndLabels { kind, status: job.status.as_str() }).inc();
        }
    }

    /// Counts the jobs running here.
    pub fn set_jobs_running(&self, running: usize) {
        self.jobs.running.set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// Records a cutover pause.
    pub fn observe_cutover(&self, pause: Duration) {
        self.cutover.observe(pause.as_secs_f64());
    }

    /// Records whether this process leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records a topology epoch; the gauge never goes back.
    pub fn observe_epoch(&self, epoch: u64) {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        let _ = self.epoch.inner().fetch_max(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// A watch stream opened; dropping the guard counts it as closed.
    pub fn watcher_opened(&self) -> WatcherGuard {
        self.watchers.inc();
        WatcherGuard { gauge: self.watchers.clone() }
    }

    /// Records one answered HTTP request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), status: status.to_string() }).inc();
        self.durations.get_or_create(&RouteLabels { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Records a failed store operation.
    pub fn store_error(&self, error: &StoreError) {
        self.store_errors.get_or_create(&KindLabels { kind: store_error_kind(error) }).inc();
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }
}

/// Counts an open watch stream until dropped.
#[derive(Debug)]
pub struct WatcherGuard {
    gauge: Gauge,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Every `kind` of `shardd_store_errors_total`.
pub const STORE_ERROR_KINDS: [&str; 8] =
    ["unavailable", "conflict", "fenced", "compacted", "not_found", "invalid", "unauthorized", "backend"];

/// The `kind` label of a store error.
pub fn store_error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Conflict { .. } => "conflict",
        StoreError::Fenced { .. } => "fenced",
        StoreError::Compacted { .. } => "compacted",
        StoreError::NotFound { .. } => "not_found",
        StoreError::Invalid(_) | StoreError::InvalidName(_) => "invalid",
        StoreError::Unauthorized { .. } => "unauthorized",
        StoreError::Backend { .. } | StoreError::Config { .. } => "backend",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_by_its_documented_name() {
        let metrics = Metrics::new();
        metrics.set_leader(true);
        metrics.observe_epoch(7);
        metrics.observe_epoch(5);
        let guard = metrics.watcher_opened();
        metrics.observe_request("/v1/status", 200, Duration::from_millis(3));
        metrics.store_error(&StoreError::Unavailable { message: "down".into() });
        let text = metrics.render();
        for line in [
            "shardd_leader 1",
            "shardd_topology_epoch 7",
            "shardd_watchers 1",
            "shardd_http_requests_total{route=\"/v1/status\",status=\"200\"} 1",
            "shardd_http_request_duration_seconds_count{route=\"/v1/status\"} 1",
            "shardd_store_errors_total{kind=\"unavailable\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        drop(guard);
        assert!(metrics.render().lines().any(|l| l == "shardd_watchers 0"));
    }
}
