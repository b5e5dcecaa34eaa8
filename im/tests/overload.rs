//! Overload (issue 15, soak): a lane never starts a write whose caller stopped waiting (its
//! deadline passed, so logic dropped the request), which keeps a queue of writes nobody waits
//! for from building up in front of the store: with the PostgreSQL pool's bounded wait
//! (`im.postgres_pool_wait`, `store::postgres::tests::outage`), what turned a 5-second Redis
//! pause into minutes of late answers (bench/RESULTS.md, "Soak").
//!
//! The sink (job's seam) holds every publish at a gate, so a request can be kept in flight.

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
use starling_proto::im::v1::{ConvKind, ConvRef, SendAck, SendReq};
use starling_proto::op::{self, Codec};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Each publish first takes a permit from `gate`.
struct Gated {
    gate: Semaphore,
    entered: AtomicUsize,
}

impl PushSink for Gated {
    fn publish(&self, _msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
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

struct Node {
    im: Arc<Im>,
    logic: Arc<Logic>,
    sink: Arc<Gated>,
    _dir: tempfile::TempDir,
}

async fn node(config: Config) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        durability: Durability::Buffer,
        ..EmbeddedConfig::new(dir.path().join("im"))
    })
    .unwrap();
    let sink = Arc::new(Gated {
        gate: Semaphore::new(0),
        entered: AtomicUsize::new(0),
    });
    let config = Config {
        enabled: true,
        insecure_trust_mid: true,
        send_rate: 1000,
        ..config
    };
    let im = Im::new(config, Arc::new(store), sink.clone());
    let logic = Arc::new(Logic::new(
        starling_logic::Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    ));
    im.install(&logic);
    for mid in [1, 2, 3] {
        im.devices
            .register(
                Device {
                    mid,
                    key: format!("k{mid}"),
                    platform: "test".into(),
                    codec: Codec::Protobuf,
                    server: "comet-1".into(),
                    conn: format!("k{mid}"),
                    since_ms: 0,
                },
                MultiLogin::Multi,
            )
            .await
            .unwrap();
    }
    Node {
        im,
        logic,
        sink,
        _dir: dir,
    }
}

/// The request comet forwards for `mid`'s connection: op with a protobuf body.
fn request(mid: i64, op: i32, body: Vec<u8>) -> ReceiveReq {
    ReceiveReq {
        mid,
        key: format!("k{mid}"),
        im: Codec::Protobuf as i32,
        proto: Some(Proto {
            op,
            body: body.into(),
            ..Default::default()
        }),
    }
}

/// `mid` sends message `id` to user 2.
fn send(node: &Node, mid: i64, id: &str) -> tokio::task::JoinHandle<SendAck> {
    let req = SendReq {
        client_msg_id: id.into(),
        conv: Some(ConvRef {
            kind: ConvKind::P2p as i32,
            id: 2,
        }),
        content: id.into(),
        ..Default::default()
    };
    let recv = request(mid, op::im::SEND, prost::Message::encode_to_vec(&req));
    let logic = node.logic.clone();
    tokio::spawn(async move {
        let replies = logic.receive(recv).await.unwrap();
        assert_eq!(replies[0].op, op::im::SEND_ACK);
        prost::Message::decode(replies[0].body.as_ref()).unwrap()
    })
}

/// `f`'s output, or a failure naming `what` if it never comes (a hang guard, not a bound).
async fn answer<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("no answer: {what}"))
}

async fn until(what: &str, f: impl Fn() -> bool) {
    // A hang guard only: the condition is met within milliseconds.
    for _ in 0..30_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_whose_caller_stopped_waiting_is_never_started() {
    let n = node(Config::default()).await;
    // User 1's first send is stored and held at the sink: the lane's batch is in flight.
    let first = send(&n, 1, "a");
    until("the first send is at the sink", || {
        n.sink.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // A second send queues behind it on the lane; its caller then stops waiting (what
    // logic does when comet's deadline passes).
    let gone = send(&n, 1, "b");
    let conv = Conv::p2p(1, 2);
    until("the second send is queued", || n.im.lanes.queued(conv) == 1).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());

    n.sink.gate.add_permits(100);
    assert_eq!(answer("the first send", first).await.unwrap().seq, 1);
    until("the abandoned write is dropped", || {
        n.im.lanes.abandoned() == 1
    })
    .await;
    // Nothing of "b" was stored: its retry is new and takes seq 2.
    let retry = answer("the retry", send(&n, 1, "b")).await.unwrap();
    assert_eq!((retry.code, retry.seq, retry.duplicate), (0, 2, false));
}
