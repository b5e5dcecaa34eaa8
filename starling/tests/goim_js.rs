//! goim's own JavaScript client (`tools/goim-compat/client.js`, unchanged) against the
//! all-in-one, under plain Node: what it shows on its page must be what it shows against
//! goim. Auth reply, heartbeat reply, then room, mid and broadcast pushes (op 9 batches on
//! WebSocket, unwrapped by the client) and a UTF-8 body.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The client's page lines, as they come.
fn spawn_client(ws: std::net::SocketAddr) -> (std::process::Child, mpsc::Receiver<String>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/goim-compat");
    let mut child = Command::new("node")
        .arg("--experimental-websocket")
        .arg(format!("{dir}/run-node.js"))
        .env("GOIM_URL", format!("ws://{ws}/sub"))
        .env("RUN_SECONDS", "30")
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (tools/test.sh installs nodejs when absent)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the page line `want`; returns every line seen up to it.
fn until(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + WAIT;
    while !seen.iter().any(|l| l == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {want:?}; the page showed {seen:#?}"),
        }
    }
}

/// With IM on (reference im.md §9 T12): a goim client that does not opt in must not notice.
#[test]
fn goims_javascript_client_sees_what_it_sees_against_goim() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.im.enabled = true;
    config.im.token_secret = "goim-js-test-secret-0123456789".into();
    config.im.path = dir.path().join("im");
    let srv = start_with(config);
    let (mut child, rx) = spawn_client(srv.ws);
    let mut seen = Vec::new();
    until(&rx, "[box] receive: auth reply", &mut seen);
    until(&rx, "[box] receive: heartbeat reply", &mut seen);
    assert!(seen.contains(&"[status] <color style='color:green'>ok<color>".to_string()));
    let closed = "[status] <color style='color:red'>failed<color>";
    // Its token: mid 123, room live://1000, accepts 1000-1002.
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=1000",
        b"room message",
    );
    until(
        &rx,
        "[box] receive: ver=1 op=1000 seq=0 message=room message",
        &mut seen,
    );
    post_ok(
        srv.http,
        "/goim/push/mids?operation=1000&mids=123",
        b"mid message",
    );
    until(
        &rx,
        "[box] receive: ver=1 op=1000 seq=0 message=mid message",
        &mut seen,
    );
    post_ok(
        srv.http,
        "/goim/push/all?operation=1001",
        b"broadcast message",
    );
    until(
        &rx,
        "[box] receive: ver=1 op=1001 seq=0 message=broadcast message",
        &mut seen,
    );
    post_ok(
        srv.http,
        "/goim/push/room?operation=1002&type=live&room=1000",
        "你好, goim ✓".as_bytes(),
    );
    until(
        &rx,
        "[box] receive: ver=1 op=1002 seq=0 message=你好, goim ✓",
        &mut seen,
    );
    let _ = child.kill();
    let _ = child.wait();
    // Nothing else: no close, no reconnect, no unexpected packet.
    assert!(!seen.iter().any(|l| l == closed), "{seen:#?}");
    let pushes = seen.iter().filter(|l| l.contains("message=")).count();
    assert_eq!(pushes, 4, "{seen:#?}");
    assert_eq!(
        seen.iter().filter(|l| l.ends_with("auth reply")).count(),
        1,
        "one connection"
    );
}
