//! comet, the edge gateway: holds goim TCP, WebSocket and WSS connections on thread-per-core
//! monoio workers (io_uring, or epoll where io_uring is unavailable), answers goim's client
//! protocol, and delivers pushes from job.
//!
//! [`start`] binds the listeners (one SO_REUSEPORT socket per worker and address), starts the
//! workers and returns a [`Comet`] handle, the in-process face of goim's `goim.comet.Comet`
//! service: `push_msg`, `broadcast`, `broadcast_room`, `rooms`.
//!
//! # Layout
//! - [`config`]: the `[comet]` configuration.
//! - `server`: listeners, worker threads, accept loops.
//! - `worker`: one thread's state (connections, rooms, timing wheel) and its command loop.
//! - `rooms`: a worker's rooms: room id → members, O(1) join and leave.
//! - `conn`: a connection's state and its output (queue, write); knows nothing of workers.
//! - `websocket`: what a WebSocket connection keeps beyond a TCP one (shared by conn and tls).
//! - [`deflate`]: permessage-deflate (RFC 7692): settings, per-thread codec, counters.
//! - `poller`: the worker's readiness set (one epoll fd the monoio driver waits on).
//! - [`bucket`]: the shared key → connection directory, sharded by CityHash32 as goim.
//! - [`outbound`]: pushes encoded once per transport; the bounded per-connection queue.
//! - [`wheel`]: the timing wheel for handshake and heartbeat deadlines.
//! - [`close`]: close reasons with stable codes, and the counters.
//! - `limits`: `[comet.limits]`: connections per comet and per address, each connection's
//!   packet rate (GCRA).
//! - [`logic`]: the trait comet calls logic through.
//! - `tls`: rustls, sans-IO, for WSS.
//! - [`node`]: comet as its own process (the `comet` binary): gRPC both ways, registry.

mod accepts;
pub mod bucket;
pub mod close;
pub mod config;
mod conn;
pub mod deflate;
mod handle;
mod io;
mod limits;
pub mod logic;
pub mod node;
pub mod outbound;
mod poller;
mod rooms;
mod server;
mod slab;
mod tls;
mod websocket;
pub mod wheel;
mod worker;

pub use close::{CloseReason, Refusal, Stats};
pub use config::Config;
pub use conn::Kind;
pub use handle::{Addrs, Comet, CometError};
pub use logic::{LocalBoxFuture, LogicClient, LogicError};
pub use server::start;
pub use tls::TlsError;
