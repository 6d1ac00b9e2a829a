//! Jobs that move, split and merge ranges.
//!
//! - `POST /v1/keyspaces/{name}/jobs` with `{"kind": "move", "ranges": [..], "to"}`,
//!   `{"kind": "split", "range", "at"?, "to"?}` or `{"kind": "merge", "ranges": [a, b]}`
//!   (each optionally with `batch_rows`, `rows_per_second`) → 201 with the job.
//!   Every check (ranges, shards, busy ranges, both databases' schemas)
//!   happens before the job is stored; on error nothing changed.
//! - `GET /v1/jobs[?keyspace=KS]` → `{"jobs": [..]}`, oldest first.
//! - `GET /v1/jobs/{id}` → the job.
//! - `POST /v1/jobs/{id}/cancel` → 202 with the job (`cancel_requested`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use shardlib::KeyspaceName;

use super::{ApiError, AppState, json, parse_json};
use crate::mover::{CancelError, CreateError, Job, JobRequest};

/// The query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this keyspace's jobs.
    pub keyspace: Option<String>,
}

/// `{"jobs": [..]}`
#[derive(Debug, Serialize)]
pub struct JobList {
    /// The jobs, oldest first.
    pub jobs: Vec<Job>,
}

/// `POST /v1/keyspaces/{name}/jobs`
pub async fn create(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = KeyspaceName::new(&name).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let request: JobRequest = parse_json(body)?;
    let job = state.mover.create(&name, request).await?;
    Ok(json(StatusCode::CREATED, job))
}

/// `GET /v1/jobs`
pub async fn list(State(state): State<Arc<AppState>>, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    let jobs = state.mover.list(query.keyspace.as_deref()).await?;
    Ok(json(StatusCode::OK, JobList { jobs }))
}

/// `GET /v1/jobs/{id}`
pub async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    valid_id(&id)?;
    match state.mover.get(&id).await? {
        Some(job) => Ok(json(StatusCode::OK, job)),
        None => Err(job_not_found(&id)),
    }
}

/// `POST /v1/jobs/{id}/cancel`
pub async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let job = state.mover.cancel(&id).await?;
    Ok(json(StatusCode::ACCEPTED, job))
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    shardlib::id::validate_name("job id", id).map_err(|e| ApiError::invalid_input(e.to_string()))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "job_not_found", format!("job {id} does not exist"))
}

impl From<CreateError> for ApiError {
    fn from(error: CreateError) -> Self {
        let message = error.to_string();
        match error {
            CreateError::Invalid(_) => ApiError::invalid_input(message),
            CreateError::Service(service) => ApiError::from(service),
            CreateError::UnknownShard { .. } => ApiError::new(StatusCode::NOT_FOUND, "shard_not_found", message),
            CreateError::Busy { .. } => ApiError::conflict("range_busy", message),
            CreateError::Precheck(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "precheck_failed", message),
            CreateError::Database(_) => ApiError::unavailable("database_unavailable", message),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(error: CancelError) -> Self {
        let message = error.to_string();
        match error {
            CancelError::NotFound(id) => job_not_found(&id),
            CancelError::Finished { .. } => ApiError::conflict("job_finished", message),
            CancelError::TooLate(_) => ApiError::conflict("too_late", message),
            CancelError::Service(service) => ApiError::from(service),
        }
    }
}

/// `POST /v1/keyspaces/{name}/rebalance` with a
/// [`RebalanceRequest`](crate::rebalance::RebalanceRequest): measures the
/// ranges, plans, and (unless `dry_run`) starts the plan's jobs. 200 with
/// `{"keyspace", "ranges", "plan", "jobs"}`.
pub async fn rebalance(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = KeyspaceName::new(&name).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let request: crate::rebalance::RebalanceRequest = parse_json(body)?;
    let outcome = crate::rebalance::rebalance(&state.mover, &name, &request).await?;
    let status = if outcome.jobs.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json(status, outcome))
}

impl From<crate::rebalance::RebalanceError> for ApiError {
    fn from(error: crate::rebalance::RebalanceError) -> Self {
        use crate::rebalance::RebalanceError;
        let message = error.to_string();
        match error {
            RebalanceError::Invalid(_) => ApiError::invalid_input(message),
            RebalanceError::Busy { .. } => ApiError::conflict("range_busy", message),
            RebalanceError::Plan(
                crate::planner::PlanError::Invalid(_) | crate::planner::PlanError::UnknownShard { .. },
            ) => ApiError::invalid_input(message),
            RebalanceError::Plan(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_plan", message),
            RebalanceError::Create(create) => ApiError::from(create),
        }
    }
}
