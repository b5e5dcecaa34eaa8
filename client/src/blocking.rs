//! A blocking client on std sockets, driven by its caller: [`ImClient::pump`] reads for a
//! while, [`ImClient::send`] retries until a final answer. It is the same contract as the
//! async [`crate::Client`] (reference im.md §5.4) on the same sans-IO core, for tests and
//! tools that script a connection step by step: it exposes the raw request path
//! ([`ImClient::request`]), fault injection ([`ImClient::drop_pushes`],
//! [`ImClient::send_and_drop`]) and the delivery counters of [`ImState`] (through `Deref`).
//!
//! Layout: `conn` (the goim connection, [`Wire`]); here, the IM client over it.

use crate::codec::{self, Codec, DecodeError};
use crate::goim::Identity;
use crate::state::{ConvKey, ImState, SyncStep, key};
use crate::wire::Transport;
use starling_proto::im::v1::{
    ConvRef, Event, ImWelcome, Kick, Message, MsgKind, PullReply, Push, SendAck, SendReq, SyncReply,
};
use starling_proto::op;
use starling_proto::packet::Packet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;

mod conn;

pub use conn::Wire;

/// How long a request waits for its reply before the client treats it as lost.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// How often an authenticated connection heartbeats (goim op 2). The heartbeat keeps the
/// session and the IM device entry alive; comet closes a silent connection.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The connection is gone (closed, reset, unreadable or a reply never came).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("connection closed")]
pub struct Closed;

/// Why a request did not give a usable reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error(transparent)]
    Closed(#[from] Closed),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A reply with a non-zero code where the caller needs 0.
    #[error("op {op} answered code {code}")]
    Code { op: i32, code: i32 },
}

/// How a client authenticates: where, the token's `im` codec and its `im_token`.
#[derive(Clone, Debug)]
pub struct Login {
    pub addr: SocketAddr,
    /// WebSocket (`/sub`) instead of TCP.
    pub ws: bool,
    pub codec: Codec,
    pub mid: i64,
    pub key: String,
    pub platform: String,
    pub im_token: String,
}

impl Login {
    fn identity(&self) -> Identity {
        Identity {
            mid: self.mid,
            key: self.key.clone(),
            platform: self.platform.clone(),
            im: Some(self.codec),
            im_token: self.im_token.clone(),
            ..Default::default()
        }
    }

    fn transport(&self) -> Transport {
        if self.ws {
            Transport::WebSocket
        } else {
            Transport::Tcp
        }
    }
}

/// A blocking IM client: one user on one device.
pub struct ImClient {
    pub login: Login,
    wire: Option<Wire>,
    next_seq: i32,
    /// The auth reply of the current connection.
    pub welcome: ImWelcome,
    state: ImState,
    /// Visible messages per conversation, in seq order.
    log: HashMap<ConvKey, Vec<Message>>,
    /// Every IM event (op 43) received.
    pub events: Vec<Event>,
    /// Every kick (op 45) received.
    pub kicks: Vec<Kick>,
    /// Pushes whose body did not decode (logged and skipped).
    pub bad_pushes: u64,
    /// Fault injection: drop this share (0..1) of incoming op-41 packets, as a lossy path
    /// would; the gap timer must heal it.
    pub drop_pushes: f64,
    /// How long [`ImClient::send`] keeps retrying before it gives up.
    pub send_give_up: Duration,
    rng: fastrand::Rng,
}

impl std::ops::Deref for ImClient {
    type Target = ImState;
    fn deref(&self) -> &ImState {
        &self.state
    }
}

impl std::ops::DerefMut for ImClient {
    fn deref_mut(&mut self) -> &mut ImState {
        &mut self.state
    }
}

