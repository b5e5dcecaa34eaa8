//! The all-in-one: comet, logic and job in one process on the embedded default (sessions and
//! the push queue in memory; nothing else to install). The distributed deployment puts gRPC,
//! Redis and Kafka behind the same seams; here they are in-process adapters.
//!
//! # Layout
//! - [`config`]: the whole file, `[comet]`, `[logic]`, `[job]`, `[log]`.
//! - [`app`]: the web chat app (`[app]`), its files embedded at compile time.
//! - `glue`: the in-process adapters across the comet / logic / job seams.
//! - [`start`] and [`Running`]: the process's lifetime; the HTTP API (goim's push API and
//!   `/im/v1`) and, with IM's admin token set, the gRPC port serving `starling.im.v1.Admin`.

pub mod app;
pub mod config;
mod glue;

pub use config::Config;

use starling_cluster::health::{self, Readiness};
use starling_cluster::metrics::Metrics;
use starling_comet::Comet;
use starling_job::Job;
use starling_logic::Logic;
use starling_logic::store::MemorySessions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("comet: {0}")]
    Comet(#[from] starling_comet::CometError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("IM store: {0}")]
    ImStore(#[from] starling_im::store::OpenError),
    #[error("binding the HTTP API on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding the gRPC port on {addr}: {source}")]
    Grpc {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Messages logic may queue for job before a push waits (and, after 2 s, fails with -500).
const PUSH_QUEUE: usize = 65536;

/// A running all-in-one.
pub struct Running {
    rt: tokio::runtime::Runtime,
    comet: Comet,
    http_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    stop_http: Option<oneshot::Sender<()>>,
    stop_grpc: Option<oneshot::Sender<()>>,
    /// `/readyz`: set draining during the lame duck.
    ready: Arc<Readiness>,
}

/// Starts everything; returns once every listener is bound.
pub fn start(config: Config) -> Result<Running, StartError> {
    // logic, job and the HTTP API share one tokio thread beside the comet workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("starling-logic")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    // The HTTP API's port first: a taken port stops the start before comet accepts anyone.
    let addr = config.logic.http.bind;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| StartError::Http { addr, source })?;
    let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
    let registry = Arc::new(glue::LocalRegistry::new(
        config.registry.weight,
        config.registry.public_addrs.clone(),
    ));
    let push_sink = Arc::new(glue::QueueSink::new(push_tx));
    let logic = Arc::new(Logic::new(
        config.logic.clone(),
        Arc::new(MemorySessions::default()),
        push_sink.clone(),
        registry.clone(),
    ));
    let im = if config.im.enabled {
        Some(start_im(&rt, &config.im, &logic, push_sink.clone())?)
    } else {
        None
    };
    // IM's management API over gRPC (the port's only service here), bound before comet
    // accepts anyone, as the HTTP port is.
    let admin = im
        .as_ref()
        .and_then(|im| starling_im::admin::grpc::service(im.clone()));
    let grpc = match admin {
        Some(admin) => {
            let addr = config.grpc.bind;
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|source| StartError::Grpc { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Grpc { addr, source })?;
            Some((admin, listener, bound))
        }
        None => None,
    };
    let comet = starling_comet::start(
        config.comet.clone(),
        Arc::new(glue::InProcessLogic::new(
            logic.clone(),
            rt.handle().clone(),
        )),
    )?;
    registry.set(comet.clone());
    let job = Arc::new(Job::new(config.job.clone()));
    job.set_comet(comet.server_id(), Arc::new(glue::LocalComet(comet.clone())));
    rt.spawn(job.clone().run(push_rx));

    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::Http { addr, source })?;
    let app_stats = Arc::new(app::Stats::default());
    let (metrics, ready) = (Metrics::new(), Readiness::new());
    comet.register_metrics(&metrics);
    logic.stats.register(&metrics);
    job.register_metrics(&metrics);
    starling_cluster::metrics::register_runtime(&metrics, rt.handle().clone());
    if let Some(im) = &im {
        im.register_metrics(&metrics);
        let store = im.store.clone();
        ready.check("im_store", move || {
            let store = store.clone();
            async move { store.group(0).await.map(|_| ()).map_err(|e| e.to_string()) }
        });
        if config.app.enabled {
            let app = app_stats.clone();
            metrics.collect(move |enc| app.collect(enc));
        }
    }
    let server = starling_logic::http::Server::of(&logic);
    let mut router =
        starling_logic::http::router(logic.clone()).merge(health::router(metrics, ready.clone()));
    if let Some(im) = &im {
        // The /im/v1 management API; no routes unless im.admin_token is set.
        router = router.merge(starling_im::admin::router(im.clone(), logic.clone()));
    }
    match (&im, config.app.enabled) {
        (Some(im), true) => {
            let ws_port = comet.addrs().ws.first().map_or(0, |a| a.port());
            router = router.merge(app::router(
                &config.app,
                im.clone(),
                logic.clone(),
                ws_port,
                app_stats,
            ));
            tracing::info!(url = %format!("http://{http_addr}/"), "web chat app served");
        }
        (None, true) => tracing::error!("[app] enabled without [im] enabled: app not served"),
        _ => {}
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    rt.spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = server.serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    let (grpc_addr, stop_grpc) = match grpc {
        Some((admin, listener, bound)) => {
            let (tx, rx) = oneshot::channel::<()>();
            let serve = starling_proto::grpc::tuning::server()
                .add_service(admin)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                );
            rt.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "gRPC stopped");
                }
            });
            (Some(bound), Some(tx))
        }
        None => (None, None),
    };
    tracing::info!(http = %http_addr, grpc = ?grpc_addr, "starling running");
    Ok(Running {
        rt,
        comet,
        http_addr,
        grpc_addr,
        stop_http: Some(stop_tx),
        stop_grpc,
        ready,
    })
}

/// Opens the IM store the configuration names (embedded or PostgreSQL) and installs IM on
/// `logic`.
fn start_im(
    rt: &tokio::runtime::Runtime,
    config: &starling_im::Config,
    logic: &Logic,
    sink: Arc<glue::QueueSink>,
) -> Result<Arc<starling_im::Im>, StartError> {
    let store = rt.block_on(starling_im::store::open(config))?;
    let im = starling_im::Im::new(config.clone(), store, sink);
    im.install(logic);
    Ok(im)
}

/// SIGINT or SIGTERM, whichever comes first.
pub use starling_cluster::boot::signal;

impl Running {
    pub fn comet(&self) -> &Comet {
        &self.comet
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The gRPC port serving `starling.im.v1.Admin`; `None` when IM or its admin token is
    /// off (nothing to serve, nothing bound).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Blocks until SIGINT or SIGTERM.
    pub fn wait_for_signal(&self) {
        self.rt.block_on(signal());
    }

    /// Lame duck, then shutdown: comet stops accepting and closes its connections spread over
    /// `comet.lame_duck` while pushes keep flowing to those still open; then everything stops.
    /// `cut_short` (in `main`: a second signal) ends the drain early.
    pub fn drain(self, over: Duration, cut_short: impl Future<Output = ()>) {
        self.ready.set_draining();
        let comet = self.comet.clone();
        self.rt.block_on(async move {
            tokio::select! {
                r = comet.lame_duck(over) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "lame duck ended early");
                    }
                }
                _ = cut_short => tracing::warn!("drain cut short"),
            }
        });
        self.shutdown();
    }

    /// Stops the HTTP API, closes every connection and joins the workers.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.stop_grpc.take() {
            let _ = tx.send(());
        }
        self.comet.shutdown();
        self.rt.shutdown_timeout(std::time::Duration::from_secs(2));
    }
}
