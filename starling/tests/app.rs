//! The web chat app's server side (`starling::app`): the embedded files, `/app/api/config`,
//! the development sign-in and group routes, and the `[app]` configuration rules. The app
//! itself is tested in Chromium by `app/test/` (tools/test.sh).

mod common;

use common::im_server::Im;
use common::{start_with, test_config};
use serde_json::{Value, json};
use starling::Config;
use starling_cluster::boot;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request with extra header lines (`"Name: value"`).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    let has = |name: &str| {
        headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with(&format!("{name}:")))
    };
    if !has("host") {
        head.push_str("Host: localhost:1\r\n");
    }
    // What the app sends; a test of other content types names its own.
    if method == "POST" && !has("content-type") {
        head.push_str("Content-Type: application/json\r\n");
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Reply { status, head, body }
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line + 2..line + 2 + n]);
        b = &b[line + 4 + n..];
    }
}

fn app_on(c: &mut Config, dev: bool) {
    c.app.enabled = true;
    c.app.dev_signin = dev;
}

#[test]
fn files_are_served_with_types_etags_and_404s() {
    let im = Im::start_with(|c| app_on(c, false));
    let http = im.server.http;
    let index = request(http, "GET", "/", &[], "");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let csp = index.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(String::from_utf8_lossy(&index.body).contains("/app/app.js"));
    let etag = index.header("etag").unwrap().to_string();
    let again = request(http, "GET", "/", &[&format!("If-None-Match: {etag}")], "");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let stale = request(http, "GET", "/", &["If-None-Match: \"other\""], "");
    assert_eq!(stale.status, 200);

    let js = request(http, "GET", "/app/app.js", &[], "");
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type").unwrap().contains("javascript"),
        "{}",
        js.head
    );
    let css = request(http, "GET", "/app/style.css", &[], "");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    assert_eq!(
        request(http, "GET", "/app/", &[], "").header("etag"),
        Some(etag.as_str())
    );
    for path in [
        "/app/nope.js",
        "/app/../Cargo.toml",
        "/app/%2e%2e/Cargo.toml",
        "/app/api/nope",
    ] {
        assert_eq!(request(http, "GET", path, &[], "").status, 404, "{path}");
    }
    // Other unknown paths keep goim's envelope.
    let other = request(http, "GET", "/nope", &[], "");
    assert_eq!(other.json()["code"], -404);

    let cfg = request(http, "GET", "/app/api/config", &[], "").json();
    assert_eq!(
        cfg["data"],
        json!({"wsUrl": format!("ws://localhost:{}/sub", im.server.ws.port()), "devSignin": false})
    );
    // Without dev_signin there is no sign-in route.
    let signin = request(http, "POST", "/app/api/signin", &[], r#"{"uid":"1"}"#);
    assert_eq!(signin.status, 404, "{}", signin.head);
    assert!(!String::from_utf8_lossy(&signin.body).contains("token"));
}

#[test]
fn the_app_is_off_by_default() {
    let im = Im::start();
    let index = request(im.server.http, "GET", "/", &[], "");
    assert_eq!(index.json()["code"], -404);
    let cfg = request(im.server.http, "GET", "/app/api/config", &[], "");
    assert_eq!(cfg.json()["code"], -404);
}

