//! P2P over XMPP: `pairs` senders each send `<message type='chat'>` to their own receiver,
//! all available; one message in flight per sender (the message, `<r/>`, wait for the `<a h>`
//! that covers it, the next). `--rate 0` sends as fast as the acks come back; `--rate R`
//! spreads R messages per second over the senders at a fixed period, staggered. The same
//! shape as `starling-bench im p2p` (`crate::im::p2p`).

use super::stream::{El, Xmpp, XmppError};
use super::{Common, Order, body, open_all, read_body};
use crate::fanout::Percentiles;
use crate::im::{CpuProbe, ServerCpu, client_cpu_ns, percentiles_us, progress, settle};
use crate::sys::{self, now_ns};
use crate::track::new_histogram;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct P2pArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sender/receiver pairs (2 × pairs streams).
    #[arg(long, default_value_t = 500)]
    pub pairs: u64,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
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
    pub server: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub pairs: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub connect_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Acked, never delivered to the receiver.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// From the first send to the last ack or delivery.
    pub window_s: f64,
    /// Messages acked and delivered, per second of the window.
    pub msgs_per_s: f64,
    pub ack_latency_us: Percentiles,
    pub delivery_latency_us: Percentiles,
    /// Paced runs: sends that left more than 1 ms after their slot.
    pub late_sends: u64,
    pub server_cpu: Option<ServerCpu>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub client_cpu_s: f64,
}

struct Shared {
    ack_hist: RefCell<Histogram<u64>>,
    delivery_hist: RefCell<Histogram<u64>>,
    /// Per pair: how many the sender had acknowledged.
    acked: RefCell<Vec<u64>>,
    receivers: RefCell<Vec<Order>>,
    sent: Cell<u64>,
    delivered: Cell<u64>,
    late_sends: Cell<u64>,
    last_event_ns: Cell<u64>,
}

