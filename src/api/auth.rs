//! Bearer-token authentication: a worker token (telemetry, reading plans,
//! acks) and an admin token (topology, rebalance; it also opens every worker
//! route). With no token configured there is no authentication, and the
//! service only listens on loopback (checked in the configuration).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
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

fn check(state: &AppState, req: &Request, role: Role) -> Result<(), ApiError> {
    let tokens = &state.config.tokens;
    if !tokens.enabled() {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
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

pub async fn require_worker(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, &req, Role::Worker) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, &req, Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn compares_whole_tokens() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
