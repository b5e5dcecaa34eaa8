//! WSS on its own listener: a real TLS client (rustls) carrying a real WebSocket client
//! (tungstenite) against a certificate made for the test.

mod common;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use starling_comet::CloseReason;
use starling_proto::packet::{self, Packet};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use tungstenite::{Message, WebSocket};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A self-signed certificate for `localhost`, written as PEM files in a fresh directory.
struct TestCert {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCert {
    fn new(tag: &str) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("starling-wss-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        TestCert {
            dir,
            der: cert.der().clone(),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_wss(cert: &TestCert) -> Server {
    let mut c = test_config();
    c.comet.websocket.cert_file = cert.file("cert.pem");
    c.comet.websocket.key_file = cert.file("key.pem");
    start_with(c)
}

fn tls_connect(addr: SocketAddr, cert: &TestCert) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn wss_client(addr: SocketAddr, cert: &TestCert) -> WebSocket<Tls> {
    let (ws, resp) = tungstenite::client("wss://localhost/sub", tls_connect(addr, cert)).unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

fn send(ws: &mut WebSocket<Tls>, op: i32, seq: i32, body: &[u8]) {
    let p = Packet::new(1, op, seq, body.to_vec()).to_bytes();
    ws.send(Message::binary(p)).unwrap();
}

fn recv(ws: &mut WebSocket<Tls>) -> Packet {
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) => {
                return packet::decode_exact(&b, usize::MAX >> 1)
                    .unwrap()
                    .to_owned();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[test]
fn wss_is_served_only_with_a_certificate() {
    let plain = start();
    assert_eq!(plain.wss, None, "no certificate, no WSS listener");
}

#[test]
fn wss_carries_auth_heartbeat_and_pushes() {
    let cert = TestCert::new("push");
    let srv = start_wss(&cert);
    let addr = srv.wss.expect("WSS listener");
    let mut ws = wss_client(addr, &cert);

    send(&mut ws, 7, 1, &token(11, "wss-key", "live://wss", &[1000]));
    let reply = recv(&mut ws);
    assert_eq!((reply.op, reply.seq, reply.body.len()), (8, 1, 0));

    send(&mut ws, 2, 5, b"");
    let hb = recv(&mut ws);
    assert_eq!((hb.op, hb.seq, hb.body.len()), (3, 5, 4));

    // A body near the limit spans several TLS records each way.
    let big = vec![b'x'; 4000];
    send(&mut ws, 14, 6, &big);
    let echo = recv(&mut ws);
    assert_eq!((echo.op, echo.seq), (15, 6));
    assert_eq!(echo.body, big);

    post_ok(
        srv.http,
        "/goim/push/keys?operation=1000&keys=wss-key",
        b"to-key",
    );
    let p = recv(&mut ws);
    assert_eq!(p.op, 9);
    assert_eq!(inner(&p.body)[0].body.as_ref(), b"to-key");

    post_ok(
        srv.http,
        "/goim/push/room?operation=1000&type=live&room=wss",
        b"to-room",
    );
    let p = recv(&mut ws);
    assert_eq!(p.op, 9);
    assert_eq!(inner(&p.body)[0].body.as_ref(), b"to-room");
}

#[test]
fn bad_tls_closes_only_that_connection() {
    let cert = TestCert::new("bad");
    let srv = start_wss(&cert);
    let addr = srv.wss.expect("WSS listener");
    let mut good = wss_client(addr, &cert);
    send(&mut good, 7, 1, &token(12, "good", "live://n", &[]));
    assert_eq!(recv(&mut good).op, 8);

    // Plain HTTP on the TLS port is not a TLS record.
    let mut bad = Client::tcp(addr);
    bad.write_raw(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n");
    bad.expect_close();
    eventually("tls close counted", || srv.closes(CloseReason::Tls) == 1);

    send(&mut good, 2, 2, b"");
    assert_eq!(recv(&mut good).op, 3, "neighbour unaffected");
}
