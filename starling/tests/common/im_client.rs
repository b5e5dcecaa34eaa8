//! The reference IM client of the acceptance tests (reference im.md §9): it implements the
//! client contract of §5.4 exactly — send with retry under the same `client_msg_id`, a
//! `contig` mark per conversation with gap wait and pull, directory sync after every connect
//! with pushes held meanwhile — and counts raw deliveries (duplicates included) apart from
//! visible ones (after dedup by `(conv, seq)`).
#![allow(dead_code)]

use starling_proto::im::v1::{
    ConvKind, ConvRef, Event, ImWelcome, Kick, Message, PullReply, PullReq, Push, SendAck, SendReq,
    SyncReply, SyncReq, pull_req::Direction,
};
use starling_proto::op::{self, Codec};
use starling_proto::packet::{self, Packet};
use starling_proto::{AuthToken, ws};
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a request waits for its reply before the client treats it as lost.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// How often an authenticated client heartbeats (goim op 2). Clients must: the heartbeat keeps
/// the session and the IM device entry alive (`redis.expire`), and comet closes a silent
/// connection.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A blocking goim connection (TCP, or WebSocket with masked binary frames).
pub struct Wire {
    sock: TcpStream,
    ws: bool,
    buf: Vec<u8>,
    /// When the last heartbeat went; `None` until authenticated (then `recv` heartbeats).
    beat_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Closed;

impl Wire {
    pub fn connect(addr: SocketAddr, ws: bool) -> Result<Wire, Closed> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| Closed)?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        let mut w = Wire {
            sock,
            ws: false,
            buf: Vec::new(),
            beat_at: None,
        };
        if ws {
            w.sock
                .write_all(
                    b"GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .map_err(|_| Closed)?;
            let deadline = Instant::now() + REPLY_WAIT;
            while !w.buf.windows(4).any(|x| x == b"\r\n\r\n") {
                if !w.fill()? && Instant::now() > deadline {
                    return Err(Closed);
                }
            }
            let end = w.buf.windows(4).position(|x| x == b"\r\n\r\n").unwrap() + 4;
            assert!(w.buf.starts_with(b"HTTP/1.1 101 "), "upgrade refused");
            w.buf.drain(..end);
            w.ws = true;
        }
        Ok(w)
    }

    pub fn send(&mut self, op: i32, seq: i32, body: &[u8]) -> Result<(), Closed> {
        let p = Packet::new(1, op, seq, body.to_vec()).to_bytes();
        let bytes = if self.ws {
            ws::encode_client_frame(ws::Opcode::Binary, true, [3, 1, 4, 1], &p)
        } else {
            p
        };
        self.sock.write_all(&bytes).map_err(|_| Closed)
    }

