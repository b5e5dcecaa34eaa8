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
//!   (`[app] ws_url`, or `ws://{the request's Host without port}:{comet's WebSocket port}/sub`)
//!   and whether the development sign-in is on.
//! - [`dev`]: the development-only sign-in and group routes, mounted with `[app]
//!   dev_signin` only.
//!
//! # Layout
//! - this file: the embedded files, `/app/api/config`, [`router`].
//! - [`dev`]: `/app/api/signin`, `/app/api/users`, `/app/api/groups`.

pub mod dev;

use crate::config::App;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use starling_im::Im;
use std::fmt::Write;
use std::sync::Arc;

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

/// The app's routes: the files, `/app/api/config` and, with `dev_signin`, [`dev::router`].
/// `ws_port`: the port of comet's first WebSocket listener (as bound).
pub fn router(config: &App, im: Arc<Im>, ws_port: u16) -> Router {
    let state = AppState {
        config: config.clone(),
        ws_port,
    };
    let mut r = Router::new()
        .route("/", get(index))
        .route("/app", get(index))
        .route("/app/", get(index))
        .route("/app/api/config", get(app_config))
        .route("/app/{*file}", get(file))
        .with_state(state);
    if config.dev_signin {
        r = r.merge(dev::router(im));
    }
    r
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
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
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

async fn app_config(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let ws_url = if s.config.ws_url.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("ws://{}:{}/sub", hostname(host), s.ws_port)
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

/// `Host` without its port: `example.com:3111` → `example.com`, `[::1]:3111` → `[::1]`.
fn hostname(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_drops_the_port() {
        assert_eq!(hostname("example.com:3111"), "example.com");
        assert_eq!(hostname("example.com"), "example.com");
        assert_eq!(hostname("[::1]:3111"), "[::1]");
        assert_eq!(hostname("[::1]"), "[::1]");
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
