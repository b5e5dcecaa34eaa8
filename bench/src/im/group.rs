//! Group: one group of `members` users made through `/im/v1/groups`, every member online;
//! `senders` of them send `rate` messages per second in total (each paced, one in flight)
//! for `duration`. Every member but the sender should get every message: delivery latency
//! over all of them, deliveries per second, loss, duplicates and order per member.

use super::conn::{self, Conn, ConnError, read_stamp, stamp};
use super::{Common, CpuProbe, ServerCpu, client_cpu_ns, open_all, percentiles_us};
use crate::fanout::Percentiles;
use crate::sys::{self, now_ns};
use crate::track::new_histogram;
use anyhow::{Context, bail, ensure};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use starling_proto::im::v1::{ConvKind, ConvRef, Push, SendAck, SendReq};
use starling_proto::op;
use starling_proto::packet::Packet;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    /// The HTTP API (logic.http.bind), for `/im/v1/groups`.
    #[arg(long, default_value = "127.0.0.1:3111")]
    pub http: SocketAddr,
    /// `im.admin_token`.
    #[arg(long, env = "IM_ADMIN_TOKEN", default_value = "bench-admin")]
    pub admin_token: String,
    #[arg(long, default_value_t = 500)]
    pub members: u64,
    /// Members that send (the first ones).
    #[arg(long, default_value_t = 5)]
    pub senders: u64,
    /// Messages per second over all senders.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub quiet: Duration,
}

#[derive(Debug, Serialize)]
pub struct GroupResult {
    pub scenario: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub gid: i64,
    pub members: u64,
    pub senders: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub connect_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: BTreeMap<i32, u64>,
    /// acked × (members − 1): every member but the sender.
    pub expected: u64,
    /// Distinct (member, seq) deliveries of the run's messages.
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// First send to last delivery.
    pub window_s: f64,
    pub deliveries_per_s: f64,
    pub ack_latency_us: Percentiles,
    pub delivery_latency_us: Percentiles,
    pub server_cpu: Option<ServerCpu>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub client_cpu_s: f64,
}

#[derive(Default)]
struct Member {
    seen: HashSet<u64>,
    max: u64,
    duplicates: u64,
    out_of_order: u64,
}

struct Shared {
    gid: i64,
    members: RefCell<Vec<Member>>,
    /// (seq, sender's member index) of every acked message.
    acked: RefCell<Vec<(u64, usize)>>,
    ack_errors: RefCell<BTreeMap<i32, u64>>,
    ack_hist: RefCell<Histogram<u64>>,
    delivery_hist: RefCell<Histogram<u64>>,
    sent: Cell<u64>,
    deliveries: Cell<u64>,
    last_ns: Cell<u64>,
}

impl Shared {
    fn on_packet(&self, member: usize, p: &Packet, now: u64) {
        if p.op != op::im::MSG {
            return;
        }
        let Ok(push) = conn::from_pb::<Push>(&p.body) else {
            return;
        };
        for m in push.messages {
            let in_group = m
                .conv
                .is_some_and(|c| c.kind == ConvKind::Group as i32 && c.id == self.gid);
            // System messages (group created, members added) carry no stamp.
            let (true, Some(sent)) = (in_group, read_stamp(&m.content)) else {
                continue;
            };
            let mut members = self.members.borrow_mut();
            let r = &mut members[member];
            if !r.seen.insert(m.seq) {
                r.duplicates += 1;
                continue;
            }
            if m.seq < r.max {
                r.out_of_order += 1;
            }
            r.max = r.max.max(m.seq);
            let _ = self
                .delivery_hist
                .borrow_mut()
                .record(now.saturating_sub(sent));
            self.deliveries.set(self.deliveries.get() + 1);
            self.last_ns.set(self.last_ns.get().max(now));
        }
    }
}

