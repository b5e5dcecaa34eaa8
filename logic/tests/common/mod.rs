//! What the push API tests share: a `Logic` with in-memory sessions and a recording push
//! sink, served on a real socket through the same `Server` the binaries run.
#![allow(dead_code)] // each test binary uses part of it

use starling_logic::nodes::{Instance, Registry};
use starling_logic::stats::HttpRefusal;
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Config, Logic, PushError, PushSink};
use starling_proto::grpc::logic::PushMsg;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Recorded(pub Mutex<Vec<PushMsg>>);

impl PushSink for Recorded {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

pub struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

pub struct Api {
    pub addr: SocketAddr,
    pub logic: Arc<Logic>,
    pub sink: Arc<Recorded>,
    pub stop: Option<oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Api {
    pub async fn start(config: Config) -> Api {
        let sink = Arc::new(Recorded::default());
        let logic = Arc::new(Logic::new(
            config,
            Arc::new(MemorySessions::default()),
            sink.clone(),
            Arc::new(NoComets),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = starling_logic::http::Server::of(&logic);
        // `/metrics` as logic's node serves it: the logic counters in a registry, merged.
        let metrics = starling_cluster::metrics::Metrics::new();
        logic.stats.register(&metrics);
        let router = starling_logic::http::router(logic.clone()).merge(
            starling_cluster::health::router(metrics, starling_cluster::health::Readiness::new()),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(listener, router, async {
            let _ = rx.await;
        }));
        Api {
            addr,
            logic,
            sink,
            stop: Some(tx),
            served,
        }
    }

    pub fn pushes(&self) -> usize {
        self.sink.0.lock().unwrap().len()
    }

    pub fn refused(&self, why: HttpRefusal) -> u64 {
        self.logic.stats.http_refused_count(why)
    }

    /// One request on its own connection: (HTTP status, body).
    pub async fn request(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "{head}\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        read_response(&mut s).await
    }
}

pub async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
