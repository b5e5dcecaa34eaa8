//! `starling-bench soak` (issue 15): many IM connections for a long time with 1:1 and group
//! traffic, room pushes, and churn (a share of the connections closes and comes back every
//! minute), while `tools/soak.sh` pauses Redis now and then. It is about leaks, not
//! throughput: each server process's RSS, fds and threads are sampled before, during and
//! after the clients (JSON lines in `--samples`), and at the end every conversation's stored
//! log is pulled and checked against every acknowledged send.
//!
//! # Layout
//! - `user`: one connection's task (send with retry by the same id, churn, reconnect, sync).
//! - `ledger`: the acknowledged sends and the check of one log against them.
//! - `verify`: the end-of-run pull of every conversation's log, with retries.
//! - `sample`: `/proc` figures, the phases, and the summary (baseline, peak, RSS slope, fds).
//! - `run` (here): the layout of users, groups and rooms, the schedule, the teardown.

mod ledger;
mod sample;
mod user;
mod verify;

use crate::im::Common;
use crate::im::conn::Conn;
use crate::im::group::{make_group, post};
use anyhow::{Context, bail, ensure};
use clap::Args;
use ledger::{Check, ConvId, Ledger};
use sample::{Phase, ProcSummary, Sample};
use serde::Serialize;
use serde_json::json;
use starling_im::token::Tokens;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, timeout};
use user::{Cmd, Plan, Sends, User};

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Comet address, secret, the processes to sample (`--proc NAME=PID`), label, uids.
    #[command(flatten)]
    pub common: Common,
    /// logic's HTTP API: `/im/v1/groups` and `/goim/push/room`.
    #[arg(long, default_value = "127.0.0.1:3111")]
    pub http: SocketAddr,
    /// `im.admin_token`.
    #[arg(long, env = "IM_ADMIN_TOKEN", default_value = "bench-admin")]
    pub admin_token: String,
    /// IM connections held for the whole run (one user each).
    #[arg(long, default_value_t = 10_000)]
    pub conns: u64,
    /// Minutes of traffic.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Percent of the connections closed and reopened (login and IM sync) every minute.
    #[arg(long, default_value_t = 5.0)]
    pub churn_per_min: f64,
    /// 1:1 messages per second over every user not in a group (each sends to its partner).
    #[arg(long, default_value_t = 200.0)]
    pub p2p_rate: f64,
    #[arg(long, default_value_t = 4)]
    pub groups: u64,
    #[arg(long, default_value_t = 100)]
    pub group_size: u64,
    /// Messages per second in each group (its members take turns).
    #[arg(long, default_value_t = 2.0)]
    pub group_rate: f64,
    /// goim rooms (`live://soak-N`); every connection joins one.
    #[arg(long, default_value_t = 50)]
    pub rooms: u64,
    /// Room pushes per second over all rooms (`POST /goim/push/room`).
    #[arg(long, default_value_t = 5.0)]
    pub room_rate: f64,
    /// Time between samples.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub sample_every: Duration,
    /// From the start of traffic: samples before it are left out of the RSS slope.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub warmup: Duration,
    /// After every client closed, how long before the last sample (fds back to baseline?).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub settle: Duration,
    /// Connections per source address (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 5_000)]
    pub per_source: u64,
    /// A request without an answer this long counts as a lost connection.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// The samples, one JSON line each.
    #[arg(long, default_value = "bench/soak-samples.jsonl")]
    pub samples: PathBuf,
    /// A PNG of each process's RSS over the run.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// `NAME=HOST:PORT`: a `--proc` process's `/metrics` listener, scraped at each sample
    /// for its tokio tasks (`starling_tokio_alive_tasks`).
    #[arg(long = "scrape", value_parser = parse_scrape)]
    pub scrapes: Vec<(String, SocketAddr)>,
}

fn parse_scrape(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or("expected NAME=HOST:PORT")?;
    let addr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    Ok((name.to_string(), addr))
}

/// The bench's running counts (a sample carries a copy).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    /// Connections up now.
    pub live: u64,
    /// Messages (each counted once, whatever its retries).
    pub sent: u64,
    /// Final code 0 (a retry after 503 `stored` included).
    pub acked: u64,
    pub duplicate_acks: u64,
    /// 503 with `stored = true`: durable, retried by the same id.
    pub stored_503: u64,
    /// ... and later answered code 0.
    pub stored_503_confirmed: u64,
    /// A retry's ack named another seq than the first ack (must be 0).
    pub seq_changed: u64,
    /// Retryable answers (429, 503 not stored, 504) by code.
    pub retried: BTreeMap<i32, u64>,
    /// Final refusals by code.
    pub refused: BTreeMap<i32, u64>,
    pub malformed: u64,
    pub request_timeouts: u64,
    pub conn_lost: u64,
    pub churned: u64,
    pub reconnects: u64,
    pub reconnect_ms_max: u64,
    pub login_failures: u64,
    pub sync_errors: BTreeMap<String, u64>,
    /// Messages pulled by the IM sync after reconnects.
    pub synced_messages: u64,
    /// Sends still without a final answer when the run's deadline passed.
    pub unresolved: u64,
    pub im_deliveries: u64,
    pub room_deliveries: u64,
    pub room_pushes_ok: u64,
    pub room_pushes_failed: u64,
}

