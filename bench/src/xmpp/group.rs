//! Group over XMPP: one MUC room (XEP-0045) with `members` occupants, every one joined and
//! available; the first `senders` send `rate` groupchat messages per second in total (each
//! paced, one in flight: the message, `<r/>`, the `<a h>` covering it). The room reflects a
//! message to every occupant; every member but the sender should get every message. The same
//! shape as `starling-bench im group`.

use super::p2p::chat_body;
use super::stream::{El, Xmpp, XmppError};
use super::{Common, Order, body};
use crate::fanout::Percentiles;
use crate::im::{CpuProbe, ServerCpu, client_cpu_ns, percentiles_us, progress, settle};
use crate::sys::{self, now_ns};
use crate::track::new_histogram;
use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

const NS_MUC: &str = "http://jabber.org/protocol/muc";

#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    /// The MUC service's domain (ejabberd's `mod_muc` host).
    #[arg(long, default_value = "conference.bench.local")]
    pub muc: String,
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
    pub server: &'static str,
    pub label: String,
    pub load1_before: f64,
    pub room: String,
    pub members: u64,
    pub senders: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub connect_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// acked × (members − 1): every member but the sender.
    pub expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub window_s: f64,
    pub deliveries_per_s: f64,
    pub ack_latency_us: Percentiles,
    pub delivery_latency_us: Percentiles,
    pub server_cpu: Option<ServerCpu>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub client_cpu_s: f64,
}

struct Shared {
    /// Per member, per sender.
    orders: RefCell<Vec<Vec<Order>>>,
    /// Per sender: how many it had acknowledged.
    acked: RefCell<Vec<u64>>,
    ack_hist: RefCell<Histogram<u64>>,
    delivery_hist: RefCell<Histogram<u64>>,
    sent: Cell<u64>,
    deliveries: Cell<u64>,
    last_ns: Cell<u64>,
    /// Messages count from here (set when every member has joined).
    start_ns: Cell<u64>,
}

impl Shared {
    fn on_element(&self, member: usize, el: &El, now: u64) {
        if el.attr("type") != Some("groupchat") {
            return;
        }
        let Some((from, k, sent)) = chat_body(el) else {
            return;
        };
        if from == member || sent < self.start_ns.get() {
            return;
        }
        let mut orders = self.orders.borrow_mut();
        let Some(o) = orders[member].get_mut(from) else {
            return;
        };
        if !o.record(k) {
            return;
        }
        let _ = self
            .delivery_hist
            .borrow_mut()
            .record(now.saturating_sub(sent));
        self.deliveries.set(self.deliveries.get() + 1);
        self.last_ns.set(self.last_ns.get().max(now));
    }
}

