//! comet under abuse (issue 15): connections over `[comet.limits]` refused at accept (503 with
//! Retry-After on WebSocket), WebSocket closes that say why (a Close frame with a code),
//! packet floods refused then closed without slowing a neighbour on the same worker, and a
//! client that stopped reading closed as a slow consumer by the byte bound or the write
//! deadline while the rest of its room gets every push.

mod common;

use common::{Alone, Client, config, eventually, start_with, token};
use starling_comet::CloseReason;
use starling_comet::close::Refusal;
use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

fn room_token(mid: i64, key: &str, room: &str) -> Vec<u8> {
    serde_json::json!({"mid": mid, "key": key, "room_id": room, "accepts": [1000]})
        .to_string()
        .into_bytes()
}

#[test]
fn connections_over_the_limits_are_refused_at_accept() {
    let mut cfg = config();
    cfg.limits.max_conns = 3;
    cfg.limits.max_conns_per_ip = 2;
    let c = start_with(cfg);
    let mut a = Client::connect_from(c.tcp, ip(1), 0);
    a.auth(&token(1, "a", 0));
    let mut b = Client::connect_from(c.tcp, ip(1), 0);
    b.auth(&token(2, "b", 0));
    // A third from the same address: closed at accept, nothing written (goim's TCP has no
    // refusal packet before auth).
    let mut third = Client::connect_from(c.tcp, ip(1), 0);
    assert!(third.expect_close_after().is_empty());
    assert_eq!(c.comet.stats().refusals(Refusal::MaxConnsPerIp), 1);
    // Another address may still connect, up to the comet's limit.
    let (mut w, head) = Client::connect_from(c.ws, ip(2), 0).upgrade_with("");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    w.auth(&token(3, "w", 0));
    // The comet is full: a WebSocket client is told so and when to come back.
    let (_, head) = Client::connect_from(c.ws, ip(3), 0).upgrade_with("");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(head.contains("\r\nRetry-After: 10\r\n"), "{head}");
    assert_eq!(c.comet.stats().refusals(Refusal::MaxConns), 1);
    // Refusals disturb nobody, and a place freed is taken again.
    a.send(2, 7, b"");
    assert_eq!(a.expect().op, 3);
    drop(b);
    eventually("b's place freed", || c.comet.conn_count() == 2);
    let mut again = Client::connect_from(c.tcp, ip(1), 0);
    again.auth(&token(4, "again", 0));
    let metrics = {
        let m = starling_cluster::metrics::Metrics::new();
        c.comet.stats().register(&m);
        m.render()
    };
    assert!(
        metrics.contains("starling_comet_refused_total{reason=\"max_conns_per_ip\"} 1"),
        "{metrics}"
    );
}

