//! `/healthz`, `/readyz` and `/metrics` on a real listener, with a real Redis that goes away
//! and comes back; the listener's connection limits.

use starling_cluster::health::{self, Readiness};
use starling_cluster::metrics::{Metrics, counter};
use starling_cluster::testkit::Redis;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `GET path`: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// Polls `path` until its status is `want` (Redis reconnects take a moment).
fn wait_status(addr: SocketAddr, path: &str, want: u16) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = get(addr, path);
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{path} stayed {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_follows_redis_and_draining() {
    let mut redis = Redis::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = Metrics::new();
    metrics.collect(|enc| counter(enc, "starling_test_pushed", "Test.", 7));
    let ready = Readiness::new();
    let config = starling_cluster::redis::Config {
        url: redis.url(),
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (addr, _task) = rt.block_on(async {
        let conn = starling_cluster::redis::connect(&config).unwrap();
        ready.check("redis", health::redis_ping(conn));
        health::serve(
            "127.0.0.1:0".parse().unwrap(),
            health::Config::default().limits(),
            metrics.clone(),
            ready.clone(),
            std::future::pending(),
        )
        .await
        .unwrap()
    });

    assert_eq!(get(addr, "/healthz").0, 200);
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("\nstarling_test_pushed_total 7\n"), "{text}");
    wait_status(addr, "/readyz", 200);

    redis.stop();
    let body = wait_status(addr, "/readyz", 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert!(v["failing"]["redis"].is_string(), "{body}");
    // Alive all the same.
    assert_eq!(get(addr, "/healthz").0, 200);

    redis.resume();
    wait_status(addr, "/readyz", 200);

    ready.set_draining();
    let body = wait_status(addr, "/readyz", 503);
    assert!(body.contains("\"draining\""), "{body}");
}

/// The `[metrics]` listener of comet and job is bounded like logic's HTTP API (the break-it
/// run of issue 15: idle connections to comet's metrics port held descriptors without limit,
/// until comet could not accept job's connection and a push was lost): past `max_conns` a
/// connection is closed at accept and counted; an idle one is closed at `header_timeout`.
#[test]
fn idle_connections_are_capped_and_closed_at_the_header_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = Metrics::new();
    let limits = starling_cluster::serve::Limits {
        max_conns: 4,
        header_timeout: Duration::from_secs(2),
    };
    let (addr, _task) = rt.block_on(async {
        health::serve(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            metrics.clone(),
            Readiness::new(),
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        // A hang guard only: the server closes each of these well before.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let idle: Vec<_> = (0..4).map(|_| connect()).collect();
    let mut fifth = connect();
    let mut buf = Vec::new();
    assert_eq!(fifth.read_to_end(&mut buf).unwrap(), 0, "closed at accept");
    for mut s in idle {
        assert_eq!(
            s.read_to_end(&mut buf).unwrap(),
            0,
            "an idle connection is closed at the header timeout"
        );
    }
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("\nstarling_ops_http_conns_refused_total 1\n"),
        "{text}"
    );
    assert!(text.contains("\nstarling_ops_http_conns "), "{text}");
}
