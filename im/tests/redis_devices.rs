//! The Redis device table (reference im.md §7.6) against a real `redis-server`: the policies,
//! the compare-and-delete of a late disconnect, two logic nodes racing under `single`, the
//! hash's expiry, and one pipelined lookup for many users.

use starling_cluster::testkit::Redis;
use starling_im::config::MultiLogin;
use starling_im::devices::{Device, DeviceError, DeviceTable, RedisDevices, dev_key};
use starling_im::store::Durability;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::{PushMsg, ReceiveReq};
use starling_proto::grpc::protocol::Proto;
use starling_proto::im::v1::{ConvKind, ConvRef, SendAck, SendReq};
use starling_proto::op::{self, Codec};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EXPIRE: Duration = Duration::from_secs(1800);

fn connect(url: &str) -> redis::aio::ConnectionManager {
    starling_cluster::redis::connect(&starling_cluster::redis::Config {
        url: url.into(),
        ..Default::default()
    })
    .unwrap()
}

/// A device table as one logic node has it: its own connection to the shared Redis.
fn node(url: &str) -> DeviceTable {
    DeviceTable::Redis(RedisDevices::new(connect(url), EXPIRE))
}

fn dev(mid: i64, key: &str, platform: &str, server: &str, conn: &str) -> Device {
    Device {
        mid,
        key: key.into(),
        platform: platform.into(),
        codec: Codec::Json,
        server: server.into(),
        conn: conn.into(),
        since_ms: 1_700_000_000_000,
    }
}

fn keys(ds: &[Device]) -> Vec<&str> {
    let mut k: Vec<&str> = ds.iter().map(|d| d.key.as_str()).collect();
    k.sort();
    k
}

#[tokio::test]
async fn policies_displace_as_documented() {
    let redis = Redis::start();
    let t = node(&redis.url());
    let m = MultiLogin::OnePerPlatform;
    let none = t.register(dev(1, "a", "ios", "c1", "1"), m).await.unwrap();
    assert_eq!(none.same_key, None);
    assert!(none.kicked.is_empty());
    t.register(dev(1, "b", "android", "c1", "2"), m)
        .await
        .unwrap();
    let d = t.register(dev(1, "c", "ios", "c2", "3"), m).await.unwrap();
    assert_eq!(
        d.kicked,
        vec![dev(1, "a", "ios", "c1", "1")],
        "the kicked device, as stored: its comet and connection"
    );
    // The same key again on another comet: never a kick; the old connection is named.
    let d = t.register(dev(1, "c", "ios", "c1", "4"), m).await.unwrap();
    assert_eq!(d.same_key, Some(dev(1, "c", "ios", "c2", "3")));
    assert!(d.kicked.is_empty());
    // The same key on the same comet: comet replaced it itself, nothing to report.
    let d = t.register(dev(1, "c", "ios", "c1", "5"), m).await.unwrap();
    assert_eq!(d, Default::default());
    assert_eq!(keys(&t.of_users(&[1]).await.unwrap()), ["b", "c"]);

    let d = t
        .register(dev(1, "d", "web", "c1", "6"), MultiLogin::Single)
        .await
        .unwrap();
    assert_eq!(keys(&d.kicked), ["b", "c"]);
    let d = t
        .register(dev(1, "e", "mac", "c1", "7"), MultiLogin::OnePerClass)
        .await
        .unwrap();
    assert!(d.kicked.is_empty(), "web and desktop are different classes");
    let d = t
        .register(dev(1, "f", "Windows", "c1", "8"), MultiLogin::OnePerClass)
        .await
        .unwrap();
    assert_eq!(keys(&d.kicked), ["e"], "classes ignore case, as in memory");
    let d = t
        .register(dev(1, "g", "windows", "c1", "9"), MultiLogin::Multi)
        .await
        .unwrap();
    assert!(d.kicked.is_empty());
    assert_eq!(keys(&t.of_users(&[1]).await.unwrap()), ["d", "f", "g"]);
}

#[tokio::test]
async fn a_late_disconnect_spares_the_successor() {
    let redis = Redis::start();
    let t = node(&redis.url());
    t.register(dev(1, "a", "ios", "c2", "0.1.1"), MultiLogin::Multi)
        .await
        .unwrap();
    assert!(
        !t.remove(1, "a", "c1", "0.1.1").await.unwrap(),
        "a late disconnect from the old comet"
    );
    // The same key reconnected on the same comet: the old connection's late disconnect
    // (another conn id) leaves the new one.
    t.register(dev(1, "a", "ios", "c2", "0.1.2"), MultiLogin::Multi)
        .await
        .unwrap();
    assert!(!t.remove(1, "a", "c2", "0.1.1").await.unwrap());
    assert_eq!(
        t.get(1, "a").await.unwrap(),
        Some(dev(1, "a", "ios", "c2", "0.1.2"))
    );
    assert!(t.remove(1, "a", "c2", "0.1.2").await.unwrap());
    assert_eq!(t.get(1, "a").await.unwrap(), None);
    // A goim comet sends no connection id: any connection of that key on that comet.
    t.register(dev(1, "b", "ios", "c2", "0.1.3"), MultiLogin::Multi)
        .await
        .unwrap();
    assert!(t.remove(1, "b", "c2", "").await.unwrap());
}

