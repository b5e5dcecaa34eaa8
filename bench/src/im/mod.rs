//! `starling-bench im ...`: the IM scenarios of issue 12 (reference im.md §9 T15) against an
//! all-in-one with `[im] enabled`. Every scenario runs in this one process, so the send
//! timestamp a message carries and its receive time come from one clock.
//!
//! # Layout
//! - `conn`: one IM connection (auth with a minted `im_token`, requests, pushes).
//! - `p2p`: pairs of senders and receivers, as fast as acks come back or paced.
//! - `group`: one group, every member online, paced senders.
//! - `sync`: a user who missed N messages connects and pulls them.
//! - `fsync`: the disk's cost of a small write plus `fdatasync`, for scale.
//!
//! Idle IM connections are `conns --im-secret`, in the subscriber processes of `conns`.

pub(crate) mod conn;
mod fsync;
pub(crate) mod group;
mod p2p;
mod sync;

use crate::fanout::Percentiles;
use crate::sys;
use anyhow::bail;
use clap::{Args, Subcommand};
use conn::Conn;
use hdrhistogram::Histogram;
use serde::Serialize;
use starling_im::token::Tokens;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, Subcommand)]
pub enum ImCmd {
    /// Pairs of senders and receivers: throughput (`--rate 0`) or latency at a fixed rate.
    P2p(p2p::P2pArgs),
    /// One group with every member online, paced senders: delivery latency to all members.
    Group(group::GroupArgs),
    /// A user misses N messages, then connects: time until it holds them all, in order.
    Sync(sync::SyncArgs),
    /// write + fdatasync of a small record in a directory: the disk's commit floor.
    Fsync(fsync::FsyncArgs),
}

pub async fn run(cmd: ImCmd) -> anyhow::Result<serde_json::Value> {
    Ok(match cmd {
        ImCmd::P2p(a) => serde_json::to_value(p2p::run(a).await?)?,
        ImCmd::Group(a) => serde_json::to_value(group::run(a).await?)?,
        ImCmd::Sync(a) => serde_json::to_value(sync::run(a).await?)?,
        ImCmd::Fsync(a) => serde_json::to_value(fsync::run(a)?)?,
    })
}

/// What every IM scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The comet's TCP address.
    #[arg(long, default_value = "127.0.0.1:3101")]
    pub addr: SocketAddr,
    /// The server's `im.token_secret`.
    #[arg(
        long,
        env = "IM_SECRET",
        default_value = "bench-secret-0123456789abcdef"
    )]
    pub secret: String,
    /// The server's pid, for its CPU time (per thread) and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// `NAME=PID`, repeatable: a process of a split deployment (comet, logic, job, redis,
    /// broker, postgres), whose CPU time over the measured window is reported under NAME,
    /// its direct children included (PostgreSQL's backends are children of the postmaster).
    /// With any, `server_cpu.total_s` is their sum: the whole deployment.
    #[arg(long = "proc", value_parser = parse_proc)]
    pub procs: Vec<(String, u32)>,
    /// A name for the run in the JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
    /// First uid of the run; 0 picks one from the clock, so repeated runs against one store
    /// start from fresh users and conversations.
    #[arg(long, default_value_t = 0)]
    pub uid_base: i64,
    /// Handshakes in flight while connecting.
    #[arg(long, default_value_t = 200)]
    pub connects: usize,
}

fn parse_proc(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?;
    Ok((name.to_string(), pid))
}

/// `given`, or when 0 a first uid from the clock: 10,000 uids per second of wall clock, so
/// runs a second apart never share a user.
pub fn uid_base(given: i64) -> i64 {
    if given > 0 {
        return given;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1_000_000 + (secs % 100_000_000) as i64 * 10_000
}

/// After the senders stopped: waits until `count()` reaches `expected()`, or until it has not
/// moved for `quiet` (what is still missing then counts as lost).
pub async fn settle(count: impl Fn() -> u64, expected: impl Fn() -> u64, quiet: Duration) {
    let mut last = (count(), sys::now_ns());
    while count() < expected() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let d = count();
        if d != last.0 {
            last = (d, sys::now_ns());
        } else if sys::now_ns() - last.1 > quiet.as_nanos() as u64 {
            break;
        }
    }
}

/// Prints `sent` and `got` every `every` while `running()` holds.
pub async fn progress(
    every: Duration,
    running: impl Fn() -> bool,
    sent: &Cell<u64>,
    got: &Cell<u64>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    while running() {
        tick.tick().await;
        eprintln!("sent {}, delivered {}", sent.get(), got.get());
    }
}

