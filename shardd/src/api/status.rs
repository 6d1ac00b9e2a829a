//! `GET /v1/status`, `/metrics` and the health checks.
//!
//! - `GET /v1/status` → `{"cluster", "member_id", "address", "role"
//!   ("leader" | "follower"), "leader": {"member_id", "address"} | null,
//!   "members": [{"member_id", "address"}] | null, "epoch": N | null,
//!   "store": "etcd" | "local" | "memory", "ready": bool}`.
//! - `GET /health/live` → 200 `{"status": "live"}` while the process runs.
//! - `GET /health/ready` → 200 `{"status": "ready", "role"}` when leading,
//!   or following with a current watch of the store (and, with etcd, a
//!   working lease: the election can reach etcd); else 503
//!   `{"status": "not_ready", "role", "reason"}`.
//! - `GET /metrics` → the Prometheus text format.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, json};
use serde::Serialize;
use shardlib::Epoch;

use crate::leader::{Member, Role};

/// `GET /v1/status`
pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let election = state.leader.state();
    let watch = state.watch_status.get();
    let members = state.leader.members().await;
    let (ready, _) = readiness(&state);
    let me = state.leader.me();
    let body = StatusResponse {
        cluster: &state.cluster,
        member_id: &me.member_id,
        address: &me.address,
        role: election.role,
        leader: election.leader,
        members,
        epoch: watch.epoch,
        store: state.store_kind.as_str(),
        ready,
    };
    json(StatusCode::OK, body)
}

/// The body of `GET /v1/status`.
#[derive(Debug, Serialize)]
pub struct StatusResponse<'a> {
    /// The cluster.
    pub cluster: &'a str,
    /// This member.
    pub member_id: &'a str,
    /// This member's advertised API address.
    pub address: &'a str,
    /// `leader` or `follower`.
    pub role: Role,
    /// The leader, if known.
    pub leader: Option<Member>,
    /// Every member taking part in the election, leader first; `null` when
    /// the store cannot be asked now.
    pub members: Option<Vec<Member>>,
    /// The latest topology epoch this member has seen.
    pub epoch: Option<Epoch>,
    /// `etcd`, `local` or `memory`.
    pub store: &'static str,
    /// Whether `/health/ready` would answer 200.
    pub ready: bool,
}

/// Whether this member can serve, and why not.
fn readiness(state: &AppState) -> (bool, Option<String>) {
    if state.leader.is_leader() {
        return (true, None);
    }
    if let Some(problem) = state.leader.state().problem {
        return (false, Some(format!("follower that cannot take part in the election: {problem}")));
    }
    let watch = state.watch_status.get();
    if watch.current {
        (true, None)
    } else {
        let why = watch.error.unwrap_or_else(|| "the store watch has not started yet".to_owned());
        (false, Some(format!("follower without a current watch of the topology store: {why}")))
    }
}

/// `GET /health/live`
pub async fn live() -> Response {
    json(StatusCode::OK, json!({ "status": "live" }))
}

/// `GET /health/ready`
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let role = state.leader.state().role;
    match readiness(&state) {
        (true, _) => json(StatusCode::OK, json!({ "status": "ready", "role": role })),
        (false, reason) => {
            json(StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "not_ready", "role": role, "reason": reason }))
        }
    }
}

/// `GET /metrics`
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.set_leader(state.leader.state().role == Role::Leader);
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response
}
