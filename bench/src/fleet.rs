//! The subscriber processes of a run: the connections are split into shares small enough for
//! one process's open-file limit, each share runs as `starling-bench sub` from its own source
//! address (127.0.0.2, 127.0.0.3, ...), and this side reads their JSON lines.

use crate::sub::{Report, SubArgs};
use crate::track::SubResult;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// What every run with subscriber processes takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Connections per subscriber process (below the 20,000 open files a process may have).
    #[arg(long, default_value_t = 15_000)]
    pub per_process: u64,
    /// The server's pid, for its CPU time and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A name for the run in the JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
}

pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::UnboundedReceiver<(usize, Report)>,
    /// Latest progress of each process: (connected, deliveries).
    progress: Vec<(u64, u64)>,
}

/// What the processes report once every connection has joined or failed.
#[derive(Debug, Default)]
pub struct Ready {
    pub connected: u64,
    pub failed: BTreeMap<String, u64>,
    /// The slowest process's time from start to ready.
    pub connect_ns: u64,
}

impl Fleet {
    /// Starts `ceil(total / per_process)` subscriber processes sharing `total` connections.
    pub fn spawn(base: &SubArgs, total: u64, per_process: u64) -> anyhow::Result<Fleet> {
        let procs = total.div_ceil(per_process.max(1)).max(1);
        if procs > 250 {
            bail!("{procs} processes: more than the 127.0.0.2-254 source addresses");
        }
        let exe = std::env::current_exe().context("finding starling-bench")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        let mut first = 0;
        for p in 0..procs {
            let count = (total - first).min(total.div_ceil(procs));
            let mut a = base.clone();
            a.first = first;
            a.count = count;
            a.subscribers = total;
            a.rate = base.rate / procs as f64;
            a.inflight = (base.inflight / procs as usize).max(1);
            a.source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + p as u8));
            first += count;
            let mut child = Command::new(&exe)
                .args(sub_args(&a))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a subscriber process")?;
            stdins.push(child.stdin.take().expect("piped"));
            let stdout = child.stdout.take().expect("piped");
            let tx = tx.clone();
            let idx = p as usize;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Report>(&line) {
                        Ok(r) => {
                            let _ = tx.send((idx, r));
                        }
                        Err(e) => eprintln!("subscriber {idx}: {e}: {line}"),
                    }
                }
            });
            children.push(child);
        }
        Ok(Fleet {
            progress: vec![(0, 0); children.len()],
            children,
            stdins,
            rx,
        })
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    async fn next(&mut self) -> anyhow::Result<(usize, Report)> {
        let r = self
            .rx
            .recv()
            .await
            .context("a subscriber process exited early")?;
        if let (
            i,
            Report::Progress {
                connected,
                deliveries,
            },
        ) = &r
        {
            self.progress[*i] = (*connected, *deliveries);
        }
        Ok(r)
    }

    /// Waits until every process has opened its share.
    pub async fn ready(&mut self) -> anyhow::Result<Ready> {
        let mut out = Ready::default();
        let mut waiting = self.len();
        while waiting > 0 {
            if let (
                i,
                Report::Ready {
                    connected,
                    failed,
                    connect_ns,
                },
            ) = self.next().await?
            {
                self.progress[i].0 = connected;
                out.connected += connected;
                for (k, v) in failed {
                    *out.failed.entry(k).or_default() += v;
                }
                out.connect_ns = out.connect_ns.max(connect_ns);
                waiting -= 1;
            }
        }
        Ok(out)
    }

    /// Takes in the progress lines that have arrived; returns (connected, deliveries).
    pub fn progress(&mut self) -> (u64, u64) {
        while let Ok((i, r)) = self.rx.try_recv() {
            if let Report::Progress {
                connected,
                deliveries,
            } = r
            {
                self.progress[i] = (connected, deliveries);
            }
        }
        self.progress
            .iter()
            .fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1))
    }

    /// Tells every process to finish and collects their results. The connections stay
    /// open until [`Fleet::exit`].
    pub async fn stop(&mut self) -> anyhow::Result<Vec<SubResult>> {
        for s in &mut self.stdins {
            s.write_all(b"stop\n").await?;
            s.flush().await?;
        }
        let mut results = Vec::new();
        while results.len() < self.children.len() {
            if let (_, Report::Result(r)) = self.next().await? {
                results.push(r);
            }
        }
        Ok(results)
    }

    /// Ends the processes (and so their connections).
    pub async fn exit(self) {
        drop(self.stdins);
        for mut c in self.children {
            let _ = c.wait().await;
        }
    }
}

/// The command line of one `sub` process.
fn sub_args(a: &SubArgs) -> Vec<String> {
    let mut v = vec![
        "sub".to_string(),
        "--peer".into(),
        clap::ValueEnum::to_possible_value(&a.peer)
            .expect("every peer has a name")
            .get_name()
            .to_string(),
        "--addr".into(),
        a.addr.to_string(),
        "--source".into(),
        a.source.to_string(),
        "--first".into(),
        a.first.to_string(),
        "--count".into(),
        a.count.to_string(),
        "--subscribers".into(),
        a.subscribers.to_string(),
        "--messages".into(),
        a.messages.to_string(),
        "--rate".into(),
        a.rate.to_string(),
        "--inflight".into(),
        a.inflight.to_string(),
        "--heartbeat".into(),
        humantime::format_duration(a.heartbeat).to_string(),
        "--quiet".into(),
        humantime::format_duration(a.quiet).to_string(),
        "--read-buf".into(),
        a.read_buf.to_string(),
        "--batch-wait".into(),
        humantime::format_duration(a.batch_wait).to_string(),
    ];
    if a.keys {
        v.push("--keys".into());
    }
    if let Some(secret) = &a.im_secret {
        v.extend(["--im-secret".into(), secret.clone()]);
    }
    v
}
