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
        Metrics { registry, leader, epoch, watchers, requests, durations, store_errors }
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