    /// Reads what is there; `Ok(false)` when nothing came within the socket timeout.
    fn fill(&mut self) -> Result<bool, Closed> {
        let mut tmp = [0u8; 65536];
        match self.sock.read(&mut tmp) {
            Ok(0) => Err(Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(_) => Err(Closed),
        }
    }

    /// The packets that arrived within about `wait` (op-9 batches unpacked).
    pub fn recv(&mut self, wait: Duration) -> Result<Vec<Packet>, Closed> {
        if self.beat_at.is_some_and(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            self.beat_at = Some(Instant::now());
            self.send(op::HEARTBEAT, 0, &[])?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let out = self.parse()?;
            if !out.is_empty() {
                return Ok(out);
            }
            if !self.fill()? && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn parse(&mut self) -> Result<Vec<Packet>, Closed> {
        let mut out = Vec::new();
        loop {
            let p = if self.ws {
                let Some(h) = ws::decode_frame(
                    &mut self.buf.clone(),
                    usize::MAX >> 1,
                    ws::Masking::Optional,
                )
                .map_err(|_| Closed)?
                else {
                    break;
                };
                let payload = self.buf[h.header_len..h.frame_len()].to_vec();
                self.buf.drain(..h.frame_len());
                match h.opcode {
                    ws::Opcode::Close => return if out.is_empty() { Err(Closed) } else { Ok(out) },
                    ws::Opcode::Binary => packet::decode_exact(&payload, usize::MAX >> 1)
                        .map_err(|_| Closed)?
                        .to_owned(),
                    _ => continue,
                }
            } else {
                let Some(p) = packet::decode(&self.buf, usize::MAX >> 1).map_err(|_| Closed)?
                else {
                    break;
                };
                let p = p.to_owned();
                self.buf.drain(..p.as_ref().wire_len());
                p
            };
            if p.op == op::RAW {
                out.extend(starling_proto::raw::packets(&p.body).map(|i| i.unwrap().to_owned()));
            } else {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// What one conversation looks like to this client.
#[derive(Debug, Default)]
pub struct ConvState {
    /// Every seq in `floor..=contig` is held.
    pub contig: u64,
    /// Pushes above `contig + 1`, waiting for the gap to close.
    held: BTreeMap<u64, Message>,
    gap_since: Option<Instant>,
    /// Visible messages in seq order.
    pub messages: Vec<Message>,
}

/// How a client authenticates: the token's `im` codec and its `im_token`.
#[derive(Clone)]
pub struct Login {
    pub addr: SocketAddr,
    pub ws: bool,
    pub codec: Codec,
    pub mid: i64,
    pub key: String,
    pub platform: String,
    pub im_token: String,
}

pub struct ImClient {
    pub login: Login,
    wire: Option<Wire>,
    next_seq: i32,
    pub welcome: ImWelcome,
    pub convs: HashMap<(i32, i64), ConvState>,
    /// Every message packet's messages, duplicates included.
    pub raw: u64,
    /// Deliveries dropped as already held.
    pub raw_duplicates: u64,
    pub events: Vec<Event>,
    pub kicks: Vec<Kick>,
    pub since: i64,
    pub epoch: u64,
    pub gap_wait: Duration,
    /// Gap pulls made.
    pub gap_pulls: u64,
    /// Drop this share (0..1) of incoming op-41 packets, as a lossy path would (T5).
    pub drop_pushes: f64,
    rng: u64,
    syncing: bool,
    held_pushes: Vec<Message>,
}

fn key(r: &ConvRef) -> (i32, i64) {
    (r.kind, r.id)
}

impl ImClient {
    pub fn connect(login: Login) -> Result<ImClient, String> {
        let mut c = ImClient {
            login,
            wire: None,
            next_seq: 1,
            welcome: ImWelcome::default(),
            convs: HashMap::new(),
            raw: 0,
            raw_duplicates: 0,
            events: Vec::new(),
            kicks: Vec::new(),
            since: 0,
            epoch: 0,
            gap_wait: Duration::from_secs(1),
            gap_pulls: 0,
            drop_pushes: 0.0,
            rng: 0x9E37_79B9_7F4A_7C15,
            syncing: false,
            held_pushes: Vec::new(),
        };
        c.reconnect()?;
        Ok(c)
    }

    pub fn codec(&self) -> Codec {
        self.login.codec
    }

    fn encode<T: prost::Message + serde::Serialize>(&self, m: &T) -> Vec<u8> {
        match self.codec() {
            Codec::Protobuf => m.encode_to_vec(),
            Codec::Json => serde_json::to_vec(m).unwrap(),
        }
    }

    pub fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(&self, b: &[u8]) -> T {
        match self.codec() {
            Codec::Protobuf => T::decode(b).expect("a protobuf body"),
            Codec::Json => serde_json::from_slice(b)
                .unwrap_or_else(|e| panic!("a JSON body: {e}: {}", String::from_utf8_lossy(b))),
        }
    }

    /// Auth only (no sync): `Err` with the reason when the server closes instead of op 8.
    pub fn auth(&mut self) -> Result<(), String> {
        let l = &self.login;
        let token = AuthToken {
            mid: l.mid,
            key: l.key.clone(),
            platform: l.platform.clone(),
            im: match l.codec {
                Codec::Protobuf => "pb",
                Codec::Json => "json",
            }
            .into(),
            im_token: l.im_token.clone(),
            ..Default::default()
        }
        .to_json();
        let mut w = Wire::connect(l.addr, l.ws).map_err(|_| "connect failed".to_string())?;
        w.send(op::AUTH, 1, &token)
            .map_err(|_| "closed".to_string())?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let ps = w
                .recv(Duration::from_millis(50))
                .map_err(|_| "closed before the auth reply".to_string())?;
            if let Some(p) = ps.iter().find(|p| p.op == op::AUTH_REPLY) {
                w.beat_at = Some(Instant::now());
                self.welcome = self.decode(&p.body);
                self.gap_wait = Duration::from_millis(u64::from(self.welcome.gap_wait_ms));
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
            .map_err(|_| "closed during sync".to_string())
    }

    pub fn is_connected(&self) -> bool {
        self.wire.is_some()
    }

    /// Closes the connection without a word (a dropped network).
    pub fn drop_connection(&mut self) {
        self.wire = None;
    }

    /// Sends `op` and waits for op + 1 with the same header seq, handling pushes meanwhile.
    pub fn request(&mut self, op: i32, body: &[u8]) -> Result<Packet, Closed> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.wire
            .as_mut()
            .ok_or(Closed)?
            .send(op, seq, body)
            .inspect_err(|_| self.wire = None)?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let ps = match self
                .wire
                .as_mut()
                .ok_or(Closed)?
                .recv(Duration::from_millis(20))
            {
                Ok(ps) => ps,
                Err(c) => {
                    self.wire = None;
                    return Err(c);
                }
            };
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

    fn on_packet(&mut self, p: Packet) {
        match p.op {
            op::im::MSG => {
                if self.drop_pushes > 0.0 && self.coin() < self.drop_pushes {
                    return;
                }
                let push: Push = self.decode(&p.body);
                for m in push.messages {
                    self.raw += 1;
                    if self.syncing {
                        self.held_pushes.push(m);
                    } else {
                        self.accept(m);
                    }
                }
            }
            op::im::EVENT => {
                let e: Event = self.decode(&p.body);
                self.events.push(e);
            }
            op::im::KICK => {
                let k: Kick = self.decode(&p.body);
                self.kicks.push(k);
            }
            _ => {}
        }
    }

    fn coin(&mut self) -> f64 {
        // xorshift64*: deterministic per client, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Applies a message at its seq (§5.4 step 2).
    fn accept(&mut self, m: Message) {
        let k = key(m.conv.as_ref().expect("conv"));
        let st = self.convs.entry(k).or_default();
        if m.seq <= st.contig || st.held.contains_key(&m.seq) {
            self.raw_duplicates += 1;
            return;
        }
        st.held.insert(m.seq, m);
        while let Some(next) = st.held.remove(&(st.contig + 1)) {
            st.contig += 1;
            st.messages.push(next);
        }
        st.gap_since = if st.held.is_empty() {
            None
        } else {
            st.gap_since.or(Some(Instant::now()))
        };
    }

    /// Raises a conversation's floor: nothing below it exists for this user.
    fn floor(&mut self, k: (i32, i64), floor: u64) {
        let st = self.convs.entry(k).or_default();
        if floor > 0 && st.contig < floor - 1 {
            st.contig = floor - 1;
            while let Some(next) = st.held.remove(&(st.contig + 1)) {
                st.contig += 1;
                st.messages.push(next);
            }
            st.held.retain(|s, _| *s > floor - 1);
        }
    }

    /// Pulls `conv` forward from `contig + 1` while `has_more`, page `limit`; returns pages.
    pub fn pull_forward(&mut self, conv: ConvRef, limit: u32) -> Result<Vec<PullReply>, Closed> {
        let mut pages = Vec::new();
        loop {
            let from = self.convs.get(&key(&conv)).map_or(0, |s| s.contig) + 1;
            let req = PullReq {
                conv: Some(conv),
                dir: Direction::Forward as i32,
                from_seq: from,
                limit,
            };
            let p = self.request(op::im::PULL, &self.encode(&req))?;
            let r: PullReply = self.decode(&p.body);
            assert_eq!(r.code, 0, "pull: {r:?}");
            self.floor(key(&conv), r.floor_seq);
            for m in r.messages.clone() {
                self.accept(m);
            }
            let more = r.has_more;
            pages.push(r);
            if !more {
                return Ok(pages);
            }
        }
    }

    /// The directory sync and the pulls it calls for, pushes held meanwhile (gim #46).
    pub fn sync_all(&mut self) -> Result<Vec<SyncReply>, Closed> {
        self.syncing = true;
        let out = self.sync_pass();
        self.syncing = false;
        for m in std::mem::take(&mut self.held_pushes) {
            self.accept(m);
        }
        out
    }

    fn sync_pass(&mut self) -> Result<Vec<SyncReply>, Closed> {
        let mut pages = Vec::new();
        let mut cursor = String::new();
        loop {
            let req = SyncReq {
                since: self.since,
                cursor: cursor.clone(),
                limit: 100,
                epoch: self.epoch,
            };
            let p = self.request(op::im::SYNC, &self.encode(&req))?;
            let r: SyncReply = self.decode(&p.body);
            assert_eq!(r.code, 0, "sync: {r:?}");
            if r.reset {
                self.convs.clear();
                self.since = 0;
                self.epoch = r.epoch;
                cursor.clear();
                continue;
            }
            self.epoch = r.epoch;
            for h in &r.convs {
                let conv = h.conv.unwrap();
                self.floor(key(&conv), h.floor_seq);
                if h.last_seq > self.convs.get(&key(&conv)).map_or(0, |s| s.contig) {
                    self.pull_forward(conv, 100)?;
                }
            }
            let (more, next, ts) = (r.has_more, r.cursor.clone(), r.server_ts);
            pages.push(r);
            if !more {
                self.since = ts;
                return Ok(pages);
            }
            cursor = next;
        }
    }

    /// Reads pushes for `d`, pulling any gap older than `gap_wait` (§5.4 step 2).
    pub fn pump(&mut self, d: Duration) -> Result<(), Closed> {
        let deadline = Instant::now() + d;
        loop {
            let ps = match self
                .wire
                .as_mut()
                .ok_or(Closed)?
                .recv(Duration::from_millis(20))
            {
                Ok(ps) => ps,
                Err(c) => {
                    self.wire = None;
                    return Err(c);
                }
            };
            for p in ps {
                self.on_packet(p);
            }
            self.heal_gaps()?;
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    fn heal_gaps(&mut self) -> Result<(), Closed> {
        let late: Vec<(i32, i64)> = self
            .convs
            .iter()
            .filter(|(_, s)| s.gap_since.is_some_and(|t| t.elapsed() >= self.gap_wait))
            .map(|(k, _)| *k)
            .collect();
        for (kind, id) in late {
            self.gap_pulls += 1;
            self.pull_forward(ConvRef { kind, id }, 100)?;
        }
        Ok(())
    }

    /// Sends one message and retries with the same id until a final answer (§5.4 step 1),
    /// reconnecting (and syncing) when the connection drops. Returns every ack it got.
    pub fn send(&mut self, conv: ConvRef, id: &str, content: &str) -> Vec<SendAck> {
        let req = SendReq {
            client_msg_id: id.into(),
            conv: Some(conv),
            content_type: 1,
            content: content.into(),
            ..Default::default()
        };
        let mut acks = Vec::new();
        let mut backoff = Duration::from_millis(20);
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < give_up,
                "no final answer to {id} in 60 s: {acks:?}"
            );
            if self.wire.is_none() && self.reconnect().is_err() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            match self.request(op::im::SEND, &self.encode(&req)) {
                Ok(p) => {
                    let ack: SendAck = self.decode(&p.body);
                    acks.push(ack.clone());
                    match ack.code {
                        0 => {
                            self.own(conv, &req, &ack);
                            return acks;
                        }
                        429 | 503 | 504 => {
                            let wait = Duration::from_millis(u64::from(ack.retry_after_ms.max(10)));
                            std::thread::sleep(wait);
                        }
                        _ => return acks,
                    }
                }
                Err(Closed) => std::thread::sleep(backoff),
            }
        }
    }

    /// Writes a send and drops the connection before reading the ack (T1).
    pub fn send_and_drop(&mut self, conv: ConvRef, id: &str, content: &str) {
        let req = SendReq {
            client_msg_id: id.into(),
            conv: Some(conv),
            content_type: 1,
            content: content.into(),
            ..Default::default()
        };
        let body = self.encode(&req);
        if let Some(w) = self.wire.as_mut() {
            let _ = w.send(op::im::SEND, 999_999, &body);
        }
        self.wire = None;
    }

    /// The client's own message, known from its ack: applied at its seq like a push.
    fn own(&mut self, conv: ConvRef, req: &SendReq, ack: &SendAck) {
        self.accept(Message {
            conv: Some(conv),
            seq: ack.seq,
            msg_id: ack.msg_id,
            sender: self.login.mid,
            client_msg_id: req.client_msg_id.clone(),
            kind: starling_proto::im::v1::MsgKind::Normal as i32,
            content_type: req.content_type,
            content: req.content.clone(),
            server_ts: ack.server_ts,
            ..Default::default()
        });
    }

    /// A one-shot request in this client's codec, decoded as `R`.
    pub fn call<Q, R>(&mut self, op: i32, req: &Q) -> Result<R, Closed>
    where
        Q: prost::Message + serde::Serialize,
        R: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let body = self.encode(req);
        let p = self.request(op, &body)?;
        Ok(self.decode(&p.body))
    }

    /// Visible messages of a conversation.
    pub fn messages(&self, conv: ConvRef) -> &[Message] {
        self.convs
            .get(&key(&conv))
            .map_or(&[], |s| s.messages.as_slice())
    }

    /// Seqs of a conversation's visible messages.
    pub fn seqs(&self, conv: ConvRef) -> Vec<u64> {
        self.messages(conv).iter().map(|m| m.seq).collect()
    }
}

pub fn p2p(peer: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    }
}

pub fn group(gid: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::Group as i32,
        id: gid,
    }
}
