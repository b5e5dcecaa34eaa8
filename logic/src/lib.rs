//! logic: goim's business tier. Admits connections (auth token, session), keeps room counts
//! from every comet, picks nodes for clients, and serves goim's HTTP push API, turning each
//! push into `PushMsg`s for job.
//!
//! # Layout
//! - [`admit`]: the hook the IM layer admits opted-in connections through.
//! - [`config`]: the `[logic]` configuration.
//! - [`logic`]: the rules, shared by gRPC and HTTP.
//! - [`store`]: session store trait and its in-memory default; room-count table.
//! - [`nodes`]: comet registry trait and goim's weighted node selection.
//! - [`receive`]: client packets forwarded by comet, routed to handlers by op.
//! - [`http`]: the `/goim/...` HTTP API with goim's envelope.
//! - [`grpc`]: goim's `goim.logic.Logic` service over [`Logic`].
//! - `kafka`: the Kafka producer behind [`PushSink`] (feature `kafka`).
//! - `node`: logic as its own process, the `logic` binary (feature `kafka`).
//! - [`redis_store`]: sessions and room counts in Redis, in goim's layout.

pub mod admit;
pub mod config;
pub mod grpc;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod logic;
#[cfg(feature = "kafka")]
pub mod node;
pub mod nodes;
pub mod receive;
pub mod redis_store;
pub mod stats;
pub mod store;

pub use config::Config;
pub use logic::{Logic, LogicError, PushError, PushSink};
