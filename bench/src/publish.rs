//! The publisher: one connection that sends the run's messages, either as fast as the server
//! accepts them (at most `window` unacknowledged) or on a fixed schedule. "Accepted" is each
//! peer's own acknowledgement: goim's HTTP envelope with code 0, Redis's `PUBLISH` count,
//! NATS's `+OK` (verbose mode), MQTT's `PUBACK` (QoS 1).

use crate::sys::now_ns;
use crate::wire::{self, BENCH_OP, Peer, ROOM_ID, ROOM_TYPE};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct PubPlan {
    pub peer: Peer,
    /// Where pushes go: Starling's HTTP API, or the broker itself.
    pub addr: SocketAddr,
    pub room_mode: bool,
    pub subscribers: u64,
    pub messages: u32,
    pub size: usize,
    /// What fills each message after its stamp.
    pub fill: wire::Fill,
    /// Messages per second; 0 sends as fast as accepted.
    pub rate: f64,
    /// Unacknowledged messages allowed when `rate` is 0.
    pub window: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PubStats {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub first_send_ns: u64,
    pub last_send_ns: u64,
    pub last_accept_ns: u64,
}

/// The bytes that publish message `seq` (stamped now).
fn request(plan: &PubPlan, seq: u32) -> Vec<u8> {
    let body = wire::stamp_filled(seq, now_ns(), plan.size, plan.fill);
    let topic = wire::topic(plan.room_mode, u64::from(seq) % plan.subscribers.max(1));
    match plan.peer {
        Peer::Starling | Peer::StarlingWs | Peer::StarlingWsDeflate => {
            let path = if plan.room_mode {
                format!("/goim/push/room?operation={BENCH_OP}&type={ROOM_TYPE}&room={ROOM_ID}")
            } else {
                format!("/goim/push/keys?operation={BENCH_OP}&keys={topic}")
            };
            let mut out = format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend(body);
            out
        }
        Peer::Redis => wire::resp(&[b"PUBLISH", topic.as_bytes(), &body]),
        Peer::Nats => {
            let mut out = format!("PUB {topic} {}\r\n", body.len()).into_bytes();
            out.extend(body);
            out.extend_from_slice(b"\r\n");
            out
        }
        Peer::Mqtt => wire::mqtt_publish(&topic, (seq % 65535 + 1) as u16, &body),
    }
}

/// Bytes sent once after connecting, and whether an acknowledgement of them comes first.
fn greeting(peer: Peer) -> Vec<u8> {
    match peer {
        Peer::Nats => {
            b"CONNECT {\"verbose\":true,\"pedantic\":false,\"name\":\"bench-pub\"}\r\n".to_vec()
        }
        Peer::Mqtt => wire::mqtt_connect("bench-pub"),
        _ => Vec::new(),
    }
}

pub async fn publish(plan: PubPlan, progress: impl Fn(u64)) -> anyhow::Result<PubStats> {
    let stream = TcpStream::connect(plan.addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let greet = greeting(plan.peer);
    if !greet.is_empty() {
        wr.write_all(&greet).await?;
    }
    let window = if plan.rate > 0.0 {
        Semaphore::MAX_PERMITS
    } else {
        plan.window.max(1)
    };
    let permits = Arc::new(Semaphore::new(window));
    let acks = tokio::task::spawn_local(read_acks(plan.peer, rd, permits.clone(), plan.messages));

    let mut stats = PubStats::default();
    let start = now_ns();
    for seq in 0..plan.messages {
        if plan.rate > 0.0 {
            let due = start + (f64::from(seq) * 1e9 / plan.rate) as u64;
            let now = now_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            }
        }
        permits.acquire().await?.forget();
        let req = request(&plan, seq);
        let t = now_ns();
        if stats.first_send_ns == 0 {
            stats.first_send_ns = t;
        }
        wr.write_all(&req).await?;
        stats.last_send_ns = t;
        stats.sent += 1;
        progress(stats.sent);
    }
    let (accepted, rejected, last_accept_ns) = acks.await??;
    stats.accepted = accepted;
    stats.rejected = rejected;
    stats.last_accept_ns = last_accept_ns;
    Ok(stats)
}

/// Reads acknowledgements until `messages` have been answered; returns (accepted, rejected,
/// time of the last).
async fn read_acks(
    peer: Peer,
    mut rd: OwnedReadHalf,
    permits: Arc<Semaphore>,
    messages: u32,
) -> anyhow::Result<(u64, u64, u64)> {
    let mut buf = Vec::with_capacity(65536);
    let mut chunk = vec![0u8; 65536];
    let (mut accepted, mut rejected, mut last) = (0u64, 0u64, 0u64);
    // NATS answers CONNECT with INFO and +OK; MQTT with CONNACK. Those are not acks.
    let mut skip_first_ok = peer == Peer::Nats;
    while accepted + rejected < u64::from(messages) {
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("publisher connection closed after {accepted} acks");
        }
        buf.extend_from_slice(&chunk[..n]);
        let (used, ok, bad) = match peer {
            Peer::Starling | Peer::StarlingWs | Peer::StarlingWsDeflate => http_acks(&buf)?,
            Peer::Redis => line_acks(&buf, b':', b'-'),
            Peer::Nats => {
                let (used, mut ok, bad) = line_acks(&buf, b'+', b'-');
                if skip_first_ok && ok > 0 {
                    ok -= 1;
                    skip_first_ok = false;
                }
                (used, ok, bad)
            }
            Peer::Mqtt => {
                let mut ok = 0;
                let used = wire::mqtt_acks(&buf, &mut ok)?;
                (used, ok as u64, 0)
            }
        };
        buf.drain(..used);
        if ok + bad > 0 {
            accepted += ok;
            rejected += bad;
            last = now_ns();
            permits.add_permits((ok + bad) as usize);
        }
    }
    Ok((accepted, rejected, last))
}

