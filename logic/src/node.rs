//! logic as its own process (the `logic` binary, `logic-node/src/main.rs`): the HTTP push
//! API and goim's `goim.logic.Logic` gRPC service, sessions and room counts in Redis, pushes
//! produced to Kafka, comets read from the Redis registry. `conf/logic.toml` documents every
//! key. [`run_with`] lets a caller add to the node once [`Logic`] exists (the binary adds IM;
//! this crate cannot depend on the IM crate, which depends on it).

use crate::kafka::KafkaSink;
use crate::nodes::{Instance, Registry};
use crate::redis_store::{RedisOnline, RedisSessions};
use crate::{Logic, PushSink, grpc};
use ::redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use starling_cluster::health::{self, Readiness};
use starling_cluster::metrics::{DependencyErrors, Metrics};
use starling_cluster::{boot, kafka, redis, registry};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub logic: crate::Config,
    pub grpc: Grpc,
    pub redis: redis::Config,
    pub kafka: kafka::Config,
    pub registry: registry::Config,
    pub log: boot::Log,
}

impl boot::ConfigFile for NodeConfig {}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// `goim.logic.Logic`, for comets (goim: 3119).
    pub bind: SocketAddr,
    /// How often room counts are reread from Redis (goim: 10s).
    #[serde(with = "humantime_serde")]
    pub online_refresh: Duration,
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            bind: SocketAddr::from(([0, 0, 0, 0], 3119)),
            online_refresh: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// What [`run_with`]'s extension could not set up (the IM store, say).
    #[error("{0}")]
    Extension(Box<dyn std::error::Error + Send + Sync>),
}

/// What an extension of the node builds on.
pub struct Parts {
    pub logic: Arc<Logic>,
    /// The node's Redis connection (sessions, room counts, the registry share it).
    pub redis: ConnectionManager,
    /// Where pushes go: the node's Kafka producer.
    pub sink: Arc<dyn PushSink>,
    /// TTL of what the node keeps in Redis (`redis.expire`), refreshed by heartbeats.
    pub expire: Duration,
    /// The node's `/metrics`: register the extension's collectors and histograms here.
    pub metrics: Arc<Metrics>,
    /// The node's `/readyz`: add the extension's dependencies (the IM store) here.
    pub ready: Arc<Readiness>,
    /// Where the extension counts its failed Redis calls (`starling_logic_redis_errors_total`).
    pub redis_errors: Arc<DependencyErrors>,
}

/// What an extension adds to the node.
#[derive(Default)]
pub struct Extension {
    /// Merged into the HTTP API's router (on `logic.http.bind`).
    pub routes: Option<axum::Router>,
    /// Served on `grpc.bind` beside `goim.logic.Logic` (IM's `starling.im.v1.Admin`).
    pub grpc: Option<tonic::service::Routes>,
}

/// Builds an [`Extension`] once the node's [`Logic`] exists; it may install a connect hook
/// and op handlers on it, and await (opening a database, say). An error stops the start.
pub type Extend = Box<
    dyn FnOnce(
            Parts,
        ) -> crate::store::BoxFuture<
            'static,
            Result<Extension, Box<dyn std::error::Error + Send + Sync>>,
        > + Send,
>;

/// The comets as the Redis registry last listed them.
pub struct WatchedRegistry(pub watch::Receiver<Arc<Vec<Instance>>>);

impl Registry for WatchedRegistry {
    fn instances(&self) -> Vec<Instance> {
        self.0.borrow().as_ref().clone()
    }
}

/// Exports a node's failed Redis calls (sessions, room counts, IM's device table, registry
/// reads) and Kafka produce calls as `starling_logic_redis_errors_total{kind}` and
/// `starling_logic_kafka_errors_total{kind}` (`kind`: `timeout` or `error`).
pub fn register_dependency_errors(
    m: &Metrics,
    redis: Arc<DependencyErrors>,
    kafka: Arc<DependencyErrors>,
) {
    m.collect(move |enc| {
        redis.encode(
            enc,
            "starling_logic_redis_errors",
            "Calls to Redis that failed (sessions, room counts, IM's device table, the comet \
             registry's reads), by kind.",
        )?;
        kafka.encode(
            enc,
            "starling_logic_kafka_errors",
            "Pushes the Kafka brokers did not acknowledge, by kind.",
        )
    });
}

