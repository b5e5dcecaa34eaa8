//! IM across hosts when a tier or a dependency fails (reference im.md §7.2, §9; issues 13 and
//! 15): PostgreSQL down, logic and PostgreSQL killed, a comet killed and then Redis down. The
//! deployment and what must hold are those of im_cluster.rs: two logic nodes on one
//! PostgreSQL store, sessions and the device table in Redis, two comets, job on the broker,
//! each tier killed and restarted while clients follow the protocol (`common::im_client`).
//! What must hold throughout: nothing acknowledged is lost, seqs have no holes, every online
//! member sees every message once, in order.
//!
//! Needs root (network namespaces), the tier binaries, redis-server, tansu and PostgreSQL
//! (tools/test.sh). The tests take turns: each runs a whole deployment on two cores.

mod cluster;
mod common;

use cluster::im::{ImCluster, pump_all, turn, whole_log};
use common::im_client::{group, p2p};
use starling_proto::im::v1::SendAck;
use starling_proto::op;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// PostgreSQL down, as an operator sees it: both logic nodes' `/readyz` answer 503 naming
/// the IM store, a send answers 503 with nothing stored, and each failed store call is
/// counted in `starling_im_postgres_errors_total` (kind `error`: the connection is refused);
/// all ready again once it is back.
#[test]
fn postgres_down_shows_on_readyz_and_in_the_error_counters() {
    let _turn = turn();
    let mut c = ImCluster::start();
    let mut a = c.connect(0, 41, "a");
    let acks = a.send(p2p(42), "pg-1", "before");
    assert_eq!(acks.last().map(|k| k.code), Some(0), "{acks:?}");
    let errors = |c: &ImCluster, node: usize, kind: &str| {
        let text = cluster::scrape(c.http[node], "/metrics").1;
        let series = format!("starling_im_postgres_errors_total{{kind=\"{kind}\"}}");
        cluster::metric_sum(&text, &series).unwrap_or_else(|| panic!("{series} in {text}"))
    };
    assert_eq!(
        (errors(&c, 0, "error"), errors(&c, 0, "timeout")),
        (0.0, 0.0)
    );

    c.pg.stop();
    for node in 0..2 {
        let body = cluster::ready_becomes(c.http[node], 503, &format!("logic{}", node + 1));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["failing"]["im_store"].is_string(), "{body}");
    }
    // Whichever logic node serves a's comet: count on both.
    let before: f64 = (0..2).map(|n| errors(&c, n, "error")).sum();
    let req = common::im_server::send_req(p2p(42), "pg-2", "while PostgreSQL is down");
    let ack: SendAck = a.call(op::im::SEND, &req).expect("an answer");
    assert_eq!((ack.code, ack.stored), (503, false), "{ack:?}");
    let after: f64 = (0..2).map(|n| errors(&c, n, "error")).sum();
    assert!(
        after > before,
        "the send's failed store call is counted: {before} → {after}"
    );
    c.phase(&format!(
        "PostgreSQL down: /readyz 503 (im_store) on both nodes, send 503 unstored, \
         {after} store errors counted"
    ));

    c.pg.resume();
    for node in 0..2 {
        cluster::ready_becomes(c.http[node], 200, &format!("logic{}", node + 1));
    }
    let acks = a.send(p2p(42), "pg-2", "while PostgreSQL is down");
    assert_eq!(
        acks.last().map(|k| (k.code, k.seq, k.duplicate)),
        Some((0, 2, false)),
        "{acks:?}"
    );
    c.phase("PostgreSQL back: both nodes ready, the retry stored at seq 2");
}

