//! API errors: one JSON shape, `{"error": {"code": "...", "message": "..."}}`,
//! with a fitting status code.
//!
//! | status | codes |
//! |---|---|
//! | 400 | `invalid_input` (malformed body, query or name), `invalid_topology` (the keyspace or shard breaks a rule; the message names the range, shard or field) |
//! | 401 | `unauthorized` (missing or wrong bearer token) |
//! | 404 | `not_found`, `keyspace_not_found`, `shard_not_found`, `epoch_not_found`, `range_not_found`, `job_not_found` |
//! | 405 | `method_not_allowed` |
//! | 409 | `keyspace_exists`, `shard_exists`, `keyspace_not_empty`, `shard_owns_ranges`, `conflict`, `range_busy` (a job moves it, or it is frozen), `job_finished`, `too_late` (cancel after hand-over) |
//! | 422 | `precheck_failed` (the databases are not fit for the move; nothing changed) |
//! | 410 | `compacted` (the epoch's history is gone) |
//! | 413 | `payload_too_large` |
//! | 500 | `internal`, `store_error` |
//! | 503 | `store_unavailable`, `not_leader`, `no_leader`, `leader_unreachable`, `database_unavailable` |
//!
//! Messages pass through [`redact`] on the way out, so that a connection
//! string echoed by a parser never shows its password.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shardlib::store::StoreError;
use shardlib::topology::redact;

use crate::service::ServiceError;

/// An API error response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for humans (lowercase, names the item at fault).
    pub message: String,
    /// Extra structured data (e.g. the ranges a shard still owns).
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 400 `invalid_topology`.
    pub fn invalid_topology(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_topology", message)
    }

    /// 404 `keyspace_not_found`.
    pub fn keyspace_not_found(name: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "keyspace_not_found", format!("keyspace {name} does not exist"))
    }

    /// 404 `shard_not_found`.
    pub fn shard_not_found(keyspace: &str, shard: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "shard_not_found", format!("keyspace {keyspace} has no shard {shard}"))
    }

    /// 409 with this code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 503 with this code.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body, as sent.
    pub fn body(&self) -> serde_json::Value {
        let body =
            Body { error: Inner { code: self.code, message: redact(&self.message), details: self.details.as_ref() } };
        serde_json::to_value(body).unwrap_or_default()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::Unavailable { .. } => ApiError::unavailable("store_unavailable", message),
            StoreError::Unauthorized { .. } => ApiError::unavailable("store_unavailable", message),
            StoreError::Fenced { .. } => ApiError::unavailable("not_leader", message),
            StoreError::Conflict { .. } => ApiError::conflict("conflict", message),
            StoreError::Compacted { .. } => ApiError::new(StatusCode::GONE, "compacted", message),
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            StoreError::Invalid(_) => ApiError::invalid_topology(message),
            StoreError::InvalidName(_) => ApiError::invalid_input(message),
            StoreError::Backend { .. } | StoreError::Config { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message)
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        match error {
            ServiceError::KeyspaceNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "keyspace_not_found", message),
            ServiceError::ShardNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "shard_not_found", message),
            ServiceError::KeyspaceExists(_) => ApiError::conflict("keyspace_exists", message),
            ServiceError::ShardExists { .. } => ApiError::conflict("shard_exists", message),
            ServiceError::KeyspaceNotEmpty { serving, .. } => ApiError::conflict("keyspace_not_empty", message)
                .with_details(serde_json::json!({ "serving_shards": serving })),
            ServiceError::ShardOwnsRanges { ranges, .. } => {
                ApiError::conflict("shard_owns_ranges", message).with_details(serde_json::json!({ "ranges": ranges }))
            }
            ServiceError::Invalid(_) => ApiError::invalid_topology(message),
            ServiceError::InvalidChange(_) => ApiError::conflict("conflict", message),
            ServiceError::NotLeader => ApiError::unavailable("not_leader", message),
            ServiceError::NotRangePartitioned { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            ServiceError::RangeNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "range_not_found", message),
            ServiceError::RangeState { .. } => ApiError::conflict("range_busy", message),
            ServiceError::Contended { .. } => ApiError::conflict("conflict", message),
            ServiceError::Store(store) => ApiError::from(store),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, redact(&self.message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %redact(&self.message), "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), code = self.code, message = %redact(&self.message), "request refused");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use shardlib::Epoch;
    use shardlib::topology::TopologyError;

    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let cases = [
            (StoreError::Unavailable { message: "connection refused".into() }, 503, "store_unavailable"),
            (StoreError::Fenced { key: "leader".into() }, 503, "not_leader"),
            (
                StoreError::Conflict { item: "keyspace users".into(), expected: "a".into(), found: "b".into() },
                409,
                "conflict",
            ),
            (StoreError::Compacted { requested: Epoch(1), oldest: Epoch(5) }, 410, "compacted"),
            (StoreError::NotFound { item: "epoch 99".into() }, 404, "not_found"),
            (StoreError::Invalid(TopologyError::NoShards { keyspace: "users".into() }), 400, "invalid_topology"),
            (StoreError::Backend { message: "boom".into() }, 500, "store_error"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }

    #[test]
    fn service_errors_map_to_statuses() {
        let users = shardlib::KeyspaceName::new("users").unwrap();
        let s1 = shardlib::ShardId::new("s1").unwrap();
        let cases = [
            (ServiceError::KeyspaceNotFound(users.clone()), 404, "keyspace_not_found"),
            (ServiceError::ShardNotFound { keyspace: users.clone(), shard: s1.clone() }, 404, "shard_not_found"),
            (ServiceError::KeyspaceExists(users.clone()), 409, "keyspace_exists"),
            (ServiceError::ShardExists { keyspace: users.clone(), shard: s1.clone() }, 409, "shard_exists"),
            (
                ServiceError::KeyspaceNotEmpty { keyspace: users.clone(), serving: vec![s1.clone()] },
                409,
                "keyspace_not_empty",
            ),
            (ServiceError::Invalid(TopologyError::NoShards { keyspace: "users".into() }), 400, "invalid_topology"),
            (ServiceError::InvalidChange(TopologyError::NoShards { keyspace: "users".into() }), 409, "conflict"),
            (ServiceError::NotLeader, 503, "not_leader"),
            (ServiceError::Contended { keyspace: users.clone(), attempts: 8 }, 409, "conflict"),
            (ServiceError::Store(StoreError::Unavailable { message: "x".into() }), 503, "store_unavailable"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{}", api.message);
        }
        let owns = ApiError::from(ServiceError::ShardOwnsRanges {
            keyspace: users,
            shard: s1,
            ranges: vec!["-80".into(), "c0-".into()],
        });
        assert_eq!((owns.status.as_u16(), owns.code), (409, "shard_owns_ranges"));
        assert!(owns.message.contains("-80, c0-"), "{}", owns.message);
        assert_eq!(owns.body()["error"]["details"]["ranges"], serde_json::json!(["-80", "c0-"]));
    }

    #[test]
    fn body_has_the_documented_shape_and_no_passwords() {
        let error = ApiError::invalid_input("unknown variant `postgres://app:s3cret@db/x`");
        let body = error.body();
        assert_eq!(body["error"]["code"], "invalid_input");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(body["error"].get("details").is_none());
        let with = ApiError::conflict("shard_owns_ranges", "x").with_details(serde_json::json!({"ranges": ["-80"]}));
        assert_eq!(with.body()["error"]["details"]["ranges"][0], "-80");
    }

    #[test]
    fn unauthorized_asks_for_a_bearer_token() {
        let response = ApiError::unauthorized("missing bearer token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
