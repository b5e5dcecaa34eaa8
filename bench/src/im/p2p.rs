//! P2P: `pairs` senders each send to their own receiver, all online; one request in flight
//! per sender (send, wait for the ack, send the next). `--rate 0` sends as fast as the acks
//! come back (throughput); `--rate R` spreads R messages per second over the senders, each at
//! a fixed period with staggered starts (latency at a load). Every message carries its send
//! time; receivers account for loss (acked, never delivered), duplicates and order.

use super::conn::{self, Conn, ConnError, read_stamp, stamp};
use super::{
    Common, CpuProbe, ServerCpu, client_cpu_ns, open_all, percentiles_us, progress, settle,
};
use crate::fanout::Percentiles;
use crate::sys::{self, now_ns};
use crate::track::new_histogram;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use starling_proto::im::v1::{ConvKind, ConvRef, Push, SendAck, SendReq};
use starling_proto::op;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct P2pArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sender/receiver pairs (2 × pairs connections).
    #[arg(long, default_value_t = 1000)]
    pub pairs: u64,
    /// How long the senders send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Messages per second over all senders; 0 = each as fast as its acks come back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// After the last ack, how long without a delivery before the missing count as lost.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub quiet: Duration,
}

#[derive(Debug, Serialize)]
pub struct P2pResult {
    pub scenario: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub pairs: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub connect_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Replies with a code other than 0, by code.
    pub ack_errors: BTreeMap<i32, u64>,
    /// Distinct messages delivered to their receiver.
    pub delivered: u64,
    /// Acked, never delivered to the receiver.
    pub lost: u64,
    /// The same seq delivered twice to a receiver.
    pub duplicates: u64,
    /// A seq below one the receiver already had.
    pub out_of_order: u64,
    /// Delivered, but the sender got no ack for it.
    pub delivered_not_acked: u64,
    /// From the first send to the last ack or delivery.
    pub window_s: f64,
    /// Messages acked and delivered, per second of the window.
    pub msgs_per_s: f64,
    pub ack_latency_us: Percentiles,
    pub delivery_latency_us: Percentiles,
    /// Where an ack's time goes, split at the message's `server_ts` (the store writer's wall
    /// clock when it began the batch, in ms, so each side is off by up to 1 ms): from the
    /// send to the batch's start (comet, logic, the writer's queue), and from there to the
    /// ack (apply, fdatasync, delivery hand-over, the reply's way back).
    pub send_to_batch_us: Percentiles,
    pub batch_to_ack_us: Percentiles,
    /// From the batch's start to the receiver's read.
    pub batch_to_delivery_us: Percentiles,
    /// Paced runs: sends that left more than 1 ms after their slot (the previous ack was late).
    pub late_sends: u64,
    /// Acks per distinct `server_ts` millisecond: messages committed together in one store
    /// batch (a batch stamps its messages with one clock reading), an estimate.
    pub acks_per_commit_ms: f64,
    pub server_cpu: Option<ServerCpu>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub client_cpu_s: f64,
}

#[derive(Default)]
struct Receiver {
    seen: HashSet<u64>,
    max: u64,
    duplicates: u64,
    out_of_order: u64,
}

struct Shared {
    ack_hist: RefCell<Histogram<u64>>,
    delivery_hist: RefCell<Histogram<u64>>,
    stages: Stages,
    /// Per pair: the acked seqs.
    acked: RefCell<Vec<Vec<u64>>>,
    receivers: RefCell<Vec<Receiver>>,
    ack_errors: RefCell<BTreeMap<i32, u64>>,
    server_ts: RefCell<BTreeMap<i64, u32>>,
    sent: Cell<u64>,
    delivered: Cell<u64>,
    late_sends: Cell<u64>,
    last_event_ns: Cell<u64>,
}

