//! The async client: one tokio task per client owns the connection and the sans-IO state; the
//! app talks to it through a cloneable [`Client`] handle and reads [`Event`]s in order.

use crate::backoff::Backoff;
use crate::codec::DecodeError;
use crate::driver::{Command, Driver};
use crate::goim::Identity;
use crate::marks::MarkKind;
use crate::send::new_client_msg_id;
use crate::wire::Transport;
use starling_proto::im::v1::{
    self as im, ConvRef, Kick, Message, PullReply, PullReq, RecallReq, SendAck, SendReq,
    pull_req::Direction,
};
use starling_proto::packet::Packet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Where the comets are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// Fixed `host:port` addresses of the chosen transport, tried in turn.
    Addrs(Vec<String>),
    /// Ask logic's `GET /goim/nodes/weighted` before every connect; `http://host:port`.
    Nodes { logic: String },
}

/// How the client connects and behaves.
#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub transport: Transport,
    pub servers: Servers,
    /// Heartbeat interval; `None` takes the one `/goim/nodes/weighted` advertises, else 30 s.
    pub heartbeat: Option<Duration>,
    /// How long a request waits for its reply before the connection is deemed lost (and
    /// sends are retried with the same id on the next one).
    pub reply_timeout: Duration,
    /// TCP connect + WebSocket upgrade + auth reply deadline.
    pub connect_timeout: Duration,
    /// Reconnect backoff; `None` takes the advertised one, else goim's default.
    pub backoff: Option<Backoff>,
    /// Fault injection for tests: op-41 messages with these seqs are dropped the first time
    /// they arrive, as a lossy path would.
    #[doc(hidden)]
    pub drop_push_seqs: Vec<u64>,
}

impl Config {
    /// A config for `identity` at fixed addresses.
    pub fn new(identity: Identity, transport: Transport, servers: Servers) -> Self {
        Config {
            identity,
            transport,
            servers,
            heartbeat: None,
            reply_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            backoff: None,
            drop_push_seqs: Vec::new(),
        }
    }
}

/// The connection's life, as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Attempt `attempt` (0 first) to connect to `addr`.
    Connecting { attempt: u32, addr: String },
    /// Authenticated; the sync pass runs (pushes held).
    Connected { addr: String },
    /// The sync pass ended: the cache is current, held pushes were applied.
    Synced,
    /// The connection ended; the next attempt follows after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// Terminal: no more reconnects (a 40xx kick, [`Client::close`], or every handle dropped).
    Stopped { reason: String },
}

/// What the app sees, in order. Each `(conversation, seq)` comes once, in seq order per
/// conversation: as [`Event::Message`] or [`Event::Recall`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    State(ConnState),
    /// The server's store changed epoch (restored, wiped): drop every cached message; the
    /// conversations come again from seq 1 (reference im.md §5.3 `SyncReply.reset`).
    Reset,
    /// A sequenced message (normal or system), yours included once acknowledged.
    Message(Message),
    /// A recall event: `ref_seq` of its conversation is now a tombstone.
    Recall(Message),
    /// Read or delivered mark of another member or device (op 43, READ/DELIVERED).
    Receipt(im::Event),
    /// Someone is typing (op 43, TYPING).
    Typing(im::Event),
    /// Conversation added/removed, device online/offline (the other op-43 events).
    Notice(im::Event),
    /// The server kicked this connection (op 45); a 40xx code stops reconnecting.
    Kick(Kick),
    /// A goim push (business ops, usually ≥ 1000), from op-9 batches or alone.
    Push(Packet),
}

/// Why a send has no final success.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SendError {
    /// A final code (400/403/404/409/410/413, reference im.md §5.5).
    #[error("refused with code {}: {}", .0.code, .0.reason)]
    Refused(SendAck),
    /// The request packet is over the connection's limit (`ImWelcome.max_body`, header
    /// included): the server would close the connection instead of answering, so it is
    /// refused locally and never sent.
    #[error("request of {len} bytes is over the connection's {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The client stopped before a final answer; the message may or may not be stored.
    #[error("client stopped before a final answer")]
    Stopped,
}

/// Why a one-shot request failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RequestError {
    #[error("not connected")]
    NotConnected,
    #[error("connection lost before the reply")]
    Lost,
    #[error("client stopped")]
    Stopped,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("answered code {0}")]
    Code(i32),
}

/// Delivery counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages that arrived in pushes, duplicates included.
    pub raw: u64,
    /// Arrivals dropped as duplicates.
    pub raw_duplicates: u64,
    /// Pulls made because a gap outlived `gap_wait`.
    pub gap_pulls: u64,
    /// Connections that reached the auth reply.
    pub connects: u64,
    /// Connect attempts that failed before the auth reply.
    pub failed_attempts: u64,
}

