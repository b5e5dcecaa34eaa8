//! Every bad input closes only its own connection, with a counted reason; the HTTP API answers
//! bad requests with goim's envelope. Also WebSocket specifics: ping, fragments, text frames,
//! a real client library.

mod common;
use common::*;
use starling_comet::CloseReason;
use starling_proto::packet::Packet;
use starling_proto::ws::{self, Opcode};
use std::time::Duration;

/// A neighbour that must keep working while others misbehave.
fn neighbour(srv: &Server) -> Client {
    let mut n = Client::tcp(srv.tcp);
    n.auth(&token(1, "neighbour", "live://n", &[1000]));
    n
}

fn assert_neighbour_works(srv: &Server, n: &mut Client) {
    assert_eq!(n.heartbeat(), n.heartbeat());
    post_ok(
        srv.http,
        "/goim/push/keys?operation=1000&keys=neighbour",
        b"still here",
    );
    assert_eq!(n.expect().body.as_ref(), b"still here");
}

#[test]
fn bad_packets_close_only_their_connection() {
    let srv = start();
    let mut n = neighbour(&srv);
    let cases: [(Vec<u8>, CloseReason); 3] = [
        // header length 17
        (
            {
                let mut p = Packet::new(1, 2, 1, vec![]).to_bytes();
                p[5] = 17;
                p
            },
            CloseReason::BadPacket,
        ),
        // body over 4096 bytes (refused from the header)
        (
            Packet::new(1, 4, 1, vec![0; 4097]).to_bytes()[..16].to_vec(),
            CloseReason::PacketTooLarge,
        ),
        // negative pack length
        (
            {
                let mut p = Packet::new(1, 2, 1, vec![]).to_bytes();
                p[..4].copy_from_slice(&(-1i32).to_be_bytes());
                p
            },
            CloseReason::BadPacket,
        ),
    ];
    for (i, (bytes, reason)) in cases.into_iter().enumerate() {
        let before = srv.closes(reason);
        let mut c = Client::tcp(srv.tcp);
        if i == 1 {
            c.auth(&token(5, "authed-bad", "", &[])); // after auth too
        }
        c.write_raw(&bytes);
        c.expect_close();
        eventually("close counted", || srv.closes(reason) == before + 1);
        assert_neighbour_works(&srv, &mut n);
    }
}

#[test]
fn handshake_timeout_closes_silent_and_unauthenticated_connections() {
    let srv = start();
    let mut n = neighbour(&srv);
    let mut silent = Client::tcp(srv.tcp);
    let mut chatty = Client::tcp(srv.tcp);
    chatty.send(1, 2, 1, b""); // a heartbeat before auth does not count as auth
    silent.expect_close();
    chatty.expect_close();
    assert_eq!(srv.closes(CloseReason::HandshakeTimeout), 2);
    assert_neighbour_works(&srv, &mut n);
}

#[test]
fn heartbeat_deadline_closes_an_idle_session() {
    let mut config = test_config();
    config.logic.node.heartbeat = Duration::from_millis(150);
    config.logic.node.heartbeat_max = 2;
    let srv = start_with(config);
    let mut idle = Client::tcp(srv.tcp);
    idle.auth(&token(1, "idle", "", &[]));
    let mut alive = Client::tcp(srv.tcp);
    alive.auth(&token(2, "alive", "", &[]));
    // `alive` heartbeats every 100 ms (inside the 300 ms deadline); `idle` never does.
    for _ in 0..8 {
        alive.heartbeat();
        std::thread::sleep(Duration::from_millis(100));
    }
    idle.expect_close();
    alive.heartbeat();
    assert_eq!(srv.closes(CloseReason::HeartbeatTimeout), 1);
}

