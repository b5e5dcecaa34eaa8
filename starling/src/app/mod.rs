//! The web chat app (issue 14), served on the HTTP API's port when `[app] enabled`: its
//! built files (`app/dist/`, generated from `app/src/*.ts` and committed, so `cargo build`
//! needs no Node) are embedded in the binary at compile time, nothing is read from disk.
//!
//! Routes (merged into logic's router, which keeps its own fallback):
//! - `GET /` (and `/app`, `/app/`) → `index.html`; `GET /app/{file}` → the embedded file with its content type,
//!   an `ETag` (the file's SHA-256) and `Cache-Control: no-cache` (names carry no hash, so
//!   the browser revalidates and gets `304` while unchanged); the page also gets a
//!   `Content-Security-Policy` (this origin's files, WebSockets, no inline script, no framing).
//!   An unknown file is a plain `404`.
//! - `GET /app/api/config` → `{wsUrl, devSignin}`: the comet WebSocket URL the page uses
//!   (`[app] ws_url`, or `ws://{the request's host}:{comet's WebSocket port}/sub`, the host
//!   taken from the request URI's authority (HTTP/2, absolute-form) or else `Host`, and
//!   refused with `400` unless it is a plain host name or IP address with an optional port)
//!   and whether the development sign-in is on.
//! - Any other `/app/api/...` → `404` in goim's envelope (`{"code":-404}`), whatever the method.
//!
//! Every answer of `/app/api/...` with a status of 400 or more is logged (INFO: method, path,
//! status) and counted in `starling_app_api_refused_total{status}`.
//! - [`dev`]: the development-only sign-in and group routes, mounted with `[app]
//!   dev_signin` only.
//!
//! # Layout
//! - this file: the embedded files, `/app/api/config`, [`router`].
//! - [`dev`]: `/app/api/signin`, `/app/api/users`, `/app/api/groups`.

pub mod dev;

use crate::config::App;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use starling_cluster::metrics::{self, DescriptorEncoder};
use starling_im::Im;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// `app/dist/`, built by `npm run build` in `app/` (tools/test.sh checks it is up to date).
#[derive(rust_embed::RustEmbed)]
#[folder = "../app/dist/"]
struct Assets;

/// The page loads only this origin's files and talks only to it and to a WebSocket (comet's
/// port, or `[app] ws_url`); no inline script, no framing.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Clone)]
struct AppState {
    config: App,
    /// comet's first WebSocket port, for the default `wsUrl`.
    ws_port: u16,
}

/// The app API's refusals by HTTP status, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    refused: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    /// `starling_app_api_refused_total{status}`: answers of `/app/api/...` with status ≥ 400.
    pub fn collect(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        metrics::counters(
            enc,
            "starling_app_api_refused",
            "Answers of the chat app's /app/api routes with an HTTP status of 400 or more.",
            refused
                .into_iter()
                .map(|(status, n)| ([("status", status.to_string())], n)),
        )
    }
}

/// The app's routes: the files, `/app/api/config` and, with `dev_signin`, [`dev::router`].
/// `ws_port`: the port of comet's first WebSocket listener (as bound); `stats` counts the
/// API's refusals.
pub fn router(
    config: &App,
    im: Arc<Im>,
    logic: Arc<starling_logic::Logic>,
    ws_port: u16,
    stats: Arc<Stats>,
) -> Router {
    let state = AppState {
        config: config.clone(),
        ws_port,
    };
    let mut api = Router::new()
        .route("/app/api/config", get(app_config))
        .route("/app/api/{*rest}", any(api_not_found))
        .with_state(state.clone());
    if config.dev_signin {
        api = api.merge(dev::router(im, logic));
    }
    let api = api.layer(middleware::from_fn_with_state(stats, log_refusals));
    Router::new()
        .route("/", get(index))
        .route("/app", get(index))
        .route("/app/", get(index))
        .route("/app/{*file}", get(file))
        .with_state(state)
        .merge(api)
}

/// Logs and counts the API's answers with status ≥ 400 (the handlers' envelopes say why).
async fn log_refusals(State(stats): State<Arc<Stats>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    let status = r.status().as_u16();
    if status >= 400 {
        tracing::info!(%method, %path, status, "app API: refused");
        *stats
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }
    r
}

