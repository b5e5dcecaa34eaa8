//! The harness of the `/im/v1` API tests: a real `EmbeddedStore` in a temporary directory,
//! an `Im` whose pushes a `PushSink` test double records (the sink is job's seam), and the
//! API router merged into logic's (as the all-in-one serves it), driven with
//! `tower::ServiceExt::oneshot`.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use starling_im::config::MultiLogin;
use starling_im::devices::{Device, DeviceTable};
use starling_im::store::Durability;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::PushMsg;
use starling_proto::op::Codec;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-for-the-tests";
pub const SECRET: &str = "a-test-secret-of-32-bytes-------";

/// Records every `PushMsg` logic hands to job.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<PushMsg>>);

impl PushSink for Recorder {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    /// Every recorded `PushMsg`, in publish order.
    pub fn all(&self) -> Vec<PushMsg> {
        self.0.lock().unwrap().clone()
    }

    /// The recorded pushes of `op` to the connection `key`, decoded as JSON bodies.
    pub fn to_key<T: serde::de::DeserializeOwned>(&self, op: i32, key: &str) -> Vec<T> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|m| m.operation == op && m.keys.iter().any(|k| k == key))
            .map(|m| serde_json::from_slice(&m.msg).expect("a JSON body"))
            .collect()
    }
}

pub struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

pub struct T {
    pub im: Arc<Im>,
    pub logic: Arc<Logic>,
    pub sink: Arc<Recorder>,
    pub app: Router,
    _dir: tempfile::TempDir,
}

pub fn setup_with(config: Config) -> T {
    setup_with_logic(config, starling_logic::Config::default())
}

/// IM `config` on a logic configured with `logic_config` (its `[logic.http]` limits).
pub fn setup_with_logic(config: Config, logic_config: starling_logic::Config) -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        durability: Durability::Buffer,
        ..EmbeddedConfig::new(dir.path().join("im"))
    })
    .unwrap();
    let sink = Arc::new(Recorder::default());
    let im = Im::new(config, Arc::new(store), sink.clone());
    let logic = Arc::new(Logic::new(
        logic_config,
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    ));
    // As the all-in-one serves it: logic's router (with its fallback) merged with IM's.
    let app = starling_logic::http::router(logic.clone())
        .merge(starling_im::admin::router(im.clone(), logic.clone()));
    T {
        im,
        logic,
        sink,
        app,
        _dir: dir,
    }
}

pub fn config() -> Config {
    Config {
        enabled: true,
        token_secret: SECRET.into(),
        admin_token: ADMIN.into(),
        ..Config::default()
    }
}

pub fn setup() -> T {
    setup_with(config())
}

impl T {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {:?}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    /// An authorized call that must succeed: returns `data`.
    pub async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let b = body.to_string();
        let (s, v) = self
            .call(
                method,
                path,
                (!body.is_null()).then_some(b.as_str()),
                Some(ADMIN),
            )
            .await;
        assert_eq!((s, &v["code"]), (StatusCode::OK, &json!(0)), "{path}: {v}");
        v["data"].clone()
    }

    /// An authorized call that must fail with `code` (HTTP status and envelope alike).
    pub async fn fails(&self, method: Method, path: &str, body: Value, code: u16) -> Value {
        let b = body.to_string();
        let (s, v) = self
            .call(
                method,
                path,
                (!body.is_null()).then_some(b.as_str()),
                Some(ADMIN),
            )
            .await;
        assert_eq!(s.as_u16(), code, "{path}: {v}");
        assert_eq!(v["code"], json!(code), "{path}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    pub fn device(&self, mid: i64, key: &str, platform: &str) {
        let d = Device {
            mid,
            key: key.into(),
            platform: platform.into(),
            codec: Codec::Json,
            server: "comet-1".into(),
            conn: format!("conn-{key}"),
            since_ms: 1,
        };
        let DeviceTable::Memory(t) = &*self.im.devices else {
            unreachable!("the harness keeps devices in memory")
        };
        t.register(d, MultiLogin::Multi);
    }
}

pub fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap().parse().unwrap())
        .collect()
}
