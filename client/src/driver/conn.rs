//! One connection: the socket halves, the goim codec, the requests in flight by header
//! seq; and how one is opened (TCP connect, WebSocket upgrade, op-7 auth, op-8 welcome).

use super::{Driver, Pending};
use crate::codec;
use crate::wire::{self, Decoder, Encoder, Incoming, Transport};
use starling_proto::im::v1::ImWelcome;
use starling_proto::op;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

pub(super) struct Conn {
    pub(super) rd: OwnedReadHalf,
    pub(super) wr: OwnedWriteHalf,
    pub(super) enc: Encoder,
    pub(super) dec: Decoder,
    pub(super) next_seq: i32,
    pub(super) pending: HashMap<i32, (i32, Pending, Instant)>,
    pub(super) last_rx: Instant,
}

impl Conn {
    pub(super) async fn write(&mut self, op: i32, seq: i32, body: &[u8]) -> Result<(), String> {
        let bytes = self.enc.packet(op, seq, body);
        self.wr
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    pub(super) async fn request(
        &mut self,
        op: i32,
        body: &[u8],
        why: Pending,
        wait: Duration,
    ) -> Result<i32, String> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.write(op, seq, body).await?;
        self.pending
            .insert(seq, (op + 1, why, Instant::now() + wait));
        Ok(seq)
    }
}

impl Driver {
    pub(super) async fn open(&mut self, addr: &str) -> Result<(Conn, ImWelcome), String> {
        let sock = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).ok();
        let (mut rd, mut wr) = sock.into_split();
        let transport = self.cfg.transport;
        let mut dec = Decoder::new(transport);
        if transport == Transport::WebSocket {
            let (req, key) = wire::upgrade_request(addr, "/sub");
            wr.write_all(&req)
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
            let mut buf = Vec::new();
            loop {
                if let Some(len) = wire::upgrade_response(&buf, &key).map_err(|e| e.to_string())? {
                    dec.feed(&buf[len..]);
                    break;
                }
                if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed during the WebSocket upgrade".into());
                }
            }
        }
        let mut conn = Conn {
            rd,
            wr,
            enc: Encoder::new(transport),
            dec,
            next_seq: 2,
            pending: HashMap::new(),
            last_rx: Instant::now(),
        };
        conn.write(op::AUTH, 1, &self.cfg.identity.auth_body())
            .await?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            while let Some(item) = conn.dec.decode().map_err(|e| e.to_string())? {
                match item {
                    Incoming::Packet(p) if p.op == op::AUTH_REPLY => {
                        let welcome = match self.codec {
                            Some(c) if !p.body.is_empty() => {
                                codec::decode(c, &p.body).map_err(|e| format!("auth reply: {e}"))?
                            }
                            _ => ImWelcome::default(),
                        };
                        return Ok((conn, welcome));
                    }
                    Incoming::Packet(p) if p.op == op::im::KICK => self.on_kick(&p.body),
                    Incoming::Close => return Err("closed before the auth reply".into()),
                    _ => {}
                }
            }
            buf.clear();
            if conn
                .rd
                .read_buf(&mut buf)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("closed before the auth reply (token refused?)".into());
            }
            conn.dec.feed(&buf);
        }
    }
}
