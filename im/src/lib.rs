//! Starling's IM layer, on logic's side of the tiers (reference im.md): a connection that opted
//! in at auth sends IM ops 20–39 through comet to logic, where this crate answers them from a
//! durable per-conversation log and delivers new messages to members' devices as goim key
//! pushes (ops 41, 43, 45).
//!
//! # Layout
//! - [`store`]: the `ImStore` trait (one log per conversation, contiguous seqs, dedup,
//!   memberships with watermarks) and its embedded implementation on fjall.

pub mod store;
