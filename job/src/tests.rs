//! Job's routing and batching against a recording comet whose room writes can be held open,
//! so a test decides when "the previous batch was written".

use super::*;
use starling_proto::raw;
use std::sync::Mutex;
use tokio::sync::Semaphore;

#[derive(Default)]
struct Recorder {
    pushes: Mutex<Vec<PushMsgReq>>,
    rooms: Mutex<Vec<BroadcastRoomReq>>,
    broadcasts: Mutex<Vec<BroadcastReq>>,
    /// Room writes wait for a permit.
    gate: Option<Arc<Semaphore>>,
}

impl CometClient for Recorder {
    fn push_msg(&self, req: PushMsgReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.pushes.lock().unwrap().push(req);
        Box::pin(async { Ok(()) })
    }
    fn broadcast(&self, req: BroadcastReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.broadcasts.lock().unwrap().push(req);
        Box::pin(async { Ok(()) })
    }
    fn broadcast_room(&self, req: BroadcastRoomReq) -> BoxFuture<'_, Result<(), JobError>> {
        self.rooms.lock().unwrap().push(req);
        let gate = self.gate.clone();
        Box::pin(async move {
            if let Some(g) = gate {
                g.acquire().await.unwrap().forget();
            }
            Ok(())
        })
    }
}

fn room_msg(room: &str, op: i32, body: &str) -> PushMsg {
    PushMsg {
        r#type: push_msg::Type::Room as i32,
        operation: op,
        room: room.into(),
        msg: body.as_bytes().to_vec(),
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
        msg: b"hi".to_vec(),
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
        msg: b"all".to_vec(),
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
