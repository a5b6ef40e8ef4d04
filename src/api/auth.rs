//! Bearer-token authentication: a worker token (telemetry, reading plans,
//! acks) and an admin token (topology, rebalance; it also opens every worker
//! route). With no token configured there is no authentication, and the
//! service only listens on loopback (checked in the configuration).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use ballast_protocol::ErrorCode;

use super::error::ApiError;
use crate::state::AppState;

/// Which token a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Admin,
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header. The scheme name
/// is case-insensitive (RFC 7235 section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Sent with every 401 so a client learns which scheme to use (RFC 7235 section 3.1).
const CHALLENGE: &str = "Bearer realm=\"ballast\"";

fn check(state: &AppState, req: &Request, role: Role) -> Result<(), ApiError> {
    let tokens = &state.config.tokens;
    if !tokens.enabled() {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing `Authorization: Bearer <token>`",
            )
        })?;
    let matches = |t: &Option<String>| {
        t.as_ref()
            .is_some_and(|t| same(t.as_bytes(), presented.as_bytes()))
    };
    let allowed = match role {
        Role::Worker => matches(&tokens.worker) || matches(&tokens.admin),
        Role::Admin => matches(&tokens.admin),
    };
    if allowed {
        Ok(())
    } else if role == Role::Admin && matches(&tokens.worker) {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this route needs the admin token",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the bearer token is not valid",
        ))
    }
}

/// A refusal as a response; a 401 carries its `WWW-Authenticate` challenge.
fn refuse(err: ApiError) -> Response {
    let unauthorized = err.status == StatusCode::UNAUTHORIZED;
    let mut response = err.into_response();
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    response
}

pub async fn require_worker(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, &req, Role::Worker) {
        Ok(()) => next.run(req).await,
        Err(e) => refuse(e),
    }
}

pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, &req, Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => refuse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, same};

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
