//! goim's client protocol over real sockets: reply rules byte for byte, pushes of each kind
//! over TCP and WebSocket, accept filtering, rooms, kicks.

mod common;
use common::*;
use starling_proto::packet::Packet;
use std::time::Duration;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn reply_rules_byte_for_byte() {
    let srv = start();
    let mut c = Client::tcp(srv.tcp);
    // Ops before auth are ignored.
    c.write_raw(&hex("00000010 0010 0001 00000002 00000001"));
    c.expect_nothing(Duration::from_millis(200));
    // Auth with seq 1: reference vector for the reply.
    c.send(1, 7, 1, &token(5, "rr", "live://1", &[]));
    let auth = c.expect();
    assert_eq!(
        Packet::new(1, auth.op, auth.seq, auth.body).to_bytes(),
        hex("00000010 0010 0001 00000008 00000001")
    );
    // Heartbeat (reference vector), reply carries the room's online count (1: this client).
    c.write_raw(&hex("00000010 0010 0001 00000002 00000001"));
    let hb = c.expect();
    assert_eq!(
        hb.to_bytes(),
        hex("00000014 0010 0001 00000003 00000001 00000001")
    );
    // 12/14/16 answer op+1 with the body echoed; ver and seq echoed.
    for (op, body) in [(14, &b"1000,1001"[..]), (16, b"1001"), (12, b"live://2")] {
        c.send(3, op, 77, body);
        let p = c.expect();
        assert_eq!((p.ver, p.op, p.seq, p.body.as_ref()), (3, op + 1, 77, body));
    }
    // Anything else: same op, empty body.
    for op in [4, 7, 1000, 5] {
        c.send(2, op, 8, b"payload");
        let p = c.expect();
        assert_eq!((p.ver, p.op, p.seq, p.body.len()), (2, op, 8, 0));
    }
}

#[test]
fn key_and_mid_pushes_honour_accepts_over_tcp_and_ws() {
    let srv = start();
    let mut t = Client::tcp(srv.tcp);
    t.auth(&token(10, "key-tcp", "", &[1000]));
    let mut w = Client::ws(srv.ws);
    w.auth(&token(10, "key-ws", "", &[1000]));

    post_ok(
        srv.http,
        "/goim/push/keys?operation=1000&keys=key-tcp&keys=key-ws",
        b"hello",
    );
    // TCP: the OpRaw body is written bare, so the client sees the inner packet.
    let p = t.expect();
    assert_eq!(
        (p.ver, p.op, p.seq, p.body.as_ref()),
        (1, 1000, 0, &b"hello"[..])
    );
    // WebSocket: one frame with an op-9 header around the inner packet (reference §1.5).
    let p = w.expect();
    assert_eq!((p.ver, p.op, p.seq), (1, 9, 0));
    let inner_p = inner(&p.body);
    assert_eq!(
        (inner_p[0].op, inner_p[0].body.as_ref()),
        (1000, &b"hello"[..])
    );

    // Not accepted: not delivered, until the client subscribes.
    post_ok(
        srv.http,
        "/goim/push/mids?operation=2000&mids=10",
        b"skipped",
    );
    t.expect_nothing(Duration::from_millis(200));
    t.send(1, 14, 1, b"2000");
    assert_eq!(t.expect().op, 15);
    post_ok(
        srv.http,
        "/goim/push/mids?operation=2000&mids=10",
        b"by-mid",
    );
    assert_eq!(t.expect().body.as_ref(), b"by-mid");
    // The WebSocket connection of the same member never accepted 2000.
    w.expect_nothing(Duration::from_millis(150));
    // Unsubscribed again: dropped.
    t.send(1, 16, 2, b"2000");
    assert_eq!(t.expect().op, 17);
    post_ok(
        srv.http,
        "/goim/push/keys?operation=2000&keys=key-tcp",
        b"x",
    );
    t.expect_nothing(Duration::from_millis(200));
}