/// Two logic nodes admit two logins of one user at once under `single`: Redis runs the two
/// scripts one after the other, so one login kicks the other and exactly one device stays.
/// A barrier releases both registrations together, for 200 users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_under_single_leave_one_device() {
    let redis = Redis::start();
    let (a, b) = (Arc::new(node(&redis.url())), Arc::new(node(&redis.url())));
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    for mid in 1..=200 {
        let race = |t: Arc<DeviceTable>, key: &'static str, server: &'static str| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                t.register(dev(mid, key, "ios", server, key), MultiLogin::Single)
                    .await
                    .unwrap()
            })
        };
        let (da, db) = tokio::join!(race(a.clone(), "ka", "c1"), race(b.clone(), "kb", "c2"));
        let (da, db) = (da.unwrap(), db.unwrap());
        let left = a.of_users(&[mid]).await.unwrap();
        assert_eq!(left.len(), 1, "mid {mid}: {left:?}");
        // Whoever ran second kicked the first, and what stays is the second.
        let kicked: Vec<Device> = da.kicked.into_iter().chain(db.kicked).collect();
        assert_eq!(kicked.len(), 1, "mid {mid}");
        assert_ne!(kicked[0].key, left[0].key);
    }
}

#[tokio::test]
async fn the_hash_expires_like_the_sessions_and_heartbeats_push_it_back() {
    let redis = Redis::start();
    let mut c = connect(&redis.url());
    let t = node(&redis.url());
    t.register(dev(5, "a", "ios", "c1", "1"), MultiLogin::Multi)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(dev_key(5))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= EXPIRE.as_millis() as i64, "{ttl}");
    let _: () = redis::cmd("PEXPIRE")
        .arg(dev_key(5))
        .arg(10_000)
        .query_async(&mut c)
        .await
        .unwrap();
    t.touch(5).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(dev_key(5))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 10_000, "the heartbeat pushed the expiry back: {ttl}");
    // goim's own keys are not the table's: nothing named mid_5 or key_a was written.
    let goim: i32 = redis::cmd("EXISTS")
        .arg("mid_5")
        .arg("key_a")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(goim, 0);
}

