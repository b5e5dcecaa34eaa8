//! The push API's bearer token (`[logic.http] push_token`): off when empty, as in goim.

use super::{AppState, refuse};
use crate::stats::HttpRefusal;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;
use tracing::warn;

/// Whether an `Authorization` value carries `token` as `Bearer <token>`: the scheme in any
/// case (RFC 7235 §2.1, RFC 6750 §2.1), one or more spaces before the token. The comparison
/// takes the same time wherever the first difference is (it still tells a wrong length apart,
/// which says nothing of the token's bytes). An empty `token` matches nothing. Shared by the
/// push API (`[logic.http] push_token`) and IM's management API (`im.admin_token`).
pub fn bearer_ok(authorization: Option<&str>, token: &str) -> bool {
    let given = authorization
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    !token.is_empty() && given.is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
}

/// Middleware on the `/goim/*` routes that need the token: a missing or wrong one is answered
/// HTTP 401, code `-401`, counted and logged (once a second at most), and the route never runs.
pub(crate) async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let token = &s.logic.config.http.push_token;
    if token.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_ok(given, token) {
        return next.run(req).await;
    }
    if s.logic.stats.http_refused(HttpRefusal::Unauthorized) {
        warn!(path = %req.uri().path(), "push API request without the right bearer token refused (logged once a second)");
    }
    refuse(HttpRefusal::Unauthorized, "missing or wrong bearer token")
}

#[cfg(test)]
mod tests {
    use super::bearer_ok;

    #[test]
    fn only_the_exact_bearer_token_matches_with_the_scheme_in_any_case() {
        assert!(bearer_ok(Some("Bearer s3cret"), "s3cret"));
        // RFC 7235 §2.1: the scheme is case-insensitive (the break-it run of issue 15 found
        // the push API refusing `bearer`, which the management API accepted).
        assert!(bearer_ok(Some("bearer s3cret"), "s3cret"));
        assert!(bearer_ok(Some("BEARER  s3cret"), "s3cret"));
        assert!(!bearer_ok(Some("Bearer s3cret2"), "s3cret"));
        assert!(!bearer_ok(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_ok(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_ok(Some("s3cret"), "s3cret"));
        assert!(!bearer_ok(None, "s3cret"));
        assert!(!bearer_ok(Some("Bearer "), ""));
    }
}
