//! comet tested alone, against a scripted logic (`common::Script`): auth refused, logic slower
//! than the deadline, logic down, a connection closed while logic answers, forward-and-answer
//! ops in order with pipelining, goim's echo untouched, and the same-key kick across workers.

mod common;

use common::{Client, OnConnect, eventually, start, token};
use starling_comet::CloseReason;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn a_refused_auth_closes_with_auth_failed() {
    let c = start();
    c.script.set_connect(OnConnect::Refuse);
    let mut client = Client::connect(c.tcp);
    client.send(7, 1, &token(1, "k", 0));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::AuthFailed) == 1);
}

#[test]
fn logic_down_at_auth_closes_with_auth_failed() {
    let c = start();
    c.script.set_connect(OnConnect::Fail);
    let mut client = Client::connect(c.tcp);
    client.send(7, 1, &token(1, "k", 0));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::AuthFailed) == 1);
}

/// logic admits the connection after the handshake deadline: the connection is closed as a
/// handshake timeout and the session logic made is undone (Disconnect).
#[test]
fn logic_slower_than_the_handshake_deadline_is_undone() {
    let c = start();
    c.script
        .set_connect(OnConnect::Delay(Duration::from_millis(1500)));
    let mut client = Client::connect(c.tcp);
    client.send(7, 1, &token(9, "slow", 0));
    client.expect_close();
    eventually("counted", || c.closes(CloseReason::HandshakeTimeout) == 1);
    eventually("session undone", || {
        c.script
            .disconnects
            .lock()
            .unwrap()
            .iter()
            .any(|d| d.key == "slow" && d.mid == 9)
    });
}

/// Three answered ops and a heartbeat pipelined in one write: logic sees one request at a
/// time (input paused while it answers), and the replies come in request order with each
/// request's seq, although the first answer is the slowest.
#[test]
fn answered_ops_are_answered_in_order_when_pipelined() {
    let c = start();
    let mut client = Client::connect(c.tcp);
    client.auth(&token(1, "k", 1));
    client.send_all(&[
        (20, 11, b"delay:150:a"),
        (22, 12, b"b"),
        (2, 13, b""),
        (24, 14, b"delay:20:c"),
        (20, 15, b"two"),
    ]);
    let got: Vec<(i32, i32, String)> = (0..6)
        .map(|_| {
            let p = client.expect();
            (p.op, p.seq, String::from_utf8_lossy(&p.body).into_owned())
        })
        .collect();
    let heartbeat_body = got[2].2.clone(); // the room's online count, 4 bytes
    assert_eq!(
        got,
        vec![
            (21, 11, "re:a".to_string()),
            (23, 12, "re:b".to_string()),
            (3, 13, heartbeat_body),
            (25, 14, "re:c".to_string()),
            (21, 15, "first".to_string()),
            (21, 15, "second".to_string()),
        ]
    );
    assert_eq!(c.script.max_in_flight.load(Ordering::SeqCst), 1);
    {
        let reqs = c.script.received.lock().unwrap();
        assert_eq!(reqs.len(), 4);
        assert!(reqs.iter().all(|r| r.mid == 1 && r.key == "k"));
    }
    assert_eq!(c.comet.stats().answered.load(Ordering::Relaxed), 4);

    // Packets written while logic answers wait in the socket, then go in order.
    client.send(20, 21, b"delay:200:d");
    eventually("logic has it", || {
        c.script.received.lock().unwrap().len() == 5
    });
    client.send(2, 22, b"");
    client.send(22, 23, b"e");
    let got: Vec<(i32, i32)> = (0..3)
        .map(|_| {
            let p = client.expect();
            (p.op, p.seq)
        })
        .collect();
    assert_eq!(got, vec![(21, 21), (3, 22), (23, 23)]);
}

