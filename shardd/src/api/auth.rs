//! Bearer-token authentication of `/v1` routes.
//!
//! When a token is configured, every `/v1` request must carry
//! `Authorization: Bearer <token>`; otherwise it is answered 401
//! `unauthorized` with `WWW-Authenticate: Bearer`. `/metrics` and
//! `/health/*` stay open (bind them to a private address). The comparison
//! takes the same time wherever the first difference is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::Secret;

/// Middleware: refuses `/v1` requests without the right token.
pub async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match check(state.token.as_ref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Whether `headers` carry the `expected` token (always, when none is set).
pub fn check(expected: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("missing bearer token"));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid bearer token")),
        None => Err(ApiError::unauthorized("the Authorization header is not a bearer token")),
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn tokens_are_checked() {
        let token = Secret::new("s3cret");
        assert!(check(None, &headers(None)).is_ok());
        assert!(check(Some(&token), &headers(Some("Bearer s3cret"))).is_ok());
        assert!(check(Some(&token), &headers(Some("bearer s3cret"))).is_ok());
        for bad in
            [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Basic s3cret"), Some("s3cret"), Some("Bearer ")]
        {
            let error = check(Some(&token), &headers(bad)).unwrap_err();
            assert_eq!(error.status.as_u16(), 401, "{bad:?}");
            assert!(!error.message.contains("s3cret"));
        }
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
