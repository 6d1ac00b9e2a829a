//! The HTTP/JSON API (axum), versioned under `/v1`, plus `/metrics` and
//! `/health/*`. The routes and their JSON shapes are documented in
//! `docs/OPERATIONS.md` ("shardd HTTP API").
//!
//! | route | handler |
//! |---|---|
//! | `GET /v1/status` | [`status`] |
//! | `GET, POST /v1/keyspaces` | [`keyspaces`] |
//! | `GET, DELETE /v1/keyspaces/{name}` | [`keyspaces`] |
//! | `GET, POST /v1/keyspaces/{name}/shards` | [`keyspaces`] |
//! | `PUT /v1/keyspaces/{name}/shards/{id}/state` | [`keyspaces`] |
//! | `GET /v1/topology[?epoch=N]` | [`keyspaces`] |
//! | `GET /v1/watch[?after=N]` (server-sent events) | [`watch`] |
//! | `GET /v1/clients` | [`clients`] |
//! | `POST /v1/keyspaces/{name}/jobs`, `POST /v1/keyspaces/{name}/rebalance` | [`jobs`] |
//! | `GET /v1/jobs[?keyspace=KS]`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel` | [`jobs`] |
//! | `GET /metrics`, `/health/live`, `/health/ready` | [`status`] |
//!
//! Every `/v1` route requires the bearer token when one is configured
//! ([`auth`]); a follower forwards writes to the leader ([`forward`]).

pub mod auth;
pub mod clients;
pub mod errors;
pub mod forward;
pub mod jobs;
pub mod keyspaces;
pub mod status;
pub mod views;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tokio_util::sync::CancellationToken;

pub use errors::ApiError;

use crate::config::{Secret, StoreKind};
use crate::leader::LeaderHandle;
use crate::metrics::Metrics;
use crate::service::TopologyService;
use crate::watcher::WatchStatus;

/// What every handler can reach.
pub struct AppState {
    /// The cluster's name.
    pub cluster: String,
    /// The kind of store.
    pub store_kind: StoreKind,
    /// Topology operations.
    pub service: TopologyService,
    /// The election.
    pub leader: LeaderHandle,
    /// The daemon's own watch of the store (readiness, epoch).
    pub watch_status: WatchStatus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token, if required.
    pub token: Option<Secret>,
    /// Forwards writes to the leader.
    pub forwarder: forward::Forwarder,
    /// The jobs that move data (they run on the leader).
    pub mover: crate::mover::Mover,
    /// Interval of keep-alive comments on event streams.
    pub keep_alive: Duration,
    /// Cancelled when the server shuts down: event streams end.
    pub shutdown: CancellationToken,
}

/// The whole API.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(status::status))
        .route("/v1/keyspaces", get(keyspaces::list).post(keyspaces::create))
        .route("/v1/keyspaces/{name}", get(keyspaces::get_one).delete(keyspaces::delete))
        .route("/v1/keyspaces/{name}/shards", get(keyspaces::list_shards).post(keyspaces::add_shard))
        .route("/v1/keyspaces/{name}/shards/{id}/state", put(keyspaces::set_shard_state))
        .route("/v1/topology", get(keyspaces::topology))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/clients", get(clients::list))
        .route("/v1/keyspaces/{name}/jobs", post(jobs::create))
        .route("/v1/keyspaces/{name}/rebalance", post(jobs::rebalance))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get_one))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        // Layers run bottom-up: the token is checked before anything is forwarded.
        .route_layer(middleware::from_fn_with_state(state.clone(), forward::forward_writes))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .merge(v1)
        .route("/metrics", get(status::metrics))
        .route("/health/live", get(status::live))
        .route("/health/ready", get(status::ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method")
}

/// Counts and times every request by route template and status, and logs it.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe_request(&route, status, elapsed);
    tracing::debug!(%method, route, status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}

/// Reads a JSON body, naming the field at fault when it does not parse.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "payload_too_large", "the request body is too large")
        } else {
            ApiError::invalid_input(format!("cannot read the request body: {rejection}"))
        }
    })?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            ApiError::invalid_input(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid_input(format!("invalid JSON body at {path}: {inner}"))
        }
    })
}

/// The response of a successful request: status and JSON body.
pub(crate) fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}