/// Serves until `shutdown` resolves. Redis and Kafka need not be up at start: calls fail
/// (logins refused, pushes -500) until they are.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    run_with(
        config,
        shutdown,
        Box::new(|_| Box::pin(async { Ok(Extension::default()) })),
    )
    .await
}

/// [`run`], with `extend` called once [`Logic`] exists and before any listener accepts.
pub async fn run_with(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    extend: Extend,
) -> Result<(), NodeError> {
    let conn = redis::connect(&config.redis)?;
    // Every failed Redis and Kafka call of this node, by kind (timeout, error).
    let redis_errors = DependencyErrors::new();
    let instances = registry::watch(conn.clone(), config.registry.clone(), redis_errors.clone());
    let kafka = KafkaSink::new(&config.kafka)?;
    let (metrics, ready) = (Metrics::new(), Readiness::new());
    ready.check("redis", health::redis_ping(conn.clone()));
    ready.check("kafka", kafka.check());
    let kafka_errors = kafka.errors().clone();
    register_dependency_errors(&metrics, redis_errors.clone(), kafka_errors);
    starling_cluster::metrics::register_runtime(&metrics, tokio::runtime::Handle::current());
    let sink: Arc<dyn PushSink> = Arc::new(kafka);
    let logic = Arc::new(
        Logic::new(
            config.logic.clone(),
            Arc::new(
                RedisSessions::new(conn.clone(), config.redis.expire)
                    .with_errors(redis_errors.clone()),
            ),
            sink.clone(),
            Arc::new(WatchedRegistry(instances)),
        )
        .with_online_store(Arc::new(
            RedisOnline::new(conn.clone(), config.redis.expire).with_errors(redis_errors.clone()),
        )),
    );
    logic.stats.register(&metrics);
    let extension = extend(Parts {
        logic: logic.clone(),
        redis: conn,
        sink,
        expire: config.redis.expire,
        metrics: metrics.clone(),
        ready: ready.clone(),
        redis_errors: redis_errors.clone(),
    })
    .await
    .map_err(NodeError::Extension)?;

    let refresh = {
        let logic = logic.clone();
        let every = config.grpc.online_refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = logic.refresh_online().await {
                    warn!(error = %e, "room counts not refreshed");
                }
            }
        })
    };

    let http_addr = config.logic.http.bind;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: http_addr,
            source,
        })?;
    let grpc_addr = config.grpc.bind;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: grpc_addr,
            source,
        })?;
    info!(http = %http_addr, grpc = %grpc_addr, "logic running");

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = crate::http::Server::of(&logic);
    let mut router =
        crate::http::router(logic.clone()).merge(health::router(metrics, ready.clone()));
    if let Some(routes) = extension.routes {
        router = router.merge(routes);
    }
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(server.serve(http, router, async move {
        let _ = http_stop.changed().await;
    }));
    let mut grpc_stop = stop_rx;
    let grpc_task = tokio::spawn(
        starling_proto::grpc::tuning::server()
            .add_routes(
                extension
                    .grpc
                    .unwrap_or_default()
                    .add_service(grpc::LogicServer::new(grpc::Service(logic))),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                async move {
                    let _ = grpc_stop.changed().await;
                },
            ),
    );
    shutdown.await;
    ready.set_draining();
    info!("logic stopping");
    let _ = stop_tx.send(true);
    refresh.abort();
    if let Ok(Err(e)) = http_task.await {
        warn!(error = %e, "HTTP API ended with an error");
    }
    if let Ok(Err(e)) = grpc_task.await {
        warn!(error = %e, "gRPC ended with an error");
    }
    Ok(())
}
