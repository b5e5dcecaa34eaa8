//! Job's routing, batching and per-comet queues against a recording comet whose calls can be
//! held open or slowed, so a test decides when "the previous batch was written" and which
//! comet is stalled. Timed tests run on tokio's paused clock: no wall-clock bound.

use super::*;
use starling_proto::raw;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

#[derive(Default)]
struct Recorder {
    pushes: Mutex<Vec<PushMsgReq>>,
    rooms: Mutex<Vec<BroadcastRoomReq>>,
    broadcasts: Mutex<Vec<BroadcastReq>>,
    /// Room writes wait for a permit.
    gate: Option<Arc<Semaphore>>,
    /// Every call (not only room writes) waits for a permit: a stalled comet.
    stall: Option<Arc<Semaphore>>,
    /// Every call takes this long (paused clock): a slow comet that answers.
    delay: Option<Duration>,
}

impl Recorder {
    /// Waits as the comet was told to; `true` when the call may answer.
    fn hold(&self) -> BoxFuture<'static, Result<(), JobError>> {
        let (stall, delay) = (self.stall.clone(), self.delay);
        Box::pin(async move {
            if let Some(s) = stall {
                s.acquire().await.unwrap().forget();
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Ok(())
        })
    }
}

impl CometClient for Recorder {
    fn push_msg(&self, req: PushMsgReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.pushes.lock().unwrap().push(req);
        self.hold()
    }
    fn broadcast(&self, req: BroadcastReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.broadcasts.lock().unwrap().push(req);
        self.hold()
    }
    fn broadcast_room(&self, req: BroadcastRoomReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.rooms.lock().unwrap().push(req);
        let (gate, hold) = (self.gate.clone(), self.hold());
        Box::pin(async move {
            if let Some(g) = gate {
                g.acquire().await.unwrap().forget();
            }
            hold.await
        })
    }
}

