//! The async client against a real all-in-one: ordered delivery, a server restart, a healed
//! gap, a terminal kick, node selection with backoff, and goim room pushes.

mod common;

use common::{Server, WAIT, next_matching, p2p, runtime, seqs, synced};
use starling_client::im::MsgKind;
use starling_client::{Client, ConnState, Event, SendError, Servers, Transport};
use std::time::Duration;

#[test]
fn messages_arrive_once_in_seq_order_over_tcp_and_websocket() {
    let server = Server::start(|_| {});
    runtime().block_on(async {
        let (a, mut a_ev) = synced(server.client(1, "a", Transport::Tcp)).await;
        let (_b, mut b_ev) = synced(server.client(2, "b", Transport::WebSocket)).await;
        for i in 0..20 {
            let ack = a.send(p2p(2), 1, &format!("hi {i}")).await.unwrap();
            assert_eq!(ack.seq, i + 1);
        }
        assert_eq!(
            seqs(&mut b_ev, p2p(1), 20).await,
            (1..=20).collect::<Vec<_>>()
        );
        // The sender sees its own messages once, at their seqs.
        assert_eq!(
            seqs(&mut a_ev, p2p(2), 20).await,
            (1..=20).collect::<Vec<_>>()
        );
        // A final code is an error, not retried: content over im.max_content (8 KiB) is 413.
        match a.send(p2p(2), 1, &"x".repeat(10_000)).await {
            Err(SendError::Refused(ack)) => assert_eq!(ack.code, 413),
            other => panic!("{other:?}"),
        }
        // A packet over ImWelcome.max_body (16 KiB) would make the server close the
        // connection: refused locally, never sent (and not retried forever).
        let big = "x".repeat(64 * 1024);
        match tokio::time::timeout(common::WAIT, a.send(p2p(2), 1, &big))
            .await
            .expect("an answer")
        {
            Err(SendError::TooLarge { max: 16384, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(a.stats().connects, 1, "the connection stayed up");
        // Recall: a RECALL event at the next seq, for both sides.
        let ack = a.recall(p2p(2), 3).await.unwrap();
        assert_eq!(ack.seq, 21);
        let (e, _) = next_matching(&mut b_ev, "recall", |e| matches!(e, Event::Recall(_))).await;
        let Event::Recall(m) = e else { unreachable!() };
        assert_eq!((m.seq, m.ref_seq, m.kind), (21, 3, MsgKind::Recall as i32));
    });
}

/// Sends made while the server is down resolve once it is back; the peer gets every message
/// once, in order, across a crash and restart (sync + pull on reconnect).
#[test]
fn a_server_restart_loses_nothing() {
    let mut server = common::Process::new();
    server.start();
    let rt = runtime();
    // The client tasks live on `rt` across the block_on calls.
    let (a, mut a_ev, _b, mut b_ev) = rt.block_on(async {
        let (a, a_ev) = synced(server.client(11, "a")).await;
        let (b, b_ev) = synced(server.client(12, "b")).await;
        for i in 0..5 {
            a.send(p2p(12), 1, &format!("before {i}")).await.unwrap();
        }
        (a, a_ev, b, b_ev)
    });
    server.kill();
    let sends: Vec<_> = (0..5)
        .map(|i| {
            let a = a.clone();
            rt.spawn(async move { a.send(p2p(12), 1, &format!("during {i}")).await })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.start();
    rt.block_on(async {
        for s in sends {
            assert_eq!(s.await.unwrap().unwrap().code, 0);
        }
        for i in 0..5 {
            a.send(p2p(12), 1, &format!("after {i}")).await.unwrap();
        }
        assert_eq!(
            seqs(&mut b_ev, p2p(11), 15).await,
            (1..=15).collect::<Vec<_>>()
        );
        let (_, seen) = next_matching(&mut a_ev, "a reconnect", |e| {
            matches!(e, Event::State(ConnState::Connected { .. }))
        })
        .await;
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::State(ConnState::Disconnected { .. }))),
            "{seen:?}"
        );
        // Nothing more, nothing twice.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Some(e) = b_ev.try_recv() {
            assert!(!matches!(e, Event::Message(_)), "{e:?}");
        }
    });
}

/// A user who was offline gets everything by the sync pass on connect: directory sync, then
/// forward pulls in pages of 100 (250 messages: three pages), no push involved.
#[test]
fn an_offline_user_catches_up_by_sync_and_pull() {
    let server = Server::start(|_| {});
    runtime().block_on(async {
        let (a, _a_ev) = synced(server.client(51, "a", Transport::Tcp)).await;
        for i in 0..250 {
            a.send(p2p(52), 1, &format!("m{i}")).await.unwrap();
        }
        let (b, mut b_ev) = Client::start(server.client(52, "b", Transport::WebSocket));
        let (_, before_sync) = next_matching(&mut b_ev, "synced", |e| {
            matches!(e, Event::State(ConnState::Synced))
        })
        .await;
        let got: Vec<u64> = before_sync
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            (1..=250).collect::<Vec<_>>(),
            "all of it before Synced"
        );
        assert_eq!(b.stats().raw, 0, "nothing came as a push");
    });
}

