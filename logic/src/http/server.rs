//! The HTTP API's server: hyper's HTTP/1 connection builder under the axum router, so that a
//! connection cannot be held without limit (`axum::serve` has no header timeout and no cap).
//!
//! - `max_conns`: a connection accepted while that many are open is closed at once (counted,
//!   logged once a second): the process keeps descriptors for the rest.
//! - `header_timeout`: hyper's `header_read_timeout`, armed whenever a connection waits for a
//!   request (the first, or the next one on a kept-alive connection): a request header
//!   trickled byte by byte, or an idle keep-alive connection, is closed at the deadline.
//! - `body_timeout`: enforced where the routes read the body (`read_body`), answered 408.
//! - Accept errors (EMFILE, ENFILE, ...) pause accepting for 100 ms instead of ending the loop.
//! - Graceful shutdown: stop accepting, let each connection finish its request in flight,
//!   then close it (hyper-util's `GracefulShutdown`).

use crate::Logic;
use crate::config::Http;
use crate::stats::Stats;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Serves a router with `[logic.http]`'s connection limits.
pub struct Server {
    config: Http,
    stats: Arc<Stats>,
}

impl Server {
    /// The limits of `logic.config.http`, counting in `logic.stats`.
    pub fn of(logic: &Logic) -> Self {
        Server {
            config: logic.config.http.clone(),
            stats: logic.stats.clone(),
        }
    }

    /// Serves `router` on `listener` until `shutdown` resolves, then waits for the requests
    /// in flight. Errors of single connections are logged at debug level; the loop itself
    /// does not fail.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout);
        // 0: no limit (as comet's [comet.limits] max_conns).
        let slots =
            (self.config.max_conns > 0).then(|| Arc::new(Semaphore::new(self.config.max_conns)));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // wait a little and go on (what axum::serve and hyper's examples do).
                        self.stats.http_accept_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "HTTP accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let slot = match &slots {
                Some(slots) => slots.clone().try_acquire_owned().ok(),
                None => None,
            };
            if slots.is_some() && slot.is_none() {
                if self.stats.conn_refused() {
                    warn!(
                        max_conns = self.config.max_conns,
                        "HTTP connection refused: max_conns open (logged once a second)"
                    );
                }
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            let stats = self.stats.clone();
            stats.http_conns_open.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                stats.http_conns_open.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}
