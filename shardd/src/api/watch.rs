//! `GET /v1/watch`: topology changes as server-sent events.
//!
//! - `?after=N` (or a `Last-Event-ID: N` header, which wins: browsers and
//!   SSE clients send it when they reconnect) streams every change after
//!   epoch `N`. Without either, the first event is the current topology
//!   (with no changes), then every change after it.
//! - Each change is one event: `id: <epoch>`, `event: topology`, and
//!   `data: {"epoch", "time", "changes": [{"kind", "keyspace"}], "topology"}`
//!   where `kind` is `keyspace_created`, `keyspace_updated` or
//!   `keyspace_deleted`, `time` is when the server sent it (RFC 3339, UTC)
//!   and `topology` is the complete topology at that epoch, DSN passwords
//!   redacted.
//! - When `after` is older than the store's history (compacted), the
//!   stream sends the current topology with `"resync": true` and goes on
//!   from there: the client replaces all its state.
//! - Comments (`: keep-alive`) are sent every `watch_keep_alive` while
//!   nothing changes. If the store fails, an `event: error` with the error
//!   JSON is sent and the stream ends; reconnect with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use shardlib::Epoch;
use shardlib::store::{Change, Snapshot, StoreError, WatchEvent, WatchStream};

use super::views::TopologyView;
use super::{ApiError, AppState};
use crate::metrics::WatcherGuard;

/// The query of `GET /v1/watch`.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    /// Stream the changes after this epoch.
    pub after: Option<u64>,
}

/// One change as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChangeView<'a> {
    /// `keyspace_created`, `keyspace_updated` or `keyspace_deleted`.
    pub kind: &'static str,
    /// The keyspace.
    pub keyspace: &'a str,
}

impl<'a> ChangeView<'a> {
    /// The view of `change`.
    pub fn new(change: &'a Change) -> Self {
        match change {
            Change::KeyspaceCreated(name) => ChangeView { kind: "keyspace_created", keyspace: name.as_str() },
            Change::KeyspaceUpdated(name) => ChangeView { kind: "keyspace_updated", keyspace: name.as_str() },
            Change::KeyspaceDeleted(name) => ChangeView { kind: "keyspace_deleted", keyspace: name.as_str() },
        }
    }
}

#[derive(Serialize)]
struct EventBody<'a> {
    epoch: Epoch,
    time: String,
    changes: Vec<ChangeView<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
    topology: TopologyView<'a>,
}

/// `GET /v1/watch[?after=N]`
pub async fn watch(
    State(state): State<Arc<AppState>>,
    query: Result<Query<WatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_input(format!("after: {}", e.body_text())))?;
    let after =
        match headers.get("last-event-id") {
            Some(value) => {
                Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                    ApiError::invalid_input("Last-Event-ID must be an epoch (a non-negative integer)")
                })?)
            }
            None => query.after,
        };
    let (initial, from) = match after {
        Some(after) => (None, Epoch(after)),
        None => {
            let snapshot = state.service.snapshot().await?;
            let epoch = snapshot.topology.epoch;
            (Some(snapshot), epoch)
        }
    };
    let guard = state.metrics.watcher_opened();
    tracing::debug!(after = %from, "watch stream opened");
    let events = events(state.clone(), initial, from, guard).take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.keep_alive).text("keep-alive")))
}

/// Where a watch stream is.
struct Cursor {
    state: Arc<AppState>,
    initial: Option<Snapshot>,
    inner: WatchStream,
    done: bool,
    _guard: WatcherGuard,
}

fn events(
    state: Arc<AppState>,
    initial: Option<Snapshot>,
    from: Epoch,
    guard: WatcherGuard,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let inner = state.service.store().watch(from);
    let cursor = Cursor { state, initial, inner, done: false, _guard: guard };
    stream::unfold(cursor, |mut cursor| async move {
        if let Some(snapshot) = cursor.initial.take() {
            return Some((Ok(topology_event(&snapshot, &[], false)), cursor));
        }
        if cursor.done {
            return None;
        }
        let event = match cursor.inner.next().await {
            Some(Ok(WatchEvent { snapshot, changes })) => {
                cursor.state.metrics.observe_epoch(snapshot.topology.epoch.0);
                topology_event(&snapshot, &changes, false)
            }
            Some(Err(StoreError::Compacted { requested, oldest })) => {
                tracing::info!(%requested, %oldest, "watch fell behind compaction; resending the whole topology");
                match cursor.state.service.snapshot().await {
                    Ok(snapshot) => {
                        cursor.inner = cursor.state.service.store().watch(snapshot.topology.epoch);
                        topology_event(&snapshot, &[], true)
                    }
                    Err(error) => {
                        cursor.done = true;
                        error_event(ApiError::from(error))
                    }
                }
            }
            Some(Err(error)) => {
                cursor.state.metrics.store_error(&error);
                tracing::warn!(%error, "watch stream failed");
                cursor.done = true;
                error_event(ApiError::from(error))
            }
            None => return None,
        };
        Some((Ok(event), cursor))
    })
}

fn topology_event(snapshot: &Snapshot, changes: &[Change], resync: bool) -> Event {
    let topology = &snapshot.topology;
    let body = EventBody {
        epoch: topology.epoch,
        time: rfc3339(SystemTime::now()),
        changes: changes.iter().map(ChangeView::new).collect(),
        resync,
        topology: TopologyView::new(topology),
    };
    let data = serde_json::to_string(&body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Event::default().id(topology.epoch.to_string()).event("topology").data(data)
}

fn error_event(error: ApiError) -> Event {
    Event::default().event("error").data(error.body().to_string())
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2025-01-31T08:09:10.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_800)), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn changes_have_kinds() {
        let users = shardlib::KeyspaceName::new("users").unwrap();
        let change = Change::KeyspaceDeleted(users);
        assert_eq!(
            serde_json::to_value(ChangeView::new(&change)).unwrap(),
            serde_json::json!({"kind": "keyspace_deleted", "keyspace": "users"})
        );
    }
}