/// A push lost on the way (fault injection drops seq 3) leaves a gap; after gap_wait the
/// client pulls it, and the app sees 1..=5 in order.
#[test]
fn a_gap_is_healed_by_a_pull() {
    let server = Server::start(|_| {});
    runtime().block_on(async {
        let (a, _a_ev) = synced(server.client(21, "a", Transport::Tcp)).await;
        let mut cfg = server.client(22, "b", Transport::Tcp);
        cfg.drop_push_seqs = vec![3];
        let (b, mut b_ev) = synced(cfg).await;
        for i in 0..5 {
            a.send(p2p(22), 1, &format!("m{i}")).await.unwrap();
        }
        assert_eq!(seqs(&mut b_ev, p2p(21), 5).await, vec![1, 2, 3, 4, 5]);
        let s = b.stats();
        assert!(s.gap_pulls >= 1, "{s:?}");
        assert_eq!(s.raw, 4, "seq 3 never came as a push");
    });
}

/// A 40xx kick is terminal: the kicked client stops and never reconnects.
#[test]
fn a_kick_stops_reconnecting() {
    let server =
        Server::start(|c| c.im.multi_login = starling_im::config::MultiLogin::OnePerPlatform);
    runtime().block_on(async {
        let (first, mut first_ev) = synced(server.client(31, "k1", Transport::Tcp)).await;
        let (_second, _) = synced(server.client(31, "k2", Transport::Tcp)).await;
        let (kick, _) =
            next_matching(&mut first_ev, "a kick", |e| matches!(e, Event::Kick(_))).await;
        let Event::Kick(k) = kick else { unreachable!() };
        assert_eq!(k.code, 4001);
        let (stopped, seen) = next_matching(&mut first_ev, "stopped", |e| {
            matches!(e, Event::State(ConnState::Stopped { .. }))
        })
        .await;
        assert!(
            seen.is_empty(),
            "nothing between the kick and the stop: {seen:?}"
        );
        assert!(format!("{stopped:?}").contains("4001"), "{stopped:?}");
        // The stream ends: no reconnect attempt follows.
        assert_eq!(
            tokio::time::timeout(WAIT, first_ev.recv()).await.unwrap(),
            None
        );
        assert_eq!(first.stats().connects, 1);
        assert!(matches!(
            first.send(p2p(1), 1, "x").await,
            Err(SendError::Stopped)
        ));
    });
}