#[tokio::test]
async fn many_users_in_one_lookup_and_admin_takes() {
    let redis = Redis::start();
    let t = node(&redis.url());
    for mid in 1..=300 {
        for (k, p) in [("i", "ios"), ("w", "web")] {
            t.register(
                dev(mid, &format!("{k}{mid}"), p, "c1", "1"),
                MultiLogin::Multi,
            )
            .await
            .unwrap();
        }
    }
    let mids: Vec<i64> = (1..=300).chain([9999]).collect();
    let mut seen = Vec::new();
    t.visit(&mids, |d| {
        seen.push((d.mid, d.key.to_string(), d.server.to_string()))
    })
    .await
    .unwrap();
    assert_eq!(seen.len(), 600);
    assert!(
        seen.iter()
            .all(|(m, k, s)| k.ends_with(&m.to_string()) && s == "c1")
    );
    let taken = t.take(7, "web", "").await.unwrap();
    assert_eq!(keys(&taken), ["w7"]);
    assert_eq!(keys(&t.of_users(&[7]).await.unwrap()), ["i7"]);
    assert_eq!(keys(&t.take(7, "", "").await.unwrap()), ["i7"]);
    assert!(t.of_users(&[7]).await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_down_is_an_error_not_an_empty_table() {
    let mut redis = Redis::start();
    let t = node(&redis.url());
    t.register(dev(1, "a", "ios", "c1", "1"), MultiLogin::Multi)
        .await
        .unwrap();
    redis.stop();
    let r = t.register(dev(1, "b", "ios", "c1", "2"), MultiLogin::Multi);
    assert!(matches!(r.await, Err(DeviceError::Unavailable(_))));
    assert!(matches!(
        t.visit(&[1], |_| {}).await,
        Err(DeviceError::Unavailable(_))
    ));
    redis.resume();
    // The connection manager reconnects by itself.
    let mut back = false;
    for _ in 0..50 {
        if t.get(1, "a").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the table answers again once Redis is back");
}

#[derive(Default)]
struct Recorder(Mutex<Vec<PushMsg>>);

impl PushSink for Recorder {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

async fn send(logic: &Logic, id: &str) -> SendAck {
    let req = SendReq {
        client_msg_id: id.into(),
        conv: Some(ConvRef {
            kind: ConvKind::P2p as i32,
            id: 2,
        }),
        content: "hi".into(),
        ..Default::default()
    };
    let replies = logic
        .receive(ReceiveReq {
            mid: 1,
            key: "s".into(),
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

/// A send whose message is committed but whose recipients cannot be looked up answers 503
/// with `stored=true` (§7.1 step 5), and the retry delivers. Redis's ACL takes `HGETALL` (the
/// fan-out's lookup) away from the table while `HGET` (the op's own lookup) still works, so
/// the failure falls exactly between the commit and the fan-out.
#[tokio::test]
async fn a_committed_send_whose_fan_out_lookup_fails_answers_503_stored() {
    let redis = Redis::start();
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
        ..Config::default()
    };
    let im = Im::with_devices(config, Arc::new(store), sink.clone(), node(&redis.url()));
    let logic = Logic::new(
        starling_logic::Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    );
    im.install(&logic);
    for (mid, key, server) in [(1, "s", "c1"), (2, "r", "c2")] {
        let d = Device {
            codec: Codec::Protobuf,
            ..dev(mid, key, "ios", server, key)
        };
        im.devices.register(d, MultiLogin::Multi).await.unwrap();
    }
    let mut admin = connect(&redis.url());
    let acl = |rule: &'static str| {
        let mut c = admin.clone();
        async move {
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg("default")
                .arg(rule)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    };
    acl("-hgetall").await;
    let ack = send(&logic, "m1").await;
    assert_eq!((ack.code, ack.stored, ack.seq), (503, true, 1), "{ack:?}");
    assert!(sink.0.lock().unwrap().is_empty());
    acl("+hgetall").await;
    let ack = send(&logic, "m1").await;
    assert_eq!((ack.code, ack.duplicate, ack.seq), (0, true, 1), "{ack:?}");
    let pushed = sink.0.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        (pushed[0].server.as_str(), pushed[0].keys.as_slice()),
        ("c2", ["r".to_string()].as_slice()),
        "to the comet Redis names"
    );
    let _: () = redis::cmd("PING").query_async(&mut admin).await.unwrap();
}

/// A heartbeat puts back an entry Redis lost, but never one whose connection left: comet sends
/// a connection's heartbeat and its disconnect without waiting for either, so the heartbeat may
/// come second; a kicked connection's heartbeat likewise (design §7.6, goim's heartbeat rule).
#[tokio::test]
async fn heartbeats_restore_lost_entries_but_not_departed_ones() {
    let redis = Redis::start();
    let t = node(&redis.url());
    let DeviceTable::Redis(r) = &t else {
        unreachable!()
    };
    let m = MultiLogin::OnePerPlatform;
    t.register(dev(31, "phone", "ios", "c1", "0.1.1"), m)
        .await
        .unwrap();
    t.register(dev(31, "pc", "windows", "c1", "0.2.1"), m)
        .await
        .unwrap();
    // The phone closes; its heartbeat arrives after the disconnect; the pc keeps beating.
    assert!(t.remove(31, "phone", "c1", "0.1.1").await.unwrap());
    let late = dev(31, "phone", "", "c1", "0.1.1");
    assert!(
        !r.restore(&late).await.unwrap(),
        "a departed connection stays out"
    );
    assert!(!r.restore(&dev(31, "pc", "", "c1", "0.2.1")).await.unwrap());
    assert_eq!(t.get(31, "phone").await.unwrap(), None);
    // A second ios login kicks a tablet; the tablet's late heartbeat brings nothing back.
    t.register(dev(31, "tab", "ios", "c2", "0.3.1"), m)
        .await
        .unwrap();
    let kicked = t
        .register(dev(31, "tab2", "ios", "c2", "0.3.2"), m)
        .await
        .unwrap();
    assert_eq!(keys(&kicked.kicked), ["tab"]);
    assert!(!r.restore(&dev(31, "tab", "", "c2", "0.3.1")).await.unwrap());
    assert_eq!(t.get(31, "tab").await.unwrap(), None);
    // The same key logging in again is a new connection: its heartbeats count.
    t.register(dev(31, "phone", "ios", "c1", "0.1.9"), MultiLogin::Multi)
        .await
        .unwrap();
    // Redis loses everything (a restart without persistence): each live connection's
    // heartbeat puts its entry back, platform unknown.
    let mut c = connect(&redis.url());
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert_eq!(t.get(31, "pc").await.unwrap(), None);
    assert!(r.restore(&dev(31, "pc", "", "c1", "0.2.1")).await.unwrap());
    assert!(
        r.restore(&dev(31, "phone", "", "c1", "0.1.9"))
            .await
            .unwrap()
    );
    assert!(
        !r.restore(&dev(31, "phone", "", "c1", "0.1.9"))
            .await
            .unwrap(),
        "once"
    );
    let back = t.of_users(&[31]).await.unwrap();
    assert_eq!(keys(&back), ["pc", "phone"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(dev_key(31))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the restored hash expires");
}