#[test]
fn bad_websocket_input_closes_only_its_connection() {
    let srv = start();
    let mut n = neighbour(&srv);
    // Upgrade on another path: 404, closed.
    let mut c = Client::tcp(srv.ws);
    c.write_raw(b"GET /other HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert!(c.expect_close().starts_with(b"HTTP/1.1 404"));
    // Not an upgrade at all: 400, closed.
    let mut c = Client::tcp(srv.ws);
    c.write_raw(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.expect_close().starts_with(b"HTTP/1.1 400"));
    assert_eq!(srv.closes(CloseReason::BadUpgrade), 2);
    // Oversized frame, refused from its header.
    let mut c = Client::ws(srv.ws);
    c.write_raw(&ws::encode_client_frame(Opcode::Binary, true, [1; 4], &[0; 5000])[..8]);
    c.expect_close();
    // A message that is not exactly one packet: bad_packet (1007).
    let mut c = Client::ws(srv.ws);
    let mut two = Packet::new(1, 2, 1, vec![]).to_bytes();
    two.push(0);
    c.write_raw(&ws::encode_client_frame(Opcode::Binary, true, [1; 4], &two));
    c.expect_close();
    // Reserved bits.
    let mut c = Client::ws(srv.ws);
    let mut f = ws::encode_client_frame(Opcode::Binary, true, [1; 4], b"x");
    f[0] |= 0x40;
    c.write_raw(&f);
    c.expect_close();
    eventually("frame closes counted", || {
        srv.closes(CloseReason::FrameTooLarge) == 1
            && srv.closes(CloseReason::BadPacket) == 1
            && srv.closes(CloseReason::BadFrame) == 1
    });
    assert_neighbour_works(&srv, &mut n);
}

/// An upgrade request to /sub, with `version` and `key` as given.
fn upgrade(version: &str, key: &str) -> Vec<u8> {
    format!(
        "GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn websocket_upgrades_are_refused_as_rfc_6455_says() {
    let srv = start();
    let mut n = neighbour(&srv);
    // §4.2.2: another version gets 426 and the version comet speaks, then the close.
    for version in ["8", "14"] {
        let mut c = Client::tcp(srv.ws);
        c.write_raw(&upgrade(version, "dGhlIHNhbXBsZSBub25jZQ=="));
        let resp = String::from_utf8(c.expect_close()).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n")
                && resp.contains("\r\nSec-WebSocket-Version: 13\r\n"),
            "{resp}"
        );
    }
    // §4.1: the key is base64 of a 16-byte nonce; anything else is a bad request.
    for key in ["a2V5", "AAAAAAAAAAAAAAAAAAAAAAAA", "not base64 at all!"] {
        let mut c = Client::tcp(srv.ws);
        c.write_raw(&upgrade("13", key));
        let resp = String::from_utf8(c.expect_close()).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{key}: {resp}"
        );
    }
    eventually("upgrade closes counted", || {
        srv.closes(CloseReason::BadUpgrade) == 5
    });
    assert_neighbour_works(&srv, &mut n);
}

#[test]
fn unmasked_frames_close_the_connection_when_masking_is_required() {
    let mut config = test_config();
    config.comet.websocket.require_mask = true;
    let srv = start_with(config);
    let mut n = neighbour(&srv);
    let mut c = Client::ws(srv.ws);
    c.auth(&token(3, "masked", "", &[])); // masked frames pass
    c.heartbeat();
    c.write_raw(&ws::encode_frame(
        Opcode::Binary,
        &Packet::new(1, 2, 6, vec![]).to_bytes(),
    ));
    // No heartbeat reply: only the Close frame, 1002 (protocol error) and the reason.
    assert_eq!(
        c.expect_close(),
        ws::encode_frame(Opcode::Close, b"\x03\xeabad_frame"),
        "no heartbeat reply"
    );
    eventually("close counted", || srv.closes(CloseReason::BadFrame) == 1);
    assert_neighbour_works(&srv, &mut n);
}

#[test]
fn websocket_ping_fragments_text_and_unmasked_frames() {
    let srv = start();
    let mut c = Client::ws(srv.ws);
    c.auth(&token(3, "wsx", "", &[]));
    c.write_raw(&ws::encode_client_frame(Opcode::Ping, true, [4; 4], b"hi"));
    assert_eq!(c.next_frame(), (Opcode::Pong as u8, b"hi".to_vec()));
    // A heartbeat split over three fragments, a ping in between, as text.
    let hb = Packet::new(1, 2, 5, vec![]).to_bytes();
    c.write_raw(&ws::encode_client_frame(
        Opcode::Text,
        false,
        [1, 2, 3, 4],
        &hb[..5],
    ));
    c.write_raw(&ws::encode_client_frame(Opcode::Ping, true, [4; 4], b""));
    c.write_raw(&ws::encode_client_frame(
        Opcode::Continuation,
        false,
        [5, 6, 7, 8],
        &hb[5..9],
    ));
    c.write_raw(&ws::encode_client_frame(
        Opcode::Continuation,
        true,
        [9; 4],
        &hb[9..],
    ));
    assert_eq!(c.next_frame().0, Opcode::Pong as u8);
    let p = c.expect();
    assert_eq!((p.op, p.seq), (3, 5));
    // Unmasked client frames are accepted by default (as goim does).
    c.write_raw(&ws::encode_frame(
        Opcode::Binary,
        &Packet::new(1, 2, 6, vec![]).to_bytes(),
    ));
    assert_eq!(c.expect().seq, 6);
    // Close gets a close frame back.
    c.write_raw(&ws::encode_client_frame(
        Opcode::Close,
        true,
        [0; 4],
        &1000u16.to_be_bytes(),
    ));
    assert_eq!(
        c.next_frame(),
        (Opcode::Close as u8, 1000u16.to_be_bytes().to_vec())
    );
}

