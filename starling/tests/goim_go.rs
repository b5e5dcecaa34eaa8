//! goim's own Go benchmark client (`benchmarks/client/main.go`, unchanged, in
//! `tools/goim-compat/go-client`) against the all-in-one with IM on (reference im.md §9 T12): its
//! 20 connections authenticate as goim clients (no IM opt-in), heartbeat, and receive every
//! room push, exactly as against goim. `tools/test.sh` installs Go and Debian's
//! `golang-glog-dev` when absent; the client builds offline.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 20;
const PUSHES: usize = 5;

fn build_client(out: &std::path::Path) -> std::path::PathBuf {
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/goim-compat/go-client"
    );
    let bin = out.join("goim-client");
    // GOPATH mode against Debian's source packages: nothing is downloaded.
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("main.go")
        .current_dir(src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out.join("gocache"))
        .env("GOFLAGS", "")
        .status()
        .expect("`go` runs (tools/test.sh installs golang-go and golang-glog-dev)");
    assert!(status.success(), "goim's client builds");
    bin
}

#[test]
fn goims_go_client_sees_every_room_push_with_im_on() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_client(dir.path());
    let mut config = test_config();
    config.im.enabled = true;
    config.im.token_secret = "goim-go-test-secret-0123456789".into();
    config.im.path = dir.path().join("im");
    let srv = start_with(config);
    let mut child = Command::new(&bin)
        .args(["1", &CLIENTS.to_string(), &srv.tcp.to_string()])
        .arg(format!("-log_dir={}", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let comet = srv.running.as_ref().unwrap().comet().clone();
    // Each of its clients first sleeps a random 0-119 s (goim's `startClient`), so this waits
    // up to two minutes for all of them.
    let deadline = Instant::now() + Duration::from_secs(150);
    while comet.conn_count() < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "{} of goim's {CLIENTS} clients connected",
            comet.conn_count()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its token joins room test://1 (benchmarks/client/main.go).
    for i in 0..PUSHES {
        post_ok(
            srv.http,
            "/goim/push/room?operation=1000&type=test&room=1",
            format!("push {i}").as_bytes(),
        );
    }
    // It prints "alive:N down:M ..." every 5 s; M counts the pushes its clients received.
    let want = format!("alive:{CLIENTS} down:{}", CLIENTS * PUSHES);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(&want) => break true,
            Ok(line) => seen.push(line),
            Err(_) if Instant::now() > deadline => break false,
            Err(_) => {}
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "never printed {want:?}; it printed {seen:#?}");
}