/// What every user task shares.
pub struct Shared {
    pub addr: SocketAddr,
    pub tokens: Tokens,
    pub counters: RefCell<Counters>,
    pub ledger: RefCell<Ledger>,
    pub request_timeout: Duration,
    /// Retries and reconnects stop after this.
    pub give_up: Cell<Instant>,
}

#[derive(Debug, Serialize)]
pub struct SoakResult {
    pub scenario: &'static str,
    pub label: String,
    pub conns: u64,
    pub minutes: f64,
    pub churn_per_min: f64,
    pub p2p_rate: f64,
    pub groups: u64,
    pub group_size: u64,
    pub group_rate: f64,
    pub rooms: u64,
    pub room_rate: f64,
    pub connect_s: f64,
    pub traffic_s: f64,
    /// Stop until every user's connection closed.
    pub drain_s: f64,
    pub verify_s: f64,
    pub counters: Counters,
    /// The stored logs against the acknowledged sends.
    pub check: Check,
    /// Conversations whose log could not be pulled (their sends are unchecked).
    pub verify_errors: BTreeMap<String, u64>,
    pub procs: BTreeMap<String, ProcSummary>,
    pub samples: PathBuf,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<SoakResult> {
    ensure!(args.conns >= 2, "--conns: at least 2");
    ensure!(args.rooms >= 1, "--rooms: at least 1");
    let in_groups = args.groups * args.group_size;
    ensure!(in_groups <= args.conns, "groups × group size over --conns");
    let base = args.common.uid_base();
    let shared = Rc::new(Shared {
        addr: args.common.addr,
        tokens: args.common.tokens()?,
        counters: RefCell::default(),
        ledger: RefCell::default(),
        request_timeout: args.request_timeout,
        give_up: Cell::new(Instant::now() + Duration::from_secs(365 * 24 * 3600)),
    });
    let mut procs = args.common.procs.clone();
    procs.push(("bench".into(), std::process::id()));
    let sampler = Rc::new(Sampler::new(
        &args.samples,
        procs,
        args.scrapes.clone(),
        shared.clone(),
    )?);
    sampler.take(Phase::Baseline).await;

    // Users 0..in_groups are the groups' members, the rest 1:1 partners (2k with 2k+1).
    let uid = |i: u64| base + 1 + i as i64;
    let mut gids = Vec::new();
    for g in 0..args.groups {
        let members: Vec<i64> = (0..args.group_size)
            .map(|j| uid(g * args.group_size + j))
            .collect();
        let gid = make_group(args.http, &args.admin_token, base + g as i64, &members).await?;
        gids.push((gid, members[0]));
    }
    let solo = args.conns - in_groups;
    let p2p_users = solo - solo % 2;
    // Laid out from `start`, shifted to the end of the connect phase.
    let start = Instant::now();
    let mut plans = Vec::new();
    for i in 0..args.conns {
        let sends = if i < in_groups {
            let (g, j) = (i / args.group_size, i % args.group_size);
            let (gid, _) = gids[g as usize];
            (args.group_rate > 0.0).then(|| Sends {
                to: user::group(gid),
                conv: ConvId::Group(gid),
                first: start + secs(j as f64 / args.group_rate + g as f64 * 0.1),
                period: secs(args.group_size as f64 / args.group_rate),
            })
        } else if i - in_groups < p2p_users && args.p2p_rate > 0.0 {
            let k = i - in_groups;
            let peer = uid(in_groups + (k ^ 1));
            Some(Sends {
                to: user::p2p(peer),
                conv: ConvId::p2p(uid(i), peer),
                first: start + secs(k as f64 / args.p2p_rate),
                period: secs(p2p_users as f64 / args.p2p_rate),
            })
        } else {
            None
        };
        plans.push(Plan {
            uid: uid(i),
            source: IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                2 + (i / args.per_source.max(1)) as u8,
            )),
            room: format!("live://soak-{}", i % args.rooms),
            sends,
            heartbeat_offset: secs((i % 240) as f64),
        });
    }

    sampler.phase.set(Phase::Connecting);
    let sampling = tokio::task::spawn_local(sampler.clone().every(args.sample_every));
    let t0 = Instant::now();
    let conns = connect_all(&args, &shared, &plans).await?;
    let connect_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "soak: {} connections in {connect_s:.1}s (uids from {}, {} groups, {} 1:1 users)",
        conns.len(),
        base + 1,
        args.groups,
        p2p_users
    );

    // Traffic: the schedule was laid out from `start`; shift it to now.
    let now = Instant::now();
    let shift = now.duration_since(start);
    let end = now + secs(args.minutes * 60.0);
    shared.give_up.set(end + Duration::from_secs(120));
    sampler.traffic_start.set(Some(now));
    sampler.phase.set(Phase::Run);
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for (mut plan, c) in plans.into_iter().zip(conns) {
        if let Some(s) = &mut plan.sends {
            s.first += shift;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        tasks.push(tokio::task::spawn_local(
            User::new(plan, c, shared.clone()).run(rx),
        ));
    }
    let pusher = tokio::task::spawn_local(room_pushes(args.clone(), end, shared.clone()));
    churn(&args, &txs, end).await;

    sampler.phase.set(Phase::Drain);
    let t_drain = Instant::now();
    let traffic_s = t_drain.duration_since(now).as_secs_f64();
    for tx in &txs {
        let _ = tx.send(Cmd::Stop);
    }
    for t in tasks {
        t.await?;
    }
    pusher.await?;
    let drain_s = t_drain.elapsed().as_secs_f64();
    eprintln!("soak: traffic stopped after {traffic_s:.0}s, every user closed in {drain_s:.1}s");

    let t_verify = Instant::now();
    let ledger = std::mem::take(&mut *shared.ledger.borrow_mut());
    eprintln!(
        "soak: checking {} acknowledged messages in the stored logs",
        ledger.acked()
    );
    let (check, verify_errors) = verify::verify(&shared, ledger, &gids).await;
    let verify_s = t_verify.elapsed().as_secs_f64();
    eprintln!("soak: logs checked in {verify_s:.1}s: {check:?}, errors {verify_errors:?}");

    sampling.abort();
    sampler.take(Phase::Teardown).await;
    sleep(args.settle).await;
    sampler.take(Phase::Settled).await;
    let samples = sampler.samples.take();
    let procs = sample::summarize(&samples, args.warmup.as_secs_f64());
    if let Some(path) = &args.plot {
        let series = samples_by_proc(&samples);
        if let Err(e) = crate::plot::rss(path, &args.common.label, &series) {
            eprintln!("soak: no plot: {e:#}");
        }
    }
    let counters = shared.counters.borrow().clone();
    Ok(SoakResult {
        scenario: "soak",
        label: args.common.label.clone(),
        conns: args.conns,
        minutes: args.minutes,
        churn_per_min: args.churn_per_min,
        p2p_rate: args.p2p_rate,
        groups: args.groups,
        group_size: args.group_size,
        group_rate: args.group_rate,
        rooms: args.rooms,
        room_rate: args.room_rate,
        connect_s,
        traffic_s,
        drain_s,
        verify_s,
        counters,
        check,
        verify_errors,
        procs,
        samples: args.samples.clone(),
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Opens every user's connection, `connects` at a time, each retried a few times.
async fn connect_all(
    args: &SoakArgs,
    shared: &Rc<Shared>,
    plans: &[Plan],
) -> anyhow::Result<Vec<Conn>> {
    let gate = Rc::new(Semaphore::new(args.common.connects.max(1)));
    let mut tasks = Vec::with_capacity(plans.len());
    for p in plans {
        let (gate, shared) = (gate.clone(), shared.clone());
        let (uid, source, room) = (p.uid, p.source, p.room.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            let mut last = String::new();
            for attempt in 0..5u64 {
                let open =
                    Conn::open_in_room(shared.addr, Some(source), uid, &room, &shared.tokens);
                match timeout(shared.request_timeout, open).await {
                    Ok(Ok((c, w))) if w.code == 0 => return Ok(c),
                    Ok(Ok((_, w))) => last = format!("welcome code {}", w.code),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".into(),
                }
                sleep(Duration::from_millis(500 * (attempt + 1))).await;
            }
            Err(last)
        }));
    }
    let mut conns = Vec::with_capacity(plans.len());
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await? {
            Ok(c) => conns.push(c),
            Err(e) => *failed.entry(e).or_default() += 1,
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} connections failed: {failed:?}",
            failed.values().sum::<u64>(),
            plans.len()
        );
    }
    shared.counters.borrow_mut().live = conns.len() as u64;
    Ok(conns)
}

