//! Keyspaces, shards and the whole topology.
//!
//! Responses (DSN passwords always redacted, see [`views`](super::views)):
//!
//! - `GET /v1/keyspaces` → `{"epoch", "keyspaces": [{"name", "algorithm", "shard_count", "range_count", "version"}]}`
//! - `POST /v1/keyspaces` `{"name", "keyspace": {…}}` → 201 `{"name", "version", "epoch", "keyspace"}`
//! - `GET /v1/keyspaces/{name}` → `{"name", "version", "epoch", "keyspace"}`
//! - `DELETE /v1/keyspaces/{name}` → `{"name", "epoch"}`
//! - `GET /v1/keyspaces/{name}/shards` → `{"keyspace", "version", "epoch", "shards": [{…, "ranges"}]}`
//! - `POST /v1/keyspaces/{name}/shards` `{shard}` → 201 `{"keyspace", "version", "epoch", "shard"}`
//! - `PUT /v1/keyspaces/{name}/shards/{id}/state` `{"state"}` → `{"keyspace", "version", "epoch", "shard"}`
//! - `GET /v1/topology[?epoch=N]` → `{"epoch", "versions", "topology"}`

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use shardlib::topology::{Keyspace, Shard, ShardState};
use shardlib::{Epoch, KeyspaceName, ShardId};

use super::views::{KeyspaceSummary, KeyspaceView, ShardView, TopologyView};
use super::{ApiError, AppState, json, parse_json};
use crate::service::{Written, keyspace_of};

/// The body of `POST /v1/keyspaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyspace {
    /// The new keyspace's name.
    pub name: String,
    /// The keyspace, in the topology file's shape.
    pub keyspace: Keyspace,
}

/// The body of `PUT /v1/keyspaces/{name}/shards/{id}/state`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetState {
    /// `serving`, `draining` or `removed`.
    pub state: ShardState,
}

/// The query of `GET /v1/topology`.
#[derive(Debug, Deserialize)]
pub struct TopologyQuery {
    /// Read the topology as of this epoch instead of the latest.
    pub epoch: Option<u64>,
}

/// `{"epoch", "keyspaces"}`
#[derive(Debug, Serialize)]
pub struct KeyspaceList<'a> {
    /// The epoch read at.
    pub epoch: Epoch,
    /// One summary per keyspace, by name.
    pub keyspaces: Vec<KeyspaceSummary<'a>>,
}

/// `{"name", "version", "epoch", "keyspace"}`
#[derive(Debug, Serialize)]
pub struct KeyspaceResponse<'a> {
    /// The keyspace's name.
    pub name: &'a KeyspaceName,
    /// The epoch of its last modification.
    pub version: Epoch,
    /// The epoch read at (of the write, for writes).
    pub epoch: Epoch,
    /// The keyspace, DSN passwords redacted.
    pub keyspace: KeyspaceView<'a>,
}

/// `{"name", "epoch"}`
#[derive(Debug, Serialize)]
pub struct Deleted<'a> {
    /// The deleted keyspace.
    pub name: &'a KeyspaceName,
    /// The epoch of the deletion.
    pub epoch: Epoch,
}

/// `{"keyspace", "version", "epoch", "shards"}`
#[derive(Debug, Serialize)]
pub struct ShardList<'a> {
    /// The keyspace.
    pub keyspace: &'a KeyspaceName,
    /// The keyspace's version.
    pub version: Epoch,
    /// The epoch read at.
    pub epoch: Epoch,
    /// Its shards, each with the ranges it owns.
    pub shards: Vec<ShardView<'a>>,
}

/// `{"keyspace", "version", "epoch", "shard"}`
#[derive(Debug, Serialize)]
pub struct ShardResponse<'a> {
    /// The keyspace.
    pub keyspace: &'a KeyspaceName,
    /// The keyspace's version after the write.
    pub version: Epoch,
    /// The epoch of the write.
    pub epoch: Epoch,
    /// The shard, with the ranges it owns.
    pub shard: ShardView<'a>,
}

/// `{"epoch", "versions", "topology"}`
#[derive(Debug, Serialize)]
pub struct TopologyResponse<'a> {
    /// The epoch read at.
    pub epoch: Epoch,
    /// The version of each keyspace.
    pub versions: &'a BTreeMap<KeyspaceName, Epoch>,
    /// The topology, DSN passwords redacted.
    pub topology: TopologyView<'a>,
}