impl ImClient {
    /// Connects, authenticates and syncs (§5.4 step 3). `Err` says why not.
    pub fn connect(login: Login) -> Result<ImClient, String> {
        let mut c = ImClient {
            login,
            wire: None,
            next_seq: 1,
            welcome: ImWelcome::default(),
            state: ImState::new(),
            log: HashMap::new(),
            events: Vec::new(),
            kicks: Vec::new(),
            bad_pushes: 0,
            drop_pushes: 0.0,
            send_give_up: Duration::from_secs(60),
            rng: fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15),
        };
        c.reconnect()?;
        Ok(c)
    }

    pub fn codec(&self) -> Codec {
        self.login.codec
    }

    /// Decodes an IM body in this connection's codec.
    pub fn decode<T>(&self, b: &[u8]) -> Result<T, DecodeError>
    where
        T: prost::Message + Default + serde::de::DeserializeOwned,
    {
        codec::decode(self.codec(), b)
    }

    /// Auth only (no sync): `Err` with the reason when the server closes instead of op 8.
    pub fn auth(&mut self) -> Result<(), String> {
        let token = self.login.identity().auth_body();
        let mut w = Wire::connect(self.login.addr, self.login.transport())
            .map_err(|_| "connect failed".to_string())?;
        w.send(op::AUTH, 1, &token)
            .map_err(|_| "closed".to_string())?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let ps = w
                .recv(Duration::from_millis(50))
                .map_err(|_| "closed before the auth reply".to_string())?;
            if let Some(p) = ps.iter().find(|p| p.op == op::AUTH_REPLY) {
                w.authenticated();
                self.welcome = self
                    .decode(&p.body)
                    .map_err(|e| format!("auth reply: {e}"))?;
                self.state.welcome(&self.welcome);
                break;
            }
            if Instant::now() > deadline {
                return Err("no auth reply".into());
            }
        }
        self.wire = Some(w);
        Ok(())
    }

    /// Auth, then the directory sync and the pulls it calls for (§5.4 step 3).
    pub fn reconnect(&mut self) -> Result<(), String> {
        self.wire = None;
        self.auth()?;
        self.sync_all()
            .map(|_| ())
            .map_err(|e| format!("sync after connect: {e}"))
    }

    pub fn is_connected(&self) -> bool {
        self.wire.is_some()
    }

    /// Closes the connection without a word (a dropped network).
    pub fn drop_connection(&mut self) {
        self.wire = None;
    }

    /// Wipes the local cache (the state and the visible messages).
    pub fn clear_cache(&mut self) {
        self.state.clear();
        self.log.clear();
    }

    /// Sends `op` and waits for op + 1 with the same header seq, handling pushes meanwhile.
    pub fn request(&mut self, op: i32, body: &[u8]) -> Result<Packet, Closed> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.wire
            .as_mut()
            .ok_or(Closed)?
            .send(op, seq, body)
            .inspect_err(|_| self.wire = None)?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let ps = self.recv(Duration::from_millis(20))?;
            let mut reply = None;
            for p in ps {
                if p.op == op + 1 && p.seq == seq {
                    reply = Some(p);
                } else {
                    self.on_packet(p);
                }
            }
            if let Some(r) = reply {
                return Ok(r);
            }
            if Instant::now() > deadline {
                self.wire = None;
                return Err(Closed);
            }
        }
    }

    fn recv(&mut self, wait: Duration) -> Result<Vec<Packet>, Closed> {
        match self.wire.as_mut().ok_or(Closed)?.recv(wait) {
            Ok(ps) => Ok(ps),
            Err(c) => {
                self.wire = None;
                self.state.abort_sync();
                Err(c)
            }
        }
    }

    fn show(&mut self, ms: Vec<Message>) {
        for m in ms {
            let k = key(m.conv.as_ref().expect("applied messages have a conv"));
            self.log.entry(k).or_default().push(m);
        }
    }

    fn on_packet(&mut self, p: Packet) {
        match p.op {
            op::im::MSG => {
                if self.drop_pushes > 0.0 && self.rng.f64() < self.drop_pushes {
                    return;
                }
                match self.decode::<Push>(&p.body) {
                    Ok(push) => {
                        let shown = self.state.on_push(push, Instant::now());
                        self.show(shown);
                    }
                    Err(e) => {
                        self.bad_pushes += 1;
                        tracing::warn!(error = %e, "undecodable IM push skipped");
                    }
                }
            }
            op::im::EVENT => match self.decode(&p.body) {
                Ok(e) => self.events.push(e),
                Err(e) => {
                    self.bad_pushes += 1;
                    tracing::warn!(error = %e, "undecodable IM event skipped");
                }
            },
            op::im::KICK => match self.decode(&p.body) {
                Ok(k) => self.kicks.push(k),
                Err(e) => {
                    self.bad_pushes += 1;
                    tracing::warn!(error = %e, "undecodable kick skipped");
                }
            },
            _ => {}
        }
    }

    /// Pulls `conv` forward from `contig + 1` while `has_more`, page `limit`; returns pages.
    pub fn pull_forward(
        &mut self,
        conv: ConvRef,
        limit: u32,
    ) -> Result<Vec<PullReply>, RequestError> {
        let mut pages = Vec::new();
        let mut req = self.state.pull_req(conv);
        req.limit = limit;
        loop {
            let r: PullReply = self.call(op::im::PULL, &req)?;
            if r.code != 0 {
                return Err(RequestError::Code {
                    op: op::im::PULL,
                    code: r.code,
                });
            }
            let pulled = self.state.on_pull_reply(conv, &r, Instant::now());
            self.show(pulled.messages);
            pages.push(r);
            match pulled.more {
                Some(mut next) => {
                    next.limit = limit;
                    req = next;
                }
                None => return Ok(pages),
            }
        }
    }

    /// The directory sync and the pulls it calls for, pushes held meanwhile (gim #46).
    pub fn sync_all(&mut self) -> Result<Vec<SyncReply>, RequestError> {
        let mut pages = Vec::new();
        let mut req = self.state.begin_sync();
        loop {
            let r: SyncReply = match self.call(op::im::SYNC, &req) {
                Ok(r) => r,
                Err(e) => {
                    self.state.abort_sync();
                    return Err(e);
                }
            };
            if r.code != 0 {
                self.state.abort_sync();
                return Err(RequestError::Code {
                    op: op::im::SYNC,
                    code: r.code,
                });
            }
            match self.state.on_sync_reply(&r) {
                SyncStep::Reset(next) => {
                    self.log.clear();
                    req = next;
                }
                SyncStep::Page {
                    pulls,
                    released,
                    next,
                } => {
                    self.show(released);
                    for p in pulls {
                        let conv = p.conv.expect("pull has a conv");
                        if let Err(e) = self.pull_forward(conv, p.limit) {
                            self.state.abort_sync();
                            return Err(e);
                        }
                    }
                    pages.push(r);
                    match next {
                        Some(n) => req = n,
                        None => break,
                    }
                }
            }
        }
        let held = self.state.end_sync(Instant::now());
        self.show(held);
        Ok(pages)
    }

    /// Reads pushes for `d`, pulling any gap older than `gap_wait` (§5.4 step 2).
    pub fn pump(&mut self, d: Duration) -> Result<(), RequestError> {
        let deadline = Instant::now() + d;
        loop {
            for p in self.recv(Duration::from_millis(20))? {
                self.on_packet(p);
            }
            for p in self.state.due_gaps(Instant::now()) {
                let conv = p.conv.expect("pull has a conv");
                self.pull_forward(conv, p.limit)?;
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Sends one message and retries with the same id until a final answer (§5.4 step 1),
    /// reconnecting (and syncing) when the connection drops. Returns every ack it got, the
    /// last one final; `Err` with the acks so far after [`ImClient::send_give_up`].
    pub fn send(
        &mut self,
        conv: ConvRef,
        id: &str,
        content: &str,
    ) -> Result<Vec<SendAck>, Vec<SendAck>> {
        let req = SendReq {
            client_msg_id: id.into(),
            conv: Some(conv),
            content_type: 1,
            content: content.into(),
            ..Default::default()
        };
        let mut acks = Vec::new();
        let mut backoff = Duration::from_millis(20);
        let give_up = Instant::now() + self.send_give_up;
        loop {
            if Instant::now() >= give_up {
                return Err(acks);
            }
            if self.wire.is_none() && self.reconnect().is_err() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            match self.call::<_, SendAck>(op::im::SEND, &req) {
                Ok(ack) => {
                    acks.push(ack.clone());
                    match crate::send::verdict(&ack) {
                        crate::send::Verdict::Sent => {
                            self.own(conv, &req, &ack);
                            return Ok(acks);
                        }
                        crate::send::Verdict::Retry { after } => {
                            std::thread::sleep(after.unwrap_or(Duration::from_millis(10)));
                        }
                        crate::send::Verdict::Refused => return Ok(acks),
                    }
                }
                Err(RequestError::Decode(e)) => {
                    tracing::warn!(error = %e, "undecodable SendAck: retrying the same id");
                    std::thread::sleep(backoff);
                }
                Err(_) => std::thread::sleep(backoff),
            }
        }
    }

    /// Writes a send and drops the connection before reading the ack (a lost ack).
    pub fn send_and_drop(&mut self, conv: ConvRef, id: &str, content: &str) {
        let req = SendReq {
            client_msg_id: id.into(),
            conv: Some(conv),
            content_type: 1,
            content: content.into(),
            ..Default::default()
        };
        let body = codec::encode(self.codec(), &req);
        if let Some(w) = self.wire.as_mut() {
            let _ = w.send(op::im::SEND, 999_999, &body);
        }
        self.wire = None;
    }

    /// The client's own message, known from its ack: applied at its seq like a push.
    fn own(&mut self, conv: ConvRef, req: &SendReq, ack: &SendAck) {
        let shown = self.state.accept(
            Message {
                conv: Some(conv),
                seq: ack.seq,
                msg_id: ack.msg_id,
                sender: self.login.mid,
                client_msg_id: req.client_msg_id.clone(),
                kind: MsgKind::Normal as i32,
                content_type: req.content_type,
                content: req.content.clone(),
                server_ts: ack.server_ts,
                ..Default::default()
            },
            Instant::now(),
        );
        self.show(shown);
    }

    /// A one-shot request in this client's codec, decoded as `R`.
    pub fn call<Q, R>(&mut self, op: i32, req: &Q) -> Result<R, RequestError>
    where
        Q: prost::Message + serde::Serialize,
        R: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let body = codec::encode(self.codec(), req);
        let p = self.request(op, &body)?;
        Ok(self.decode(&p.body)?)
    }

    /// Visible messages of a conversation, in seq order.
    pub fn messages(&self, conv: ConvRef) -> &[Message] {
        self.log.get(&key(&conv)).map_or(&[], Vec::as_slice)
    }

    /// Seqs of a conversation's visible messages.
    pub fn seqs(&self, conv: ConvRef) -> Vec<u64> {
        self.messages(conv).iter().map(|m| m.seq).collect()
    }
}
