//! Starling's IM layer, on logic's side of the tiers (reference im.md): a connection that opted
//! in at auth sends IM ops 20–39 through comet to logic, where this crate answers them from a
//! durable per-conversation log and delivers new messages to members' devices as goim key
//! pushes (ops 41, 43, 45). Comet stays a pipe: it never decodes an IM body.
//!
//! # Layout
//! - [`config`]: the `[im]` table.
//! - [`store`]: the `ImStore` trait (one log per conversation, contiguous seqs, dedup,
//!   memberships with watermarks), its implementations on fjall (embedded) and PostgreSQL
//!   (shared by several logic nodes), and `store::open`, which opens the configured one.
//! - [`service`]: [`Im`], installed on logic: admission (im_token, multi-login policy, kicks),
//!   rate limits, counters.
//! - [`ops`]: the client ops (send, recall, read, recv, typing); [`read`]: sync, pull, members.
//! - [`lane`]: per-conversation ordering and batching of writes and their deliveries.
//! - [`deliver`]: fan-out to devices as key pushes; [`devices`]: the device table.
//! - [`groups`]: group changes, each through the conversation's lane.
//! - [`admin`]: the `/im/v1` management API (an axum router merged into logic's) and the
//!   same operations as gRPC service `starling.im.v1.Admin` ([`admin::grpc::service`]).
//! - [`codec`]: protobuf or JSON bodies; [`token`]: HS256 `im_token`.

pub mod admin;
pub mod codec;
pub mod config;
pub mod deliver;
pub mod devices;
pub mod groups;
pub mod lane;
pub mod ops;
pub mod read;
pub mod recent;
pub mod service;
pub mod stats;
pub mod store;
pub mod token;

pub use config::Config;
pub use service::Im;
