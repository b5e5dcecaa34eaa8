//! The bench tool end to end against a real Starling started in this process: every kind of
//! run completes and accounts for every message. (Figures are not asserted: they belong in
//! bench/RESULTS.md, not in a test.)

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// The servers run in this test process, whose threads the bench measures (`--pid`): a
/// test's server stopping mid-measurement of another took its threads' CPU out of the sum
/// (`server_cpu_s` came out 0). The tests that start one take turns.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn server() -> starling::Running {
    server_with(starling::Config::default())
}

fn server_with(mut c: starling::Config) -> starling::Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.comet.workers = 2;
    c.comet.tcp.bind = vec![any];
    c.comet.websocket.bind = vec![any];
    c.logic.http.bind = any;
    c.log.filter = "warn".into();
    starling::start(c).expect("starling starts")
}

/// Runs the bench binary and returns its JSON line.
fn bench(args: &[String]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_starling-bench"))
        .args(args)
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_complete(v: &Value, expected: u64) {
    assert_eq!(v["expected"], expected, "{v}");
    assert_eq!(v["deliveries"], expected, "{v}");
    for k in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn room_and_key_fanout_over_tcp_and_websocket() {
    let _turn = turn();
    let s = server();
    let tcp = s.comet().addrs().tcp[0].to_string();
    let ws = s.comet().addrs().ws[0].to_string();
    let http = s.http_addr().to_string();
    let pid = std::process::id().to_string();
    // 40 subscribers over 2 processes (two source addresses), 30 room messages each.
    let base = |peer: &str, addr: &str, messages: &str| {
        args(&[
            "fanout",
            "--peer",
            peer,
            "--addr",
            addr,
            "--push",
            &http,
            "-n",
            "40",
            "-m",
            messages,
            "--per-process",
            "20",
            "--pid",
            &pid,
            "--quiet",
            "1s",
        ])
    };
    assert_complete(&bench(&base("starling", &tcp, "30")), 40 * 30);
    assert_complete(&bench(&base("starling-ws", &ws, "30")), 40 * 30);

    // Key mode: message s goes to subscriber s % 40; at a fixed rate.
    let mut keys = base("starling", &tcp, "80");
    keys.extend(args(&["--keys", "--msg-rate", "400"]));
    assert_complete(&bench(&keys), 80);
    s.shutdown();
}

/// Subscribers keep their connections alive by themselves: against a server that closes a
/// connection after 600 ms without a heartbeat, a 2-second run at `--heartbeat 100ms` (and a
/// reader that waits between batches) loses nothing, the same run heartbeating too rarely is
/// cut off, and connections that joined first stay alive through a 2.5 s connect phase.
#[test]
fn subscribers_heartbeat_while_connecting_and_reading() {
    let _turn = turn();
    let mut c = starling::Config::default();
    c.logic.node.heartbeat = std::time::Duration::from_millis(300);
    c.logic.node.heartbeat_max = 2;
    c.comet.protocol.tick = std::time::Duration::from_millis(50);
    let s = server_with(c);
    let tcp = s.comet().addrs().tcp[0].to_string();
    let http = s.http_addr().to_string();
    let pid = std::process::id().to_string();
    let run = |heartbeat: &str| {
        bench(&args(&[
            "fanout",
            "--peer",
            "starling",
            "--addr",
            &tcp,
            "--push",
            &http,
            "-n",
            "20",
            "-m",
            "40",
            "--msg-rate",
            "20",
            "--heartbeat",
            heartbeat,
            "--batch-wait",
            "2ms",
            "--pid",
            &pid,
            "--quiet",
            "1s",
        ]))
    };
    let v = run("100ms");
    assert_complete(&v, 20 * 40);
    assert_eq!(v["disconnected"], serde_json::json!({}), "{v}");
    assert!(
        v["client_cpu_us_per_delivery"].as_f64().unwrap() > 0.0,
        "{v}"
    );

    let v = run("10s");
    assert_eq!(v["disconnected"]["closed"], 20, "{v}");
    assert!(v["lost"].as_u64().unwrap() > 0, "{v}");

    let v = bench(&args(&[
        "conns",
        "--peer",
        "starling",
        "--addr",
        &tcp,
        "-n",
        "20",
        "--rate",
        "8",
        "--heartbeat",
        "100ms",
        "--hold",
        "1s",
        "--pid",
        &pid,
    ]));
    assert_eq!(v["connected"], 20, "{v}");
    assert_eq!(v["alive"], 20, "{v}");
    assert_eq!(v["disconnected"], serde_json::json!({}), "{v}");
    s.shutdown();
}

#[test]
fn floor_measures_writes_to_sleeping_readers() {
    for wait in ["0s", "1ms"] {
        let v = bench(&args(&[
            "floor",
            "-n",
            "50",
            "--rounds",
            "3",
            "--batch-wait",
            wait,
        ]));
        assert_eq!(v["writes"], 150, "{v}");
        assert!(v["cpu_us_per_write"].as_f64().unwrap() > 0.0, "{v}");
    }
}

#[test]
fn connection_load_reports_memory_per_connection() {
    let _turn = turn();
    let s = server();
    let tcp = s.comet().addrs().tcp[0].to_string();
    let pid = std::process::id().to_string();
    let v = bench(&args(&[
        "conns",
        "--peer",
        "starling",
        "--addr",
        &tcp,
        "-n",
        "300",
        "--rate",
        "3000",
        "--inflight",
        "50",
        "--per-process",
        "100",
        "--hold",
        "1s",
        "--pid",
        &pid,
    ]));
    assert_eq!(v["connected"], 300, "{v}");
    assert_eq!(v["alive"], 300, "{v}");
    assert!(v["server_rss_per_conn"].as_f64().is_some(), "{v}");
    assert!(v["server_cpu_hold_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_ms_per_s"].as_f64().unwrap() > 0.0, "{v}");
    s.shutdown();
}