/// Every close comet starts on an upgraded WebSocket carries a Close frame with a code and
/// the reason (RFC 6455 §7.4): before issue 15 clients saw 1006 (no frame).
#[test]
fn websocket_closes_carry_a_code_and_a_reason() {
    let c = start_with(config());
    // Not a goim packet inside the message: 1007.
    let mut bad = Client::connect_ws(c.ws);
    bad.send_bytes(b"xyz");
    assert_eq!(bad.expect_ws_close(), Some((1007, "bad_packet".into())));
    // A packet and trailing bytes in one message: 1007.
    let mut bad = Client::connect_ws(c.ws);
    let mut trailing = starling_proto::packet::Packet::new(1, 2, 1, Vec::new()).to_bytes();
    trailing.push(0);
    bad.send_bytes(&trailing);
    assert_eq!(bad.expect_ws_close(), Some((1007, "bad_packet".into())));
    // A frame with a reserved opcode: 1002.
    let mut bad = Client::connect_ws(c.ws);
    bad.write_raw(&[0x83, 0x80, 1, 2, 3, 4]);
    assert_eq!(bad.expect_ws_close(), Some((1002, "bad_frame".into())));
    // A header whose header length is not 16: 1007.
    let mut bad = Client::connect_ws(c.ws);
    bad.send_bytes(&[0, 0, 0, 16, 0, 17, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
    assert_eq!(bad.expect_ws_close(), Some((1007, "bad_packet".into())));
    // A body over goim's 4096 bytes before auth: 1009.
    let mut big = Client::connect_ws(c.ws);
    big.send(7, 1, &vec![b'x'; 5000]);
    assert_eq!(
        big.expect_ws_close(),
        Some((1009, "frame_too_large".into()))
    );
    // Upgraded, but no auth within the handshake deadline: 1008.
    let mut idle = Client::connect_ws(c.ws);
    assert_eq!(
        idle.expect_ws_close(),
        Some((1008, "handshake_timeout".into()))
    );
    // Refused by logic: 1008.
    c.script.set_connect(common::OnConnect::Refuse);
    let mut refused = Client::connect_ws(c.ws);
    refused.send(7, 1, &token(1, "k", 0));
    assert_eq!(
        refused.expect_ws_close(),
        Some((1008, "auth_failed".into()))
    );
    // An upgrade request still incomplete at the deadline: 408.
    let mut slow = Client::connect(c.ws);
    slow.write_raw(b"GET /sub HTTP/1.1\r\nHost: x\r\n");
    let rest = slow.expect_close_after();
    assert!(
        rest.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

fn flood_config() -> starling_comet::Config {
    let mut cfg = config();
    cfg.workers = 1; // the flooder and its neighbour share the worker
    cfg.limits.max_packets_per_sec = 100;
    cfg.limits.packet_burst = 20;
    cfg.limits.flood_strikes = 50;
    cfg
}

/// A client sending heartbeats as fast as it can is refused over the rate, then closed as
/// `flood`; a normal client on the same worker keeps its heartbeats and pushes meanwhile.
#[test]
fn a_flooder_is_closed_and_its_neighbour_keeps_flowing() {
    let c = start_with(flood_config());
    let mut normal = Client::connect(c.tcp);
    normal.auth(&token(1, "normal", 0));
    let mut flooder = Client::connect(c.tcp);
    flooder.auth(&token(2, "flooder", 0));
    let hb = starling_proto::packet::Packet::new(1, 2, 0, Vec::new()).to_bytes();
    let burst: Vec<u8> = hb.iter().copied().cycle().take(hb.len() * 1000).collect();
    let mut writer = flooder.stream().try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        use std::io::Write;
        let mut sent = 0usize;
        while writer.write_all(&burst).is_ok() {
            sent += 1000;
        }
        sent
    });
    let start = Instant::now();
    for i in 0..50 {
        // 50 heartbeats a second: under the rate, which applies to every connection.
        std::thread::sleep(Duration::from_millis(20));
        normal.send(2, i, b"");
        let p = normal.expect();
        assert_eq!((p.op, p.seq), (3, i), "heartbeat reply");
        c.push_key("normal", 1000, format!("push {i}").as_bytes());
        let p = normal.expect();
        assert_eq!(p.body, format!("push {i}").into_bytes());
    }
    println!(
        "neighbour: 50 heartbeats and 50 pushes in {:?} during the flood",
        start.elapsed()
    );
    flooder.expect_close();
    let sent = flood.join().unwrap();
    eventually("closed as flood", || c.closes(CloseReason::Flood) == 1);
    let refused = c.comet.stats().flood_refused.load(Relaxed);
    println!("flooder: {sent}+ heartbeats sent, {refused} refused, then closed");
    assert!(refused >= 50, "{refused}");
    assert_eq!(c.closes(CloseReason::SlowConsumer), 0);
}

/// An opted-in connection's answered ops over the rate get op + 1 with code 429, in order,
/// instead of hanging; the same flood on WebSocket ends with Close 1008 `flood`.
#[test]
fn answered_ops_over_the_rate_get_429_and_a_websocket_flooder_gets_1008() {
    let mut cfg = flood_config();
    cfg.limits.flood_strikes = 200;
    let c = start_with(cfg);
    let mut im = Client::connect(c.tcp);
    im.auth(&token(1, "im", 1));
    let ops: Vec<(i32, i32, &[u8])> = (1..=40).map(|s| (20, s, &b"m"[..])).collect();
    im.send_all(&ops);
    let code_429 = starling_proto::op::Codec::from_im(1)
        .unwrap()
        .code_body(429);
    let mut limited = 0;
    for s in 1..=40 {
        let p = im.expect();
        assert_eq!((p.op, p.seq), (21, s));
        match &p.body[..] {
            b"re:m" => {}
            b if b == code_429.as_slice() => limited += 1,
            other => panic!("{}", String::from_utf8_lossy(other)),
        }
    }
    assert!(limited >= 10, "{limited} of 40 over a burst of 20");

    let mut cfg = flood_config();
    cfg.limits.flood_strikes = 10;
    let c = start_with(cfg);
    let mut ws = Client::connect_ws(c.ws);
    ws.auth(&token(2, "ws", 0));
    // One write: the client's socket may be reset before a later write would go.
    let mut frames = Vec::new();
    for s in 0..100 {
        let p = starling_proto::packet::Packet::new(1, 2, s, Vec::new()).to_bytes();
        frames.extend(starling_proto::ws::encode_client_frame(
            starling_proto::ws::Opcode::Binary,
            true,
            [1, 2, 3, 4],
            &p,
        ));
    }
    ws.write_raw(&frames);
    assert_eq!(ws.expect_ws_close(), Some((1008, "flood".into())));
}

/// Reads every packet the client gets until `n` of op 1000 have come.
fn read_pushes(mut c: Client, n: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut got = 0;
        while got < n {
            let p = c.expect();
            if p.op == 1000 {
                got += 1;
            }
        }
        got
    })
}