/// The ordered event stream of a client.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the client stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// An event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// A handle to a running client; cheap to clone. The client stops when every handle is
/// dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    cmd: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<Stats>>,
    /// The IM codec of the connection (protobuf for a goim-only client, which has no IM ops).
    codec: crate::codec::Codec,
}

impl Client {
    /// Starts the client on the current tokio runtime: it connects, authenticates, syncs and
    /// keeps reconnecting until stopped.
    pub fn start(config: Config) -> (Client, Events) {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let codec = config.identity.im.unwrap_or(crate::codec::Codec::Protobuf);
        tokio::spawn(Driver::new(config, cmd_rx, ev_tx, stats.clone()).run());
        (Client { cmd, stats, codec }, Events { rx })
    }

    fn command(&self, c: Command) {
        // A stopped driver dropped its receiver; the oneshot inside then reports Stopped.
        let _ = self.cmd.send(c);
    }

    /// Sends a message with a fresh client message id and resolves on the server's ack,
    /// retrying the same id over reconnects, 429/503/504 (reference im.md §5.4 step 1).
    pub async fn send(
        &self,
        conv: ConvRef,
        content_type: i32,
        content: &str,
    ) -> Result<SendAck, SendError> {
        self.send_req(SendReq {
            client_msg_id: new_client_msg_id(),
            conv: Some(conv),
            content_type,
            content: content.into(),
            ..Default::default()
        })
        .await
    }

    /// Sends a prepared request (its `client_msg_id` must be set and kept by the caller if
    /// it persists the outbox across restarts).
    pub async fn send_req(&self, req: SendReq) -> Result<SendAck, SendError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Send(crate::driver::Outgoing::Send(req), tx));
        rx.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Recalls `seq` of `conv`; resolves with the recall event's ack.
    pub async fn recall(&self, conv: ConvRef, seq: u64) -> Result<SendAck, SendError> {
        let (tx, rx) = oneshot::channel();
        let req = RecallReq {
            conv: Some(conv),
            seq,
            client_msg_id: new_client_msg_id(),
        };
        self.command(Command::Send(crate::driver::Outgoing::Recall(req), tx));
        rx.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Marks `conv` read up to `seq` (coalesced: at most one `IM_READ` per second).
    pub fn mark_read(&self, conv: ConvRef, seq: u64) {
        self.command(Command::Mark(MarkKind::Read, conv, seq));
    }

    /// Marks `conv` delivered up to `seq` (coalesced: at most one `IM_RECV` per second).
    pub fn mark_delivered(&self, conv: ConvRef, seq: u64) {
        self.command(Command::Mark(MarkKind::Delivered, conv, seq));
    }

    /// Typing on or off in `conv` (best effort, not retried).
    pub fn typing(&self, conv: ConvRef, typing: bool) {
        self.command(Command::Typing(conv, typing));
    }

    /// One page of history before `before_seq` (0 = from the newest), newest first.
    pub async fn history(
        &self,
        conv: ConvRef,
        before_seq: u64,
        limit: u32,
    ) -> Result<PullReply, RequestError> {
        let req = PullReq {
            conv: Some(conv),
            dir: Direction::Backward as i32,
            from_seq: before_seq,
            limit,
        };
        let reply: PullReply = self.call(starling_proto::op::im::PULL, &req).await?;
        match reply.code {
            0 => Ok(reply),
            c => Err(RequestError::Code(c)),
        }
    }

    /// A one-shot IM request on the current connection, decoded as `R` (not retried).
    pub async fn call<Q, R>(&self, op: i32, req: &Q) -> Result<R, RequestError>
    where
        Q: prost::Message + serde::Serialize,
        R: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let (tx, rx) = oneshot::channel();
        let codec = self.codec();
        self.command(Command::Call(op, crate::codec::encode(codec, req), tx));
        let p = rx.await.unwrap_or(Err(RequestError::Stopped))?;
        Ok(crate::codec::decode(codec, &p.body)?)
    }

    fn codec(&self) -> crate::codec::Codec {
        self.codec
    }

    /// Joins `room` (`type://id`; empty leaves), kept across reconnects (goim op 12).
    pub fn change_room(&self, room: &str) {
        self.command(Command::Room(room.into()));
    }

    /// Accepts these push ops too (goim op 14), kept across reconnects.
    pub fn subscribe(&self, ops: &[i32]) {
        self.command(Command::Sub(ops.to_vec(), true));
    }

    /// Stops accepting these push ops (goim op 16).
    pub fn unsubscribe(&self, ops: &[i32]) {
        self.command(Command::Sub(ops.to_vec(), false));
    }

    /// Runs a sync pass now (app foreground, reference im.md §5.4 step 4).
    pub fn resync(&self) {
        self.command(Command::Resync);
    }

    /// Delivery counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().expect("stats lock")
    }

    /// Stops the client: the connection closes, pending sends fail with
    /// [`SendError::Stopped`], and the event stream ends after `Stopped`.
    pub fn close(&self) {
        self.command(Command::Close);
    }
}
