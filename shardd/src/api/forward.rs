//! Followers forward writes to the leader.
//!
//! A write (`POST`, `PUT`, `DELETE`) reaching a follower is sent on to the
//! leader's advertised address with the same method, path, query, body,
//! `Authorization` and `Content-Type`, and the leader's answer is returned
//! as it is (with `x-shardd-leader: <member id>`). Without a known leader
//! the answer is 503 `no_leader`; when the leader cannot be reached, 503
//! `leader_unreachable`. A forwarded request carries
//! `x-shardd-forwarded-by: <member id>` and is never forwarded twice: a
//! member that receives one while not leading answers 503 `not_leader`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::leader::Member;

/// The header naming the member that forwarded a request.
pub const FORWARDED_BY: &str = "x-shardd-forwarded-by";
/// The header naming the leader that answered a forwarded request.
pub const LEADER: &str = "x-shardd-leader";

/// Sends requests on to the leader.
#[derive(Clone, Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl Forwarder {
    /// A forwarder whose requests time out after `timeout`.
    pub fn new(timeout: Duration, max_body_bytes: usize) -> Result<Self, reqwest::Error> {
        let client =
            reqwest::Client::builder().timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(5))).build()?;
        Ok(Forwarder { client, max_body_bytes })
    }

    /// Sends `request` to `leader` and returns its answer.
    pub async fn forward(&self, leader: &Member, me: &str, request: Request) -> Result<Response, ApiError> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, self.max_body_bytes).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        })?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", leader.address);
        let unreachable = |e: reqwest::Error| {
            ApiError::unavailable(
                "leader_unreachable",
                format!("cannot reach the leader {} at {}: {e}", leader.member_id, leader.address),
            )
        };
        let mut outgoing = self.client.request(parts.method.clone(), &url).header(FORWARDED_BY, me);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(value) = parts.headers.get(&name) {
                outgoing = outgoing.header(name, value.clone());
            }
        }
        tracing::debug!(method = %parts.method, path, leader = %leader.member_id, "forwarding a write to the leader");
        let answer = outgoing.body(body).send().await.map_err(unreachable)?;
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = answer.bytes().await.map_err(unreachable)?;
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        if let Ok(value) = HeaderValue::from_str(&leader.member_id) {
            response.headers_mut().insert(LEADER, value);
        }
        Ok(response)
    }
}

/// Middleware: a follower forwards writes; reads are answered locally.
pub async fn forward_writes(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if is_read || state.leader.is_leader() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_BY) {
        return ApiError::unavailable(
            "not_leader",
            "this member is not the leader (the request was already forwarded)",
        )
        .into_response();
    }
    let Some(leader) = state.leader.remote_leader() else {
        return ApiError::unavailable("no_leader", "no leader is elected; try again shortly").into_response();
    };
    if leader.address.is_empty() {
        return ApiError::unavailable("no_leader", format!("the leader {} has no known address", leader.member_id))
            .into_response();
    }
    let me = state.leader.me().member_id.clone();
    state.forwarder.forward(&leader, &me, request).await.unwrap_or_else(IntoResponse::into_response)
}
