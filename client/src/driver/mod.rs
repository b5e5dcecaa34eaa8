//! The task behind [`crate::Client`]: connect (node selection, backoff), auth, sync, then one
//! `select!` loop over the socket, the app's commands and the earliest timer (heartbeat,
//! reply deadlines, gap waits, coalesced marks, send retries, periodic resync). All protocol
//! decisions are the sans-IO core's; this module only moves bytes and time.
//!
//! - `conn`: one connection and how it is opened;
//! - `input`: what the server sends on a live connection;
//! - `outbox`: sends and recalls until a final answer.

mod conn;
mod input;
mod outbox;

use conn::Conn;
pub(crate) use outbox::Outgoing;
use outbox::{OutSend, SendReply};

use crate::backoff::Backoff;
use crate::client::{Config, ConnState, Event, RequestError, SendError, Servers, Stats};
use crate::codec::{self, Codec};
use crate::marks::{MarkKind, Marks};
use crate::state::ImState;
use crate::wire::Incoming;
use crate::{goim, nodes};
use starling_proto::im::v1::{ConvRef, Message, MsgKind, PullReq, SyncReq, TypingReq};
use starling_proto::op;
use starling_proto::packet::Packet;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

type CallReply = oneshot::Sender<Result<Packet, RequestError>>;

/// What the app asks of the driver.
pub(crate) enum Command {
    Send(Outgoing, SendReply),
    Mark(MarkKind, ConvRef, u64),
    Typing(ConvRef, bool),
    Call(i32, Vec<u8>, CallReply),
    Room(String),
    Sub(Vec<i32>, bool),
    Resync,
    Close,
}

/// What a request in flight is for.
enum Pending {
    Send(u64),
    SyncPage,
    Pull { conv: ConvRef, in_sync: bool },
    Mark(MarkKind, ConvRef, u64),
    Call(CallReply),
    Ignore,
}

/// How a connection ended.
enum End {
    /// Reconnect (after backoff); `synced`: the connection got as far as a sync.
    Retry { reason: String, synced: bool },
    /// Do not reconnect.
    Stop(String),
}

/// The open sync pass: pulls to make, then the next page.
#[derive(Default)]
struct SyncPass {
    pulls: VecDeque<PullReq>,
    next: Option<SyncReq>,
    inflight: bool,
}

pub(crate) struct Driver {
    cfg: Config,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    stats: Arc<Mutex<Stats>>,
    state: ImState,
    marks: Marks,
    outbox: BTreeMap<u64, OutSend>,
    next_order: u64,
    rng: fastrand::Rng,
    drop_seqs: HashSet<u64>,
    /// Set by a terminal kick or close: no more reconnects.
    stop: Option<String>,
    heartbeat: Duration,
    backoff: Backoff,
    codec: Option<Codec>,
    /// The largest packet the current connection may send (`ImWelcome.max_body`; 0 unknown).
    max_packet: usize,
}