fn signin(http: SocketAddr, uid: &str, name: &str) -> String {
    let r = request(
        http,
        "POST",
        "/app/api/signin",
        &[],
        &json!({"uid": uid, "name": name}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["data"]["uid"], uid);
    assert_eq!(v["data"]["name"], name);
    v["data"]["token"].as_str().unwrap().to_string()
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn dev_signin_mints_a_token_that_logs_in_and_drives_groups() {
    let im = Im::start_with(|c| app_on(c, true));
    let http = im.server.http;
    assert_eq!(
        request(http, "GET", "/app/api/config", &[], "").json()["data"]["devSignin"],
        true
    );
    let alice = signin(http, "1", "Alice");
    let bob = signin(http, "2", "Bob");
    // The token is a real im_token: the server verifies it against uid 1.
    let tokens = starling_im::token::Tokens::new(common::im_server::SECRET).unwrap();
    assert!(tokens.verify(&alice, 1, "web", 0).is_ok());
    assert!(tokens.verify(&alice, 2, "web", 0).is_err());

    let name = request(http, "GET", "/app/api/users/2", &[&bearer(&alice)], "").json();
    assert_eq!(name["data"], json!({"uid": "2", "name": "Bob"}));
    let unknown = request(http, "GET", "/app/api/users/99", &[&bearer(&alice)], "").json();
    assert_eq!(unknown["data"]["name"], "");

    let g = request(
        http,
        "POST",
        "/app/api/groups",
        &[&bearer(&alice)],
        r#"{"name":"Trio","members":["2"]}"#,
    );
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    let gid = g.json()["data"]["gid"].as_str().unwrap().to_string();
    let info = request(
        http,
        "GET",
        &format!("/app/api/groups/{gid}"),
        &[&bearer(&bob)],
        "",
    )
    .json();
    assert_eq!(
        (
            info["data"]["name"].as_str(),
            info["data"]["memberCount"].as_u64()
        ),
        (Some("Trio"), Some(2))
    );
    let add = format!("/app/api/groups/{gid}/members");
    // Bob is a plain member: he may not add; Alice (owner) may.
    let r = request(http, "POST", &add, &[&bearer(&bob)], r#"{"uids":["3"]}"#);
    assert_eq!(r.status, 403);
    let r = request(http, "POST", &add, &[&bearer(&alice)], r#"{"uids":["3"]}"#);
    assert_eq!(r.json()["data"]["added"], json!(["3"]));
    // Carol was never a member of another group: 403 on its info.
    let carol = signin(http, "5", "Carol");
    let r = request(
        http,
        "GET",
        &format!("/app/api/groups/{gid}"),
        &[&bearer(&carol)],
        "",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn dev_routes_refuse_bad_input_and_missing_tokens() {
    let im = Im::start_with(|c| app_on(c, true));
    let http = im.server.http;
    for (body, code) in [
        (r#"{"uid":"0"}"#, 400),
        (r#"{"uid":"-3"}"#, 400),
        (r#"{"uid":"x"}"#, 400),
        (r#"{}"#, 400),
        ("not json", 400),
    ] {
        let r = request(http, "POST", "/app/api/signin", &[], body);
        assert_eq!(
            (r.status, r.json()["code"].as_i64()),
            (code, Some(code as i64)),
            "{body}"
        );
    }
    let long = "n".repeat(300);
    let r = request(
        http,
        "POST",
        "/app/api/signin",
        &[],
        &json!({"uid": 1, "name": long}).to_string(),
    );
    assert_eq!(r.status, 413);
    for auth in [
        vec![],
        vec!["Authorization: Bearer nope".to_string()],
        vec!["Authorization: Basic eA==".to_string()],
    ] {
        let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
        let r = request(http, "POST", "/app/api/groups", &headers, r#"{"name":"g"}"#);
        assert_eq!(r.status, 401, "{auth:?}");
    }
    // A token signed with another secret is refused too.
    let forged = starling_im::token::Tokens::new("another-secret-0123456789abcdef")
        .unwrap()
        .mint(1, "", 60)
        .unwrap();
    let r = request(http, "GET", "/app/api/users/1", &[&bearer(&forged)], "");
    assert_eq!(r.status, 401);
    // A revoked user's older token is refused.
    let t = signin(http, "7", "Gone");
    std::thread::sleep(Duration::from_millis(1100)); // iat has second resolution
    common::im_server::admin_ok(&im, "POST", "/im/v1/users/7/kick", "{}");
    let r = request(http, "GET", "/app/api/users/1", &[&bearer(&t)], "");
    assert_eq!(r.status, 401);
}

#[test]
fn app_configuration_rules() {
    let err = boot::parse::<Config>("[app]\nenabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("app.enabled"), "{err}");
    let err = boot::parse::<Config>(
        "[im]\nenabled = true\ninsecure_trust_mid = true\n[app]\nenabled = true\ndev_signin = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("app.dev_signin") && err.contains("token_secret"),
        "{err}"
    );
    let err = boot::parse::<Config>("[app]\nws_url = \"http://x/sub\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("app.ws_url"), "{err}");
    let err = boot::parse::<Config>(
        "[comet.websocket]\nbind = []\n[im]\nenabled = true\ninsecure_trust_mid = true\n[app]\nenabled = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[comet.websocket] bind"), "{err}");
    let err = boot::parse::<Config>("[app]\nenable = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("enable"), "{err}");
    // The README's way to try it parses and turns everything on.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/app-try.toml"))
            .unwrap();
    let c = boot::parse::<Config>(&text).unwrap();
    assert!(c.im.enabled && c.app.enabled && c.app.dev_signin);
    assert_eq!(c.im.path, std::path::PathBuf::from("data/im"));
    // It hands anyone a token for any user: reachable from this machine only.
    let binds = [c.comet.tcp.bind.clone(), c.comet.websocket.bind.clone()].concat();
    assert!(binds.iter().all(|a| a.ip().is_loopback()), "{binds:?}");
    assert!(c.logic.http.bind.ip().is_loopback() && c.grpc.bind.ip().is_loopback());
}

#[test]
fn ws_url_from_the_config_wins() {
    let mut c = test_config();
    let dir = tempfile::tempdir().unwrap();
    c.im = common::im_server::im_config(dir.path()).im;
    app_on(&mut c, false);
    c.app.ws_url = "wss://chat.example.com/sub".into();
    let s = start_with(c);
    let cfg = request(s.http, "GET", "/app/api/config", &["X: y"], "").json();
    assert_eq!(cfg["data"]["wsUrl"], "wss://chat.example.com/sub");
}

/// Found by a bad-input pass: each of these was answered 200 (and the sign-in done) before.
#[test]
fn app_api_refuses_cross_site_posts_odd_names_and_hosts_logged_and_counted() {
    let im = Im::start_with(|c| app_on(c, true));
    let http = im.server.http;
    let body = r#"{"uid":"2","name":"renamed"}"#;
    // A form or text/plain POST from another site needs no CORS preflight: refused.
    for ct in [
        "Content-Type: text/plain;charset=UTF-8",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: multipart/form-data; boundary=x",
    ] {
        let r = request(http, "POST", "/app/api/signin", &[ct], body);
        assert_eq!(
            (r.status, r.json()["code"].as_i64()),
            (415, Some(415)),
            "{ct}"
        );
    }
    let ok = request(
        http,
        "POST",
        "/app/api/signin",
        &["Content-Type: Application/JSON; charset=utf-8"],
        body,
    );
    assert_eq!(ok.status, 200);
    // Names that display as something else, or carry terminal escapes.
    for name in ["a\u{0}b", "\u{1b}[31mred", "line\nbreak", "\u{202e}evil"] {
        let b = json!({"uid": "3", "name": name}).to_string();
        let r = request(http, "POST", "/app/api/signin", &[], &b);
        assert_eq!(r.status, 400, "{name:?}");
        let token = signin(http, "4", "Dee");
        let g = json!({"name": name, "members": []}).to_string();
        let r = request(http, "POST", "/app/api/groups", &[&bearer(&token)], &g);
        assert_eq!(r.status, 400, "group {name:?}");
    }
    // The page's WebSocket URL is built only from a real host name.
    for host in [
        "Host: evil.example/x?",
        "Host: 127.0.0.1@evil.example:80",
        "Host: evil.example#",
        "Host: [::1",
        "Host: \"q\"",
    ] {
        let r = request(http, "GET", "/app/api/config", &[host], "");
        assert_eq!(r.status, 400, "{host}");
    }
    let r = request(
        http,
        "GET",
        "/app/api/config",
        &["Host: Chat.Example:8080"],
        "",
    );
    assert_eq!(
        r.json()["data"]["wsUrl"]
            .as_str()
            .unwrap()
            .split(':')
            .nth(1),
        Some("//chat.example")
    );
    // A token for uid 0, signed with the right secret, is no user.
    let zero = starling_im::token::Tokens::new(common::im_server::SECRET)
        .unwrap()
        .mint(0, "", 60);
    if let Ok(zero) = zero {
        let r = request(http, "GET", "/app/api/users/1", &[&bearer(&zero)], "");
        assert_eq!(r.status, 401);
    }
    // Unknown API routes are 404 in the envelope, whatever the method.
    for method in ["GET", "POST", "DELETE"] {
        let r = request(http, method, "/app/api/nope", &[], "");
        assert_eq!(
            (r.status, r.json()["code"].as_i64()),
            (404, Some(-404)),
            "{method}"
        );
    }
    // Every refusal is counted by status.
    let metrics = request(http, "GET", "/metrics", &[], "");
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "starling_app_api_refused_total{status=\"415\"} 3",
        "starling_app_api_refused_total{status=\"404\"} 3",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
}

#[test]
fn without_dev_signin_its_routes_are_absent_whatever_the_method() {
    let im = Im::start_with(|c| app_on(c, false));
    for (method, path) in [
        ("POST", "/app/api/signin"),
        ("POST", "/app/api/groups"),
        ("GET", "/app/api/users/1"),
    ] {
        let r = request(im.server.http, method, path, &[], "{}");
        assert_eq!(
            (r.status, r.json()["code"].as_i64()),
            (404, Some(-404)),
            "{method} {path}"
        );
    }
}

#[test]
fn if_none_match_compares_weakly_and_takes_a_star() {
    let im = Im::start_with(|c| app_on(c, false));
    let etag = request(im.server.http, "GET", "/", &[], "")
        .header("etag")
        .unwrap()
        .to_string();
    for inm in [
        format!("W/{etag}"),
        "*".to_string(),
        format!("\"x\", {etag}"),
    ] {
        let r = request(
            im.server.http,
            "GET",
            "/",
            &[&format!("If-None-Match: {inm}")],
            "",
        );
        assert_eq!(r.status, 304, "{inm}");
    }
    let r = request(
        im.server.http,
        "GET",
        "/",
        &["If-None-Match: \"other\""],
        "",
    );
    assert_eq!(r.status, 200);
}
