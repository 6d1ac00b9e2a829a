//! The watcher's metrics, through the `metrics` facade: the service
//! installs whatever recorder or exporter it likes; without one, these are
//! no-ops. Every metric has the label `watcher` (the watcher's name).

/// Gauge: the epoch of the installed topology.
pub const TOPOLOGY_EPOCH: &str = "shardlib_topology_epoch";
/// Gauge: seconds since the connection to the source was lost; 0 while it
/// is healthy (see [`TopologyWatcher::staleness`](super::TopologyWatcher::staleness)).
/// Updated at each reconnection attempt, so at least every `backoff_max`
/// plus `request_timeout` while the source is down.
pub const TOPOLOGY_STALE_SECONDS: &str = "shardlib_topology_stale_seconds";
/// Counter: complete reads of the topology, label `reason` = `initial`,
/// `compacted` or `manual`.
pub const TOPOLOGY_RELOADS_TOTAL: &str = "shardlib_topology_reloads_total";
/// Counter: topologies installed in the router (every kind).
pub const TOPOLOGY_UPDATES_TOTAL: &str = "shardlib_topology_updates_total";
/// Counter: topologies skipped because they do not compile.
pub const TOPOLOGY_INVALID_TOTAL: &str = "shardlib_topology_invalid_total";
/// Counter: reconnection attempts after a lost or failed connection.
pub const WATCH_RECONNECTS_TOTAL: &str = "shardlib_watch_reconnects_total";

/// Describes the metrics to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_gauge!(TOPOLOGY_EPOCH, "epoch of the installed topology");
        metrics::describe_gauge!(
            TOPOLOGY_STALE_SECONDS,
            metrics::Unit::Seconds,
            "seconds since the topology source was lost; 0 while connected"
        );
        metrics::describe_counter!(TOPOLOGY_RELOADS_TOTAL, "complete reads of the topology");
        metrics::describe_counter!(TOPOLOGY_UPDATES_TOTAL, "topologies installed in the router");
        metrics::describe_counter!(TOPOLOGY_INVALID_TOTAL, "topologies skipped as invalid");
        metrics::describe_counter!(WATCH_RECONNECTS_TOTAL, "reconnections to the topology source");
    });
}

pub(crate) fn set_epoch(watcher: &str, epoch: u64) {
    metrics::gauge!(TOPOLOGY_EPOCH, "watcher" => watcher.to_owned()).set(epoch as f64);
}

pub(crate) fn set_stale(watcher: &str, seconds: f64) {
    metrics::gauge!(TOPOLOGY_STALE_SECONDS, "watcher" => watcher.to_owned()).set(seconds);
}

pub(crate) fn count_reload(watcher: &str, reason: &'static str) {
    metrics::counter!(TOPOLOGY_RELOADS_TOTAL, "watcher" => watcher.to_owned(), "reason" => reason).increment(1);
}

pub(crate) fn count_update(watcher: &str) {
    metrics::counter!(TOPOLOGY_UPDATES_TOTAL, "watcher" => watcher.to_owned()).increment(1);
}

pub(crate) fn count_invalid(watcher: &str) {
    metrics::counter!(TOPOLOGY_INVALID_TOTAL, "watcher" => watcher.to_owned()).increment(1);
}

pub(crate) fn count_reconnect(watcher: &str) {
    metrics::counter!(WATCH_RECONNECTS_TOTAL, "watcher" => watcher.to_owned()).increment(1);
}