pub async fn run(args: P2pArgs) -> anyhow::Result<P2pResult> {
    let load1_before = sys::load1();
    let base = args.common.uid_base();
    let tokens = Rc::new(args.common.tokens()?);
    let n = args.pairs as usize;
    let senders: Vec<i64> = (0..n as i64).map(|i| base + 1 + i).collect();
    let receivers: Vec<i64> = (0..n as i64).map(|i| base + 1 + n as i64 + i).collect();
    let t0 = now_ns();
    // Receivers first: a message to a receiver not yet online would reach it by sync only.
    let rconns = open_all(&args.common, &tokens, &receivers).await?;
    let sconns = open_all(&args.common, &tokens, &senders).await?;
    let connect_s = (now_ns() - t0) as f64 / 1e9;
    eprintln!(
        "{} pairs connected in {connect_s:.2}s (uids from {base}); load {load1_before:.2}",
        n
    );
    let shared = Rc::new(Shared {
        ack_hist: RefCell::new(new_histogram()),
        delivery_hist: RefCell::new(new_histogram()),
        stages: Stages::default(),
        acked: RefCell::new(vec![Vec::new(); n]),
        receivers: RefCell::new((0..n).map(|_| Receiver::default()).collect()),
        ack_errors: RefCell::new(BTreeMap::new()),
        server_ts: RefCell::new(BTreeMap::new()),
        sent: Cell::new(0),
        delivered: Cell::new(0),
        late_sends: Cell::new(0),
        last_event_ns: Cell::new(0),
    });
    let readers: Vec<_> = rconns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::task::spawn_local(receive(c, i, shared.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let probe = CpuProbe::start(&args.common);
    let client_before = client_cpu_ns();
    let start = now_ns();
    let end = start + args.duration.as_nanos() as u64;
    let period = (args.rate > 0.0).then(|| (n as f64 * 1e9 / args.rate) as u64);
    let mut tasks = Vec::with_capacity(n);
    for (i, c) in sconns.into_iter().enumerate() {
        let first = start + period.map_or(0, |_| (i as f64 * 1e9 / args.rate) as u64);
        let to = receivers[i];
        tasks.push(tokio::task::spawn_local(send(
            c,
            i,
            to,
            first,
            period,
            end,
            shared.clone(),
        )));
    }
    progress(
        Duration::from_secs(1),
        || tasks.iter().any(|t| !t.is_finished()),
        &shared.sent,
        &shared.delivered,
    )
    .await;
    let mut send_failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            send_failures.push(e.to_string());
        }
    }
    if !send_failures.is_empty() {
        eprintln!(
            "{} senders stopped early: {:?}",
            send_failures.len(),
            &send_failures[..send_failures.len().min(3)]
        );
    }
    let acked_total: u64 = shared.acked.borrow().iter().map(|a| a.len() as u64).sum();
    // Wait for what is still on its way: everything in, or nothing new for `quiet`.
    settle(|| shared.delivered.get(), || acked_total, args.quiet).await;
    let server_cpu = probe.finish();
    let client_cpu_s = (client_cpu_ns() - client_before) as f64 / 1e9;
    for r in readers {
        r.abort();
    }

    let acked = shared.acked.borrow();
    let recv = shared.receivers.borrow();
    let mut lost = 0;
    let mut delivered_not_acked = 0;
    for (a, r) in acked.iter().zip(recv.iter()) {
        lost += a.iter().filter(|s| !r.seen.contains(s)).count() as u64;
        let a: HashSet<u64> = a.iter().copied().collect();
        delivered_not_acked += r.seen.iter().filter(|s| !a.contains(s)).count() as u64;
    }
    let window_s = shared.last_event_ns.get().saturating_sub(start) as f64 / 1e9;
    let delivered = shared.delivered.get();
    let both = acked_total.saturating_sub(lost);
    let server_ts = shared.server_ts.borrow();
    let result = P2pResult {
        scenario: "im-p2p",
        label: args.common.label.clone(),
        load1_before,
        pairs: args.pairs,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        connect_s,
        sent: shared.sent.get(),
        acked: acked_total,
        ack_errors: shared.ack_errors.borrow().clone(),
        delivered,
        lost,
        duplicates: recv.iter().map(|r| r.duplicates).sum(),
        out_of_order: recv.iter().map(|r| r.out_of_order).sum(),
        delivered_not_acked,
        window_s,
        msgs_per_s: both as f64 / window_s.max(1e-9),
        ack_latency_us: percentiles_us(&shared.ack_hist.borrow()),
        delivery_latency_us: percentiles_us(&shared.delivery_hist.borrow()),
        send_to_batch_us: percentiles_us(&shared.stages.send_to_batch.borrow()),
        batch_to_ack_us: percentiles_us(&shared.stages.batch_to_ack.borrow()),
        batch_to_delivery_us: percentiles_us(&shared.stages.batch_to_delivery.borrow()),
        late_sends: shared.late_sends.get(),
        acks_per_commit_ms: acked_total as f64 / server_ts.len().max(1) as f64,
        server_cpu_us_per_msg: server_cpu
            .as_ref()
            .map(|c| c.total_s * 1e6 / both.max(1) as f64),
        server_cpu,
        client_cpu_s,
    };
    eprintln!(
        "P2P {} pairs, rate {}: {:.0} msg/s acked+delivered over {:.1}s; ack p50 {:.2} ms p99 {:.2} ms max {:.1} ms; delivery p50 {:.2} ms p99 {:.2} ms; lost {}, duplicates {}, out of order {}; {} of {} sends acknowledged, other answers {:?} (lost counts acknowledged messages only)",
        result.pairs,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "as fast as acked".into()
        },
        result.msgs_per_s,
        result.window_s,
        result.ack_latency_us.p50 / 1e3,
        result.ack_latency_us.p99 / 1e3,
        result.ack_latency_us.max / 1e3,
        result.delivery_latency_us.p50 / 1e3,
        result.delivery_latency_us.p99 / 1e3,
        result.lost,
        result.duplicates,
        result.out_of_order,
        result.acked,
        result.sent,
        result.ack_errors
    );
    eprintln!(
        "  split at the batch's server_ts: send→batch p50 {:.1} p99 {:.1} ms, batch→ack p50 {:.1} p99 {:.1} ms, batch→delivery p50 {:.1} p99 {:.1} ms; ~{:.0} acks per commit ms",
        result.send_to_batch_us.p50 / 1e3,
        result.send_to_batch_us.p99 / 1e3,
        result.batch_to_ack_us.p50 / 1e3,
        result.batch_to_ack_us.p99 / 1e3,
        result.batch_to_delivery_us.p50 / 1e3,
        result.batch_to_delivery_us.p99 / 1e3,
        result.acks_per_commit_ms
    );
    Ok(result)
}

