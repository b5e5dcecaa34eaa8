//! The push API's bearer token (`[logic.http] push_token`): off when empty, as in goim.

use super::{AppState, refuse};
use crate::stats::HttpRefusal;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;
use tracing::warn;

/// Whether `authorization` (the header's value) carries `token` as `Bearer <token>`. The
/// comparison takes the same time wherever the first difference is (it still tells a wrong
/// length apart, which says nothing of the token's bytes).
pub(crate) fn bearer_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

/// Middleware on the `/goim/*` routes that need the token: a missing or wrong one is answered
/// HTTP 401, code `-401`, counted and logged (once a second at most), and the route never runs.
pub(crate) async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let token = &s.logic.config.http.push_token;
    if token.is_empty() {
        return next.run(req).await;
    }
    let given = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if bearer_matches(given, token) {
        return next.run(req).await;
    }
    if s.logic.stats.http_refused(HttpRefusal::Unauthorized) {
        warn!(path = %req.uri().path(), "push API request without the right bearer token refused (logged once a second)");
    }
    refuse(HttpRefusal::Unauthorized, "missing or wrong bearer token")
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cret2"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some(b"bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some(b"s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
