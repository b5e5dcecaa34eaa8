//! A sender that keeps sending past its rate (issue 15): 429 with `retry_after_ms` first,
//! then, one refusal too many within `im.flood_window`, its connection is kicked with
//! `IM_KICK` 4005 (comet writes the notice and closes it). Its user's other device and other
//! users keep sending undisturbed, and every message acknowledged is stored once.

use starling_im::devices::Device;
use starling_im::service::kick;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::store::{Conv, Durability};
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::{PushMsg, ReceiveReq};
use starling_proto::grpc::protocol::Proto;
use starling_proto::im::v1::{ConvKind, ConvRef, Kick, SendAck, SendReq};
use starling_proto::op::{self, Codec};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Recorder(Mutex<Vec<PushMsg>>);

impl PushSink for Recorder {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    /// The kicks pushed so far: (key, code).
    fn kicks(&self) -> Vec<(String, i32)> {
        let pushed = self.0.lock().unwrap();
        pushed
            .iter()
            .filter(|m| m.operation == op::im::KICK)
            .map(|m| {
                let k: Kick = prost::Message::decode(m.msg.as_ref()).unwrap();
                (m.keys.join(","), k.code)
            })
            .collect()
    }
}

struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

async fn send(logic: &Logic, mid: i64, key: &str, to: i64, id: &str) -> SendAck {
    let req = SendReq {
        client_msg_id: id.into(),
        conv: Some(ConvRef {
            kind: ConvKind::P2p as i32,
            id: to,
        }),
        content: "hi".into(),
        ..Default::default()
    };
    let replies = logic
        .receive(ReceiveReq {
            mid,
            key: key.into(),
            im: 1,
            proto: Some(Proto {
                op: op::im::SEND,
                body: prost::Message::encode_to_vec(&req).into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    prost::Message::decode(replies[0].body.as_ref()).unwrap()
}

/// An IM layer on an embedded store with `send_rate` and `flood_refusals`, its logic, and
/// the recording sink; devices: user 1 on "flood" and "calm", user 2 "peer", user 3 "other".
async fn setup(
    send_rate: u32,
    flood_refusals: u32,
) -> (tempfile::TempDir, Arc<Im>, Logic, Arc<Recorder>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        durability: Durability::Buffer,
        ..EmbeddedConfig::new(dir.path().join("im"))
    })
    .unwrap();
    let sink = Arc::new(Recorder::default());
    let config = Config {
        enabled: true,
        insecure_trust_mid: true,
        send_rate,
        flood_refusals,
        flood_window: Duration::from_secs(3600),
        ..Config::default()
    };
    let im = Im::new(config, Arc::new(store), sink.clone());
    let logic = Logic::new(
        starling_logic::Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    );
    im.install(&logic);
    // User 1 on two devices ("flood", "calm"), user 3, and their peer user 2.
    for (mid, key) in [(1, "flood"), (1, "calm"), (2, "peer"), (3, "other")] {
        let d = Device {
            mid,
            key: key.into(),
            platform: key.into(),
            codec: Codec::Protobuf,
            server: "c1".into(),
            conn: key.into(),
            since_ms: 1,
        };
        im.devices
            .register(d, starling_im::config::MultiLogin::Multi)
            .await
            .unwrap();
    }

    (dir, im, logic, sink)
}

#[tokio::test]
async fn a_flooding_connection_is_closed_and_no_one_else_is_disturbed() {
    let (_dir, im, logic, sink) = setup(1, 5).await;
    // send_rate 1: a burst of 2, then 429. The first 429 sets when it may send again; each
    // send before then ignores it: five are tolerated, the sixth closes.
    let mut acked = 0;
    let mut refused = 0;
    for i in 0..9 {
        let ack = send(&logic, 1, "flood", 2, &format!("f{i}")).await;
        match ack.code {
            0 => acked += 1,
            429 => {
                assert!(ack.retry_after_ms > 0, "{ack:?}");
                refused += 1;
            }
            _ => panic!("{ack:?}"),
        }
        let kicked = !sink.kicks().is_empty();
        assert_eq!(kicked, refused > 6, "after {refused} refusals");
    }
    assert_eq!((acked, refused), (2, 7));
    // Refusals that arrive before comet closes it send no second kick.
    assert_eq!(send(&logic, 1, "flood", 2, "late").await.code, 429);
    assert_eq!(sink.kicks(), [("flood".to_string(), kick::FLOOD)]);
    assert_eq!(im.stats.flood_closed.load(Ordering::Relaxed), 1);

    // The same user's other device, and another user, send at their own rate.
    for (mid, key, id) in [(1, "calm", "c1"), (1, "calm", "c2"), (3, "other", "o1")] {
        let ack = send(&logic, mid, key, 2, id).await;
        assert_eq!(ack.code, 0, "{key}: {ack:?}");
    }
    assert_eq!(sink.kicks().len(), 1, "nobody else kicked");

    // Every acknowledged message is stored once: the flooder's 2 and the calm device's 2.
    let stored = im
        .store
        .range(Conv::p2p(1, 2), 1, u64::MAX, 100)
        .await
        .unwrap();
    let mut ids: Vec<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["c1", "c2", "f0", "f1"]);
}

/// A client that waits the `retry_after_ms` each 429 gives is never closed, however many 429s
/// it gets (the TypeScript SDK's 429 test was kicked when every refusal counted).
#[tokio::test]
async fn a_client_that_waits_as_told_is_never_closed() {
    let (_dir, im, logic, sink) = setup(50, 3).await;
    let mut refused = 0;
    let mut i = 0;
    while refused < 20 {
        // Two at once each round: the second is refused (the burst is spent) and waits.
        for _ in 0..2 {
            i += 1;
            let ack = send(&logic, 1, "flood", 2, &format!("w{i}")).await;
            if ack.code == 429 {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(ack.retry_after_ms.into())).await;
            } else {
                assert_eq!(ack.code, 0, "{ack:?}");
            }
        }
    }
    assert!(sink.kicks().is_empty(), "{:?}", sink.kicks());
    assert_eq!(im.stats.flood_closed.load(Ordering::Relaxed), 0);
}