/// Node selection: logic lists a dead comet first and the live one second; the client tries
/// them in turn, with a backoff under the ceiling between attempts.
#[test]
fn nodes_are_taken_from_logic_in_turn_with_backoff() {
    let dead = common::free_addr();
    let tcp = common::free_addr();
    let server = Server::start(|c| {
        c.comet.tcp.bind = vec![tcp];
        c.registry.public_addrs = vec![dead.to_string(), tcp.to_string()];
    });
    runtime().block_on(async {
        let mut cfg = server.client(41, "n", Transport::Tcp);
        cfg.servers = Servers::Nodes {
            logic: format!("http://{}", server.http),
        };
        let ceiling = cfg.backoff.unwrap().ceiling(0);
        let (_c, mut ev) = Client::start(cfg);
        let (_, seen) = next_matching(&mut ev, "connected", |e| {
            matches!(e, Event::State(ConnState::Connected { .. }))
        })
        .await;
        let states: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                Event::State(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert!(
            matches!(&states[..], [
                ConnState::Connecting { attempt: 0, addr: a0 },
                ConnState::Disconnected { retry_in, .. },
                ConnState::Connecting { attempt: 1, addr: a1 },
            ] if *a0 == dead.to_string() && *a1 == tcp.to_string() && *retry_in <= ceiling),
            "{states:?}"
        );
    });
}

/// The goim side: a room push through `/goim/push/room` arrives as a push event (an op-9
/// batch on WebSocket, unpacked), on a connection without IM.
#[test]
fn goim_room_pushes_arrive() {
    let server = Server::start(|_| {});
    runtime().block_on(async {
        let mut cfg = server.client(0, "", Transport::WebSocket);
        cfg.identity.im = None;
        cfg.identity.room_id = "live://7".into();
        cfg.identity.accepts = vec![1000];
        let (_c, mut ev) = synced(cfg).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            post(
                server.http,
                "/goim/push/room?operation=1000&type=live&room=7",
                b"hello room",
            )
            .await;
            if let Ok(Some(Event::Push(p))) =
                tokio::time::timeout(Duration::from_millis(300), ev.recv()).await
            {
                assert_eq!((p.op, &p.body[..]), (1000, &b"hello room"[..]));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no room push");
        }
    });
}

async fn post(http: std::net::SocketAddr, path: &str, body: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// goim room change (op 12) and accept filters (op 14) on a live connection: the new room's
/// pushes arrive, and a mid push of an op accepted only after `subscribe` arrives.
#[test]
fn goim_room_change_and_accept_filters() {
    let server = Server::start(|_| {});
    runtime().block_on(async {
        let mut cfg = server.client(5, "g", Transport::Tcp);
        cfg.identity.im = None;
        cfg.identity.room_id = "live://7".into();
        cfg.identity.accepts = vec![1000];
        let (c, mut ev) = synced(cfg).await;
        c.change_room("live://8");
        until_push(
            &mut ev,
            server.http,
            "/goim/push/room?operation=1000&type=live&room=8",
            1000,
        )
        .await;
        c.subscribe(&[1001]);
        until_push(
            &mut ev,
            server.http,
            "/goim/push/mids?operation=1001&mids=5",
            1001,
        )
        .await;
        assert_eq!(
            c.stats().connects,
            1,
            "no reconnect: every goim reply matched"
        );
    });
}

/// Posts to `path` until a push of `op` arrives.
async fn until_push(
    ev: &mut starling_client::Events,
    http: std::net::SocketAddr,
    path: &str,
    op: i32,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        post(http, path, b"x").await;
        if let Ok(Some(Event::Push(p))) =
            tokio::time::timeout(Duration::from_millis(200), ev.recv()).await
            && p.op == op
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push of op {op} via {path}"
        );
    }
}

/// A lost *last* push leaves no gap to see; the periodic sync (`resync_ms`, here 500 ms from
/// the server's `im.resync_hint`) finds the conversation's `last_seq` above `contig` and
/// pulls it (reference im.md §5.4 step 4).
#[test]
fn a_lost_last_push_is_healed_by_the_periodic_sync() {
    let server = Server::start(|c| c.im.resync_hint = Duration::from_millis(500));
    runtime().block_on(async {
        let (a, _a_ev) = synced(server.client(61, "a", Transport::Tcp)).await;
        let mut cfg = server.client(62, "b", Transport::Tcp);
        cfg.drop_push_seqs = vec![3];
        let (b, mut b_ev) = synced(cfg).await;
        for i in 0..3 {
            a.send(p2p(62), 1, &format!("m{i}")).await.unwrap();
        }
        assert_eq!(seqs(&mut b_ev, p2p(61), 3).await, vec![1, 2, 3]);
        assert_eq!(b.stats().gap_pulls, 0, "no gap was visible");
    });
}

/// 429: over the per-connection send rate (here 5/s) the server answers RATE_LIMITED with
/// `retry_after_ms`; the client waits that long and resends the same id, so every send ends
/// stored once, and the peer sees each seq once.
#[test]
fn rate_limited_sends_are_retried_with_the_same_id() {
    let server = Server::start(|c| c.im.send_rate = 5);
    runtime().block_on(async {
        let (a, _a_ev) = synced(server.client(71, "a", Transport::Tcp)).await;
        let (_b, mut b_ev) = synced(server.client(72, "b", Transport::Tcp)).await;
        let sends: Vec<_> = (0..15)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move { a.send(p2p(72), 1, &format!("r{i}")).await })
            })
            .collect();
        let mut acked = Vec::new();
        for s in sends {
            let ack = s.await.unwrap().unwrap();
            assert!(!ack.duplicate, "each id stored once: {ack:?}");
            acked.push(ack.seq);
        }
        acked.sort();
        assert_eq!(acked, (1..=15).collect::<Vec<_>>());
        assert_eq!(
            seqs(&mut b_ev, p2p(71), 15).await,
            (1..=15).collect::<Vec<_>>()
        );
    });
}