impl Driver {
    pub(crate) fn new(
        cfg: Config,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        stats: Arc<Mutex<Stats>>,
    ) -> Self {
        Driver {
            drop_seqs: cfg.drop_push_seqs.iter().copied().collect(),
            heartbeat: cfg.heartbeat.unwrap_or(Duration::from_secs(30)),
            backoff: cfg.backoff.unwrap_or_default(),
            codec: cfg.identity.im,
            max_packet: 0,
            cfg,
            cmd_rx,
            events,
            stats,
            state: ImState::new(),
            marks: Marks::default(),
            outbox: BTreeMap::new(),
            next_order: 0,
            rng: fastrand::Rng::new(),
            stop: None,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn show(&self, ms: Vec<Message>) {
        for m in ms {
            if m.kind == MsgKind::Recall as i32 {
                self.emit(Event::Recall(m));
            } else {
                self.emit(Event::Message(m));
            }
        }
    }

    fn update_stats(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.lock().expect("stats lock");
        s.raw = self.state.raw;
        s.raw_duplicates = self.state.raw_duplicates;
        s.gap_pulls = self.state.gap_pulls;
        f(&mut s);
    }

    pub(crate) async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let end = match self.addrs().await {
                Ok(addrs) if !addrs.is_empty() => {
                    let addr = addrs[attempt as usize % addrs.len()].clone();
                    self.emit(Event::State(ConnState::Connecting {
                        attempt,
                        addr: addr.clone(),
                    }));
                    self.session(&addr).await
                }
                Ok(_) => End::Retry {
                    reason: "no node to connect to".into(),
                    synced: false,
                },
                Err(e) => End::Retry {
                    reason: e,
                    synced: false,
                },
            };
            self.state.abort_sync();
            let reason = match end {
                End::Stop(reason) => reason,
                End::Retry { reason, synced } => {
                    if let Some(reason) = self.stop.take() {
                        reason
                    } else {
                        attempt = if synced { 0 } else { attempt.saturating_add(1) };
                        if !synced {
                            self.update_stats(|s| s.failed_attempts += 1);
                        }
                        let wait = self.backoff.delay(attempt.saturating_sub(1), &mut self.rng);
                        info!(%reason, ?wait, "disconnected: reconnecting");
                        self.emit(Event::State(ConnState::Disconnected {
                            reason,
                            retry_in: wait,
                        }));
                        match self.idle_until(Instant::now() + wait).await {
                            Some(reason) => reason,
                            None => continue,
                        }
                    }
                }
            };
            for (_, s) in std::mem::take(&mut self.outbox) {
                if let Some(r) = s.reply {
                    let _ = r.send(Err(SendError::Stopped));
                }
            }
            info!(%reason, "client stopped");
            self.emit(Event::State(ConnState::Stopped { reason }));
            return;
        }
    }

    /// Waits out a backoff while taking commands; `Some(reason)` if told to stop.
    async fn idle_until(&mut self, at: Instant) -> Option<String> {
        loop {
            tokio::select! {
                _ = sleep_until(at) => return None,
                c = self.cmd_rx.recv() => match c {
                    None => return Some("every client handle was dropped".into()),
                    Some(Command::Close) => return Some("closed by the app".into()),
                    Some(c) => self.offline_command(c),
                }
            }
        }
    }

    /// A command while no connection is up: sends queue, marks wait, the rest fails or is
    /// remembered for the next connection.
    fn offline_command(&mut self, c: Command) {
        match c {
            Command::Send(req, reply) => self.enqueue(req, reply),
            Command::Mark(kind, conv, seq) => self.marks.mark(kind, conv, seq),
            Command::Call(_, _, reply) => {
                let _ = reply.send(Err(RequestError::NotConnected));
            }
            Command::Room(room) => self.cfg.identity.room_id = room,
            Command::Sub(ops, on) => self.set_accepts(&ops, on),
            Command::Typing(..) | Command::Resync | Command::Close => {}
        }
    }

    fn set_accepts(&mut self, ops: &[i32], on: bool) {
        let a = &mut self.cfg.identity.accepts;
        a.retain(|o| !ops.contains(o));
        if on {
            a.extend_from_slice(ops);
        }
    }

    async fn addrs(&mut self) -> Result<Vec<String>, String> {
        match &self.cfg.servers {
            Servers::Addrs(a) => Ok(a.clone()),
            Servers::Nodes { logic } => {
                let n = nodes::fetch(logic, &self.cfg.identity.platform)
                    .await
                    .map_err(|e| e.to_string())?;
                if self.cfg.heartbeat.is_none()
                    && let Some(h) = n.heartbeat()
                {
                    self.heartbeat = h;
                }
                if self.cfg.backoff.is_none()
                    && let Some(b) = n.backoff()
                {
                    self.backoff = b;
                }
                Ok(n.addrs(self.cfg.transport))
            }
        }
    }