/// logic slower than `protocol.answer_timeout` (300 ms here): comet answers op + 1 with code
/// 504 in the connection's codec, and the connection goes on.
#[test]
fn a_late_answer_gets_504_and_the_connection_goes_on() {
    let c = start();
    let mut pb = Client::connect(c.tcp);
    pb.auth(&token(1, "pb", 1));
    pb.send(20, 5, b"delay:2000:x");
    let p = pb.expect();
    assert_eq!(
        (p.op, p.seq, p.body.as_ref()),
        (21, 5, &[0x08, 0xF8, 0x03][..])
    );
    pb.send(22, 6, b"y");
    let p = pb.expect();
    assert_eq!((p.op, p.seq, p.body.as_ref()), (23, 6, &b"re:y"[..]));

    let mut json = Client::connect(c.tcp);
    json.auth(&token(2, "json", 2));
    json.send(20, 7, b"late"); // logic's own deadline (gRPC DEADLINE_EXCEEDED)
    let p = json.expect();
    assert_eq!(
        (p.op, p.seq, p.body.as_ref()),
        (21, 7, &br#"{"code":504}"#[..])
    );
    assert_eq!(c.comet.stats().answer_timeouts.load(Ordering::Relaxed), 2);
}

/// logic failing an answered op: op + 1 with code 503, and the connection goes on.
#[test]
fn a_failed_answer_gets_503_and_the_connection_goes_on() {
    let c = start();
    let mut client = Client::connect(c.tcp);
    client.auth(&token(1, "k", 2));
    client.send(26, 3, b"fail");
    let p = client.expect();
    assert_eq!(
        (p.op, p.seq, p.body.as_ref()),
        (27, 3, &br#"{"code":503}"#[..])
    );
    client.send(2, 4, b"");
    assert_eq!(client.expect().op, 3, "heartbeat still answered");
    assert_eq!(c.comet.stats().answer_failures.load(Ordering::Relaxed), 1);
}

/// A connection that closes while logic answers: the answer is dropped, nothing else is
/// disturbed (another connection keeps being answered), the close is counted once.
#[test]
fn a_connection_closed_while_logic_answers() {
    let c = start();
    let mut gone = Client::connect(c.tcp);
    gone.auth(&token(1, "gone", 1));
    let mut other = Client::connect(c.tcp);
    other.auth(&token(2, "other", 1));
    gone.send(20, 1, b"delay:200:x");
    eventually("logic has it", || {
        c.script.received.lock().unwrap().len() == 1
    });
    drop(gone);
    eventually("the close is seen", || {
        c.closes(CloseReason::ClientClosed) == 1
    });
    std::thread::sleep(Duration::from_millis(300)); // the answer arrives for nobody
    other.send(20, 2, b"still");
    let p = other.expect();
    assert_eq!((p.op, p.seq, p.body.as_ref()), (21, 2, &b"re:still"[..]));
    assert_eq!(c.closes(CloseReason::ClientClosed), 1);
    assert_eq!(c.comet.conn_count(), 1);
}

/// A goim connection (no opt-in) sending an op of the answered range gets goim's empty echo
/// at once; logic's answer is dropped. Exactly as before the op table.
#[test]
fn a_goim_connection_gets_the_empty_echo_for_every_op() {
    let c = start();
    let mut client = Client::connect(c.tcp);
    client.auth(&token(1, "goim", 0));
    client.send_all(&[(20, 1, b"delay:100:x"), (4, 2, b"msg"), (1000, 3, b"biz")]);
    for (op, seq) in [(20, 1), (4, 2), (1000, 3)] {
        let p = client.expect();
        assert_eq!((p.op, p.seq, p.body.len()), (op, seq, 0));
    }
    client.expect_nothing(Duration::from_millis(300));
    eventually("all forwarded", || {
        c.script.received.lock().unwrap().len() == 3
    });
    // A forwarded packet logic fails on is counted; the client has had its echo already.
    client.send(4, 4, b"fail");
    assert_eq!(client.expect().op, 4);
    eventually("failure counted", || {
        c.comet.stats().logic_failures.load(Ordering::Relaxed) == 1
    });
}

/// The same key on another worker: the kick goes through the other worker's command
/// channel. The second connection is placed on the other worker every run (connections are
/// reopened until the kernel's SO_REUSEPORT choice puts one there).
#[test]
fn the_same_key_on_another_worker_kicks_across_workers() {
    let c = start();
    let mut first = Client::connect(c.tcp);
    first.auth(&token(1, "dup", 0));
    let at = c.worker_conns();
    let home = at.iter().position(|&n| n == 1).expect("one connection");
    let mut second = None;
    for _ in 0..64 {
        let candidate = Client::connect(c.tcp);
        eventually("accepted", || c.worker_conns().iter().sum::<usize>() == 2);
        if c.worker_conns()[home] == 1 {
            second = Some(candidate);
            break;
        }
        drop(candidate);
        eventually("closed", || c.worker_conns().iter().sum::<usize>() == 1);
    }
    let mut second = second.expect("a connection on the other worker within 64 tries");
    second.auth(&token(1, "dup", 0));
    first.expect_close();
    eventually("kick counted", || c.closes(CloseReason::Kicked) == 1);
    second.send(2, 9, b"");
    assert_eq!(second.expect().op, 3, "the new connection is served");
    assert_eq!(c.comet.conn_count(), 1);
}

/// A second comet on a port the first holds is refused at start: SO_REUSEPORT would otherwise
/// let it take part of the first one's connections without a word.
#[test]
fn a_port_another_comet_holds_is_refused() {
    let first = start();
    let mut config = common::config();
    config.tcp.bind = vec![first.tcp];
    let script = std::sync::Arc::new(common::Script::default());
    let second = starling_comet::start(config, std::sync::Arc::new(common::Scripted(script)));
    match second {
        Err(starling_comet::CometError::Bind { addr, source }) => {
            assert_eq!(addr, first.tcp);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(c) => {
            c.shutdown();
            panic!("a second comet bound {}", first.tcp);
        }
    }
    // The first one still serves.
    let mut client = Client::connect(first.tcp);
    client.auth(&token(1, "k", 0));
}
