//! One IM connection as the scenarios drive it (async, one task each): auth with `"im":"pb"`
//! and a minted `im_token`, requests correlated by the header seq, pushes as plain packets or
//! inside op-9 batches. The protocol pieces (framing, op-9 unpacking, the auth token, IM body
//! encoding) are `starling-client`'s; this one keeps no conversation state, the scenarios
//! account for what they receive themselves (with timestamps), which is what is bench-specific.

use starling_client::Identity;
use starling_client::codec::{self, Codec, DecodeError};
use starling_client::wire::{Decoder, Encoder, Incoming, Transport, WireError};
use starling_im::token::Tokens;
use starling_proto::im::v1::ImWelcome;
use starling_proto::op;
use starling_proto::packet::Packet;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed stream: {0}")]
    Malformed(#[from] WireError),
    #[error("closed by the server")]
    Closed,
    #[error("im_token: {0}")]
    Token(#[from] starling_im::token::TokenError),
    #[error("reply body: {0}")]
    Body(#[from] DecodeError),
}

/// An IM request body in protobuf, the bench's codec.
pub fn pb<T: prost::Message + serde::Serialize>(m: &T) -> Vec<u8> {
    codec::encode(Codec::Protobuf, m)
}

/// A protobuf IM reply or push body.
pub fn from_pb<T>(body: &[u8]) -> Result<T, DecodeError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    codec::decode(Codec::Protobuf, body)
}

/// goim's auth token for an IM connection in protobuf, joining goim room `room` (`type://id`;
/// empty joins none).
pub fn auth_body(uid: i64, key: &str, room: &str, im_token: &str) -> Vec<u8> {
    Identity {
        mid: uid,
        key: key.to_string(),
        platform: "bench".into(),
        room_id: room.to_string(),
        im: Some(Codec::Protobuf),
        im_token: im_token.to_string(),
        ..Default::default()
    }
    .auth_body()
}

pub struct Conn {
    stream: TcpStream,
    decoder: Decoder,
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
        Conn::open_in_room(addr, source, uid, "", tokens).await
    }

    /// [`Conn::open`], joining goim room `room` (`type://id`; empty joins none) at auth.
    pub async fn open_in_room(
        addr: SocketAddr,
        source: Option<IpAddr>,
        uid: i64,
        room: &str,
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
            decoder: Decoder::new(Transport::Tcp),
            scratch: vec![0; 8192],
            ready: Vec::new(),
            next_seq: 1,
            uid,
        };
        let token = tokens.mint(uid, "bench", 24 * 3600)?;
        let body = auth_body(uid, &format!("im{uid}"), room, &token);
        let reply = c.request(op::AUTH, &body, |_| {}).await?;
        Ok((c, from_pb::<ImWelcome>(&reply.body)?))
    }

    /// This end's address (what the server logs as the connection's peer).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Writes one request; returns its header seq.
    pub async fn send(&mut self, op_code: i32, body: &[u8]) -> Result<i32, ConnError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let p = Encoder::new(Transport::Tcp).packet(op_code, seq, body);
        self.stream.write_all(&p).await?;
        Ok(seq)
    }

    /// Half-closes the socket (FIN): the server sees the close at once, before a new login
    /// of the same device replaces this one; the descriptor goes when the `Conn` is dropped.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }

    /// Reads once (waiting for data) and returns the packets that completed.
    pub async fn read(&mut self) -> Result<Vec<Packet>, ConnError> {
        while self.ready.is_empty() {
            let n = self.stream.read(&mut self.scratch).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.decoder.feed(&self.scratch[..n]);
            while let Some(item) = self.decoder.decode()? {
                if let Incoming::Packet(p) = item {
                    self.ready.push(p);
                }
            }
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
    use starling_proto::AuthToken;

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
    fn auth_body_opts_in_to_protobuf() {
        let t = AuthToken::parse(&auth_body(42, "im42", "live://7", "jwt")).unwrap();
        assert_eq!((t.mid, t.key.as_str()), (42, "im42"));
        assert_eq!(t.room_id, "live://7");
        assert_eq!((t.im.as_str(), t.im_token.as_str()), ("pb", "jwt"));
    }
}