/// Churns `churn_per_min` percent of the users every minute, evenly spread, in turn, until
/// `end`.
async fn churn(args: &SoakArgs, txs: &[mpsc::UnboundedSender<Cmd>], end: Instant) {
    let per_min = (args.conns as f64 * args.churn_per_min / 100.0).round() as u64;
    if per_min == 0 {
        tokio::time::sleep_until(end).await;
        return;
    }
    let every = secs(60.0 / per_min as f64);
    let mut tick = interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => return,
            _ = tick.tick() => {
                let _ = txs[next % txs.len()].send(Cmd::Churn);
                next += 1;
            }
        }
    }
}

/// Room pushes at `room_rate`, the rooms in turn, one request at a time, until `end`.
async fn room_pushes(args: SoakArgs, end: Instant, shared: Rc<Shared>) {
    if args.room_rate <= 0.0 {
        return;
    }
    let every = secs(1.0 / args.room_rate);
    let mut tick = interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    for k in 0u64.. {
        tick.tick().await;
        if Instant::now() >= end {
            return;
        }
        let path = format!(
            "/goim/push/room?operation={}&type=live&room=soak-{}",
            user::ROOM_OP,
            k % args.rooms
        );
        let r = timeout(
            args.request_timeout,
            post(args.http, &path, &args.admin_token, &json!({ "k": k })),
        )
        .await;
        let ok = matches!(&r, Ok(Ok((200, v))) if v["code"] == 0);
        let mut c = shared.counters.borrow_mut();
        if ok {
            c.room_pushes_ok += 1;
        } else {
            c.room_pushes_failed += 1;
        }
    }
}