#[test]
fn a_real_websocket_client_library_interoperates() {
    let srv = start();
    let (mut sock, resp) = tungstenite::connect(format!("ws://{}/sub", srv.ws)).unwrap();
    assert_eq!(resp.status(), 101);
    let send = |s: &mut tungstenite::WebSocket<_>, p: Packet| {
        s.send(tungstenite::Message::binary(p.to_bytes())).unwrap()
    };
    send(
        &mut sock,
        Packet::new(1, 7, 1, token(8, "tung", "live://t", &[1000])),
    );
    let msg = sock.read().unwrap().into_data();
    assert_eq!(&msg[..], &Packet::new(1, 8, 1, vec![]).to_bytes()[..]);
    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=t",
        b"to-room",
    );
    let msg = sock.read().unwrap().into_data();
    let outer = starling_proto::packet::decode_exact(&msg, usize::MAX >> 1).unwrap();
    assert_eq!(outer.op, 9);
    assert_eq!(inner(outer.body)[0].body.as_ref(), b"to-room");
}

#[test]
fn http_errors_use_goims_envelope() {
    let srv = start();
    for (method, path) in [
        ("POST", "/goim/push/room?operation=1000&type=live"),
        ("POST", "/goim/push/room?type=live&room=1"),
        ("POST", "/goim/push/keys?operation=abc&keys=a"),
        ("POST", "/goim/push/mids?operation=1&mids=x"),
        ("POST", "/goim/push/all"),
        ("POST", "/goim/push/all?operation=1&speed=-1"),
        ("POST", "/goim/push/keys?keys=%zz"),
        ("GET", "/goim/online/top?type=live"),
        ("GET", "/goim/online/room?type=live"),
    ] {
        let (status, v) = http(srv.http, method, path, b"m");
        assert_eq!(status, 200, "{path}");
        assert_eq!(v["code"], -400, "{path}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {v}"
        );
    }
    let (_, v) = http(srv.http, "GET", "/nope", b"");
    assert_eq!(v["code"], -404);
    let (_, v) = http(srv.http, "GET", "/goim/push/keys", b"");
    assert_eq!(v["code"], -405);
    let big = vec![b'x'; (1 << 20) + 1];
    let (status, v) = http(srv.http, "POST", "/goim/push/all?operation=1", &big);
    assert_eq!((status, v["code"].as_i64()), (413, Some(-413)));
    // Pushing to nobody is not an error.
    post_ok(srv.http, "/goim/push/keys?operation=1000&keys=nobody", b"x");
}

#[test]
fn metrics_expose_close_reasons() {
    let srv = start();
    let mut c = Client::tcp(srv.tcp);
    c.write_raw(&{
        let mut p = Packet::new(1, 2, 1, vec![]).to_bytes();
        p[5] = 0;
        p
    });
    c.expect_close();
    eventually("metric", || {
        let mut s = std::net::TcpStream::connect(srv.http).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.contains("starling_comet_closed_total{reason=\"bad_packet\",code=\"4\"} 1")
    });
}

/// A server with small socket buffers and a short outbound queue (not a power of two: the
/// queue only counts), so a client that does not read fills both quickly.
fn start_small_buffers() -> Server {
    let mut c = test_config();
    c.comet.tcp.sndbuf = 4096;
    c.comet.protocol.out_ring = 30;
    start_with(c)
}

/// Pushes a 4000-byte message that starts with its sequence number, to `target` (the query
/// naming the keys or the room).
fn push_big(srv: &Server, kind: &str, target: &str, seq: usize) {
    let mut body = format!("{seq:06}").into_bytes();
    body.resize(4000, b'x');
    post_ok(
        srv.http,
        &format!("/goim/push/{kind}?operation=1000&{target}"),
        &body,
    );
}