/// The issue's scenario: a room member with a 1 KiB receive buffer stops reading; 600 room
/// pushes of 2 KB come as job sends them, merged (60 batches of 10), far below `out_ring`'s
/// 256 entries. It is closed as a slow consumer (`by`: the byte bound, or the write deadline),
/// and the other members get all 600.
fn slow_consumer_is_closed(c: &Alone, by: &str) {
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let mut r = Client::connect(c.tcp);
            r.auth(&room_token(10 + i, &format!("reader{i}"), "r"));
            read_pushes(r, 600)
        })
        .collect();
    let mut slow = Client::connect_from(c.tcp, ip(1), 1024);
    slow.auth(&room_token(1, "slow", "r"));
    let body = vec![b'p'; 2048];
    let start = Instant::now();
    for _ in 0..60 {
        let batch: Vec<&[u8]> = (0..10).map(|_| &body[..]).collect();
        c.push_room("r", 1000, &batch);
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), 600);
    }
    eventually("the slow consumer closed", || {
        c.closes(CloseReason::SlowConsumer) == 1
    });
    println!(
        "{by}: closed as slow_consumer {:?} after the first push",
        start.elapsed()
    );
    // What it had not read is all it gets: the connection ends.
    let mut rest = Vec::new();
    let _ = slow.stream().set_read_timeout(Some(common::WAIT));
    let _ = (&mut slow.stream()).read_to_end(&mut rest);
    assert!(rest.len() < 600 * 2064, "{} bytes", rest.len());
}

#[test]
fn a_client_that_stopped_reading_is_closed_by_the_byte_bound() {
    let mut cfg = config();
    cfg.protocol.write_timeout = Duration::ZERO; // the byte bound alone (default 1 MiB)
    slow_consumer_is_closed(&start_with(cfg), "byte bound");
}

#[test]
fn a_client_that_stopped_reading_is_closed_by_the_write_deadline() {
    let mut cfg = config();
    cfg.protocol.out_bytes = 64 << 20; // above the 1.2 MB pushed: the deadline alone
    cfg.protocol.write_timeout = Duration::from_secs(1);
    slow_consumer_is_closed(&start_with(cfg), "write deadline");
}

/// The outbound queue gauges (`Comet::register_metrics`): a room member that stopped
/// reading holds what it was sent in its queue, and the scrape shows it (one connection, the
/// bytes, the longest queue); once it reads everything the gauges go back to 0.
#[test]
fn queue_gauges_show_a_client_that_stopped_reading() {
    let mut cfg = config();
    cfg.protocol.out_bytes = 64 << 20; // neither bound closes it: only the gauges move
    cfg.protocol.write_timeout = Duration::ZERO;
    let c = start_with(cfg);
    let metrics = starling_cluster::metrics::Metrics::new();
    c.comet.register_metrics(&metrics);
    let mut slow = Client::connect_from(c.tcp, ip(1), 1024);
    slow.auth(&room_token(1, "slow", "q"));
    let idle = metrics.render();
    for line in [
        "starling_comet_queued_connections 0",
        "starling_comet_queued_bytes 0",
    ] {
        assert!(idle.lines().any(|l| l == line), "{line} in:\n{idle}");
    }

    let body = vec![b'p'; 2048];
    for _ in 0..60 {
        let batch: Vec<&[u8]> = (0..10).map(|_| &body[..]).collect();
        c.push_room("q", 1000, &batch);
    }
    // Most of the 1.2 MB waits in comet (the kernel holds notsent_lowat and 1 KiB).
    eventually("the queue holds what the socket did not take", || {
        let d = c.comet.queue_depth_blocking(common::WAIT);
        d.connections == 1 && d.bytes > 600_000 && d.max_bytes == d.bytes && d.messages > 0
    });
    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l == "starling_comet_queued_connections 1"),
        "{text}"
    );
    assert_eq!(c.closes(CloseReason::SlowConsumer), 0);

    assert_eq!(read_pushes(slow, 600).join().unwrap(), 600);
    eventually("the queue drained", || {
        c.comet.queue_depth_blocking(common::WAIT) == Default::default()
    });
}