    async fn session(&mut self, addr: &str) -> End {
        let opened = timeout(self.cfg.connect_timeout, self.open(addr)).await;
        let (mut conn, welcome) = match opened {
            Ok(Ok(c)) => c,
            Ok(Err(reason)) => {
                return End::Retry {
                    reason,
                    synced: false,
                };
            }
            Err(_) => {
                return End::Retry {
                    reason: format!(
                        "{addr}: no auth reply within {:?}",
                        self.cfg.connect_timeout
                    ),
                    synced: false,
                };
            }
        };
        if let Some(reason) = self.stop.clone() {
            return End::Stop(reason);
        }
        self.state.welcome(&welcome);
        self.max_packet = welcome.max_body as usize;
        self.update_stats(|s| s.connects += 1);
        info!(addr, "connected");
        self.emit(Event::State(ConnState::Connected { addr: addr.into() }));
        let end = self.serve(&mut conn).await;
        // Whatever was in flight on this connection is retried or failed.
        for (_, (_, why, _)) in conn.pending.drain() {
            match why {
                Pending::Call(r) => {
                    let _ = r.send(Err(RequestError::Lost));
                }
                Pending::Mark(kind, conv, seq) => self.marks.retry(kind, conv, seq),
                _ => {}
            }
        }
        for s in self.outbox.values_mut() {
            s.inflight = None;
        }
        end
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        let im = self.codec.is_some();
        let mut sync: Option<SyncPass> = None;
        let mut synced = false;
        if im {
            sync = Some(SyncPass {
                next: Some(self.state.begin_sync()),
                ..Default::default()
            });
        } else {
            synced = true;
            self.emit(Event::State(ConnState::Synced));
        }
        let mut beat_at = Instant::now() + self.heartbeat;
        let mut resync_at = Instant::now() + self.state.resync;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            // Drive the sync pass: one request at a time.
            if let Some(pass) = sync.as_mut()
                && !pass.inflight
            {
                let r = if let Some(p) = pass.pulls.pop_front() {
                    let conv = p.conv.expect("pull has a conv");
                    let body = codec::encode(self.codec.expect("IM"), &p);
                    conn.request(
                        op::im::PULL,
                        &body,
                        Pending::Pull {
                            conv,
                            in_sync: true,
                        },
                        self.cfg.reply_timeout,
                    )
                    .await
                } else if let Some(next) = pass.next.take() {
                    let body = codec::encode(self.codec.expect("IM"), &next);
                    conn.request(
                        op::im::SYNC,
                        &body,
                        Pending::SyncPage,
                        self.cfg.reply_timeout,
                    )
                    .await
                } else {
                    sync = None;
                    let held = self.state.end_sync(std::time::Instant::now());
                    self.show(held);
                    self.update_stats(|_| {});
                    if !synced {
                        synced = true;
                        self.emit(Event::State(ConnState::Synced));
                    }
                    resync_at = Instant::now() + self.state.resync;
                    continue;
                };
                if let Err(reason) = r {
                    return End::Retry { reason, synced };
                }
                if let Some(pass) = sync.as_mut() {
                    pass.inflight = true;
                }
            }
            if synced && let Err(reason) = self.flush(conn).await {
                return End::Retry { reason, synced };
            }
            let now = Instant::now();
            let mut wake = beat_at.min(conn.last_rx + self.heartbeat * 2 + self.cfg.reply_timeout);
            if let Some(d) = conn.pending.values().map(|(_, _, d)| *d).min() {
                wake = wake.min(d);
            }
            if synced {
                if sync.is_none() {
                    wake = wake.min(resync_at);
                }
                if let Some(t) = self.state.next_gap_at() {
                    wake = wake.min(Instant::from_std(t));
                }
                if let Some(t) = self.marks.next_at() {
                    wake = wake.min(Instant::from_std(t));
                }
                if let Some(t) = self
                    .outbox
                    .values()
                    .filter(|s| s.inflight.is_none())
                    .map(|s| s.not_before)
                    .min()
                {
                    wake = wake.min(t.max(now));
                }
            }
            buf.clear();
            tokio::select! {
                n = conn.rd.read_buf(&mut buf) => {
                    match n {
                        Ok(0) | Err(_) => {
                            let reason = n.err().map_or("closed by the server".to_string(), |e| e.to_string());
                            return match self.stop.clone() {
                                Some(r) => End::Stop(r),
                                None => End::Retry { reason, synced },
                            };
                        }
                        Ok(_) => {}
                    }
                    conn.last_rx = Instant::now();
                    conn.dec.feed(&buf);
                    loop {
                        let item = match conn.dec.decode() {
                            Ok(Some(i)) => i,
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "bad bytes from the server: reconnecting");
                                return End::Retry { reason: e.to_string(), synced };
                            }
                        };
                        match item {
                            Incoming::Ping(p) => {
                                let pong = conn.enc.pong(&p);
                                if let Err(e) = conn.wr.write_all(&pong).await {
                                    return End::Retry { reason: e.to_string(), synced };
                                }
                            }
                            Incoming::Close => {
                                return match self.stop.clone() {
                                    Some(r) => End::Stop(r),
                                    None => End::Retry { reason: "WebSocket close".into(), synced },
                                };
                            }
                            Incoming::Packet(p) => {
                                if let Err(reason) = self.on_packet(conn, p, &mut sync).await {
                                    return End::Retry { reason, synced };
                                }
                            }
                        }
                    }
                }
                c = self.cmd_rx.recv() => {
                    let r = match c {
                        None => return End::Stop("every client handle was dropped".into()),
                        Some(Command::Close) => return End::Stop("closed by the app".into()),
                        Some(Command::Resync) => {
                            if im && sync.is_none() {
                                sync = Some(SyncPass { next: Some(self.state.begin_sync()), ..Default::default() });
                            }
                            Ok(())
                        }
                        Some(c) => self.online_command(conn, c).await,
                    };
                    if let Err(reason) = r {
                        return End::Retry { reason, synced };
                    }
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if conn.pending.values().any(|(_, _, d)| *d <= now) {
                        return End::Retry { reason: "a reply did not come in time".into(), synced };
                    }
                    if now >= conn.last_rx + self.heartbeat * 2 + self.cfg.reply_timeout {
                        return End::Retry { reason: "the server went silent".into(), synced };
                    }
                    if now >= beat_at {
                        beat_at = now + self.heartbeat;
                        if let Err(reason) = conn.write(op::HEARTBEAT, 0, &[]).await {
                            return End::Retry { reason, synced };
                        }
                    }
                    if synced && sync.is_none() && now >= resync_at && im {
                        debug!("periodic resync");
                        sync = Some(SyncPass { next: Some(self.state.begin_sync()), ..Default::default() });
                    }
                    if synced && let Err(reason) = self.timers(conn).await {
                        return End::Retry { reason, synced };
                    }
                }
            }
        }
    }

    /// Due gap pulls and marks.
    async fn timers(&mut self, conn: &mut Conn) -> Result<(), String> {
        let Some(c) = self.codec else { return Ok(()) };
        let now = std::time::Instant::now();
        for p in self.state.due_gaps(now) {
            let conv = p.conv.expect("pull has a conv");
            debug!(?conv, from = p.from_seq, "gap outlived gap_wait: pulling");
            conn.request(
                op::im::PULL,
                &codec::encode(c, &p),
                Pending::Pull {
                    conv,
                    in_sync: false,
                },
                self.cfg.reply_timeout,
            )
            .await?;
        }
        self.update_stats(|_| {});
        for (kind, req) in self.marks.due(now) {
            let conv = req.conv.expect("mark has a conv");
            conn.request(
                kind.op(),
                &codec::encode(c, &req),
                Pending::Mark(kind, conv, req.seq),
                self.cfg.reply_timeout,
            )
            .await?;
        }
        Ok(())
    }

    async fn online_command(&mut self, conn: &mut Conn, c: Command) -> Result<(), String> {
        match c {
            Command::Send(req, reply) => self.enqueue(req, reply),
            Command::Mark(kind, conv, seq) => self.marks.mark(kind, conv, seq),
            Command::Typing(conv, typing) => {
                if let Some(codec) = self.codec {
                    let body = codec::encode(
                        codec,
                        &TypingReq {
                            conv: Some(conv),
                            typing,
                        },
                    );
                    conn.request(
                        op::im::TYPING,
                        &body,
                        Pending::Ignore,
                        self.cfg.reply_timeout,
                    )
                    .await?;
                }
            }
            Command::Call(op, body, reply) => {
                conn.request(op, &body, Pending::Call(reply), self.cfg.reply_timeout)
                    .await?;
            }
            Command::Room(room) => {
                conn.request(
                    op::CHANGE_ROOM,
                    room.as_bytes(),
                    Pending::Ignore,
                    self.cfg.reply_timeout,
                )
                .await?;
                self.cfg.identity.room_id = room;
            }
            Command::Sub(ops, on) => {
                let o = if on { op::SUB } else { op::UNSUB };
                conn.request(
                    o,
                    &goim::op_list(&ops),
                    Pending::Ignore,
                    self.cfg.reply_timeout,
                )
                .await?;
                self.set_accepts(&ops, on);
            }
            Command::Resync | Command::Close => {}
        }
        Ok(())
    }
}