/// Joins `room` as `nick`, with no history; returns once the room's own presence for the
/// member came back. The first occupant creates the room and accepts its default
/// configuration (an instant room, XEP-0045 §10.1.2).
async fn join(x: &mut Xmpp, room: &str, nick: &str) -> Result<(), XmppError> {
    let me = format!("{room}/{nick}");
    x.send_stanza(&format!(
        "<presence to='{me}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    ))
    .await?;
    loop {
        let el = x.next().await?;
        if el.name != "presence" || el.attr("from") != Some(me.as_str()) {
            continue;
        }
        if el.attr("type") == Some("error") {
            return Err(XmppError::Unexpected {
                step: "MUC join",
                got: "presence type='error'".into(),
                detail: format!("{el:?}"),
            });
        }
        let created = el.children.iter().any(|x| {
            x.name == "x"
                && x.children
                    .iter()
                    .any(|s| s.name == "status" && s.attr("code") == Some("201"))
        });
        if created {
            x.send_stanza(&format!(
                "<iq type='set' to='{room}' id='cfg'><query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ))
            .await?;
            loop {
                let r = x.next().await?;
                if r.name == "iq" && r.attr("id") == Some("cfg") {
                    if r.attr("type") != Some("result") {
                        return Err(XmppError::Unexpected {
                            step: "MUC instant room",
                            got: "iq".into(),
                            detail: format!("{r:?}"),
                        });
                    }
                    break;
                }
            }
        }
        return Ok(());
    }
}

pub async fn run(args: GroupArgs) -> anyhow::Result<GroupResult> {
    let load1_before = sys::load1();
    let c = Rc::new(args.common.clone());
    let base = c.uid_base();
    let n = args.members as usize;
    let senders = (args.senders as usize).min(n);
    let room = format!("r{base}@{}", args.muc);
    let shared = Rc::new(Shared {
        orders: RefCell::new(vec![vec![Order::default(); senders]; n]),
        acked: RefCell::new(vec![0; senders]),
        ack_hist: RefCell::new(new_histogram()),
        delivery_hist: RefCell::new(new_histogram()),
        sent: Cell::new(0),
        deliveries: Cell::new(0),
        last_ns: Cell::new(0),
        start_ns: Cell::new(u64::MAX),
    });
    let t0 = now_ns();
    // The owner first (it creates the room), then everyone else, `connects` at a time. Each
    // member's task keeps reading after it joined (the room's presences, then messages).
    let (go_tx, go_rx) = watch::channel(None::<(u64, u64)>);
    let gate = Rc::new(Semaphore::new(c.connects.max(1)));
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();
    let period = (senders as f64 * 1e9 / args.rate) as u64;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if i == 1 {
            // Wait for the owner's room before the rest join.
            match joined_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => bail!("the owner could not make the room: {e}"),
                None => bail!("the owner's task ended"),
            }
        }
        let (c, gate, joined, shared) =
            (c.clone(), gate.clone(), joined_tx.clone(), shared.clone());
        let (room, mut go) = (room.clone(), go_rx.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let permit = gate.acquire().await.expect("never closed");
            let mut x = match c.open(base + 1 + i as i64).await {
                Ok(x) => x,
                Err(e) => {
                    let _ = joined.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let r = async {
                x.available().await?;
                join(&mut x, &room, &format!("m{i}")).await
            }
            .await;
            drop(permit);
            let _ = joined.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            r?;
            member(x, i, i < senders, &room, period, &mut go, &shared).await
        }));
    }
    drop(joined_tx);
    let mut ok = 1; // the owner's, received above
    let mut failed = Vec::new();
    while let Some(r) = joined_rx.recv().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => failed.push(e),
        }
        if ok + failed.len() == n {
            break;
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {n} members could not join: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    let connect_s = (now_ns() - t0) as f64 / 1e9;
    eprintln!("{n} members in {room} in {connect_s:.2}s; load {load1_before:.2}");
    // Let the join presences drain.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let probe = CpuProbe::of(c.pid, &[]);
    let client_before = client_cpu_ns();
    let start = now_ns();
    let end = start + args.duration.as_nanos() as u64;
    shared.start_ns.set(start);
    let _ = go_tx.send(Some((start, end)));
    progress(
        Duration::from_secs(1),
        || now_ns() < end,
        &shared.sent,
        &shared.deliveries,
    )
    .await;
    let expected = || shared.acked.borrow().iter().sum::<u64>() * (n as u64 - 1);
    settle(|| shared.deliveries.get(), expected, args.quiet).await;
    let server_cpu = probe.finish();
    let client_cpu_s = (client_cpu_ns() - client_before) as f64 / 1e9;
    for t in &tasks {
        t.abort();
    }
    let acked_total: u64 = shared.acked.borrow().iter().sum();
    let expected = acked_total * (n as u64 - 1);
    let orders = shared.orders.borrow();
    let acked = shared.acked.borrow();
    let mut lost = 0;
    for (m, per_sender) in orders.iter().enumerate() {
        for (s, o) in per_sender.iter().enumerate() {
            if s != m {
                lost += (0..acked[s]).filter(|k| !o.seen.contains(k)).count() as u64;
            }
        }
    }
    let deliveries = shared.deliveries.get();
    let window_s = shared.last_ns.get().saturating_sub(start) as f64 / 1e9;
    let result = GroupResult {
        scenario: "xmpp-group",
        server: "ejabberd",
        label: c.label.clone(),
        load1_before,
        room,
        members: args.members,
        senders: senders as u64,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        connect_s,
        sent: shared.sent.get(),
        acked: acked_total,
        expected,
        deliveries,
        lost,
        duplicates: orders.iter().flatten().map(|o| o.duplicates).sum(),
        out_of_order: orders.iter().flatten().map(|o| o.out_of_order).sum(),
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
        "XMPP group {} members, {} senders, {}/s: {} of {} deliveries; delivery p50 {:.2} ms p99 {:.2} ms max {:.1} ms; ack p99 {:.2} ms; lost {}, duplicates {}, out of order {}",
        result.members,
        result.senders,
        result.rate,
        result.deliveries,
        result.expected,
        result.delivery_latency_us.p50 / 1e3,
        result.delivery_latency_us.p99 / 1e3,
        result.delivery_latency_us.max / 1e3,
        result.ack_latency_us.p99 / 1e3,
        result.lost,
        result.duplicates,
        result.out_of_order
    );
    Ok(result)
}

/// One occupant after its join: reads everything; a sender also sends on its period once the
/// run starts, one message in flight.
async fn member(
    mut x: Xmpp,
    i: usize,
    sends: bool,
    room: &str,
    period: u64,
    go: &mut watch::Receiver<Option<(u64, u64)>>,
    shared: &Shared,
) -> Result<(), XmppError> {
    let mut plan: Option<(u64, u64)> = None; // (next due, end)
    let mut in_flight: Option<u64> = None;
    let mut k = 0u64;
    loop {
        let due = match (sends, plan, in_flight) {
            (true, Some((due, end)), None) if due < end => Some(due),
            _ => None,
        };
        let sleep = async {
            match due {
                Some(d) => {
                    let now = now_ns();
                    tokio::time::sleep(Duration::from_nanos(d.saturating_sub(now))).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            el = x.next() => {
                let el = el?;
                let now = now_ns();
                if el.name == "a" {
                    if let Some(t) = in_flight.filter(|_| x.acked >= x.sent) {
                        let _ = shared.ack_hist.borrow_mut().record(now - t);
                        shared.acked.borrow_mut()[i] = k;
                        in_flight = None;
                    }
                } else {
                    shared.on_element(i, &el, now);
                }
            }
            changed = go.changed(), if plan.is_none() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Some((start, end)) = *go.borrow() {
                    // Staggered over the period.
                    plan = Some((start + period * i as u64 / (shared.acked.borrow().len().max(1) as u64), end));
                }
            }
            _ = sleep => {
                let (d, end) = plan.expect("due only with a plan");
                in_flight = Some(now_ns());
                shared.sent.set(shared.sent.get() + 1);
                x.send_stanza(&format!(
                    "<message to='{room}' id='g{k}' type='groupchat'><body>{}</body></message>",
                    body(i, k)
                ))
                .await?;
                x.request_ack().await?;
                k += 1;
                plan = Some((d + period, end));
            }
        }
    }
}