/// Counts lines starting with `ok` or `bad`; other lines (NATS INFO, PING) are skipped.
fn line_acks(buf: &[u8], ok: u8, bad: u8) -> (usize, u64, u64) {
    let (mut used, mut good, mut failed) = (0, 0, 0);
    while let Some(i) = buf[used..].windows(2).position(|w| w == b"\r\n") {
        match buf[used] {
            c if c == ok => good += 1,
            c if c == bad => failed += 1,
            _ => {}
        }
        used += i + 2;
    }
    (used, good, failed)
}

/// Counts whole HTTP responses; a response whose envelope code is not 0 is a rejection.
fn http_acks(buf: &[u8]) -> anyhow::Result<(usize, u64, u64)> {
    let (mut used, mut good, mut failed) = (0, 0, 0);
    loop {
        let rest = &buf[used..];
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = std::str::from_utf8(&rest[..end])?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if rest.len() < end + 4 + len {
            break;
        }
        let body = &rest[end + 4..end + 4 + len];
        if head.starts_with("HTTP/1.1 200") && body.windows(8).any(|w| w == b"\"code\":0") {
            good += 1;
        } else {
            failed += 1;
        }
        used += end + 4 + len;
    }
    Ok((used, good, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_counted_per_peer() {
        let http = b"HTTP/1.1 200 OK\r\ncontent-length: 23\r\n\r\n{\"code\":0,\"message\":\"\"}\
                     HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n{\"code\":-500,\"message\":\"queue\"}\
                     HTTP/1.1 200";
        let (used, ok, bad) = http_acks(http).unwrap();
        assert_eq!((ok, bad), (1, 1));
        assert_eq!(&http[used..], b"HTTP/1.1 200");
        assert_eq!(
            line_acks(b":3\r\n:0\r\n-ERR x\r\n:1", b':', b'-'),
            (16, 2, 1)
        );
        assert_eq!(
            line_acks(b"INFO {}\r\n+OK\r\nPING\r\n", b'+', b'-'),
            (20, 1, 0)
        );
    }

    #[test]
    fn key_mode_addresses_subscribers_in_turn() {
        let plan = PubPlan {
            peer: Peer::Redis,
            addr: "127.0.0.1:1".parse().unwrap(),
            room_mode: false,
            subscribers: 3,
            messages: 10,
            size: 16,
            fill: wire::Fill::Dots,
            rate: 0.0,
            window: 1,
        };
        let r = request(&plan, 4);
        assert!(
            r.windows(2).any(|w| w == b"k1"),
            "{:?}",
            String::from_utf8_lossy(&r)
        );
    }
}
