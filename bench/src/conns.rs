//! Connection load: open N connections at a given rate with at most M handshakes in flight,
//! join, heartbeat, hold; report the connect rate, failures by reason, the server's memory
//! per connection (its RSS before and after, divided by the connections alive) and what the
//! held connections cost it in CPU (their heartbeats and the server's timers).

use crate::fleet::{Fleet, RunArgs};
use crate::sub::SubArgs;
use crate::sys;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub sub: SubArgs,
    /// How long to hold the connections once all have joined.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub hold: Duration,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Serialize)]
pub struct ConnsResult {
    pub label: String,
    pub peer: crate::wire::Peer,
    /// IM connections (`--im-secret`): goim's auth plus `"im":"pb"` and an `im_token`.
    pub im: bool,
    pub requested: u64,
    pub connected: u64,
    pub failed: BTreeMap<String, u64>,
    pub connect_s: f64,
    pub connects_per_s: f64,
    /// Alive at the end of the hold.
    pub alive: u64,
    pub disconnected: BTreeMap<String, u64>,
    pub server_rss_before: Option<u64>,
    pub server_rss_after: Option<u64>,
    pub server_rss_per_conn: Option<f64>,
    /// Kernel memory (slab and TCP buffer pages) grown per connection, both ends of the
    /// loopback connection included: the server's share is about half.
    pub kernel_bytes_per_conn_both_ends: f64,
    /// The server's CPU time over the hold, in seconds.
    pub server_cpu_hold_s: Option<f64>,
    /// The same per second of hold: what idle connections heartbeating at `--heartbeat` cost.
    pub server_cpu_ms_per_s: Option<f64>,
}

/// Kernel memory that grows with sockets: slab plus TCP buffer pages.
fn kernel_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let slab_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    slab_kb * 1024 + tcp_pages * 4096
}

pub async fn run(mut args: ConnsArgs) -> anyhow::Result<ConnsResult> {
    let n = args.sub.count;
    args.sub.subscribers = n;
    args.sub.messages = 0;
    let rss_before = args.run.pid.map(sys::rss_bytes).transpose()?;
    let kernel_before = kernel_bytes();
    let mut fleet = Fleet::spawn(&args.sub, n, args.run.per_process)?;
    let ready = fleet.ready().await?;
    let connect_s = ready.connect_ns as f64 / 1e9;
    eprintln!(
        "{} of {n} connected in {connect_s:.2}s ({:.0}/s) over {} processes; failed: {:?}",
        ready.connected,
        ready.connected as f64 / connect_s.max(1e-9),
        fleet.len(),
        ready.failed
    );
    // Let the server finish its side of the last handshakes before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = args.run.pid.map(sys::rss_bytes).transpose()?;
    let kernel_after = kernel_bytes();
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        eprintln!(
            "server RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per connection",
            a as f64 / 1048576.0,
            b as f64 / 1048576.0,
            (b as f64 - a as f64) / ready.connected.max(1) as f64
        );
    }
    let cpu_before = args.run.pid.map(sys::cpu_ns).transpose()?;
    let held_from = tokio::time::Instant::now();
    let end = held_from + args.hold;
    let mut alive = ready.connected;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - tokio::time::Instant::now())).await;
        alive = fleet.progress().0;
        eprintln!("holding: {alive} alive");
    }
    let cpu_after = args.run.pid.map(sys::cpu_ns).transpose()?;
    let held_s = held_from.elapsed().as_secs_f64();
    let results = fleet.stop().await?;
    fleet.exit().await;
    let hold_cpu_s = cpu_before
        .zip(cpu_after)
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    let mut disconnected = BTreeMap::new();
    for r in &results {
        for (k, v) in &r.disconnected {
            *disconnected.entry(k.clone()).or_default() += v;
        }
    }
    let per_conn = |a: u64, b: u64| (b as f64 - a as f64) / ready.connected.max(1) as f64;
    Ok(ConnsResult {
        label: args.run.label,
        peer: args.sub.peer,
        im: args.sub.im_secret.is_some(),
        requested: n,
        connected: ready.connected,
        failed: ready.failed,
        connect_s,
        connects_per_s: ready.connected as f64 / connect_s.max(1e-9),
        alive,
        disconnected,
        server_rss_before: rss_before,
        server_rss_after: rss_after,
        server_rss_per_conn: rss_before.zip(rss_after).map(|(a, b)| per_conn(a, b)),
        kernel_bytes_per_conn_both_ends: per_conn(kernel_before, kernel_after),
        server_cpu_hold_s: hold_cpu_s,
        server_cpu_ms_per_s: hold_cpu_s.map(|c| c * 1e3 / held_s.max(1e-9)),
    })
}