async fn api_not_found() -> Response {
    let body = serde_json::json!({ "code": -404, "message": "no such app API route" });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// One embedded file, or 404; `If-None-Match` with its ETag → 304.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(f) = Assets::get(name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut etag = String::with_capacity(66);
    etag.push('"');
    for b in f.metadata.sha256_hash() {
        let _ = write!(etag, "{b:02x}");
    }
    etag.push('"');
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    // Weak comparison, as RFC 9110 §13.1.2 asks of If-None-Match: `W/"x"` matches `"x"`, and
    // `*` matches any current file.
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
        })
    });
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mime = HeaderValue::from_str(&content_type(f.metadata.mimetype()))
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut r = (common, [(header::CONTENT_TYPE, mime)], f.data.into_owned()).into_response();
    if name.ends_with(".html") {
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    r
}

/// Text types get `charset=utf-8` (the app's files are UTF-8).
fn content_type(mime: &str) -> String {
    let text =
        mime.starts_with("text/") || mime == "application/javascript" || mime == "application/json";
    if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

async fn app_config(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let ws_url = if s.config.ws_url.is_empty() {
        // HTTP/2 and absolute-form requests name the host in the URI; HTTP/1.1 in `Host`
        // (RFC 9112 §3.2.2: the URI's wins). No host at all: the loopback address.
        let authority = uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
            headers
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
        match authority
            .as_deref()
            .map_or(Some("127.0.0.1".into()), ws_host)
        {
            Some(host) => format!("ws://{host}:{}/sub", s.ws_port),
            None => {
                let body = serde_json::json!({
                    "code": 400,
                    "message": "the request's host is not a host name or IP address",
                });
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
        }
    } else {
        s.config.ws_url.clone()
    };
    let body = serde_json::json!({
        "code": 0,
        "message": "",
        "data": { "wsUrl": ws_url, "devSignin": s.config.dev_signin },
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The host of a request's authority (`example.com:3111` → `example.com`, `[::1]:3111` →
/// `[::1]`), as the WHATWG URL parser reads it (lower case, IDNA), or `None` unless the
/// authority is only a host and an optional port: no user info, path, query, fragment or
/// character a URL would read differently (so it cannot move the page's token elsewhere).
fn ws_host(authority: &str) -> Option<String> {
    if authority.is_empty() || authority.len() > 300 {
        return None;
    }
    let url = url::Url::parse(&format!("ws://{authority}/sub")).ok()?;
    let plain = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/sub"
        && url.query().is_none()
        && url.fragment().is_none();
    // A domain is left as the letters, digits, dots and hyphens of DNS (after IDNA).
    let dns = |d: &str| {
        d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    match url.host()? {
        url::Host::Domain(d) if !dns(d) => None,
        host => plain.then(|| host.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_host_drops_the_port_and_refuses_what_is_not_a_host() {
        let host = |a: &str| ws_host(a);
        assert_eq!(host("example.com:3111").as_deref(), Some("example.com"));
        assert_eq!(host("Example.COM").as_deref(), Some("example.com"));
        assert_eq!(host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("[::1]:3111").as_deref(), Some("[::1]"));
        assert_eq!(host("[::1]").as_deref(), Some("[::1]"));
        // Each would point the page's WebSocket (and its token) at another host, or is no
        // host at all (found by a bad-input pass).
        for bad in [
            "evil.example/x?",
            "127.0.0.1@evil.example:80",
            "evil.example#",
            "evil.example\\x",
            "evil.example/sub?x=:1",
            "a b",
            "\"quoted\"",
            "<script>",
            "",
            ":3111",
            "[::1",
            "::1",
            "example.com:99999",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        assert_eq!(host(&"a".repeat(400)), None);
    }

    #[test]
    fn text_types_say_utf8() {
        assert_eq!(content_type("text/html"), "text/html; charset=utf-8");
        assert_eq!(content_type("image/png"), "image/png");
    }

    #[test]
    fn the_built_app_is_embedded() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::get("app.js").is_some());
        assert!(Assets::get("../Cargo.toml").is_none());
    }
}
