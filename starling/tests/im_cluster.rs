//! IM across hosts (reference im.md §6.4, §7.2, §9; issue 13): two logic nodes on one
//! PostgreSQL store, sessions and the device table in Redis, two comets, job on the broker,
//! each tier killed and restarted while clients follow the protocol (`common::im_client`).
//! What must hold throughout: nothing acknowledged is lost, seqs have no holes, every online
//! member sees every message once, in order.
//!
//! Needs root (network namespaces), the tier binaries, redis-server, tansu and PostgreSQL
//! (tools/test.sh). The tests take turns: each runs a whole deployment on two cores.

mod cluster;
mod common;

use cluster::im::ImCluster;
use common::im_client::{ImClient, group, p2p};
use common::im_server::ADMIN;
use starling_proto::im::v1::{Message, MsgKind, SendAck};
use starling_proto::op;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per client message id, every caller's `(seq, msg_id, duplicate)`.
type Answers = HashMap<String, Vec<(u64, u64, bool)>>;

/// One deployment at a time.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The whole log of `conv` as a fresh client of `reader` sees it after its sync.
fn whole_log(
    c: &ImCluster,
    comet: usize,
    reader: i64,
    conv: starling_proto::im::v1::ConvRef,
) -> Vec<Message> {
    let r = c.connect(
        comet,
        reader,
        &format!("checker-{reader}-{}", std::process::id()),
    );
    r.messages(conv).to_vec()
}

/// Asserts the log is seqs 1..=n with no hole, and returns its NORMAL messages.
fn contiguous(log: &[Message]) -> Vec<&Message> {
    assert_eq!(
        log.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "seqs contiguous from 1"
    );
    log.iter()
        .filter(|m| m.kind == MsgKind::Normal as i32)
        .collect()
}

