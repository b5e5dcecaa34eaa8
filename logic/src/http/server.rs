//! The HTTP API's server: [`starling_cluster::serve`] (hyper's HTTP/1 connection builder under
//! the axum router) with `[logic.http]`'s limits, counted in logic's stats:
//!
//! - `max_conns`: a connection accepted while that many are open is closed at once
//!   (`starling_logic_http_conns_refused_total`, logged once a second);
//! - `header_timeout`: a request header trickled byte by byte, or an idle keep-alive
//!   connection, is closed at the deadline;
//! - `body_timeout`: enforced where the routes read the body (`read_body`), answered 408;
//! - accept errors (EMFILE, ENFILE, ...) pause accepting for 100 ms
//!   (`starling_logic_http_accept_errors_total`); graceful shutdown lets each connection
//!   finish its request in flight.

use crate::Logic;
use crate::config::Http;
use crate::stats::Stats;
use axum::Router;
use starling_cluster::serve::{self, Limits, Observe};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::warn;

/// Serves a router with `[logic.http]`'s connection limits.
pub struct Server {
    config: Http,
    stats: Arc<Stats>,
}

struct Counted {
    max_conns: usize,
    stats: Arc<Stats>,
}

impl Observe for Counted {
    fn accept_error(&self, _: &std::io::Error) {
        self.stats
            .http_accept_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        if self.stats.conn_refused() {
            warn!(
                max_conns = self.max_conns,
                "HTTP connection refused: max_conns open (logged once a second)"
            );
        }
    }

    fn open(&self, open: bool) {
        if open {
            self.stats.http_conns_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.http_conns_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
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
        listener: tokio::net::TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = Limits {
            // 0: no limit (as comet's [comet.limits] max_conns).
            max_conns: self.config.max_conns,
            header_timeout: self.config.header_timeout,
        };
        let observe = Arc::new(Counted {
            max_conns: self.config.max_conns,
            stats: self.stats,
        });
        serve::serve(listener, router, limits, observe, shutdown).await
    }
}
