//! One IM connection as the scenarios drive it (async, one task each): goim framing over TCP,
//! auth with `"im":"pb"` and a minted `im_token`, requests correlated by the header seq, and
//! pushes that arrive as plain packets or inside op-9 batches. The protocol is the reference
//! client's (`starling/tests/common/im_client.rs`); this one keeps no conversation state, the
//! scenarios account for what they receive themselves.

use prost::Message as _;
use starling_im::token::Tokens;
use starling_proto::im::v1::ImWelcome;
use starling_proto::packet::{self, Packet, PacketError};
use starling_proto::{AuthToken, op, raw};
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A packet larger than this is a broken stream, not a reply (pull pages are ~30 KB).
const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed stream: {0:?}")]
    Malformed(PacketError),
    #[error("closed by the server")]
    Closed,
    #[error("im_token: {0}")]
    Token(#[from] starling_im::token::TokenError),
    #[error("reply body: {0}")]
    Body(#[from] prost::DecodeError),
}

/// Whole packets out of a byte stream, op-9 batches unpacked; an incomplete tail waits.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// Appends `data` and moves every packet it completes to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Packet>) -> Result<(), PacketError> {
        self.buf.extend_from_slice(data);
        let mut used = 0;
        while let Some(p) = packet::decode(&self.buf[used..], MAX_BODY)? {
            used += p.wire_len();
            if p.op == op::RAW {
                for inner in raw::packets(p.body) {
                    out.push(inner?.to_owned());
                }
            } else {
                out.push(p.to_owned());
            }
        }
        self.buf.drain(..used);
        Ok(())
    }
}

/// goim's auth token for an IM connection in protobuf.
pub fn auth_body(uid: i64, key: &str, im_token: &str) -> Vec<u8> {
    AuthToken {
        mid: uid,
        key: key.to_string(),
        platform: "bench".into(),
        im: "pb".into(),
        im_token: im_token.to_string(),
        ..Default::default()
    }
    .to_json()
}

pub struct Conn {
    stream: TcpStream,
    frames: Frames,
    scratch: Vec<u8>,
    /// Packets read but not yet taken.
    ready: Vec<Packet>,
    next_seq: i32,
    pub uid: i64,
}

impl Conn {
    /// Connects (from `source` if given), authenticates `uid` and waits for the op-8 welcome.
    pub async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        uid: i64,
        tokens: &Tokens,
    ) -> Result<(Conn, ImWelcome), ConnError> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream,
            frames: Frames::default(),
            scratch: vec![0; 8192],
            ready: Vec::new(),
            next_seq: 1,
            uid,
        };
        let token = tokens.mint(uid, "bench", 24 * 3600)?;
        let body = auth_body(uid, &format!("im{uid}"), &token);
        let reply = c.request(op::AUTH, &body, |_| {}).await?;
        Ok((c, ImWelcome::decode(reply.body.as_ref())?))
    }

    /// Writes one request; returns its header seq.
    pub async fn send(&mut self, op_code: i32, body: &[u8]) -> Result<i32, ConnError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let p = Packet::new(1, op_code, seq, body.to_vec()).to_bytes();
        self.stream.write_all(&p).await?;
        Ok(seq)
    }

    /// Reads once (waiting for data) and returns the packets that completed.
    pub async fn read(&mut self) -> Result<Vec<Packet>, ConnError> {
        while self.ready.is_empty() {
            let n = self.stream.read(&mut self.scratch).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.frames
                .feed(&self.scratch[..n], &mut self.ready)
                .map_err(ConnError::Malformed)?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Sends `op_code` and waits for its reply (`op_code + 1`, same seq; op 8 for auth);
    /// every other packet meanwhile goes to `other`.
    pub async fn request(
        &mut self,
        op_code: i32,
        body: &[u8],
        mut other: impl FnMut(Packet),
    ) -> Result<Packet, ConnError> {
        let seq = self.send(op_code, body).await?;
        let want = if op_code == op::AUTH {
            op::AUTH_REPLY
        } else {
            op_code + 1
        };
        loop {
            let mut reply = None;
            for p in self.read().await? {
                if reply.is_none() && p.op == want && p.seq == seq {
                    reply = Some(p);
                } else {
                    other(p);
                }
            }
            if let Some(r) = reply {
                return Ok(r);
            }
        }
    }
}

/// A message's content: the sender's clock (`sys::now_ns`) when it sent it, as JSON.
pub fn stamp(sent_ns: u64) -> String {
    format!("{{\"t\":{sent_ns}}}")
}

/// The send time in a content written by [`stamp`]; `None` for anything else (system
/// messages, other clients).
pub fn read_stamp(content: &str) -> Option<u64> {
    content
        .strip_prefix("{\"t\":")?
        .strip_suffix('}')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        assert_eq!(
            read_stamp(&stamp(1_234_567_890_123)),
            Some(1_234_567_890_123)
        );
        assert_eq!(read_stamp("{\"t\":}"), None);
        assert_eq!(read_stamp("{\"text\":\"hi\"}"), None);
        assert_eq!(read_stamp("group created"), None);
    }

    #[test]
    fn frames_at_every_split_and_inside_batches() {
        let mut stream = Packet::new(1, op::AUTH_REPLY, 1, vec![8, 1])
            .to_bytes()
            .to_vec();
        let mut batch = raw::RawBatch::new();
        batch.push(op::im::MSG, b"first");
        batch.push(op::im::EVENT, b"second");
        stream.extend(Packet::new(1, op::RAW, 0, batch.finish().to_vec()).to_bytes());
        stream.extend(Packet::new(1, op::im::SEND_ACK, 7, b"ack".to_vec()).to_bytes());
        let render = |ps: &[Packet]| -> Vec<(i32, i32, Vec<u8>)> {
            ps.iter().map(|p| (p.op, p.seq, p.body.to_vec())).collect()
        };
        let mut whole = Vec::new();
        Frames::default().feed(&stream, &mut whole).unwrap();
        assert_eq!(
            render(&whole),
            vec![
                (op::AUTH_REPLY, 1, vec![8, 1]),
                (op::im::MSG, 0, b"first".to_vec()),
                (op::im::EVENT, 0, b"second".to_vec()),
                (op::im::SEND_ACK, 7, b"ack".to_vec()),
            ]
        );
        for cut in 0..stream.len() {
            let mut f = Frames::default();
            let mut got = Vec::new();
            f.feed(&stream[..cut], &mut got).unwrap();
            f.feed(&stream[cut..], &mut got).unwrap();
            assert_eq!(render(&got), render(&whole), "split at {cut}");
        }
    }

    #[test]
    fn auth_body_opts_in_to_protobuf() {
        let t = AuthToken::parse(&auth_body(42, "im42", "jwt")).unwrap();
        assert_eq!((t.mid, t.key.as_str()), (42, "im42"));
        assert_eq!((t.im.as_str(), t.im_token.as_str()), ("pb", "jwt"));
    }
}
