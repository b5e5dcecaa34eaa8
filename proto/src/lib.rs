//! The goim wire format, shared by comet, logic, job and bench. No I/O happens here: every
//! function takes bytes and returns bytes, values or a typed error, so the codecs can be tested
//! one byte at a time and reused by the load tool.
//!
//! # Layout
//! - [`packet`]: the 16-byte big-endian header and body, stream decoding, goim's read limits.
//! - [`op`]: operation codes.
//! - [`token`]: the auth body (JSON) a client sends with op 7.
//! - [`raw`]: OpRaw batches (several packets back to back) that pushes travel in.
//! - [`ws`]: a sans-IO WebSocket server codec (RFC 6455): upgrade request and frames;
//!   `ws::deflate`: permessage-deflate (RFC 7692) negotiation and per-message codec.
//! - [`grpc`]: prost/tonic code for goim's `goim.protocol`, `goim.comet` and `goim.logic`.
//! - [`im`]: Starling's IM bodies (`starling.im.v1`) in protobuf and proto3 JSON.

pub mod grpc;
pub mod im;
pub mod op;
pub mod packet;
pub mod raw;
pub mod token;
pub mod ws;

pub use packet::{Packet, PacketError, PacketRef};
pub use token::AuthToken;
