//! permessage-deflate (RFC 7692) with a real client: Node's `ws` package
//! (`tools/ws-deflate/client.js`), which offers it as browsers do, against the all-in-one
//! with `comet.websocket.permessage_deflate` on, beside the same client with deflate off.
//! Shows the negotiated header, that a compressed room push arrives inflated and equal to
//! the uncompressed one, and that the client's compressed frames (auth, heartbeat) are taken;
//! and the same over WSS.
//! The test installs the client's one npm dependency (`npm ci`) when it is absent.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/ws-deflate");

fn npm_ci() {
    if Path::new(DIR).join("node_modules/ws/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(DIR)
        .status()
        .expect("npm (tools/test.sh installs it when absent)");
    assert!(status.success(), "npm ci in tools/ws-deflate failed");
}

struct Node {
    child: std::process::Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn spawn(ws: std::net::SocketAddr, deflate: bool, token: &[u8]) -> Node {
        Self::spawn_url(&format!("ws://{ws}/sub"), None, deflate, token)
    }

    /// `ca`: for `wss://`, a PEM certificate for `localhost` to trust.
    fn spawn_url(url: &str, ca: Option<&Path>, deflate: bool, token: &[u8]) -> Node {
        let mut cmd = Command::new("node");
        if let Some(ca) = ca {
            cmd.env("CA", ca);
        }
        let mut child = cmd
            .arg(format!("{DIR}/client.js"))
            .env("WS_URL", url)
            .env("TOKEN", String::from_utf8_lossy(token).as_ref())
            .env("DEFLATE", if deflate { "1" } else { "0" })
            .env("RUN_SECONDS", "30")
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (tools/test.sh installs nodejs when absent)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (seen before or arriving within WAIT) that `f` accepts.
    fn until(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.seen.iter().find(|v| f(v)) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("no {what}; the client printed {:#?}", self.seen),
            }
        }
    }

    fn packet(&mut self, op: i64) -> Value {
        self.until(&format!("op {op}"), |v| {
            v["event"] == "packet" && v["op"].as_i64() == Some(op)
        })
    }
}

#[test]
fn a_deflate_client_and_a_plain_one_get_the_same_push() {
    npm_ci();
    let mut config = test_config();
    config.comet.websocket.permessage_deflate = true;
    let srv = start_with(config);
    let mut z = Node::spawn(srv.ws, true, &token(1, "kz", "live://1000", &[1000]));
    let mut p = Node::spawn(srv.ws, false, &token(2, "kp", "live://1000", &[1000]));

    let up = z.until("upgrade", |v| v["event"] == "upgrade");
    eprintln!(
        "Sec-WebSocket-Extensions answered to ws: {}",
        up["extensions"]
    );
    assert_eq!(
        up["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    let open = z.until("open", |v| v["event"] == "open");
    assert!(
        open["agreed"]
            .as_str()
            .unwrap()
            .contains("permessage-deflate")
    );
    assert_eq!(
        p.until("upgrade", |v| v["event"] == "upgrade")["extensions"],
        Value::Null
    );

    // The auth packet and the heartbeat came compressed (ws compresses everything here).
    for c in [&mut z, &mut p] {
        c.packet(8);
        c.packet(3);
    }
    let stats = || &srv.running.as_ref().unwrap().comet().stats().deflate;
    assert_eq!(stats().negotiated.load(Relaxed), 1);
    assert_eq!(stats().in_messages.load(Relaxed), 2);

    let body =
        r#"{"conversation":{"kind":"group","id":7},"from":1,"text":"hello room"}"#.repeat(30);
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=1000",
        body.as_bytes(),
    );
    // What each socket read for the push: compressed, and not.
    let read = |c: &mut Node, op| c.packet(op)["read"].as_u64().unwrap();
    let (z0, p0) = (read(&mut z, 3), read(&mut p, 3));
    assert_eq!(z.packet(1000)["body"], body.as_str());
    assert_eq!(p.packet(1000)["body"], body.as_str());
    let (z1, p1) = (read(&mut z, 1000), read(&mut p, 1000));
    assert!((z1 - z0) * 5 < body.len() as u64, "{} bytes read", z1 - z0);
    assert!(p1 - p0 > body.len() as u64, "{} bytes read", p1 - p0);
    eventually("counted", || stats().out_messages.load(Relaxed) == 1);
    let (raw, compressed) = (
        stats().out_raw.load(Relaxed),
        stats().out_compressed.load(Relaxed),
    );
    assert!(compressed * 5 < raw, "{compressed} of {raw} bytes");
    assert!(
        z.seen
            .iter()
            .all(|v| v["event"] != "error" && v["event"] != "close")
    );
}

/// WSS: the compressed frame is encrypted like any other, and the client's compressed
/// frames are inflated after decryption.
#[test]
fn over_wss_too() {
    npm_ci();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut config = test_config();
    config.comet.websocket.permessage_deflate = true;
    config.comet.websocket.cert_file = cert_file.to_string_lossy().into_owned();
    config.comet.websocket.key_file = key_file.to_string_lossy().into_owned();
    let srv = start_with(config);
    let url = format!("wss://{}/sub", srv.wss.unwrap());
    let mut z = Node::spawn_url(
        &url,
        Some(&cert_file),
        true,
        &token(1, "kz", "live://1", &[1000]),
    );
    let up = z.until("upgrade", |v| v["event"] == "upgrade");
    assert_eq!(
        up["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    z.packet(8);
    z.packet(3);
    let body = r#"{"from":1,"text":"hello over tls"}"#.repeat(40);
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=1",
        body.as_bytes(),
    );
    let before = z.packet(3)["read"].as_u64().unwrap();
    assert_eq!(z.packet(1000)["body"], body.as_str());
    // Record overhead included, far less than the body: it came compressed.
    let read = z.packet(1000)["read"].as_u64().unwrap() - before;
    assert!(read * 4 < body.len() as u64, "{read} bytes read");
    let stats = &srv.running.as_ref().unwrap().comet().stats().deflate;
    assert_eq!(stats.in_messages.load(Relaxed), 2);
    eventually("counted", || stats.out_messages.load(Relaxed) == 1);
}