/// T3 split: three senders × 2,000 messages to one group while the logic nodes are killed
/// three times (SIGKILL) and restarted, and, apart, PostgreSQL is killed and restarted once:
/// 0 acknowledged lost, each message stored once, contiguous seqs, per-sender order.
#[test]
fn t3_split_logic_and_postgres_killed_nothing_acknowledged_lost() {
    const PER_SENDER: usize = 2000;
    let _turn = turn();
    let mut c = ImCluster::start();
    c.admin_ok(
        1,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"7","name":"crash","owner":"1","members":["2","3","4"],"history":"all"}"#,
    );
    let acked: Arc<Mutex<Vec<(i64, usize, u64)>>> = Arc::default();
    let senders: Vec<_> = (1..=3i64)
        .map(|mid| {
            let mut s = c.connect((mid % 2) as usize, mid, &format!("t3-{mid}"));
            let acked = acked.clone();
            std::thread::spawn(move || {
                for k in 0..PER_SENDER {
                    let acks = s.send(group(7), &format!("{mid}-{k}"), &format!("{k}"));
                    let a = acks.last().unwrap();
                    assert_eq!(a.code, 0, "{acks:?}");
                    acked.lock().unwrap().push((mid, k, a.seq));
                }
            })
        })
        .collect();
    let total = 3 * PER_SENDER;
    // Logic node kills at 15 %, 35 % and 55 %; PostgreSQL at 75 %.
    let plan = [(15, Some(0)), (35, Some(1)), (55, Some(0)), (75, None)];
    for (pct, node) in plan {
        let at = total * pct / 100;
        let end = Instant::now() + Duration::from_secs(240);
        while acked.lock().unwrap().len() < at {
            assert!(Instant::now() < end, "stuck below {at} acknowledged");
            assert!(
                !senders.iter().all(|s| s.is_finished()),
                "the senders stopped early"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        match node {
            Some(n) => {
                ImCluster::bounce(&mut c.logic[n], Duration::from_millis(300));
                c.phase(&format!(
                    "logic{} killed and restarted at {at} acknowledged",
                    n + 1
                ));
            }
            None => {
                c.pg.stop();
                std::thread::sleep(Duration::from_millis(500));
                c.pg.resume();
                c.phase(&format!(
                    "PostgreSQL killed and restarted at {at} acknowledged"
                ));
            }
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    let log = whole_log(&c, 0, 4, group(7));
    let acked = acked.lock().unwrap();
    common::im_server::assert_nothing_acknowledged_lost(&log, &acked, 3, PER_SENDER);
    c.phase(&format!(
        "{total} acknowledged, all stored once, seqs 1..={}",
        log.len()
    ));
}

/// A comet killed: its IM clients reconnect to the other comet, sync, and miss nothing of
/// what was sent meanwhile; then Redis down: sends are stored and answered 503 `stored=true`
/// (they could not be routed). The recipient gets the one its sender retries pushed (the retry
/// re-publishes it) and the one never retried by its sync (design §7.2); then PostgreSQL down:
/// a send answers 503 with nothing stored, and its retry takes the next seq.
#[test]
fn comet_killed_then_redis_down_clients_miss_nothing() {
    let _turn = turn();
    let mut c = ImCluster::start();
    let mut a = c.connect(1, 21, "a");
    let mut b = c.connect(0, 22, "b");
    for i in 0..20 {
        let acks = a.send(p2p(22), &format!("before-{i}"), "x");
        assert_eq!(acks.last().map(|k| k.code), Some(0));
    }
    pump_all(std::slice::from_mut(&mut b), Duration::from_secs(20), |b| {
        b.seqs(p2p(21)).len() == 20
    });
    c.comet[0].kill();
    c.phase("comet1 killed with b on it");
    for i in 0..20 {
        let acks = a.send(p2p(22), &format!("during-{i}"), "x");
        assert_eq!(acks.last().map(|k| k.code), Some(0));
    }
    // b notices, and reconnects to the other comet (as behind LVS/DNS).
    let _ = b.pump(Duration::from_millis(200));
    b.login.addr = c.comets[1];
    let end = Instant::now() + Duration::from_secs(20);
    while b.reconnect().is_err() {
        assert!(Instant::now() < end, "b could not reconnect to comet2");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..10 {
        let acks = a.send(p2p(22), &format!("after-{i}"), "x");
        assert_eq!(acks.last().map(|k| k.code), Some(0));
    }
    pump_all(std::slice::from_mut(&mut b), Duration::from_secs(20), |b| {
        b.seqs(p2p(21)).len() == 50
    });
    assert_eq!(b.seqs(p2p(21)), (1..=50).collect::<Vec<u64>>());
    c.comet[0].resume();
    c.phase("b, moved to comet2, holds seqs 1..=50: nothing missed");

    c.redis.stop();
    c.phase("Redis stopped");
    // One attempt (no retry loop): stored, but not routed.
    let req = common::im_server::send_req(p2p(22), "redis-down-1", "while Redis is down");
    let first: SendAck = a.call(op::im::SEND, &req).expect("an answer");
    assert_eq!(
        (first.code, first.stored, first.seq),
        (503, true, 51),
        "stored, not routed: {first:?}"
    );
    // Another, never retried: only a sync can bring it to b.
    let req = common::im_server::send_req(p2p(22), "redis-down-2", "never retried");
    let second: SendAck = a.call(op::im::SEND, &req).expect("an answer");
    assert_eq!(
        (second.code, second.stored, second.seq),
        (503, true, 52),
        "stored, not routed: {second:?}"
    );
    c.redis.resume();
    c.phase("Redis restarted");
    // Redis lost its data (goim's sessions, the device table). The connections stay up and
    // their heartbeats put their entries back (as goim's heartbeat puts its session back),
    // with no new login.
    for (mid, key) in [(21, "a"), (22, "b")] {
        cluster::eventually(&format!("{key}'s device entry put back"), || {
            let _ = a.pump(Duration::from_millis(50));
            let _ = b.pump(Duration::from_millis(50));
            let v = c.admin_ok(0, "GET", &format!("/im/v1/users/{mid}/online"), "");
            v["devices"].as_array().is_some_and(|d| d.len() == 1)
        });
    }
    assert!(a.is_connected() && b.is_connected(), "nobody reconnected");
    // a's retry with the same id answers the original seq, and delivers it again: b gets it
    // pushed.
    let acks = a.send(p2p(22), "redis-down-1", "while Redis is down");
    assert_eq!(
        acks.last().map(|k| (k.code, k.seq, k.duplicate)),
        Some((0, 51, true)),
        "{acks:?}"
    );
    let pulls = b.gap_pulls;
    pump_all(std::slice::from_mut(&mut b), Duration::from_secs(20), |b| {
        b.seqs(p2p(21)).len() == 51
    });
    assert_eq!(b.gap_pulls, pulls, "pushed, not pulled");
    assert_eq!(b.messages(p2p(21))[50].client_msg_id, "redis-down-1");
    c.phase("heartbeats put the device entries back; b got the retried message pushed");
    // The one never retried: b learns of it from its sync's conversation head and pulls it,
    // with no push and no gap pull.
    let (raw, pulls) = (b.raw, b.gap_pulls);
    let pages = b.sync_all().expect("b's sync");
    let head = pages
        .iter()
        .flat_map(|p| &p.convs)
        .find(|h| h.conv == Some(p2p(21)))
        .expect("the sync lists the conversation");
    assert_eq!(head.last_seq, 52, "{head:?}");
    assert_eq!(b.seqs(p2p(21)), (1..=52).collect::<Vec<u64>>());
    assert_eq!(b.messages(p2p(21))[51].client_msg_id, "redis-down-2");
    assert_eq!(
        (b.raw, b.gap_pulls),
        (raw, pulls),
        "by the sync: no push, no gap pull"
    );
    c.phase("b's sync brought the message stored while Redis was down and never retried");

    // PostgreSQL down: a send answers 503 with nothing stored; goim's logins and pushes go on.
    c.pg.stop();
    c.phase("PostgreSQL stopped");
    let req = common::im_server::send_req(p2p(22), "pg-down-1", "while PostgreSQL is down");
    let ack: SendAck = a.call(op::im::SEND, &req).expect("an answer");
    assert_eq!((ack.code, ack.stored, ack.seq), (503, false, 0), "{ack:?}");
    let mut g = None;
    cluster::eventually("a goim client logs in while PostgreSQL is down", || {
        g = cluster::Member::join(c.comets[0], 31, "goim-31", "live://7").ok();
        g.is_some()
    });
    let mut g = g.unwrap();
    let (code, v) = cluster::call(
        c.http[1],
        "POST",
        "/goim/push/keys?operation=1000&keys=goim-31",
        b"pg-down-push",
    );
    assert_eq!(code, 0, "{v}");
    assert!(
        g.until(|m| m.got.iter().any(|x| x == "pg-down-push")),
        "goim push while PostgreSQL is down"
    );
    c.pg.resume();
    let acks = a.send(p2p(22), "pg-down-1", "while PostgreSQL is down");
    assert_eq!(
        acks.last().map(|k| (k.code, k.seq, k.duplicate)),
        Some((0, 53, false)),
        "{acks:?}"
    );
    pump_all(std::slice::from_mut(&mut b), Duration::from_secs(20), |b| {
        b.seqs(p2p(21)).len() == 53
    });
    assert_eq!(
        b.seqs(p2p(21)),
        (1..=53).collect::<Vec<u64>>(),
        "b holds every seq once, in order"
    );
    c.phase("PostgreSQL down: the send answered 503 unstored; a goim login and push went through; the retry stored it at 53; b holds 1..=53");
}