#[test]
fn room_pushes_reach_every_member_in_order_without_accepts() {
    let srv = start();
    let mut members: Vec<Client> = Vec::new();
    for i in 0..6 {
        let mut c = if i % 2 == 0 {
            Client::tcp(srv.tcp)
        } else {
            Client::ws(srv.ws)
        };
        c.auth(&token(i, &format!("room-{i}"), "live://7", &[]));
        members.push(c);
    }
    let mut outsider = Client::tcp(srv.tcp);
    outsider.auth(&token(99, "outsider", "live://8", &[]));
    for n in 0..50 {
        post_ok(
            srv.http,
            "/goim/push/room?operation=1000&type=live&room=7",
            format!("m{n}").as_bytes(),
        );
    }
    for c in members.iter_mut() {
        let mut got = Vec::new();
        while got.len() < 50 {
            let p = c.expect();
            if c.ws {
                assert_eq!(p.op, 9);
                got.extend(inner(&p.body).into_iter().map(|p| p.body));
            } else {
                got.push(p.body);
            }
        }
        let expect: Vec<String> = (0..50).map(|n| format!("m{n}")).collect();
        let got: Vec<String> = got
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(got, expect, "every message once, in order");
    }
    outsider.expect_nothing(Duration::from_millis(100));

    // Change room: leaves live://7, joins live://8.
    let c = &mut members[0];
    c.send(1, 12, 3, b"live://8");
    assert_eq!(c.expect().op, 13);
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=8",
        b"eight",
    );
    assert_eq!(c.expect().body.as_ref(), b"eight");
    assert_eq!(outsider.expect().body.as_ref(), b"eight");
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=7",
        b"seven",
    );
    c.expect_nothing(Duration::from_millis(150));
    assert_eq!(members[2].expect().body.as_ref(), b"seven");
}

#[test]
fn broadcast_reaches_accepting_connections() {
    let srv = start();
    let mut yes = Client::tcp(srv.tcp);
    yes.auth(&token(1, "b-yes", "", &[1000]));
    let mut no = Client::tcp(srv.tcp);
    no.auth(&token(2, "b-no", "", &[1001]));
    let mut slow = Client::ws(srv.ws);
    slow.auth(&token(3, "b-ws", "", &[1000]));
    post_ok(srv.http, "/goim/push/all?operation=1000", b"all");
    assert_eq!(yes.expect().body.as_ref(), b"all");
    assert_eq!(inner(&slow.expect().body)[0].body.as_ref(), b"all");
    no.expect_nothing(Duration::from_millis(150));
    post_ok(
        srv.http,
        "/goim/push/all?operation=1000&speed=100",
        b"paced",
    );
    assert_eq!(yes.expect().body.as_ref(), b"paced");
}

#[test]
fn broadcast_speed_spreads_deliveries_over_time() {
    const CLIENTS: usize = 20;
    let srv = start();
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::tcp(srv.tcp);
            c.auth(&token(i as i64, &format!("sp-{i}"), "", &[1000]));
            c
        })
        .collect();
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                assert_eq!(c.expect().body.as_ref(), b"paced");
                std::time::Instant::now()
            })
        })
        .collect();
    // 20 connections per second over the comet: 10 per second on each of the 2 workers, one
    // every 100 ms. The worker with at least 10 connections needs at least 900 ms.
    post_ok(srv.http, "/goim/push/all?operation=1000&speed=20", b"paced");
    let times: Vec<_> = watchers.into_iter().map(|t| t.join().unwrap()).collect();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(800),
        "speed=20 over 20 connections takes about a second, took {spread:?}"
    );
}