pub async fn run(args: P2pArgs) -> anyhow::Result<P2pResult> {
    let load1_before = sys::load1();
    let c = &args.common;
    let base = c.uid_base();
    let n = args.pairs as usize;
    let senders: Vec<i64> = (0..n as i64).map(|i| base + 1 + i).collect();
    let receivers: Vec<i64> = (0..n as i64).map(|i| base + 1 + n as i64 + i).collect();
    let t0 = now_ns();
    let rconns = open_all(c, &receivers).await?;
    let sconns = open_all(c, &senders).await?;
    let connect_s = (now_ns() - t0) as f64 / 1e9;
    eprintln!(
        "{n} XMPP pairs connected in {connect_s:.2}s (users from u{base}); load {load1_before:.2}"
    );
    let shared = Rc::new(Shared {
        ack_hist: RefCell::new(new_histogram()),
        delivery_hist: RefCell::new(new_histogram()),
        acked: RefCell::new(vec![0; n]),
        receivers: RefCell::new(vec![Order::default(); n]),
        sent: Cell::new(0),
        delivered: Cell::new(0),
        late_sends: Cell::new(0),
        last_event_ns: Cell::new(0),
    });
    let readers: Vec<_> = rconns
        .into_iter()
        .enumerate()
        .map(|(i, x)| tokio::task::spawn_local(receive(x, i, shared.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let probe = CpuProbe::of(c.pid, &[]);
    let client_before = client_cpu_ns();
    let start = now_ns();
    let end = start + args.duration.as_nanos() as u64;
    let period = (args.rate > 0.0).then(|| (n as f64 * 1e9 / args.rate) as u64);
    let mut tasks = Vec::with_capacity(n);
    for (i, x) in sconns.into_iter().enumerate() {
        let first = start + period.map_or(0, |_| (i as f64 * 1e9 / args.rate) as u64);
        let to = c.jid(receivers[i]);
        tasks.push(tokio::task::spawn_local(send(
            x,
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
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        eprintln!(
            "{} senders stopped early: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }
    let acked_total: u64 = shared.acked.borrow().iter().sum();
    settle(|| shared.delivered.get(), || acked_total, args.quiet).await;
    let server_cpu = probe.finish();
    let client_cpu_s = (client_cpu_ns() - client_before) as f64 / 1e9;
    for r in readers {
        r.abort();
    }
    let acked = shared.acked.borrow();
    let recv = shared.receivers.borrow();
    // A sender's first `acked` messages (k = 0..acked) were acknowledged.
    let lost: u64 = acked
        .iter()
        .zip(recv.iter())
        .map(|(&a, r)| (0..a).filter(|k| !r.seen.contains(k)).count() as u64)
        .sum();
    let window_s = shared.last_event_ns.get().saturating_sub(start) as f64 / 1e9;
    let both = acked_total.saturating_sub(lost);
    let result = P2pResult {
        scenario: "xmpp-p2p",
        server: "ejabberd",
        label: c.label.clone(),
        load1_before,
        pairs: args.pairs,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        connect_s,
        sent: shared.sent.get(),
        acked: acked_total,
        delivered: shared.delivered.get(),
        lost,
        duplicates: recv.iter().map(|r| r.duplicates).sum(),
        out_of_order: recv.iter().map(|r| r.out_of_order).sum(),
        window_s,
        msgs_per_s: both as f64 / window_s.max(1e-9),
        ack_latency_us: percentiles_us(&shared.ack_hist.borrow()),
        delivery_latency_us: percentiles_us(&shared.delivery_hist.borrow()),
        late_sends: shared.late_sends.get(),
        server_cpu_us_per_msg: server_cpu
            .as_ref()
            .map(|c| c.total_s * 1e6 / both.max(1) as f64),
        server_cpu,
        client_cpu_s,
    };
    eprintln!(
        "XMPP P2P {} pairs, rate {}: {:.0} msg/s acked+delivered over {:.1}s; ack p50 {:.2} ms p99 {:.2} ms max {:.1} ms; delivery p50 {:.2} ms p99 {:.2} ms; lost {}, duplicates {}, out of order {}",
        result.pairs,
        args.rate,
        result.msgs_per_s,
        result.window_s,
        result.ack_latency_us.p50 / 1e3,
        result.ack_latency_us.p99 / 1e3,
        result.ack_latency_us.max / 1e3,
        result.delivery_latency_us.p50 / 1e3,
        result.delivery_latency_us.p99 / 1e3,
        result.lost,
        result.duplicates,
        result.out_of_order
    );
    Ok(result)
}

/// One sender: a message and `<r/>`, the `<a h>` covering it, the next; paced when `period`
/// is set.
async fn send(
    mut x: Xmpp,
    pair: usize,
    to: String,
    first: u64,
    period: Option<u64>,
    end: u64,
    shared: Rc<Shared>,
) -> Result<(), XmppError> {
    let mut due = first;
    for k in 0u64.. {
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
        shared.sent.set(shared.sent.get() + 1);
        x.send_stanza(&format!(
            "<message to='{to}' id='m{k}' type='chat'><body>{}</body></message>",
            body(pair, k)
        ))
        .await?;
        x.request_ack().await?;
        x.until_acked(|_| {}).await?;
        let done = now_ns();
        let _ = shared.ack_hist.borrow_mut().record(done - t);
        shared.acked.borrow_mut()[pair] = k + 1;
        shared
            .last_event_ns
            .set(shared.last_event_ns.get().max(done));
        if let Some(p) = period {
            due += p;
        }
    }
    Ok(())
}

/// One receiver: every chat message from its sender, accounted for.
async fn receive(mut x: Xmpp, pair: usize, shared: Rc<Shared>) {
    while let Ok(el) = x.next().await {
        let now = now_ns();
        let Some((from, k, sent)) = chat_body(&el) else {
            continue;
        };
        if from != pair || !shared.receivers.borrow_mut()[pair].record(k) {
            continue;
        }
        let _ = shared
            .delivery_hist
            .borrow_mut()
            .record(now.saturating_sub(sent));
        shared.delivered.set(shared.delivered.get() + 1);
        shared
            .last_event_ns
            .set(shared.last_event_ns.get().max(now));
    }
}

/// The bench body of a `<message>`, if `el` is one.
pub fn chat_body(el: &El) -> Option<(usize, u64, u64)> {
    if el.name != "message" {
        return None;
    }
    read_body(&el.child("body")?.text)
}
