//! The Starling client: a goim push client (TCP and WebSocket) and an IM client that keeps the
//! client contract of reference im.md §5.4, so an app built on it gets every acknowledged
//! message once and in seq order without re-implementing the protocol.
//!
//! Layout
//! - sans-IO core (no sockets, time passed in; unit-tested): [`wire`] (goim framing, client
//!   WebSocket frames, op-9 batches), [`goim`] (auth token, room and accept bodies),
//!   [`codec`] (protobuf / JSON IM bodies), [`state`] (`contig`, held pushes, gap timers,
//!   sync and pull planning), [`send`] (client message ids, ack verdicts), [`marks`]
//!   (coalesced read/delivered marks), [`backoff`] (capped exponential, full jitter),
//!   [`nodes`] (`/goim/nodes/weighted`).
//! - [`Client`] (`client.rs`, `driver/`): the async tokio client for apps. One task owns
//!   the connection; the app gets an ordered [`Events`] stream and a cloneable handle whose
//!   [`Client::send`] resolves on the server's ack.
//! - [`blocking`]: a step-by-step client on std sockets, for tests and tools.
//!
//! # What the client guarantees (reference im.md §5.4)
//! - **Send**: a UUID `client_msg_id` per message, resent with the same id on a reply
//!   timeout, a lost connection, 429 (after `retry_after_ms`), 500, 503 and 504, until a
//!   final answer; 400/403/404/409/410/413 end it with [`SendError::Refused`].
//! - **Receive**: per conversation `contig`; duplicates dropped, gaps held and pulled after
//!   `gap_wait`; [`Event::Message`] / [`Event::Recall`] come once per `(conversation, seq)`,
//!   in seq order.
//! - **Connect**: node selection (`/goim/nodes/weighted`) or fixed addresses, capped
//!   exponential backoff with full jitter; after every connect pushes are held while
//!   `IM_SYNC` pages and forward pulls run, then applied; `reset` wipes ([`Event::Reset`]);
//!   a periodic sync every `resync_ms` heals a lost last push.
//! - **Marks** are coalesced to one `IM_READ` / `IM_RECV` per conversation per second.
//! - **Kick**: a 40xx `IM_KICK` is terminal ([`ConnState::Stopped`]); a plain close reconnects.
//! - **goim**: heartbeat (op 2) at the configured or advertised interval, room change
//!   (op 12), accept filters (ops 14/16), pushes ([`Event::Push`], op-9 batches unpacked).
//!
//! # Example
//!
//! Against `cargo run -p starling -- --config conf/im-try.toml` (development mode: no
//! `im_token` needed); `examples/chat.rs` is the runnable version.
//!
//! ```no_run
//! use starling_client::im::{ConvKind, ConvRef};
//! use starling_client::{Client, Codec, Config, Event, Identity, Servers, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity {
//!     mid: 1,
//!     key: "phone-1".into(), // stable per device
//!     platform: "ios".into(),
//!     im: Some(Codec::Protobuf),
//!     im_token: String::new(), // the JWT your backend minted, in production
//!     ..Default::default()
//! };
//! // Or `Servers::Nodes { logic: "http://127.0.0.1:3111".into() }` where comets register
//! // their public addresses (`registry.public_addrs`).
//! let servers = Servers::Addrs(vec!["127.0.0.1:3101".into()]);
//! let (client, mut events) = Client::start(Config::new(identity, Transport::Tcp, servers));
//! let to_2 = ConvRef { kind: ConvKind::P2p as i32, id: 2 };
//! let ack = client.send(to_2, 1, r#"{"text":"hi"}"#).await?;
//! println!("stored at seq {}", ack.seq);
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event {
//!         println!("{:?} #{}: {}", m.conv, m.seq, m.content);
//!         client.mark_read(m.conv.unwrap(), m.seq);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod blocking;
pub mod codec;
pub mod goim;
pub mod marks;
pub mod nodes;
pub mod send;
pub mod state;
pub mod wire;

pub use starling_proto::im::v1 as im;

mod client;
mod driver;

pub use client::{
    Client, Config, ConnState, Event, Events, RequestError, SendError, Servers, Stats,
};
pub use codec::Codec;
pub use goim::Identity;
pub use wire::Transport;
