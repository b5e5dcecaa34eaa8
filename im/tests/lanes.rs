//! Lanes (reference im.md §7.1, §7.4). A burst in one conversation leaves as one batch per
//! comet: while a lane's batch is being delivered, the sends that queue behind it are stored
//! and delivered together as one push. A queued write whose caller has gone is never started.
//! A retry of an acknowledged send is answered from the recent acks, not delivered again.
//! The sink (job's seam) is held on its first push so the others always queue behind it.

use starling_im::config::MultiLogin;
use starling_im::devices::Device;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::store::{Conv, Durability};
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::{PushMsg, ReceiveReq};
use starling_proto::grpc::protocol::Proto;
use starling_proto::im::v1::{ConvKind, ConvRef, Push, SendAck, SendReq};
use starling_proto::op::{self, Codec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Records pushes; each publish first takes a permit from `gate`.
struct Gated {
    gate: Semaphore,
    entered: AtomicUsize,
    log: Mutex<Vec<PushMsg>>,
}

impl PushSink for Gated {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.log.lock().unwrap().push(msg);
            Ok(())
        })
    }
}

struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

fn device(mid: i64, key: &str) -> Device {
    Device {
        mid,
        key: key.into(),
        platform: "test".into(),
        codec: Codec::Protobuf,
        server: "comet-1".into(),
        conn: key.into(),
        since_ms: 0,
    }
}

fn send(logic: &Arc<Logic>, key: &str, id: usize) -> tokio::task::JoinHandle<SendAck> {
    send_content(logic, key, id, &format!("{id}"))
}

/// User 1 sends `content` to user 2 as `client_msg_id` `m{id}` from connection `key`.
fn send_content(
    logic: &Arc<Logic>,
    key: &str,
    id: usize,
    content: &str,
) -> tokio::task::JoinHandle<SendAck> {
    let req = SendReq {
        client_msg_id: format!("m{id}"),
        conv: Some(ConvRef {
            kind: ConvKind::P2p as i32,
            id: 2,
        }),
        content: content.into(),
        ..Default::default()
    };
    let recv = ReceiveReq {
        mid: 1,
        key: key.into(),
        im: 1,
        proto: Some(Proto {
            op: op::im::SEND,
            body: prost::Message::encode_to_vec(&req).into(),
            ..Default::default()
        }),
    };
    let logic = logic.clone();
    tokio::spawn(async move {
        let replies = logic.receive(recv).await.unwrap();
        prost::Message::decode(replies[0].body.as_ref()).unwrap()
    })
}