#[test]
fn a_full_socket_resumes_when_the_client_reads_again() {
    let srv = start_small_buffers();
    let mut c = Client::tcp(srv.tcp);
    c.small_receive_buffer();
    c.auth(&token(5, "pauser", "", &[1000]));
    // More than the socket buffers hold, fewer than the queue: the rest waits for room.
    for i in 0..24 {
        push_big(&srv, "keys", "keys=pauser", i);
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..24 {
        let p = c.expect();
        assert_eq!(&p.body[..6], format!("{i:06}").as_bytes(), "in order");
    }
    assert_eq!(srv.closes(CloseReason::SlowConsumer), 0);
    c.heartbeat();
}

#[test]
fn a_full_socket_resumes_for_room_pushes_too() {
    let srv = start_small_buffers();
    let mut c = Client::tcp(srv.tcp);
    c.small_receive_buffer();
    c.auth(&token(8, "room-pauser", "live://full", &[]));
    // Room pushes are written at once when nothing waits: the socket fills part-way through
    // a message, and the rest must follow in order.
    for i in 0..24 {
        push_big(&srv, "room", "type=live&room=full", i);
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..24 {
        let p = c.expect();
        assert_eq!(&p.body[..6], format!("{i:06}").as_bytes(), "in order");
        assert_eq!(p.body.len(), 4000, "whole");
    }
    assert_eq!(srv.closes(CloseReason::SlowConsumer), 0);
    c.heartbeat();
}

#[test]
fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let srv = start_small_buffers();
    let mut n = neighbour(&srv);
    let mut c = Client::tcp(srv.tcp);
    c.small_receive_buffer();
    c.auth(&token(6, "stalled", "", &[1000]));
    // Socket buffers plus 30 queued messages, then one more: closed, and counted.
    let mut i = 0;
    while srv.closes(CloseReason::SlowConsumer) == 0 {
        assert!(i < 500, "never closed");
        push_big(&srv, "keys", "keys=stalled", i);
        i += 1;
    }
    assert!(i > 30, "closed only after the queue filled ({i} pushes)");
    let rest = c.expect_close();
    assert!(
        !rest.is_empty(),
        "what was written before the close arrives"
    );
    assert_neighbour_works(&srv, &mut n);
}

/// A client that sends heartbeats as fast as the server answers them.
struct Flooder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Flooder {
    fn start(srv: &Server, i: i64) -> Flooder {
        let mut c = Client::tcp(srv.tcp);
        c.auth(&token(100 + i, &format!("flooder-{i}"), "live://f", &[]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                c.heartbeat();
            }
        });
        Flooder { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

#[test]
fn clients_flooding_their_sockets_do_not_starve_their_worker() {
    let mut config = test_config();
    config.comet.workers = 1; // the flooders and the others share the one worker
    let srv = start_with(config);
    let flooders: Vec<Flooder> = (0..64).map(|i| Flooder::start(&srv, i)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // While the flood goes on: a new client is accepted and authenticated, a push arrives, and
    // a silent client still meets its handshake deadline.
    let mut silent = Client::tcp(srv.tcp);
    let mut n = neighbour(&srv);
    assert_neighbour_works(&srv, &mut n);
    silent.expect_close();
    for f in flooders {
        f.stop();
    }
    assert_eq!(srv.closes(CloseReason::SlowConsumer), 0);
}

/// A push naming one key (or one mid) 300 times delivers once: it neither floods the
/// connection with copies nor closes it as a slow consumer (before: 256 copies queued, then
/// the close).
#[test]
fn a_key_or_mid_named_many_times_is_pushed_once() {
    let srv = start();
    let mut c = Client::tcp(srv.tcp);
    c.auth(&token(77, "rk", "", &[1000]));
    let keys = "&keys=rk".repeat(300);
    post_ok(
        srv.http,
        &format!("/goim/push/keys?operation=1000{keys}"),
        b"once-k",
    );
    let mids = "&mids=77".repeat(300);
    post_ok(
        srv.http,
        &format!("/goim/push/mids?operation=1000{mids}"),
        b"once-m",
    );
    for want in [&b"once-k"[..], b"once-m"] {
        let p = c.expect();
        assert_eq!(p.op, 1000);
        assert_eq!(p.body.as_ref(), want);
    }
    c.expect_nothing(Duration::from_millis(300));
    assert_eq!(srv.closes(starling_comet::CloseReason::SlowConsumer), 0);
}