/// The kick takes the cross-worker path every run: the second connection is reopened until
/// the kernel's SO_REUSEPORT choice puts it on the other worker (it lands there half the
/// time, so 64 tries fail once in 2^64 runs).
#[test]
fn a_second_connection_with_the_same_key_kicks_the_first() {
    let srv = start();
    let comet = srv.running.as_ref().unwrap().comet().clone();
    let per_worker = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(comet.worker_conns())
    };
    let mut first = Client::tcp(srv.tcp);
    first.auth(&token(1, "dup", "", &[1000]));
    let home = per_worker().iter().position(|&n| n == 1).unwrap();
    let mut second = None;
    for _ in 0..64 {
        let c = Client::ws(srv.ws);
        eventually("accepted", || per_worker().iter().sum::<usize>() == 2);
        if per_worker()[home] == 1 {
            second = Some(c);
            break;
        }
        drop(c);
        eventually("closed", || per_worker().iter().sum::<usize>() == 1);
    }
    let mut second = second.expect("a connection on the other worker");
    second.auth(&token(1, "dup", "", &[1000]));
    first.expect_close();
    post_ok(
        srv.http,
        "/goim/push/keys?operation=1000&keys=dup",
        b"to-new",
    );
    assert_eq!(inner(&second.expect().body)[0].body.as_ref(), b"to-new");
    eventually("kicked close counted", || {
        comet.stats().closes(starling_comet::CloseReason::Kicked) == 1
    });
}

#[test]
fn a_generated_key_is_pushable_by_mid() {
    let srv = start();
    let mut c = Client::tcp(srv.tcp);
    c.auth(&token(42, "", "", &[1000]));
    post_ok(
        srv.http,
        "/goim/push/mids?operation=1000&mids=42",
        b"anon-key",
    );
    assert_eq!(c.expect().body.as_ref(), b"anon-key");
}

#[test]
fn online_counts_in_heartbeats_and_http() {
    let srv = start();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = Client::tcp(srv.tcp);
        c.auth(&token(i, &format!("on-{i}"), "live://1000", &[]));
        clients.push(c);
    }
    let mut other = Client::ws(srv.ws);
    other.auth(&token(9, "on-9", "live://2000", &[]));
    eventually("cluster count in heartbeat", || clients[0].heartbeat() == 3);
    assert_eq!(other.heartbeat(), 1);
    eventually("online/room", || {
        let (_, v) = http(
            srv.http,
            "GET",
            "/goim/online/room?type=live&rooms=1000&rooms=2000&rooms=3",
            b"",
        );
        v["data"] == serde_json::json!({"1000": 3, "2000": 1, "3": 0})
    });
    let (_, v) = http(srv.http, "GET", "/goim/online/top?type=live&limit=1", b"");
    assert_eq!(
        v["data"],
        serde_json::json!([{"room_id": "1000", "count": 3}])
    );
    let (_, v) = http(srv.http, "GET", "/goim/online/total", b"");
    assert_eq!(
        v["data"],
        serde_json::json!({"conn_count": 4, "ip_count": 1})
    );
    drop(clients);
    eventually("counts fall when clients leave", || {
        let (_, v) = http(srv.http, "GET", "/goim/online/total", b"");
        v["data"]["conn_count"] == 1
    });
}

#[test]
fn nodes_endpoints() {
    let srv = start();
    let (_, v) = http(srv.http, "GET", "/goim/nodes/weighted?platform=web", b"");
    assert_eq!(v["code"], 0);
    let d = &v["data"];
    assert_eq!(
        (
            d["tcp_port"].as_i64(),
            d["ws_port"].as_i64(),
            d["heartbeat"].as_i64()
        ),
        (Some(3101), Some(3102), Some(240))
    );
    assert_eq!(d["nodes"], serde_json::json!(["comet-test.goim.io"]));
    assert_eq!(d["backoff"]["max_delay"], 300);
    // goim prints the protobuf floats at 32 bits: 1.8, not 1.7999999523162842.
    assert_eq!(
        (
            d["backoff"]["factor"].to_string(),
            d["backoff"]["jitter"].to_string()
        ),
        ("1.8".to_string(), "0.3".to_string())
    );
    let (_, v) = http(srv.http, "GET", "/goim/nodes/instances", b"");
    assert_eq!(v["data"][0]["hostname"], "comet-test");
    assert_eq!(v["data"][0]["appid"], "goim.comet");
}