/// IM over a fresh embedded store, its pushes held at a gated sink: user 1 on keys s0..=s20,
/// user 2 on key r.
async fn node() -> (Arc<Im>, Arc<Logic>, Arc<Gated>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        durability: Durability::Buffer,
        ..EmbeddedConfig::new(dir.path().join("im"))
    })
    .unwrap();
    let sink = Arc::new(Gated {
        gate: Semaphore::new(0),
        entered: AtomicUsize::new(0),
        log: Mutex::default(),
    });
    let config = Config {
        enabled: true,
        insecure_trust_mid: true,
        send_rate: 1000,
        ..Config::default()
    };
    let im = Im::new(config, Arc::new(store), sink.clone());
    let logic = Arc::new(Logic::new(
        starling_logic::Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    ));
    im.install(&logic);
    for k in 0..21 {
        im.devices
            .register(device(1, &format!("s{k}")), MultiLogin::Multi)
            .await
            .unwrap();
    }
    im.devices
        .register(device(2, "r"), MultiLogin::Multi)
        .await
        .unwrap();
    (im, logic, sink, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_behind_a_batch_in_flight_leaves_as_one_push() {
    let (im, logic, sink, _dir) = node().await;

    // The first send is stored and its delivery held at the sink.
    let first = send(&logic, "s0", 0);
    while sink.entered.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Twenty more queue behind it on the conversation's lane.
    let rest: Vec<_> = (1..=20)
        .map(|i| send(&logic, &format!("s{i}"), i))
        .collect();
    let conv = Conv::p2p(1, 2);
    while im.lanes.queued(conv) < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sink.gate.add_permits(1000);
    assert_eq!(first.await.unwrap().seq, 1);
    let mut seqs: Vec<u64> = Vec::new();
    for h in rest {
        let ack = h.await.unwrap();
        assert_eq!(ack.code, 0, "{ack:?}");
        seqs.push(ack.seq);
    }
    let s5_own = seqs[4]; // rest[4] was sent from key s5
    seqs.sort();
    assert_eq!(seqs, (2..=21).collect::<Vec<_>>());
    // The receiver got two pushes: the first message, then the burst of twenty in seq order.
    let log = sink.log.lock().unwrap();
    let to_r: Vec<Push> = log
        .iter()
        .filter(|m| m.operation == op::im::MSG && m.keys.iter().any(|k| k == "r"))
        .map(|m| prost::Message::decode(m.msg.as_ref()).unwrap())
        .collect();
    let shape: Vec<Vec<u64>> = to_r
        .iter()
        .map(|p| p.messages.iter().map(|m| m.seq).collect())
        .collect();
    assert_eq!(shape, vec![vec![1], (2..=21).collect::<Vec<_>>()]);
    // Every sender's other devices got the burst, except each message's own sending key.
    let to_s5: Vec<Push> = log
        .iter()
        .filter(|m| m.operation == op::im::MSG && m.keys.iter().any(|k| k == "s5"))
        .map(|m| prost::Message::decode(m.msg.as_ref()).unwrap())
        .collect();
    let seen: Vec<u64> = to_s5
        .iter()
        .flat_map(|p| p.messages.iter().map(|m| m.seq))
        .collect();
    let others: Vec<u64> = (1..=21).filter(|s| *s != s5_own).collect();
    assert_eq!(
        seen, others,
        "s5 gets every message but its own (its ack carries that one)"
    );
}

/// A lane never starts a write whose caller stopped waiting (issue 15, soak): logic drops a
/// request at comet's deadline, and a queue of writes nobody waits for would only make every
/// later answer late too (bench/RESULTS.md, "Soak"). Nothing of it is stored: the client's
/// retry of the same `client_msg_id` stores it as new. Counted as
/// `starling_im_writes_abandoned_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_whose_caller_stopped_waiting_is_never_started() {
    let (im, logic, sink, _dir) = node().await;
    // The first send is stored and its delivery held at the sink: the lane's batch is in
    // flight.
    let first = send(&logic, "s0", 0);
    until("the first send is at the sink", || {
        sink.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // A second send queues behind it; its caller then stops waiting.
    let gone = send(&logic, "s1", 1);
    let conv = Conv::p2p(1, 2);
    until("the second send is queued", || im.lanes.queued(conv) == 1).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());

    sink.gate.add_permits(100);
    let first = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the first send is answered");
    assert_eq!(first.unwrap().seq, 1);
    until("the abandoned write is dropped", || {
        im.lanes.abandoned() == 1
    })
    .await;
    // Nothing of it was stored: its retry is new and takes seq 2.
    let retry = tokio::time::timeout(Duration::from_secs(30), send(&logic, "s1", 1))
        .await
        .expect("the retry is answered")
        .unwrap();
    assert_eq!((retry.code, retry.seq, retry.duplicate), (0, 2, false));
}

/// Pushes of IM messages that went to connection `key`, as seq lists.
fn pushed_to(sink: &Gated, key: &str) -> Vec<Vec<u64>> {
    let log = sink.log.lock().unwrap();
    log.iter()
        .filter(|m| m.operation == op::im::MSG && m.keys.iter().any(|k| k == key))
        .map(|m| {
            let p: Push = prost::Message::decode(m.msg.as_ref()).unwrap();
            p.messages.iter().map(|m| m.seq).collect()
        })
        .collect()
}

/// A retry of a send already stored and handed to delivery (its ack reached the client after
/// comet's deadline, as 504) is answered from the recent acks: the original's seq as a
/// duplicate, with no store call and no second delivery (issue 15, soak: retries of stored
/// messages kept the deployment overloaded). The same id with other content is still 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_an_acknowledged_send_is_answered_without_a_second_delivery() {
    let (im, logic, sink, _dir) = node().await;
    sink.gate.add_permits(1000);
    let first = send(&logic, "s0", 0).await.unwrap();
    assert_eq!((first.code, first.seq, first.duplicate), (0, 1, false));
    assert_eq!(pushed_to(&sink, "r"), vec![vec![1]]);

    // The retry may come on another connection of the same user (a reconnect).
    let retry = send(&logic, "s1", 0).await.unwrap();
    assert_eq!(
        (
            retry.code,
            retry.seq,
            retry.msg_id,
            retry.server_ts,
            retry.duplicate
        ),
        (0, 1, first.msg_id, first.server_ts, true)
    );
    assert_eq!(pushed_to(&sink, "r"), vec![vec![1]], "not delivered again");
    assert_eq!(im.stats.recent_hits.load(Ordering::Relaxed), 1);

    let other = send_content(&logic, "s0", 0, "other content")
        .await
        .unwrap();
    assert_eq!(other.code, 409, "{other:?}");
    assert_eq!(pushed_to(&sink, "r"), vec![vec![1]]);
}

/// A retry that queued on the lane behind its own first attempt (answered late, still in
/// flight) is answered from the recent acks once the lane reaches it: the first attempt's
/// seq, nothing stored or delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_queued_behind_its_own_first_attempt_is_not_delivered_again() {
    let (im, logic, sink, _dir) = node().await;
    let first = send(&logic, "s0", 0);
    until("the first attempt is at the sink", || {
        sink.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    let retry = send(&logic, "s1", 0);
    let conv = Conv::p2p(1, 2);
    until("the retry is queued", || im.lanes.queued(conv) == 1).await;
    sink.gate.add_permits(1000);
    let first = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the first attempt is answered")
        .unwrap();
    let retry = tokio::time::timeout(Duration::from_secs(30), retry)
        .await
        .expect("the retry is answered")
        .unwrap();
    assert_eq!((first.code, first.seq, first.duplicate), (0, 1, false));
    assert_eq!((retry.code, retry.seq, retry.duplicate), (0, 1, true));
    assert_eq!(pushed_to(&sink, "r"), vec![vec![1]], "not delivered again");
    assert_eq!(im.stats.recent_hits.load(Ordering::Relaxed), 1);
}

/// Waits until `f` holds; a hang guard only (it holds within milliseconds).
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..30_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}