fn room_msg(room: &str, op: i32, body: &str) -> PushMsg {
    PushMsg {
        r#type: push_msg::Type::Room as i32,
        operation: op,
        room: room.into(),
        msg: body.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn bodies(req: &BroadcastRoomReq) -> Vec<(i32, String)> {
    let p = req.proto.as_ref().unwrap();
    assert_eq!((p.op, p.ver), (op::RAW, 1));
    raw::packets(&p.body)
        .map(|r| r.unwrap())
        .map(|p| (p.op, String::from_utf8(p.body.to_vec()).unwrap()))
        .collect()
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn idle_room_sends_at_once_and_busy_room_batches_in_order() {
    let gate = Arc::new(Semaphore::new(0));
    let rec = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let job = Arc::new(Job::new(Config::default()));
    job.set_comet("c1", rec.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));

    tx.send(room_msg("live://1", 1000, "m0")).await.unwrap();
    settle().await;
    assert_eq!(
        rec.rooms.lock().unwrap().len(),
        1,
        "an idle room's message leaves at once"
    );
    for i in 1..=4 {
        tx.send(room_msg("live://1", 1000 + i, &format!("m{i}")))
            .await
            .unwrap();
    }
    settle().await;
    assert_eq!(
        rec.rooms.lock().unwrap().len(),
        1,
        "nothing more while the first is in flight"
    );
    gate.add_permits(1);
    settle().await;
    {
        let rooms = rec.rooms.lock().unwrap();
        assert_eq!(rooms.len(), 2);
        assert_eq!(bodies(&rooms[0]), vec![(1000, "m0".into())]);
        let expect: Vec<(i32, String)> = (1..=4).map(|i| (1000 + i, format!("m{i}"))).collect();
        assert_eq!(
            bodies(&rooms[1]),
            expect,
            "the waiting messages leave together, in order"
        );
    }
    gate.add_permits(1);
    drop(tx);
    run.await.unwrap();
}

#[tokio::test]
async fn batches_respect_the_message_limit() {
    let gate = Arc::new(Semaphore::new(0));
    let rec = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let job = Arc::new(Job::new(Config {
        room_batch_max: 3,
        ..Config::default()
    }));
    job.set_comet("c1", rec.clone());
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(job.clone().run(rx));
    for i in 0..8 {
        tx.send(room_msg("r://1", 1000, &i.to_string()))
            .await
            .unwrap();
    }
    for _ in 0..4 {
        settle().await;
        gate.add_permits(1);
    }
    settle().await;
    let sizes: Vec<usize> = rec
        .rooms
        .lock()
        .unwrap()
        .iter()
        .map(|r| bodies(r).len())
        .collect();
    assert_eq!(sizes, vec![1, 3, 3, 1]);
}

#[tokio::test]
async fn key_pushes_go_to_the_named_comet_and_broadcast_speed_is_split() {
    let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let job = Arc::new(Job::new(Config::default()));
    job.set_comet("a", a.clone());
    job.set_comet("b", b.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    tx.send(PushMsg {
        r#type: push_msg::Type::Push as i32,
        operation: 1000,
        server: "b".into(),
        keys: vec!["k1".into()],
        msg: b"hi".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(PushMsg {
        r#type: push_msg::Type::Push as i32,
        server: "gone".into(),
        keys: vec!["k".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(PushMsg {
        r#type: push_msg::Type::Broadcast as i32,
        operation: 1001,
        speed: 100,
        msg: b"all".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(tx);
    run.await.unwrap();
    assert!(a.pushes.lock().unwrap().is_empty());
    let pushes = b.pushes.lock().unwrap();
    assert_eq!(pushes.len(), 1);
    assert_eq!(
        (pushes[0].keys.clone(), pushes[0].proto_op),
        (vec!["k1".to_string()], 1000)
    );
    let inner: Vec<_> = raw::packets(&pushes[0].proto.as_ref().unwrap().body).collect();
    assert_eq!(inner[0].unwrap().body, b"hi");
    for r in [&a, &b] {
        let bc = r.broadcasts.lock().unwrap();
        assert_eq!((bc.len(), bc[0].speed, bc[0].proto_op), (1, 50, 1001));
    }
}

fn key_msg(server: &str, key: &str, body: &str) -> PushMsg {
    PushMsg {
        r#type: push_msg::Type::Push as i32,
        operation: 1000,
        server: server.into(),
        keys: vec![key.into()],
        msg: body.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// The bodies of the key pushes a comet got, in order.
fn pushed(r: &Recorder) -> Vec<String> {
    r.pushes
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            let body = &p.proto.as_ref().unwrap().body;
            let inner = raw::packets(body).next().unwrap().unwrap();
            String::from_utf8(inner.body.to_vec()).unwrap()
        })
        .collect()
}

/// Every room body a comet got, in order, over all its batches.
fn roomed(r: &Recorder) -> Vec<String> {
    let rooms = r.rooms.lock().unwrap();
    rooms.iter().flat_map(bodies).map(|(_, b)| b).collect()
}

/// A delivery whose `done` counts into `handed`.
fn counted(msg: PushMsg, handed: &Arc<AtomicUsize>) -> Delivery {
    let handed = handed.clone();
    Delivery {
        msg,
        done: Some(Box::new(move || {
            handed.fetch_add(1, Ordering::SeqCst);
        })),
        produced_ms: None,
    }
}

/// Comet a is stalled (every call held); comet b must get its key pushes, room messages and
/// broadcasts while a still holds its first call, and a gets everything, in order, once it
/// answers. Each message's `done` waits for both comets. (Before per-comet queues, b got
/// nothing until a answered: the dispatcher awaited a's key push.)
#[tokio::test]
async fn a_stalled_comet_holds_up_only_its_own_queue() {
    let stall = Arc::new(Semaphore::new(0));
    let a = Arc::new(Recorder {
        stall: Some(stall.clone()),
        ..Default::default()
    });
    let b = Arc::new(Recorder::default());
    let job = Arc::new(Job::new(Config::default()));
    job.set_comet("a", a.clone());
    job.set_comet("b", b.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    let handed = Arc::new(AtomicUsize::new(0));
    let mut sent = 0;
    for i in 0..5 {
        for m in [
            key_msg("a", "ka", &format!("a{i}")),
            key_msg("b", "kb", &format!("b{i}")),
            room_msg("live://1", 1000, &format!("r{i}")),
        ] {
            tx.send(counted(m, &handed)).await.unwrap();
            sent += 1;
        }
    }
    settle().await;
    let want = |p: &str| (0..5).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    assert_eq!(pushed(&b), want("b"), "b's key pushes, while a is stalled");
    assert_eq!(
        roomed(&b),
        want("r"),
        "b's room messages, while a is stalled"
    );
    assert_eq!(pushed(&a), vec!["a0"], "a holds its first key push");
    // Only b's own key pushes are through; the room messages also wait for a.
    assert_eq!(handed.load(Ordering::SeqCst), 5);

    stall.add_permits(1000);
    settle().await;
    assert_eq!(pushed(&a), want("a"), "a gets its key pushes in order");
    assert_eq!(roomed(&a), want("r"), "and the room messages in order");
    assert_eq!(handed.load(Ordering::SeqCst), sent);
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 0);
    drop(tx);
    run.await.unwrap();
}

/// A full queue of a comet that keeps answering holds input back: nothing is dropped.
#[tokio::test(start_paused = true)]
async fn a_full_queue_of_a_slow_comet_waits_and_loses_nothing() {
    let a = Arc::new(Recorder {
        delay: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let job = Arc::new(Job::new(Config {
        comet_queue: 2,
        comet_stall: Duration::from_secs(5),
        ..Config::default()
    }));
    job.set_comet("a", a.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    for i in 0..10 {
        tx.send(key_msg("a", "k", &i.to_string())).await.unwrap();
    }
    drop(tx);
    run.await.unwrap();
    // The dispatcher ended once the last message was queued; let the comet finish.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(pushed(&a), want);
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 0);
    assert_eq!(job.stats().behind.load(Ordering::SeqCst), 0);
}

/// A comet silent for `comet_stall` with a full queue is behind: what waits for it is
/// dropped and counted, every message's `done` still runs, the other comet is served, and
/// what a gets once it answers again is in order.
#[tokio::test(start_paused = true)]
async fn a_silent_comet_with_a_full_queue_is_dropped_and_counted() {
    let stall = Arc::new(Semaphore::new(0));
    let a = Arc::new(Recorder {
        stall: Some(stall.clone()),
        ..Default::default()
    });
    let b = Arc::new(Recorder::default());
    let job = Arc::new(Job::new(Config {
        comet_queue: 3,
        comet_stall: Duration::from_secs(5),
        ..Config::default()
    }));
    job.set_comet("a", a.clone());
    job.set_comet("b", b.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    let handed = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        tx.send(counted(key_msg("a", "k", &i.to_string()), &handed))
            .await
            .unwrap();
    }
    tx.send(counted(key_msg("b", "k", "after"), &handed))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(
        pushed(&b),
        vec!["after"],
        "b is served once a is found behind"
    );
    let stats = job.stats();
    let dropped = stats.dropped.load(Ordering::SeqCst) as usize;
    assert!(stats.behind.load(Ordering::SeqCst) >= 1);
    // 0 is in a's call; of the rest, what was dropped is done, what waits is not.
    assert!(dropped >= 3, "dropped {dropped}");
    assert_eq!(handed.load(Ordering::SeqCst), 1 + dropped);

    stall.add_permits(1000);
    settle().await;
    let got = pushed(&a);
    assert_eq!(got.len(), 10 - dropped, "{got:?}");
    assert_eq!(got[0], "0");
    let mut sorted = got.clone();
    sorted.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, sorted, "what a got is in order");
    assert_eq!(
        handed.load(Ordering::SeqCst),
        11,
        "every message is through"
    );
    drop(tx);
    run.await.unwrap();
}

/// A comet removed from the set drops what waits for it (counted) at once and every `done`
/// runs; its queue gauges go with it.
#[tokio::test]
async fn a_removed_comet_gives_up_what_waits() {
    let stall = Arc::new(Semaphore::new(0));
    let a = Arc::new(Recorder {
        stall: Some(stall.clone()),
        ..Default::default()
    });
    // goim's behaviour for a push naming a comet job does not know: dropped at once.
    let job = Arc::new(Job::new(Config {
        unknown_comet_wait: Duration::ZERO,
        ..Config::default()
    }));
    job.set_comet("a", a.clone());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    let handed = Arc::new(AtomicUsize::new(0));
    for i in 0..4 {
        tx.send(counted(key_msg("a", "k", &i.to_string()), &handed))
            .await
            .unwrap();
    }
    settle().await;
    assert_eq!(handed.load(Ordering::SeqCst), 0);
    assert_eq!(job.stats().queue_gauges().len(), 1);
    job.remove_comet("a");
    // The dispatcher notices at once, without another message: what waited is dropped and
    // the comet's queue series leave the metrics.
    settle().await;
    assert_eq!(handed.load(Ordering::SeqCst), 4);
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 4);
    assert!(job.stats().queue_gauges().is_empty());
    tx.send(counted(key_msg("a", "k", "gone"), &handed))
        .await
        .unwrap();
    settle().await;
    assert_eq!(handed.load(Ordering::SeqCst), 5);
    // 0 was in a call, 1..=3 waited, "gone" found no comet.
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 5);
    drop(tx);
    run.await.unwrap();
}

/// A push naming a comet job does not know yet (its registry entry not read yet) is held,
/// asks for a registry reread once, and goes out in order with the pushes behind it once the
/// comet is set; a push for a comet that never shows up is dropped at the deadline (counted)
/// and its `done` runs. (Before the hold, every one of them was dropped at once: the first
/// clients of a new comet missed their pushes for up to a registry interval.)
#[tokio::test(start_paused = true)]
async fn a_push_for_a_comet_not_known_yet_waits_for_it() {
    let job = Arc::new(Job::new(Config {
        unknown_comet_wait: Duration::from_secs(3),
        ..Config::default()
    }));
    let reread = job.reread();
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(job.clone().run(rx));
    let handed = Arc::new(AtomicUsize::new(0));
    for i in 0..3 {
        tx.send(counted(key_msg("new", "k", &i.to_string()), &handed))
            .await
            .unwrap();
    }
    tx.send(counted(key_msg("never", "k", "x"), &handed))
        .await
        .unwrap();
    settle().await;
    // One reread asked for (a permit is stored for the registry follower), nothing handed.
    tokio::time::timeout(Duration::from_millis(1), reread.notified())
        .await
        .expect("a registry reread was asked for");
    assert_eq!(handed.load(Ordering::SeqCst), 0);
    assert_eq!(job.stats().held.load(Ordering::SeqCst), 4);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let comet = Arc::new(Recorder::default());
    job.set_comet("new", comet.clone());
    tx.send(counted(key_msg("new", "k", "3"), &handed))
        .await
        .unwrap();
    settle().await;
    assert_eq!(pushed(&comet), ["0", "1", "2", "3"]);
    assert_eq!(handed.load(Ordering::SeqCst), 4);
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 0);

    // "never" is dropped at its deadline without any further input.
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle().await;
    assert_eq!(handed.load(Ordering::SeqCst), 5);
    assert_eq!(job.stats().dropped.load(Ordering::SeqCst), 1);
    drop(tx);
    run.await.unwrap();
}