pub async fn run(args: GroupArgs) -> anyhow::Result<GroupResult> {
    let load1_before = sys::load1();
    let base = args.common.uid_base();
    let tokens = Rc::new(args.common.tokens()?);
    let uids: Vec<i64> = (1..=args.members as i64).map(|i| base + i).collect();
    let gid = make_group(args.http, &args.admin_token, base, &uids).await?;
    let t0 = now_ns();
    let conns = open_all(&args.common, &tokens, &uids).await?;
    let connect_s = (now_ns() - t0) as f64 / 1e9;
    eprintln!(
        "group {gid}: {} members online in {connect_s:.2}s; load {load1_before:.2}",
        conns.len()
    );
    let shared = Rc::new(Shared {
        gid,
        members: RefCell::new((0..uids.len()).map(|_| Member::default()).collect()),
        acked: RefCell::new(Vec::new()),
        ack_errors: RefCell::new(BTreeMap::new()),
        ack_hist: RefCell::new(new_histogram()),
        delivery_hist: RefCell::new(new_histogram()),
        sent: Cell::new(0),
        deliveries: Cell::new(0),
        last_ns: Cell::new(0),
    });
    // Let the group's own pushes (created, CONV_ADDED) settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = CpuProbe::start(&args.common);
    let client_before = client_cpu_ns();
    let start = now_ns();
    let end = start + args.duration.as_nanos() as u64;
    let senders = args.senders.clamp(1, args.members) as usize;
    let period = (senders as f64 * 1e9 / args.rate.max(1e-3)) as u64;
    let mut tasks = Vec::new();
    let mut readers = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        if i < senders {
            let first = start + (i as f64 * 1e9 / args.rate.max(1e-3)) as u64;
            tasks.push(tokio::task::spawn_local(member(
                c,
                i,
                Some((first, period, end)),
                shared.clone(),
            )));
        } else {
            readers.push(tokio::task::spawn_local(member(c, i, None, shared.clone())));
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    while now_ns() < end {
        tick.tick().await;
        eprintln!(
            "sent {}, deliveries {}",
            shared.sent.get(),
            shared.deliveries.get()
        );
    }
    // Senders keep reading after `end`; wait until every delivery is in or `quiet` passes.
    let members = uids.len() as u64;
    let mut last = (shared.deliveries.get(), now_ns());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let expected = shared.acked.borrow().len() as u64 * (members - 1);
        let d = shared.deliveries.get();
        if d >= expected && now_ns() > end + 200_000_000 {
            break;
        }
        if d != last.0 {
            last = (d, now_ns());
        } else if now_ns() - last.1 > args.quiet.as_nanos() as u64 {
            break;
        }
    }
    let server_cpu = probe.finish();
    let client_cpu_s = (client_cpu_ns() - client_before) as f64 / 1e9;
    for t in tasks.into_iter().chain(readers) {
        t.abort();
    }

    let acked = shared.acked.borrow();
    let ms = shared.members.borrow();
    let lost: u64 = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            acked
                .iter()
                .filter(|(seq, from)| *from != i && !m.seen.contains(seq))
                .count() as u64
        })
        .sum();
    let deliveries = shared.deliveries.get();
    let window_s = shared.last_ns.get().saturating_sub(start) as f64 / 1e9;
    let result = GroupResult {
        scenario: "im-group",
        label: args.common.label.clone(),
        load1_before,
        gid,
        members,
        senders: senders as u64,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        connect_s,
        sent: shared.sent.get(),
        acked: acked.len() as u64,
        ack_errors: shared.ack_errors.borrow().clone(),
        expected: acked.len() as u64 * (members - 1),
        deliveries,
        lost,
        duplicates: ms.iter().map(|m| m.duplicates).sum(),
        out_of_order: ms.iter().map(|m| m.out_of_order).sum(),
        window_s,
        deliveries_per_s: deliveries as f64 / window_s.max(1e-9),
        ack_latency_us: percentiles_us(&shared.ack_hist.borrow()),
        delivery_latency_us: percentiles_us(&shared.delivery_hist.borrow()),
        server_cpu_us_per_delivery: server_cpu
            .as_ref()
            .map(|c| c.total_s * 1e6 / deliveries.max(1) as f64),
        server_cpu,
        client_cpu_s,
    };
    eprintln!(
        "group of {members}, {} msg/s: {} deliveries ({:.0}/s), delivery p50 {:.2} ms p99 {:.2} ms max {:.1} ms; ack p99 {:.2} ms; lost {}, duplicates {}, out of order {}; {} of {} sends acknowledged, other answers {:?} (lost counts acknowledged messages only)",
        args.rate,
        result.deliveries,
        result.deliveries_per_s,
        result.delivery_latency_us.p50 / 1e3,
        result.delivery_latency_us.p99 / 1e3,
        result.delivery_latency_us.max / 1e3,
        result.ack_latency_us.p99 / 1e3,
        result.lost,
        result.duplicates,
        result.out_of_order,
        result.acked,
        result.sent,
        result.ack_errors
    );
    Ok(result)
}

