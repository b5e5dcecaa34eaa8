//! The end of a server's life: lame-duck draining refuses new connections, answers `/readyz`
//! 503, keeps pushing to the ones still open, and closes them spread over the period instead
//! of all at once.

mod common;

use common::*;
use starling_comet::CloseReason;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads a client until the server closes it; returns whether `marker` arrived and when the
/// close was seen.
fn watch(mut c: Client, marker: &'static [u8]) -> (bool, Instant) {
    c.sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("waiting for the drain: {e}"),
        }
    }
    let got = seen.windows(marker.len()).any(|w| w == marker);
    (got, Instant::now())
}

#[test]
fn lame_duck_refuses_new_clients_keeps_pushing_and_spreads_closes() {
    const CLIENTS: usize = 20;
    const OVER: Duration = Duration::from_secs(1);
    let mut srv = start();
    let comet = srv.running.as_ref().unwrap().comet().clone();
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::tcp(srv.tcp);
            c.auth(&token(i as i64, &format!("ld-{i}"), "live://ld", &[]));
            c
        })
        .collect();
    eventually("all sessions", || comet.conn_count() == CLIENTS);
    let (status, ready) = http(srv.http, "GET", "/readyz", b"");
    assert_eq!((status, &ready), (200, &serde_json::json!({"ready": true})));

    let watchers: Vec<_> = clients
        .into_iter()
        .map(|c| std::thread::spawn(move || watch(c, b"during-drain")))
        .collect();
    let running = srv.running.take().unwrap();
    let drain = std::thread::spawn(move || running.drain(OVER, std::future::pending()));

    eventually("new connections refused", || {
        TcpStream::connect(srv.tcp).is_err()
    });
    // A load balancer polling /readyz takes the draining server out of rotation.
    let (status, ready) = http(srv.http, "GET", "/readyz", b"");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["failing"]["draining"], "shutting down", "{ready}");
    // The HTTP API and the connections not yet closed keep working during the drain.
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=ld",
        b"during-drain",
    );

    let results: Vec<(bool, Instant)> = watchers.into_iter().map(|t| t.join().unwrap()).collect();
    drain.join().unwrap();
    let first = results.iter().map(|r| r.1).min().unwrap();
    let last = results.iter().map(|r| r.1).max().unwrap();
    // Each worker closes its share in slices 100 ms apart; with 20 clients on 2 workers one
    // worker has at least 10, which takes at least 5 slices. An all-at-once close takes ~0.
    assert!(
        last - first >= Duration::from_millis(400),
        "closes spread over the period, not at once: {:?}",
        last - first
    );
    assert!(
        results.iter().any(|r| r.0),
        "a push during the drain reached the clients still open"
    );
    assert_eq!(comet.conn_count(), 0);
    assert!(comet.stats().closes(CloseReason::LameDuck) >= CLIENTS as u64);
}

/// Few connections are spread over the whole period too: before, a worker closed at least
/// one per 100-ms slice, so 4 connections draining over 2 s were all gone in 0.1 s.
#[test]
fn lame_duck_spreads_a_few_connections_over_the_whole_period() {
    const CLIENTS: usize = 4;
    const OVER: Duration = Duration::from_secs(2);
    let mut srv = start();
    let comet = srv.running.as_ref().unwrap().comet().clone();
    let watchers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::tcp(srv.tcp);
            c.auth(&token(i as i64, &format!("few-{i}"), "", &[]));
            c
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| std::thread::spawn(move || watch(c, b"-")))
        .collect();
    eventually("all sessions", || comet.conn_count() == CLIENTS);
    let (status, ready) = http(srv.http, "GET", "/readyz", b"");
    assert_eq!((status, &ready), (200, &serde_json::json!({"ready": true})));
    let running = srv.running.take().unwrap();
    let drain = std::thread::spawn(move || running.drain(OVER, std::future::pending()));
    let closed: Vec<Instant> = watchers.into_iter().map(|t| t.join().unwrap().1).collect();
    drain.join().unwrap();
    let first = closed.iter().min().unwrap();
    let last = closed.iter().max().unwrap();
    // However the 4 are shared between the 2 workers, a worker with 2 or more closes its
    // last at least half the period after its first.
    assert!(
        *last - *first >= Duration::from_millis(800),
        "4 closes spread over 2 s, not within a few slices: {:?}",
        *last - *first
    );
    assert_eq!(comet.stats().closes(CloseReason::LameDuck), CLIENTS as u64);
}

/// A taken HTTP port stops the start before comet accepts anyone: the comet's TCP port is
/// still free afterwards (before, comet was already listening when the HTTP bind failed).
#[test]
fn a_taken_http_port_stops_the_start_before_comet_listens() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp_port.local_addr().unwrap();
    drop(tcp_port);
    let mut config = test_config();
    config.logic.http.bind = taken.local_addr().unwrap();
    config.comet.tcp.bind = vec![tcp_addr];
    match starling::start(config) {
        Err(starling::StartError::Http { addr, .. }) => {
            assert_eq!(addr, taken.local_addr().unwrap())
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => {
            r.shutdown();
            panic!("started on a taken HTTP port");
        }
    }
    assert!(
        TcpStream::connect(tcp_addr).is_err(),
        "comet is not listening on {tcp_addr}"
    );
}