fn keyspace_name(name: &str) -> Result<KeyspaceName, ApiError> {
    KeyspaceName::new(name).map_err(|e| ApiError::invalid_input(e.to_string()))
}

fn shard_id(id: &str) -> Result<ShardId, ApiError> {
    ShardId::new(id).map_err(|e| ApiError::invalid_input(e.to_string()))
}

/// `GET /v1/keyspaces`
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshot = state.service.snapshot().await?;
    let topology = &snapshot.topology;
    let keyspaces: Vec<_> = topology
        .keyspaces
        .iter()
        .map(|(name, ks)| {
            KeyspaceSummary::new(name, ks, snapshot.versions.get(name).copied().unwrap_or(topology.epoch))
        })
        .collect();
    Ok(json(StatusCode::OK, KeyspaceList { epoch: topology.epoch, keyspaces }))
}

/// `POST /v1/keyspaces`
pub async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateKeyspace = parse_json(body)?;
    let name = KeyspaceName::new(request.name).map_err(|e| ApiError::invalid_input(format!("name: {e}")))?;
    let written = state.service.create_keyspace(&name, request.keyspace).await?;
    let keyspace = KeyspaceView::new(&written.keyspace);
    Ok(json(
        StatusCode::CREATED,
        KeyspaceResponse { name: &name, version: written.epoch, epoch: written.epoch, keyspace },
    ))
}

/// `GET /v1/keyspaces/{name}`
pub async fn get_one(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = keyspace_name(&name)?;
    let snapshot = state.service.snapshot().await?;
    let (keyspace, version) = keyspace_of(&snapshot, &name)?;
    let keyspace = KeyspaceView::new(keyspace);
    Ok(json(StatusCode::OK, KeyspaceResponse { name: &name, version, epoch: snapshot.topology.epoch, keyspace }))
}

/// `DELETE /v1/keyspaces/{name}` (only an empty keyspace, see
/// [`service`](crate::service)).
pub async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = keyspace_name(&name)?;
    let epoch = state.service.delete_keyspace(&name).await?;
    Ok(json(StatusCode::OK, Deleted { name: &name, epoch }))
}

/// `GET /v1/keyspaces/{name}/shards`
pub async fn list_shards(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = keyspace_name(&name)?;
    let snapshot = state.service.snapshot().await?;
    let (keyspace, version) = keyspace_of(&snapshot, &name)?;
    let shards: Vec<_> = keyspace.shards.iter().map(|shard| ShardView::with_ranges(keyspace, shard)).collect();
    Ok(json(StatusCode::OK, ShardList { keyspace: &name, version, epoch: snapshot.topology.epoch, shards }))
}

/// `POST /v1/keyspaces/{name}/shards`
pub async fn add_shard(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = keyspace_name(&name)?;
    let shard: Shard = parse_json(body)?;
    let id = shard.id.clone();
    let written = state.service.add_shard(&name, shard).await?;
    Ok(json(StatusCode::CREATED, shard_body(&name, &id, &written)?))
}

/// `PUT /v1/keyspaces/{name}/shards/{id}/state`
pub async fn set_shard_state(
    State(state): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = keyspace_name(&name)?;
    let id = shard_id(&id)?;
    let request: SetState = parse_json(body)?;
    let written = state.service.set_shard_state(&name, &id, request.state).await?;
    Ok(json(StatusCode::OK, shard_body(&name, &id, &written)?))
}

fn shard_body<'a>(name: &'a KeyspaceName, id: &ShardId, written: &'a Written) -> Result<ShardResponse<'a>, ApiError> {
    let shard =
        written.keyspace.shard(id.as_str()).ok_or_else(|| ApiError::shard_not_found(name.as_str(), id.as_str()))?;
    let shard = ShardView::with_ranges(&written.keyspace, shard);
    Ok(ShardResponse { keyspace: name, version: written.epoch, epoch: written.epoch, shard })
}

/// `GET /v1/topology[?epoch=N]`
pub async fn topology(
    State(state): State<Arc<AppState>>,
    query: Result<Query<TopologyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_input(format!("epoch: {}", e.body_text())))?;
    let snapshot = match query.epoch {
        Some(epoch) => state.service.snapshot_at(Epoch(epoch)).await?,
        None => state.service.snapshot().await?,
    };
    let topology = TopologyView::new(&snapshot.topology);
    Ok(json(
        StatusCode::OK,
        TopologyResponse { epoch: snapshot.topology.epoch, versions: &snapshot.versions, topology },
    ))
}
