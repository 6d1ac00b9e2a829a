//! `GET /v1/clients`: the services registered in the store
//! ([`TopologyStore::register_client`](shardlib::store::TopologyStore::register_client),
//! e.g. a `TopologyWatcher` with `register_as`), with the epoch each
//! reports and whether it lags behind the topology.
//!
//! ```json
//! {"epoch": 42, "topology_epoch": 40, "clients": [
//!   {"id": "users-api-1", "epoch": 40, "behind": false, "updated_at": "2025-01-31T08:09:10.123Z",
//!    "age_seconds": 1.5, "ttl_seconds": 10, "value": {"watcher": "users-api", "epoch": 40}}]}
//! ```
//!
//! - `epoch` and `topology_epoch`: the latest epoch this member has seen,
//!   and the epoch of the latest topology change it knows (`null` before
//!   its watch has started).
//! - Per client: `epoch` is the `epoch` field of its value when it is a
//!   number, else `null`; `behind` is whether that epoch is older than
//!   `topology_epoch` (`null` when either is unknown); `updated_at` is when
//!   the client last wrote its value (its clock) and `age_seconds` how long
//!   ago that was (this member's clock); `value` is what it reports, with
//!   passwords in connection strings replaced by `***`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use shardlib::Epoch;
use shardlib::store::ClientInfo;
use shardlib::topology::redact;

use super::watch::rfc3339;
use super::{ApiError, AppState, json};

/// The body of `GET /v1/clients`.
#[derive(Debug, Serialize)]
pub struct ClientList {
    /// The latest epoch this member has seen.
    pub epoch: Option<Epoch>,
    /// The epoch of the latest topology change this member knows.
    pub topology_epoch: Option<Epoch>,
    /// The registered clients, ordered by id.
    pub clients: Vec<ClientView>,
}

/// One registered client.
#[derive(Debug, Serialize)]
pub struct ClientView {
    /// Its id.
    pub id: String,
    /// The epoch it reports (its value's `epoch`), if any.
    pub epoch: Option<u64>,
    /// Whether that epoch is older than the latest topology change.
    pub behind: Option<bool>,
    /// When it last wrote its value (RFC 3339, UTC).
    pub updated_at: String,
    /// Seconds since then.
    pub age_seconds: f64,
    /// How long the registration outlives a client that died.
    pub ttl_seconds: u64,
    /// What it reports, connection-string passwords redacted.
    pub value: Value,
}

impl ClientView {
    /// The view of `client`, compared with `topology_epoch`.
    pub fn new(client: ClientInfo, topology_epoch: Option<Epoch>) -> Self {
        let epoch = client.value.get("epoch").and_then(Value::as_u64);
        let behind = epoch.zip(topology_epoch).map(|(epoch, topology)| epoch < topology.0);
        let age = SystemTime::now().duration_since(client.updated_at).unwrap_or_default();
        ClientView {
            id: client.id,
            epoch,
            behind,
            updated_at: rfc3339(client.updated_at),
            age_seconds: (age.as_secs_f64() * 1000.0).round() / 1000.0,
            ttl_seconds: client.ttl.as_secs(),
            value: redacted(client.value),
        }
    }
}

/// `value` with every string passed through [`redact`].
fn redacted(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(redact(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, redacted(v))).collect()),
        other => other,
    }
}

/// `GET /v1/clients`
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let clients = state.service.clients().await?;
    let watch = state.watch_status.get();
    let clients = clients.into_iter().map(|client| ClientView::new(client, watch.changed)).collect();
    Ok(json(StatusCode::OK, ClientList { epoch: watch.epoch, topology_epoch: watch.changed, clients }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn clients_show_their_lag_and_no_passwords() {
        let client = |epoch: Value| ClientInfo {
            id: "users-api-1".to_owned(),
            value: serde_json::json!({"epoch": epoch, "db": "postgres://app:hunter2@db0/users"}),
            ttl: Duration::from_secs(10),
            updated_at: SystemTime::now(),
        };
        let view = ClientView::new(client(40.into()), Some(Epoch(42)));
        assert_eq!((view.epoch, view.behind, view.ttl_seconds), (Some(40), Some(true), 10));
        assert_eq!(view.value["db"], "postgres://app:***@db0/users");
        let view = ClientView::new(client(42.into()), Some(Epoch(42)));
        assert_eq!(view.behind, Some(false));
        let view = ClientView::new(client(Value::Null), Some(Epoch(42)));
        assert_eq!((view.epoch, view.behind), (None, None));
        let view = ClientView::new(client(40.into()), None);
        assert_eq!(view.behind, None);
    }
}