/// Latency split at the message's `server_ts` (see [`P2pResult::send_to_batch_us`]).
struct Stages {
    send_to_batch: RefCell<Histogram<u64>>,
    batch_to_ack: RefCell<Histogram<u64>>,
    batch_to_delivery: RefCell<Histogram<u64>>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            send_to_batch: RefCell::new(new_histogram()),
            batch_to_ack: RefCell::new(new_histogram()),
            batch_to_delivery: RefCell::new(new_histogram()),
        }
    }
}

fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0) * 1_000_000
}

/// Records `ns`, clamped to the histogram's floor (a stage the ms stamp rounds to zero).
fn record(h: &RefCell<Histogram<u64>>, ns: u64) {
    let _ = h.borrow_mut().record(ns.max(1_000));
}

/// One sender: a message, its ack, the next; paced when `period` is set.
async fn send(
    mut c: Conn,
    pair: usize,
    to: i64,
    first: u64,
    period: Option<u64>,
    end: u64,
    shared: Rc<Shared>,
) -> Result<(), ConnError> {
    let conv = Some(ConvRef {
        kind: ConvKind::P2p as i32,
        id: to,
    });
    let mut due = first;
    for n in 0u64.. {
        if period.is_some() {
            let now = now_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            } else if now - due > 1_000_000 {
                shared.late_sends.set(shared.late_sends.get() + 1);
            }
        }
        let t = now_ns();
        if t >= end {
            return Ok(());
        }
        let wall = sys::wall_ns();
        let req = SendReq {
            client_msg_id: format!("{}-{n}", c.uid),
            conv,
            content_type: 1,
            content: stamp(t),
            ..Default::default()
        };
        shared.sent.set(shared.sent.get() + 1);
        let reply = c.request(op::im::SEND, &conn::pb(&req), |_| {}).await?;
        let done = now_ns();
        let ack = conn::from_pb::<SendAck>(&reply.body)?;
        if ack.code == 0 {
            let _ = shared.ack_hist.borrow_mut().record(done - t);
            let batch = ms_to_ns(ack.server_ts);
            record(&shared.stages.send_to_batch, batch.saturating_sub(wall));
            let ack_wall = wall + (done - t);
            record(&shared.stages.batch_to_ack, ack_wall.saturating_sub(batch));
            shared.acked.borrow_mut()[pair].push(ack.seq);
            *shared
                .server_ts
                .borrow_mut()
                .entry(ack.server_ts)
                .or_default() += 1;
            shared
                .last_event_ns
                .set(shared.last_event_ns.get().max(done));
        } else {
            *shared.ack_errors.borrow_mut().entry(ack.code).or_default() += 1;
            if ack.retry_after_ms > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(ack.retry_after_ms))).await;
            }
        }
        if let Some(p) = period {
            due += p;
        }
    }
    Ok(())
}

/// One receiver: every op-41 push, accounted for.
async fn receive(mut c: Conn, pair: usize, shared: Rc<Shared>) {
    while let Ok(packets) = c.read().await {
        let now = now_ns();
        let wall = sys::wall_ns();
        for p in packets {
            if p.op != op::im::MSG {
                continue;
            }
            let Ok(push) = conn::from_pb::<Push>(&p.body) else {
                continue;
            };
            for m in push.messages {
                let Some(sent) = read_stamp(&m.content) else {
                    continue;
                };
                let mut recv = shared.receivers.borrow_mut();
                let r = &mut recv[pair];
                if !r.seen.insert(m.seq) {
                    r.duplicates += 1;
                    continue;
                }
                if m.seq < r.max {
                    r.out_of_order += 1;
                }
                r.max = r.max.max(m.seq);
                let _ = shared
                    .delivery_hist
                    .borrow_mut()
                    .record(now.saturating_sub(sent));
                let batch = ms_to_ns(m.server_ts);
                record(&shared.stages.batch_to_delivery, wall.saturating_sub(batch));
                shared.delivered.set(shared.delivered.get() + 1);
                shared
                    .last_event_ns
                    .set(shared.last_event_ns.get().max(now));
            }
        }
    }
}