/// Pumps every client until `done` holds for each; fails after `limit`.
fn pump_all(clients: &mut [ImClient], limit: Duration, done: impl Fn(&ImClient) -> bool) {
    let end = Instant::now() + limit;
    loop {
        let mut all = true;
        for c in clients.iter_mut() {
            if !done(c) {
                all = false;
                if c.pump(Duration::from_millis(20)).is_err() {
                    let _ = c.reconnect();
                }
            }
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < end,
            "not every client got there: {:?}",
            clients
                .iter()
                .filter(|c| !done(c))
                .map(|c| (
                    c.login.key.clone(),
                    c.convs.values().map(|s| s.contig).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
    }
}

/// Two logic nodes take sends to one conversation with the same client message ids at once,
/// over HTTP and gRPC: one row per id, one seq per id whoever answered, no hole (design §6.4,
/// §9 "PostgreSQL race test"). The management API answers alike on both nodes.
#[test]
fn two_logic_nodes_one_conversation_same_ids_over_http_and_grpc() {
    let _turn = turn();
    let c = ImCluster::start();
    // A group made over gRPC on node 2 is seen over HTTP on node 1.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grpc = c.grpc.clone();
    let admin = move |node: usize| {
        let addr = grpc[node];
        async move {
            let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            starling_im::admin::grpc::AdminClient::new(ch)
        }
    };
    let authed = |m| {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
        r
    };
    rt.block_on(async {
        let mut a = admin(1).await;
        a.create_group(authed(starling_proto::im::v1::CreateGroupRequest {
            gid: 900,
            name: "race".into(),
            owner: 1,
            members: vec![2, 3],
            ..Default::default()
        }))
        .await
        .unwrap();
    });
    let members = c.admin_ok(0, "GET", "/im/v1/groups/900/members", "");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    c.phase("group 900 made over gRPC on logic2, listed over HTTP on logic1");

    const IDS: usize = 150;
    // Four callers, each sending every id (in its own order) as member 1: HTTP and gRPC on
    // each node.
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let mut callers = Vec::new();
    for caller in 0..4usize {
        let (node, over_grpc) = (caller % 2, caller >= 2);
        let http = c.http[node];
        let grpc = c.grpc[node];
        let answers = answers.clone();
        callers.push(std::thread::spawn(move || {
            let mut order: Vec<usize> = (0..IDS).collect();
            if caller % 2 == 1 {
                order.reverse();
            }
            if caller >= 2 {
                order.rotate_left(IDS / 3);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut client = over_grpc.then(|| {
                rt.block_on(async {
                    let ch = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
                        .unwrap()
                        .connect()
                        .await
                        .unwrap();
                    starling_im::admin::grpc::AdminClient::new(ch)
                })
            });
            for k in order {
                let id = format!("race-{k}");
                let got = if let Some(cl) = client.as_mut() {
                    let mut r = tonic::Request::new(starling_proto::im::v1::SendMessageRequest {
                        from: 1,
                        conv: Some(starling_proto::im::v1::ConvName {
                            kind: starling_proto::im::v1::ConvKind::Group as i32,
                            id: 900,
                            ..Default::default()
                        }),
                        client_msg_id: id.clone(),
                        content_type: 1,
                        content: format!("{k}"),
                        ..Default::default()
                    });
                    r.metadata_mut()
                        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
                    let a = rt.block_on(cl.send_message(r)).expect("gRPC send").into_inner();
                    (a.seq, a.msg_id, a.duplicate)
                } else {
                    let body = format!(
                        r#"{{"from":1,"conv":{{"kind":"GROUP","id":900}},"clientMsgId":"{id}","contentType":1,"content":"{k}"}}"#
                    );
                    let (status, v) = common::im_server::admin_call(
                        http,
                        ADMIN,
                        "POST",
                        "/im/v1/messages",
                        &body,
                    );
                    assert_eq!(status, 200, "{v}");
                    let d = &v["data"];
                    let n = |f: &str| d[f].as_str().unwrap().parse::<u64>().unwrap();
                    (n("seq"), n("msgId"), d["duplicate"].as_bool().unwrap())
                };
                answers.lock().unwrap().entry(id).or_default().push(got);
            }
        }));
    }
    for t in callers {
        t.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), IDS);
    for (id, got) in answers.iter() {
        assert_eq!(got.len(), 4, "{id}");
        let first = (got[0].0, got[0].1);
        assert!(
            got.iter().all(|g| (g.0, g.1) == first),
            "{id}: every caller got the same (seq, msg_id): {got:?}"
        );
        assert!(
            got.iter().filter(|g| !g.2).count() <= 1,
            "{id}: at most one answer is not a duplicate: {got:?}"
        );
    }
    let log = whole_log(&c, 1, 3, group(900));
    let normal = contiguous(&log);
    let ids: HashSet<&str> = normal.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!((normal.len(), ids.len()), (IDS, IDS), "each id stored once");
    for m in &normal {
        assert_eq!(answers[&m.client_msg_id][0].0, m.seq, "{}", m.client_msg_id);
    }
    c.phase(&format!(
        "{IDS} ids × 4 callers on two nodes: {} rows, seqs 1..={} contiguous",
        normal.len(),
        log.len()
    ));
}

/// Member lists stay coherent across logic nodes (issue 13; design §6.4: membership is read
/// under the conversation's row lock, in the send's own transaction, and deliveries read the
/// members' seq windows from the store): a member removed through node 1 gets nothing of what
/// node 2 then stores, and their own sends are refused with 403 (§5.5 "not a member or
/// left"); added back through node 2, they get what node 1 stores next.
#[test]
fn member_removed_on_one_logic_node_is_skipped_and_refused_by_the_other() {
    let _turn = turn();
    let c = ImCluster::start();
    c.admin_ok(
        0,
        "POST",
        "/im/v1/groups",
        r#"{"gid":"901","name":"coherence","owner":"1","members":["2","3"]}"#,
    );
    let mut stays = c.connect(0, 2, "stays-2");
    let mut leaves = c.connect(1, 3, "leaves-3");
    let send_as = |node: usize, from: i64, id: &str| {
        common::im_server::admin_call(
            c.http[node],
            ADMIN,
            "POST",
            "/im/v1/messages",
            &format!(
                r#"{{"from":{from},"conv":{{"kind":"GROUP","id":901}},"clientMsgId":"{id}","contentType":1,"content":"{id}"}}"#
            ),
        )
    };
    let seq_of = |v: &serde_json::Value| v["data"]["seq"].as_str().unwrap().parse::<u64>().unwrap();

    let removed = c.admin_ok(
        0,
        "DELETE",
        "/im/v1/groups/901/members",
        r#"{"uids":["3"]}"#,
    );
    let leave_seq: u64 = removed["seq"].as_str().unwrap().parse().unwrap();
    assert_eq!(removed["removed"], serde_json::json!(["3"]), "{removed}");
    c.phase(&format!("3 removed through logic1 at seq {leave_seq}"));

    let (status, v) = send_as(1, 1, "after-removal");
    assert_eq!(status, 200, "{v}");
    let after_removal = seq_of(&v);
    assert_eq!(after_removal, leave_seq + 1);
    let (status, v) = send_as(1, 3, "by-the-removed-over-http");
    assert_eq!((status, v["code"].as_i64()), (403, Some(403)), "{v}");
    let refused: SendAck = leaves
        .call(
            op::im::SEND,
            &common::im_server::send_req(group(901), "by-the-removed", "x"),
        )
        .expect("an answer");
    assert_eq!((refused.code, refused.seq), (403, 0), "{refused:?}");
    pump_all(
        std::slice::from_mut(&mut stays),
        Duration::from_secs(20),
        |m| m.seqs(group(901)).last() == Some(&after_removal),
    );
    c.phase("logic2 stored a message 3 may not read and refused 3's sends (HTTP and IM) with 403");

    let added = c.admin_ok(1, "POST", "/im/v1/groups/901/members", r#"{"uids":["3"]}"#);
    assert_eq!(added["added"], serde_json::json!(["3"]), "{added}");
    let (status, v) = send_as(0, 1, "after-rejoin");
    assert_eq!(status, 200, "{v}");
    let after_rejoin = seq_of(&v);
    assert_eq!(
        after_rejoin,
        after_removal + 2,
        "the refused sends took no seq"
    );
    // Pushes of one conversation go through one partition in commit order: had 3 been sent
    // `after-removal`, it would have come before `after-rejoin`.
    pump_all(
        std::slice::from_mut(&mut leaves),
        Duration::from_secs(20),
        |m| m.seqs(group(901)).last() == Some(&after_rejoin),
    );
    leaves.sync_all().expect("a sync");
    let seen: Vec<(u64, &str)> = leaves
        .messages(group(901))
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_str()))
        .collect();
    assert!(
        seen.iter()
            .all(|(s, _)| *s <= leave_seq || *s > after_removal),
        "3 got a message stored while it was out: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&(after_rejoin, "after-rejoin")),
        "{seen:?}"
    );
    pump_all(
        std::slice::from_mut(&mut stays),
        Duration::from_secs(20),
        |m| m.seqs(group(901)).last() == Some(&after_rejoin),
    );
    assert_eq!(
        stays.seqs(group(901)),
        (1..=after_rejoin).collect::<Vec<_>>(),
        "2 got every seq once, in order"
    );
    c.phase(&format!(
        "3 added back through logic2 got seq {after_rejoin} from logic1 and never seq {after_removal}"
    ));
}

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

/// T4: a 50-member group, 20 members online on two comets, three of them sending 1,000
/// messages each, while job is killed twice: every online member ends with every seq once,
/// in order (Kafka redelivers what job had not handed over; clients drop the duplicates and
/// pull the gaps).
#[test]
fn t4_job_killed_twice_every_online_member_gets_every_message_once() {
    const PER_SENDER: usize = 1000;
    let _turn = turn();
    let mut c = ImCluster::start();
    let members: Vec<String> = (2..=50).map(|m| format!("\"{m}\"")).collect();
    c.admin_ok(
        0,
        "POST",
        "/im/v1/groups",
        &format!(
            r#"{{"gid":"50","name":"t4","owner":"1","members":[{}],"history":"all"}}"#,
            members.join(",")
        ),
    );
    // Members 1..=20 online, odd ones on comet1, even ones on comet2; 1, 2, 3 send.
    let mut online: Vec<ImClient> = (4..=20i64)
        .map(|m| c.connect((m % 2) as usize, m, &format!("t4-{m}")))
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (1..=3i64)
        .map(|mid| {
            let mut s = c.connect((mid % 2) as usize, mid, &format!("t4-{mid}"));
            let acked = acked.clone();
            std::thread::spawn(move || {
                for k in 0..PER_SENDER {
                    let acks = s.send(group(50), &format!("{mid}-{k}"), &format!("{k}"));
                    assert_eq!(acks.last().map(|a| a.code), Some(0), "{acks:?}");
                    acked.fetch_add(1, Ordering::Relaxed);
                    if k % 16 == 0 {
                        let _ = s.pump(Duration::from_millis(1));
                    }
                }
                s
            })
        })
        .collect();
    c.phase("17 members listening, 3 sending");
    let total = 3 * PER_SENDER;
    let mut kills = vec![total * 7 / 10, total * 3 / 10];
    while let Some(at) = kills.last().copied() {
        if acked.load(Ordering::Relaxed) >= at {
            kills.pop();
            ImCluster::bounce(&mut c.job, Duration::from_millis(500));
            c.phase(&format!("job killed and restarted at {at} acknowledged"));
        }
        for m in online.iter_mut() {
            if m.pump(Duration::from_millis(5)).is_err() {
                let _ = m.reconnect();
            }
        }
        if senders.iter().all(|s| s.is_finished()) {
            break;
        }
    }
    assert!(kills.is_empty(), "the senders finished before both kills");
    // The listeners keep reading while the senders finish (a client that stops reading is a
    // slow consumer).
    while !senders.iter().all(|s| s.is_finished()) {
        for m in online.iter_mut() {
            if m.pump(Duration::from_millis(5)).is_err() {
                let _ = m.reconnect();
            }
        }
    }
    online.extend(senders.into_iter().map(|s| s.join().unwrap()));
    let last = total as u64 + 1; // the "created" SYSTEM message is seq 1
    pump_all(&mut online, Duration::from_secs(60), |m| {
        m.convs
            .get(&(group(50).kind, 50))
            .is_some_and(|s| s.contig >= last)
    });
    let mut raw_duplicates = 0;
    for m in &online {
        let msgs = m.messages(group(50));
        assert_eq!(
            msgs.iter().map(|x| x.seq).collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>(),
            "{}: every seq once, in order",
            m.login.key
        );
        let ids: HashSet<&str> = msgs
            .iter()
            .filter(|x| x.kind == MsgKind::Normal as i32)
            .map(|x| x.client_msg_id.as_str())
            .collect();
        assert_eq!(ids.len(), total, "{}: no visible duplicate", m.login.key);
        raw_duplicates += m.raw_duplicates;
    }
    c.phase(&format!(
        "20 online members hold seqs 1..={last}; raw duplicates dropped by the clients: {raw_duplicates}"
    ));
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
