//! logic: goim's business tier. Admits connections (auth token, session), keeps room counts
//! from every comet, picks nodes for clients, and serves goim's HTTP push API, turning each
//! push into `PushMsg`s for job.
//!
//! # Layout
//! - [`config`]: the `[logic]` configuration.
//! - [`logic`]: the rules, shared by gRPC and HTTP.
//! - [`store`]: session store trait and its in-memory default; room-count table.
//! - [`nodes`]: comet registry trait and goim's weighted node selection.
//! - [`http`]: the `/goim/...` HTTP API with goim's envelope.

pub mod config;
pub mod http;
pub mod logic;
pub mod nodes;
pub mod store;

pub use config::Config;
pub use logic::{Logic, LogicError, PushError, PushSink};
