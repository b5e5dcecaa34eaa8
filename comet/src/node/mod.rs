//! comet as its own process (the `comet` binary): the workers, goim's `goim.comet.Comet`
//! gRPC service for job, a gRPC client to logic, and its entry in the Redis registry. The
//! gRPC side and the registry run on one tokio thread (`comet-grpc`) beside the monoio
//! workers. `conf/comet.toml` documents every key.

pub mod grpc;

use crate::Comet;
use serde::{Deserialize, Serialize};
use starling_cluster::metrics::{DependencyErrors, Metrics};
use starling_cluster::registry::{self, CometMeta, Instance};
use starling_cluster::{boot, health, redis};
use starling_proto::grpc::tuning;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub comet: crate::Config,
    pub grpc: Grpc,
    pub logic: Logic,
    pub redis: redis::Config,
    pub registry: Registration,
    /// `/metrics`, `/healthz`, `/readyz` (off unless `bind` is set).
    pub metrics: health::Config,
    pub log: boot::Log,
}

impl boot::ConfigFile for NodeConfig {
    fn validate(&self) -> Result<(), boot::Invalid> {
        Ok(self.comet.validate()?)
    }

    fn check_files(&self) -> Result<(), boot::Invalid> {
        Ok(self.comet.check_files()?)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// `goim.comet.Comet`, for job (goim: 3109).
    pub bind: SocketAddr,
    /// `host:port` job dials, as listed in the registry. Empty: `bind`, or when that is a
    /// wildcard, this host's address toward other hosts.
    pub advertise: String,
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            bind: SocketAddr::from(([0, 0, 0, 0], 3109)),
            advertise: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logic {
    /// logic's gRPC addresses, `host:port`; calls are balanced over them.
    pub addrs: Vec<String>,
    /// Deadline of every call to logic (goim: 1s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Logic {
    fn default() -> Self {
        Logic {
            addrs: vec!["127.0.0.1:3119".into()],
            timeout: Duration::from_secs(1),
        }
    }
}

/// This comet's registry entry (goim's discovery registration and metadata).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registration {
    /// How often the entry is renewed (with fresh connection counts).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long the entry outlives the comet if it dies.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub weight: u32,
    /// Public addresses handed to non-web clients by `/goim/nodes/weighted`.
    pub public_addrs: Vec<String>,
    pub region: String,
    pub zone: String,
    pub env: String,
}

impl Default for Registration {
    fn default() -> Self {
        let r = registry::Config::default();
        Registration {
            interval: r.interval,
            ttl: r.ttl,
            weight: 10,
            public_addrs: Vec::new(),
            region: String::new(),
            zone: String::new(),
            env: String::new(),
        }
    }
}

/// Exports the comet's failed Redis calls (its registry renewals and withdrawal: comet's
/// only use of Redis) as `starling_comet_redis_errors_total{kind}` (`timeout` or `error`).
pub fn register_redis_errors(m: &Metrics, errors: Arc<DependencyErrors>) {
    m.collect(move |enc| {
        errors.encode(
            enc,
            "starling_comet_redis_errors",
            "Calls to Redis that failed (the registry's renewals), by kind.",
        )
    });
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("comet: {0}")]
    Comet(#[from] crate::CometError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("logic address {addr:?}: {source}")]
    LogicAddr {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("binding the metrics listener on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding gRPC on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// This host's address toward others: the source address of a route to a public address
/// (no packet is sent).
fn outward_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    s.connect(("192.0.2.1", 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn advertise(g: &Grpc, bound: SocketAddr) -> String {
    if !g.advertise.is_empty() {
        return g.advertise.clone();
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match outward_ip() {
        Some(ip) => SocketAddr::new(ip, bound.port()).to_string(),
        None => {
            warn!("no outward address found: advertising loopback; set grpc.advertise");
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port()).to_string()
        }
    }
}

fn logic_channel(l: &Logic) -> Result<Channel, NodeError> {
    let mut endpoints = Vec::with_capacity(l.addrs.len());
    for a in &l.addrs {
        let e = tuning::endpoint(a, l.timeout).map_err(|source| NodeError::LogicAddr {
            addr: a.clone(),
            source,
        })?;
        endpoints.push(e);
    }
    Ok(match endpoints.len() {
        1 => endpoints.remove(0).connect_lazy(),
        _ => Channel::balance_list(endpoints.into_iter()),
    })
}

fn describe(comet: &Comet, r: &Registration, grpc: &str, draining: bool) -> Instance {
    let meta = CometMeta {
        weight: r.weight,
        offline: draining,
        public_addrs: &r.public_addrs,
        conns: comet.conn_count(),
        ips: comet.ip_count(),
    };
    let mut i = Instance::comet(comet.server_id(), vec![format!("grpc://{grpc}")], meta);
    i.region = r.region.clone();
    i.zone = r.zone.clone();
    i.env = r.env.clone();
    i
}

/// Runs until SIGINT or SIGTERM, then drains over `comet.lame_duck` (listed offline
/// meanwhile; a second signal cuts it short), leaves the registry and stops.
pub fn run(config: NodeConfig) -> Result<(), NodeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("comet-grpc")
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let _guard = rt.enter();
    let channel = logic_channel(&config.logic)?;
    let logic = grpc::GrpcLogic::new(channel.clone(), rt.handle().clone(), config.logic.timeout);
    let comet = crate::start(config.comet.clone(), Arc::new(logic))?;

    let bind = config.grpc.bind;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(bind))
        .map_err(|source| NodeError::Bind { addr: bind, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| NodeError::Bind { addr: bind, source })?;
    let grpc_addr = advertise(&config.grpc, bound);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let server = rt.spawn(
        starling_proto::grpc::tuning::server()
            .add_service(grpc::CometServer::new(grpc::Service(comet.clone())))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = grpc_stop.changed().await;
                },
            ),
    );

    let conn = redis::connect(&config.redis)?;
    let draining = Arc::new(AtomicBool::new(false));
    let registered_ok = Arc::new(AtomicBool::new(false));
    // The registry's failed Redis calls (comet's only use of Redis), by kind.
    let redis_errors = DependencyErrors::new();
    let ready = health::Readiness::new();
    if let Some(addr) = config.metrics.bind {
        let metrics = Metrics::new();
        comet.register_metrics(&metrics);
        starling_cluster::metrics::register_runtime(&metrics, rt.handle().clone());
        register_redis_errors(&metrics, redis_errors.clone());
        ready.check("logic", grpc::logic_check(channel, config.logic.timeout));
        let ok = registered_ok.clone();
        ready.check("registry", move || {
            let ok = ok.load(Ordering::Relaxed);
            async move {
                ok.then_some(())
                    .ok_or_else(|| "renewal failing".to_string())
            }
        });
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.changed().await;
        };
        rt.block_on(health::serve(
            addr,
            config.metrics.limits(),
            metrics,
            ready.clone(),
            stopped,
        ))
        .map_err(|source| NodeError::Metrics { addr, source })?;
    }
    let registered = {
        let (comet, reg, draining) = (comet.clone(), config.registry.clone(), draining.clone());
        let grpc_addr = grpc_addr.clone();
        let rc = registry::Config {
            interval: reg.interval,
            ttl: reg.ttl,
        };
        rt.spawn(registry::keep_registered_reporting(
            conn,
            rc,
            move || describe(&comet, &reg, &grpc_addr, draining.load(Ordering::Relaxed)),
            stop_rx,
            registered_ok,
            redis_errors,
        ))
    };
    info!(server = %comet.server_id(), grpc = %grpc_addr, addrs = ?comet.addrs(), "comet running");

    rt.block_on(boot::signal());
    let over = config.comet.lame_duck;
    info!(?over, "draining; a second signal stops at once");
    draining.store(true, Ordering::Relaxed);
    ready.set_draining();
    rt.block_on(async {
        tokio::select! {
            r = comet.lame_duck(over) => {
                if let Err(e) = r {
                    warn!(error = %e, "lame duck ended early");
                }
            }
            _ = boot::signal() => warn!("drain cut short"),
        }
    });
    let _ = stop_tx.send(true);
    let _ = rt.block_on(registered);
    comet.shutdown();
    if let Ok(Err(e)) = rt.block_on(server) {
        warn!(error = %e, "gRPC server ended with an error");
    }
    info!("comet stopped");
    Ok(())
}