/// One member: reads pushes; a sender (`plan`: first due, period, end) also sends on time.
async fn member(
    mut c: Conn,
    index: usize,
    plan: Option<(u64, u64, u64)>,
    shared: Rc<Shared>,
) -> Result<(), ConnError> {
    if let Some((mut due, period, end)) = plan {
        let conv = Some(ConvRef {
            kind: ConvKind::Group as i32,
            id: shared.gid,
        });
        let mut n = 0u64;
        while due < end {
            let now = now_ns();
            if now < due {
                // Conn::read is cancel-safe: bytes read stay in its buffer.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_nanos(due - now)) => {}
                    r = c.read() => {
                        let now = now_ns();
                        for p in r? {
                            shared.on_packet(index, &p, now);
                        }
                        continue;
                    }
                }
            }
            let t = now_ns();
            let req = SendReq {
                client_msg_id: format!("{}-{n}", c.uid),
                conv,
                content_type: 1,
                content: stamp(t),
                ..Default::default()
            };
            n += 1;
            due += period;
            shared.sent.set(shared.sent.get() + 1);
            let reply = c
                .request(op::im::SEND, &conn::pb(&req), |p| {
                    shared.on_packet(index, &p, now_ns())
                })
                .await?;
            let done = now_ns();
            let ack = conn::from_pb::<SendAck>(&reply.body)?;
            if ack.code == 0 {
                let _ = shared.ack_hist.borrow_mut().record(done - t);
                shared.acked.borrow_mut().push((ack.seq, index));
            } else {
                *shared.ack_errors.borrow_mut().entry(ack.code).or_default() += 1;
            }
        }
    }
    loop {
        let packets = c.read().await?;
        let now = now_ns();
        for p in packets {
            shared.on_packet(index, &p, now);
        }
    }
}

/// Creates the group (gid = `base`, owner the first uid) and adds members in calls of ≤ 1000
/// uids. Returns the gid.
pub(crate) async fn make_group(
    http: SocketAddr,
    admin_token: &str,
    base: i64,
    uids: &[i64],
) -> anyhow::Result<i64> {
    let s = |u: &[i64]| u.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    let first = &uids[1..uids.len().min(1000)];
    let (status, reply) = post(
        http,
        "/im/v1/groups",
        admin_token,
        &json!({"gid": base.to_string(), "name": "bench", "owner": uids[0].to_string(),
                "members": s(first), "history": "all"}),
    )
    .await?;
    // The API's envelope is goim's, {"code", "data"}; an unknown path is HTTP 200 with
    // {"code":-404}, so the code is what tells.
    if status != 200 || reply["code"] != 0 {
        bail!("POST /im/v1/groups: {status} {reply} (is the /im/v1 API merged?)");
    }
    let gid = match &reply["data"]["gid"] {
        Value::String(g) => g.parse().context("gid")?,
        Value::Number(n) => n.as_i64().context("gid")?,
        _ => base,
    };
    for chunk in uids[1 + first.len()..].chunks(1000) {
        let (status, reply) = post(
            http,
            &format!("/im/v1/groups/{gid}/members"),
            admin_token,
            &json!({ "uids": s(chunk) }),
        )
        .await?;
        if status != 200 {
            bail!("adding members: {status} {reply}");
        }
    }
    Ok(gid)
}

/// One HTTP/1.1 POST with a JSON body on its own connection; returns the status and the
/// JSON reply (`Null` if the body is not JSON).
pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    bearer: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let body = serde_json::to_vec(body)?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    parse_response(&reply).context("malformed HTTP reply")
}

/// One HTTP/1.1 GET on its own connection; the body as text when the status is 200.
pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP reply")?;
    let head = String::from_utf8_lossy(&reply[..end]);
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {head}"
    );
    Ok(String::from_utf8_lossy(&reply[end + 4..]).into_owned())
}

/// Status and JSON body of a whole `Content-Length` HTTP/1.1 response.
fn parse_response(reply: &[u8]) -> Option<(u16, Value)> {
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&reply[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &reply[end + 4..];
    Some((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_give_status_and_json() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"gid\":\"77\"}";
        assert_eq!(parse_response(r), Some((200, json!({"gid": "77"}))));
        let r = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_response(r), Some((404, Value::Null)));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