/// RSS in MiB over minutes since the bench started, per process.
fn samples_by_proc(samples: &[Sample]) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        for (name, f) in &s.procs {
            out.entry(name.clone())
                .or_default()
                .push((s.t_s / 60.0, f.rss_kib as f64 / 1024.0));
        }
    }
    out
}

/// Takes samples: on demand, and every interval in the current phase; each one a JSON line.
struct Sampler {
    procs: Vec<(String, u32)>,
    scrapes: Vec<(String, SocketAddr)>,
    out: RefCell<std::io::BufWriter<std::fs::File>>,
    t0: Instant,
    traffic_start: Cell<Option<Instant>>,
    phase: Cell<Phase>,
    samples: RefCell<Vec<Sample>>,
    shared: Rc<Shared>,
}

impl Sampler {
    fn new(
        path: &Path,
        procs: Vec<(String, u32)>,
        scrapes: Vec<(String, SocketAddr)>,
        shared: Rc<Shared>,
    ) -> anyhow::Result<Sampler> {
        let f = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
        Ok(Sampler {
            procs,
            scrapes,
            out: RefCell::new(std::io::BufWriter::new(f)),
            t0: Instant::now(),
            traffic_start: Cell::new(None),
            phase: Cell::new(Phase::Baseline),
            samples: RefCell::default(),
            shared,
        })
    }

    async fn take(&self, phase: Phase) {
        let mut tasks = BTreeMap::new();
        for (name, addr) in &self.scrapes {
            if let Some(n) = sample::tokio_tasks(*addr).await {
                tasks.insert(name.as_str(), n);
            }
        }
        let now = Instant::now();
        let procs = self
            .procs
            .iter()
            .filter_map(|(n, pid)| {
                let mut f = sample::read(*pid).ok()?;
                f.tasks = tasks.get(n.as_str()).copied();
                Some((n.clone(), f))
            })
            .collect();
        let counters = self.shared.counters.borrow().clone();
        let traffic_s = match self.traffic_start.get() {
            Some(t) if now >= t => now.duration_since(t).as_secs_f64(),
            Some(t) => -t.duration_since(now).as_secs_f64(),
            None => -1.0,
        };
        let s = Sample {
            t_s: now.duration_since(self.t0).as_secs_f64(),
            unix_ms: crate::sys::wall_ns() / 1_000_000,
            traffic_s,
            phase,
            procs,
            traffic: serde_json::to_value(&counters).unwrap_or_default(),
        };
        let mut out = self.out.borrow_mut();
        let _ = serde_json::to_writer(&mut *out, &s);
        let _ = writeln!(out);
        let _ = out.flush();
        let rss = |n: &str| s.procs.get(n).map_or(0, |f| f.rss_kib / 1024);
        let tasks = |n: &str| s.procs.get(n).and_then(|f| f.tasks);
        eprintln!(
            "soak {:?} {:.0}s: live {}, acked {}, 503 stored {}, retried {:?}, reconnects {}, login failures {}; RSS MiB comet {} logic {} job {}; tasks {:?} {:?} {:?}",
            phase,
            s.traffic_s.max(0.0),
            counters.live,
            counters.acked,
            counters.stored_503,
            counters.retried,
            counters.reconnects,
            counters.login_failures,
            rss("comet"),
            rss("logic"),
            rss("job"),
            tasks("comet"),
            tasks("logic"),
            tasks("job")
        );
        self.samples.borrow_mut().push(s);
    }

    async fn every(self: Rc<Self>, period: Duration) {
        let mut tick = interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.take(self.phase.get()).await;
        }
    }
}
