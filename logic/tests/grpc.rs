//! goim's `goim.logic.Logic` service over a real gRPC connection (tonic client ↔ server on
//! loopback), on the in-memory session store: what a comet (Starling's or goim's) sees.

use starling_cluster::registry::CometMeta;
use starling_logic::LogicError;
use starling_logic::grpc::{LogicServer, Service};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::receive::Handler;
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Config, Logic, PushError, PushSink};
use starling_proto::grpc::logic::logic_client::LogicClient;
use starling_proto::grpc::logic::{
    ConnectReq, DisconnectReq, HeartbeatReq, NodesReq, OnlineReq, PushMsg, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::Code;

#[derive(Default)]
struct Recorded(Mutex<Vec<PushMsg>>);

impl PushSink for Recorded {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

struct OneComet;

impl Registry for OneComet {
    fn instances(&self) -> Vec<Instance> {
        let public = ["203.0.113.7".to_string()];
        let meta = CometMeta {
            weight: 10,
            public_addrs: &public,
            ..Default::default()
        };
        vec![Instance::comet(
            "comet-a",
            vec!["grpc://10.0.0.1:3109".into()],
            meta,
        )]
    }
}

/// Answers with the request's body reversed, as op + 1; fails on "fail".
struct Reverse;

impl Handler for Reverse {
    fn handle(&self, req: ReceiveReq) -> BoxFuture<'_, Result<Vec<Proto>, LogicError>> {
        Box::pin(async move {
            let p = req.proto.unwrap_or_default();
            if p.body.as_ref() == b"fail" {
                return Err(LogicError::Push(PushError::Unavailable(
                    "queue down".into(),
                )));
            }
            let mut body = p.body.to_vec();
            body.reverse();
            body.extend_from_slice(req.key.as_bytes());
            Ok(vec![Proto {
                op: p.op + 1,
                body: body.into(),
                ..Proto::default()
            }])
        })
    }
}

#[tokio::test]
async fn a_comet_sees_goims_logic_service() {
    let sink = Arc::new(Recorded::default());
    let logic = Arc::new(Logic::new(
        Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(OneComet),
    ));
    logic.set_handler(20, Arc::new(Reverse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogicServer::new(Service(logic.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // goim's Connect method shadows tonic's `connect` constructor: build from a channel.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = LogicClient::new(channel);

    // A token that is not JSON is refused as UNAUTHENTICATED (comet closes that connection).
    let e = c
        .connect(ConnectReq {
            server: "comet-a".into(),
            cookie: String::new(),
            token: b"not json".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let token = br#"{"mid":5,"key":"k5","room_id":"live://1","platform":"web","accepts":[1000]}"#;
    let r = c
        .connect(ConnectReq {
            server: "comet-a".into(),
            cookie: String::new(),
            token: token.to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.mid, r.key.as_str(), r.room_id.as_str()),
        (5, "k5", "live://1")
    );
    assert_eq!(r.accepts, vec![1000]);
    assert_eq!(r.im, 0, "no connection opts in to answered ops yet");
    // goim: heartbeat in nanoseconds = node.heartbeat (4m) × heartbeat_max (2).
    assert_eq!(r.heartbeat, 480_000_000_000);
    c.heartbeat(HeartbeatReq {
        conn: String::new(),
        im: 0,
        mid: 5,
        key: "k5".into(),
        server: "comet-a".into(),
    })
    .await
    .unwrap();

    // Receive is routed by op: op 20's handler answers (ReceiveReply.replies), an op with
    // no handler is answered with nothing (goim: logged only), a failed handler is an error.
    let receive = |op: i32, body: &[u8]| ReceiveReq {
        mid: 5,
        key: "k5".into(),
        im: 0,
        proto: Some(Proto {
            ver: 1,
            op,
            seq: 7,
            body: body.to_vec().into(),
        }),
    };
    let r = c.receive(receive(20, b"abc")).await.unwrap().into_inner();
    assert_eq!(r.replies.len(), 1);
    assert_eq!(
        (r.replies[0].op, r.replies[0].body.as_ref()),
        (21, &b"cbak5"[..])
    );
    let r = c.receive(receive(4, b"goim")).await.unwrap().into_inner();
    assert!(r.replies.is_empty());
    let e = c.receive(receive(20, b"fail")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    // The session routes a key push to comet-a.
    logic
        .push_keys(1000, &["k5".into()], "hi".into())
        .await
        .unwrap();
    let m = sink.0.lock().unwrap().pop().unwrap();
    assert_eq!(
        (m.server.as_str(), m.keys.as_slice()),
        ("comet-a", &["k5".to_string()][..])
    );

    let counts = c
        .renew_online(OnlineReq {
            server: "comet-a".into(),
            room_count: HashMap::from([("live://1".into(), 3)]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts.all_room_count,
        HashMap::from([("live://1".into(), 3)])
    );

    let nodes = c
        .nodes(NodesReq {
            platform: "android".into(),
            client_ip: "198.51.100.1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.nodes, vec!["203.0.113.7".to_string()]);
    assert_eq!((nodes.tcp_port, nodes.ws_port), (3101, 3102));

    // Disconnect from another comet leaves the session; from its own comet removes it.
    let has = |server: &str| DisconnectReq {
        mid: 5,
        key: "k5".into(),
        server: server.into(),
        ..Default::default()
    };
    assert!(!c.disconnect(has("comet-b")).await.unwrap().into_inner().has);
    assert!(c.disconnect(has("comet-a")).await.unwrap().into_inner().has);
    logic
        .push_keys(1000, &["k5".into()], "hi".into())
        .await
        .unwrap();
    assert!(sink.0.lock().unwrap().is_empty(), "no session, no push");
}
