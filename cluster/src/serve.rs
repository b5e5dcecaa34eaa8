//! An HTTP/1 server with connection limits: hyper's connection builder under an axum router,
//! so that a connection cannot be held without limit (`axum::serve` has no header timeout and
//! no cap). Logic's push API serves with it (`[logic.http]`), and so does the `[metrics]`
//! listener of the `comet` and `job` binaries ([`crate::health::serve`]).
//!
//! - `max_conns`: a connection accepted while that many are open is closed at once (counted,
//!   logged once a second by the caller's [`Observe`]): the process keeps descriptors for the
//!   rest. Without it, idle connections to comet's metrics port ran comet out of descriptors,
//!   and a push to one of its clients was lost while job could not connect (the break-it run
//!   of issue 15).
//! - `header_timeout`: hyper's `header_read_timeout`, armed whenever a connection waits for a
//!   request (the first, or the next one on a kept-alive connection): a request header
//!   trickled byte by byte, or an idle keep-alive connection, is closed at the deadline.
//! - Accept errors (EMFILE, ENFILE, ...) pause accepting for 100 ms instead of ending the loop.
//! - Graceful shutdown: stop accepting, let each connection finish its request in flight,
//!   then close it (hyper-util's `GracefulShutdown`).

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// A listener's connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; 0: no limit.
    pub max_conns: usize,
    /// Longest wait for a request's header (the first or a kept-alive one's next).
    pub header_timeout: Duration,
}

/// What a server reports of its connections (each caller counts them in its own metrics).
pub trait Observe: Send + Sync + 'static {
    /// An accept failed (out of descriptors, a reset before accept).
    fn accept_error(&self, error: &std::io::Error);
    /// A connection was closed at accept: `max_conns` were open.
    fn refused(&self);
    /// A connection was taken (`open` = true) or ended (`open` = false).
    fn open(&self, open: bool);
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then waits for
/// the requests in flight. Errors of single connections are logged at debug level; the loop
/// itself does not fail.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    observe: Arc<dyn Observe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = (limits.max_conns > 0).then(|| Arc::new(Semaphore::new(limits.max_conns)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait
                    // a little and go on (what axum::serve and hyper's examples do).
                    observe.accept_error(&e);
                    warn!(error = %e, "HTTP accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match &slots {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    observe.refused();
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        let observe = observe.clone();
        observe.open(true);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "HTTP connection ended with an error");
            }
            observe.open(false);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
