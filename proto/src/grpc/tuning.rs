//! How Starling's gRPC servers and clients (comet → logic, job → comet) are set up so that
//! calls past their deadline do not take the whole connection down.
//!
//! A deadline travels with each call as `grpc-timeout` (gRPC over HTTP/2, "Requests":
//! `Timeout`). tonic enforces it on both sides: the server ends the call with `CANCELLED`
//! "Timeout expired", and the client stops waiting at the same moment and resets the stream
//! (`RST_STREAM(CANCEL)`). Under overload most calls end that way, and h2 (0.4.x) treats
//! many resets as an attack by default:
//! - the client remembers only 50 streams it reset; an answer that arrives for a forgotten
//!   one is a protocol error, and at 1,024 of those the client closes the connection with
//!   `GOAWAY(ENHANCE_YOUR_CALM, "too_many_internal_resets")` (hyperium/h2#737, #856);
//! - the server allows only 20 streams reset by the client before it accepted them, then
//!   closes the connection with `GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets")` (the HTTP/2
//!   "rapid reset" guard, CVE-2023-44487).
//!
//! Either way every call in flight on the connection fails; in the soak a 5-second Redis pause
//! became minutes of failed calls (bench/RESULTS.md, "Soak"). Between Starling's own tiers,
//! on an internal network, the limits below are raised; a public listener keeps h2's.

use std::time::Duration;
use tonic::Code;
use tonic::transport::{Endpoint, Server};

/// Locally reset streams a client connection remembers (h2: 50), so that a late answer to
/// one is dropped instead of counted as an error.
pub const RESET_STREAMS_REMEMBERED: usize = 16_384;

/// Streams a server connection lets its client reset before it accepted them (h2: 20).
pub const PENDING_ACCEPT_RESETS: usize = 16_384;

/// A lazily connecting endpoint at `addr` (`host:port`): TCP_NODELAY, `connect_timeout`
/// per attempt, [`RESET_STREAMS_REMEMBERED`]. Calls set their own deadline
/// (`Request::set_timeout`).
///
/// Errors: `addr` does not make a valid URI.
pub fn endpoint(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED))
}

/// A gRPC server for Starling's own tiers: [`PENDING_ACCEPT_RESETS`].
pub fn server() -> Server {
    Server::builder().http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS))
}

/// How long a client waits for a call whose deadline is `deadline` before giving up on its
/// own: twice the deadline, a backstop only (tonic ends the call at the deadline).
pub fn guard(deadline: Duration) -> Duration {
    deadline.saturating_mul(2)
}

/// Whether a status says the call's deadline passed, so its outcome is unknown: gRPC's
/// `DEADLINE_EXCEEDED`, or `CANCELLED`, which is how tonic ends a call past its
/// `grpc-timeout` (on either side) and how a client sees a reset stream.
pub fn past_deadline(code: Code) -> bool {
    matches!(code, Code::DeadlineExceeded | Code::Cancelled)
}