impl Common {
    pub fn uid_base(&self) -> i64 {
        uid_base(self.uid_base)
    }

    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens::new(&self.secret)?)
    }
}

/// Opens and authenticates one connection per uid, `common.connects` at a time, in uid order.
pub async fn open_all(
    common: &Common,
    tokens: &Rc<Tokens>,
    uids: &[i64],
) -> anyhow::Result<Vec<Conn>> {
    let gate = Rc::new(Semaphore::new(common.connects.max(1)));
    let mut tasks = Vec::with_capacity(uids.len());
    for &uid in uids {
        let (gate, tokens, addr) = (gate.clone(), tokens.clone(), common.addr);
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            Conn::open(addr, None, uid, &tokens).await
        }));
    }
    let mut conns = Vec::with_capacity(uids.len());
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await? {
            Ok((c, welcome)) if welcome.code == 0 => conns.push(c),
            Ok((_, welcome)) => {
                *failed
                    .entry(format!("welcome {}", welcome.code))
                    .or_default() += 1
            }
            Err(e) => *failed.entry(e.to_string()).or_default() += 1,
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} connections failed: {failed:?}",
            failed.values().sum::<u64>(),
            uids.len()
        );
    }
    Ok(conns)
}

pub fn percentiles_us(h: &Histogram<u64>) -> Percentiles {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Percentiles {
        p50: us(0.5),
        p90: us(0.9),
        p99: us(0.99),
        p999: us(0.999),
        max: h.max() as f64 / 1e3,
        mean: h.mean() / 1e3,
    }
}

/// The server's CPU over a measured window, in total and by thread name.
#[derive(Debug, Serialize)]
pub struct ServerCpu {
    pub total_s: f64,
    /// Thread names with at least 1% of the total, seconds.
    pub threads_s: BTreeMap<String, f64>,
    pub rss_bytes: u64,
    /// Each `--proc` process (children included), seconds; empty without `--proc`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub procs_s: BTreeMap<String, f64>,
}

pub struct CpuProbe {
    pid: Option<u32>,
    before: BTreeMap<String, u64>,
    procs: Vec<(String, u32, u64)>,
}

impl CpuProbe {
    pub fn start(common: &Common) -> CpuProbe {
        CpuProbe::of(common.pid, &common.procs)
    }

    /// Starts measuring `pid`'s threads and each of `procs` (children included).
    pub fn of(pid: Option<u32>, procs: &[(String, u32)]) -> CpuProbe {
        let before = pid
            .and_then(|p| sys::threads_cpu_ns(p).ok())
            .unwrap_or_default();
        let procs = procs
            .iter()
            .map(|(n, p)| (n.clone(), *p, sys::tree_cpu_ns(*p)))
            .collect();
        CpuProbe { pid, before, procs }
    }

    pub fn finish(self) -> Option<ServerCpu> {
        let procs_s: BTreeMap<String, f64> = self
            .procs
            .iter()
            .map(|(n, p, before)| {
                let ns = sys::tree_cpu_ns(*p).saturating_sub(*before);
                (n.clone(), ns as f64 / 1e9)
            })
            .collect();
        let Some(pid) = self.pid else {
            return (!procs_s.is_empty()).then(|| ServerCpu {
                total_s: procs_s.values().sum(),
                threads_s: BTreeMap::new(),
                rss_bytes: 0,
                procs_s,
            });
        };
        let after = sys::threads_cpu_ns(pid).ok()?;
        let diff: BTreeMap<String, u64> = after
            .into_iter()
            .map(|(k, v)| {
                let d = v.saturating_sub(self.before.get(&k).copied().unwrap_or(0));
                (k, d)
            })
            .collect();
        let total: u64 = diff.values().sum();
        Some(ServerCpu {
            total_s: if procs_s.is_empty() {
                total as f64 / 1e9
            } else {
                procs_s.values().sum()
            },
            threads_s: diff
                .into_iter()
                .filter(|(_, v)| *v * 100 >= total.max(1))
                .map(|(k, v)| (k, v as f64 / 1e9))
                .collect(),
            rss_bytes: sys::rss_bytes(pid).unwrap_or(0),
            procs_s,
        })
    }
}

/// This process's CPU time in nanoseconds: the client's share of the two cores.
pub fn client_cpu_ns() -> u64 {
    sys::cpu_ns(std::process::id()).unwrap_or(0)
}
