//! Fan-out: N subscribers join one room (or each its own key), one publisher sends M stamped
//! messages, and every delivery is accounted for: rate, latency percentiles, loss,
//! duplication, reordering, and the server's CPU time per delivery.

use crate::fleet::{Fleet, RunArgs};
use crate::publish::{PubPlan, PubStats, publish};
use crate::sub::SubArgs;
use crate::sys;
use crate::track::{Counts, decode_histogram, new_histogram};
use clap::Args;
use serde::Serialize;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub sub: SubArgs,
    /// Where the publisher sends: Starling's HTTP API (e.g. 127.0.0.1:3111); for the brokers,
    /// the broker itself (defaults to --addr).
    #[arg(long)]
    pub push: Option<SocketAddr>,
    /// Message size in bytes (at least 12: sequence number and timestamp).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// What fills each message after its 12-byte stamp; it matters to permessage-deflate
    /// only (`--peer starling-ws-deflate`).
    #[arg(long, value_enum, default_value_t = crate::wire::Fill::Dots)]
    pub fill: crate::wire::Fill,
    /// Messages per second; 0 publishes as fast as accepted.
    #[arg(long = "msg-rate", default_value_t = 0.0)]
    pub msg_rate: f64,
    /// Unacknowledged messages allowed when publishing as fast as accepted.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    #[command(flatten)]
    pub run: RunArgs,
    /// Write a PNG plot of latency percentiles here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write a PNG plot of deliveries over time here.
    #[arg(long)]
    pub plot_timeline: Option<PathBuf>,
}

/// The JSON line a fan-out run ends with.
#[derive(Debug, Serialize)]
pub struct FanoutResult {
    pub label: String,
    pub peer: crate::wire::Peer,
    pub mode: &'static str,
    pub subscribers: u64,
    pub connected: u64,
    pub connect_failed: BTreeMap<String, u64>,
    pub messages: u32,
    pub size: usize,
    pub fill: crate::wire::Fill,
    pub msg_rate: f64,
    pub publish: PubStats,
    pub expected: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub disconnected: BTreeMap<String, u64>,
    /// From the first send to the last delivery.
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    pub latency_us: Percentiles,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    /// CPU time of the subscriber processes while deliveries were read (the client's share
    /// of the two cores when client and server run on one machine).
    pub client_cpu_s: f64,
    pub client_cpu_us_per_delivery: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

pub async fn run(mut args: FanoutArgs) -> anyhow::Result<FanoutResult> {
    let n = args.sub.count;
    args.sub.subscribers = n;
    let mut fleet = Fleet::spawn(&args.sub, n, args.run.per_process)?;
    let ready = fleet.ready().await?;
    eprintln!(
        "{} of {n} subscribers joined in {:.2}s over {} processes; failed: {:?}",
        ready.connected,
        ready.connect_ns as f64 / 1e9,
        fleet.len(),
        ready.failed
    );
    // Let the server settle (Starling reports room counts; brokers finish subscriptions).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let plan = PubPlan {
        peer: args.sub.peer,
        addr: args.push.unwrap_or(args.sub.addr),
        room_mode: !args.sub.keys,
        subscribers: n,
        messages: args.sub.messages,
        size: args.size,
        fill: args.fill,
        rate: args.msg_rate,
        window: args.window,
    };
    let cpu_before = args.run.pid.map(sys::cpu_ns).transpose()?;
    let sent = Rc::new(Cell::new(0u64));
    let publisher = {
        let sent = sent.clone();
        tokio::task::spawn_local(publish(plan, move |s| sent.set(s)))
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !publisher.is_finished() {
        tokio::select! {
            _ = tick.tick() => {
                let (connected, delivered) = fleet.progress();
                eprintln!("sent {} of {}, delivered {delivered}, connected {connected}", sent.get(), args.sub.messages);
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let pub_stats = publisher.await??;
    let results = fleet.stop().await?;
    let cpu_after = args.run.pid.map(sys::cpu_ns).transpose()?;
    let rss = args.run.pid.map(sys::rss_bytes).transpose()?;
    fleet.exit().await;

    let mut hist = new_histogram();
    let mut disconnected = BTreeMap::new();
    let mut last_ns = 0;
    let mut timeline: BTreeMap<u64, u64> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut client_cpu_ns = 0;
    for r in &results {
        client_cpu_ns += r.cpu_ns;
        hist.add(decode_histogram(&r.hist)?)?;
        counts.add(&r.counts);
        last_ns = last_ns.max(r.last_ns);
        for (k, v) in &r.disconnected {
            *disconnected.entry(k.clone()).or_default() += v;
        }
        for &(t, c) in &r.timeline {
            *timeline.entry(t).or_default() += c;
        }
    }
    let expected = if args.sub.keys {
        u64::from(args.sub.messages)
    } else {
        u64::from(args.sub.messages) * n
    };
    let deliveries = counts.deliveries;
    let duration_s = last_ns.saturating_sub(pub_stats.first_send_ns) as f64 / 1e9;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let server_cpu_ns = cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a));
    let result = FanoutResult {
        label: args.run.label.clone(),
        peer: args.sub.peer,
        mode: if args.sub.keys { "keys" } else { "room" },
        subscribers: n,
        connected: ready.connected,
        connect_failed: ready.failed,
        messages: args.sub.messages,
        size: args.size,
        fill: args.fill,
        msg_rate: args.msg_rate,
        publish: pub_stats,
        expected,
        counts,
        disconnected,
        duration_s,
        deliveries_per_s: if duration_s > 0.0 {
            deliveries as f64 / duration_s
        } else {
            0.0
        },
        latency_us: Percentiles {
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: hist.max() as f64 / 1e3,
            mean: hist.mean() / 1e3,
        },
        server_cpu_s: server_cpu_ns.map(|c| c as f64 / 1e9),
        server_cpu_us_per_delivery: server_cpu_ns
            .filter(|_| deliveries > 0)
            .map(|c| c as f64 / 1e3 / deliveries as f64),
        server_rss_bytes: rss,
        client_cpu_s: client_cpu_ns as f64 / 1e9,
        client_cpu_us_per_delivery: (deliveries > 0)
            .then(|| client_cpu_ns as f64 / 1e3 / deliveries as f64),
    };
    if let Some(path) = &args.plot {
        crate::plot::latency(path, &args.run.label, &hist)?;
    }
    if let Some(path) = &args.plot_timeline {
        crate::plot::timeline(path, &args.run.label, &timeline)?;
    }
    Ok(result)
}
