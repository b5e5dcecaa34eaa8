//! Harness for the multi-host test: hosts as network namespaces on one bridge, the tier
//! binaries as processes inside them, and goim clients that heartbeat on their own.
#![allow(dead_code)]

pub mod deploy;
pub mod im;

use starling_proto::packet::{self, Packet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long anything that should happen may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge in the root namespace (where Redis, the broker and the test's clients are) and
/// one namespace per host, each with its own address on the bridge.
pub struct Net {
    pub prefix: String,
    bridge: String,
    namespaces: Vec<String>,
    tag: u32,
}

impl Net {
    pub fn new() -> Net {
        // Several clusters in one test process (run one after another) get their own names.
        static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tag = (std::process::id() + 97 * CLUSTERS.fetch_add(1, Ordering::Relaxed)) % 250;
        let bridge = format!("stb{tag}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let prefix = format!("10.77.{tag}");
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        Net {
            prefix,
            bridge,
            namespaces: Vec::new(),
            tag,
        }
    }

    /// The address of the root namespace on the bridge.
    pub fn root_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Adds host number `n` (its address ends in `.n`); returns its namespace.
    pub fn host(&mut self, name: &str, n: u8) -> (String, String) {
        let ns = format!("st{}-{name}", self.tag);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let outside = format!("st{}v{n}", self.tag);
        let inside = format!("st{}p{n}", self.tag);
        let _ = Command::new("ip").args(["link", "del", &outside]).output();
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
        let addr = format!("{}.{n}", self.prefix);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        (ns, addr)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A tier binary built next to this test (tools/test.sh builds them first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --bins` (tools/test.sh does) before this test",
        p.display()
    );
    p
}

/// One tier process inside a host's namespace, logging to a file; killed when dropped.
pub struct Proc {
    pub name: String,
    ns: String,
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn start(dir: &Path, name: &str, ns: &str, bin: PathBuf, conf: &str) -> Proc {
        let conf_path = dir.join(format!("{name}.toml"));
        std::fs::write(&conf_path, conf).unwrap();
        let mut p = Proc {
            name: name.into(),
            ns: ns.into(),
            bin,
            conf: conf_path,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        // Restarts append; a first start begins a fresh log (what `job_knows` and the
        // failure dumps read).
        std::fs::write(&p.log, "").unwrap();
        p.resume();
        p
    }

    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--config")
            .arg(&self.conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no goodbye to the registry.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    /// Waits for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < end,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether job has added every comet in `names` to its pushers (it reads the registry on
    /// its own schedule; a push for a comet it does not know yet is dropped, counted).
    pub fn job_knows(&self, names: &[&str]) -> bool {
        let log = self.log_text();
        names
            .iter()
            .all(|n| log.contains(&format!("comet added server={n}")))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log (last lines) ---\n{}",
                self.name,
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// A goim client over TCP whose heartbeats run on their own thread (every 500 ms), so its
/// session stays renewed and its deadline met whatever the test is doing.
pub struct Member {
    pub key: String,
    sock: TcpStream,
    buf: Vec<u8>,
    /// Bodies of pushes (op 1000), in arrival order.
    pub got: Vec<String>,
    pub heartbeats: u64,
    /// The room's online count in the last heartbeat reply.
    pub online: i32,
    pub closed: bool,
    stop: Arc<AtomicBool>,
}

pub fn token(mid: i64, key: &str, room: &str) -> Vec<u8> {
    serde_json::json!({"mid": mid, "key": key, "room_id": room, "platform": "linux", "accepts": [1000]})
        .to_string()
        .into_bytes()
}

impl Member {
    /// Connects and authenticates; `Err` when the comet refuses (closes) or cannot be reached.
    pub fn join(addr: SocketAddr, mid: i64, key: &str, room: &str) -> Result<Member, String> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        sock.write_all(&Packet::new(1, 7, 1, token(mid, key, room)).to_bytes())
            .map_err(|e| e.to_string())?;
        let mut m = Member {
            key: key.into(),
            sock,
            buf: Vec::new(),
            got: Vec::new(),
            heartbeats: 0,
            online: 0,
            closed: false,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = m.next_packet() {
                if p.op == 8 {
                    break;
                }
                continue;
            }
            if m.closed {
                return Err("closed before the auth reply".into());
            }
            if Instant::now() > deadline {
                return Err("no auth reply".into());
            }
        }
        let mut w = m.sock.try_clone().unwrap();
        let stop = m.stop.clone();
        std::thread::spawn(move || {
            let hb = Packet::new(1, 2, 2, Vec::new()).to_bytes();
            while !stop.load(Ordering::Relaxed) {
                if w.write_all(&hb).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Ok(m)
    }

    /// Reads once (≤ 50 ms); the next packet if one is whole.
    fn next_packet(&mut self) -> Option<Packet> {
        if let Some(p) = packet::decode(&self.buf, usize::MAX >> 1).unwrap() {
            let p = p.to_owned();
            self.buf.drain(..p.as_ref().wire_len());
            return Some(p);
        }
        let mut tmp = [0u8; 65536];
        match self.sock.read(&mut tmp) {
            Ok(0) => self.closed = true,
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => self.closed = true,
        }
        None
    }

    /// Reads whatever arrives for `d`, recording pushes and heartbeat replies.
    pub fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.closed {
            if let Some(p) = self.next_packet() {
                self.record(p);
            }
        }
    }

    fn record(&mut self, p: Packet) {
        match p.op {
            3 => {
                self.heartbeats += 1;
                self.online = i32::from_be_bytes(p.body[..4].try_into().unwrap());
            }
            1000 => self.got.push(String::from_utf8_lossy(&p.body).into_owned()),
            _ => {}
        }
    }

    /// Reads until `done` holds; false if it did not within [`WAIT`] or the connection closed.
    pub fn until(&mut self, done: impl Fn(&Member) -> bool) -> bool {
        let end = Instant::now() + WAIT;
        while !done(self) {
            if self.closed || Instant::now() > end {
                return done(self);
            }
            if let Some(p) = self.next_packet() {
                self.record(p);
            }
        }
        true
    }

    /// Pushes received whose body starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.got
            .iter()
            .filter(|b| b.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP request to logic's API: (goim code, the whole reply); `i64::MIN` when logic
/// cannot be reached or answers no envelope.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (i64, serde_json::Value) {
    match crate::common::try_http(addr, method, path, body) {
        Ok((_, v)) => (v["code"].as_i64().unwrap_or(i64::MIN), v),
        Err(e) => (i64::MIN, serde_json::Value::String(e.to_string())),
    }
}

/// `GET path` on an ops listener (`/metrics`, `/healthz`, `/readyz`): (HTTP status, body
/// text); `(0, why)` when nothing answers.
pub fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let get = || -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(WAIT))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        Ok((status, body.unwrap_or_default()))
    };
    get().unwrap_or_else(|e| (0, e.to_string()))
}

/// The sum of every sample of `series` (a name as scraped, e.g. `x_total`, over all its label
/// sets) in Prometheus text; `None` when the scrape has no such series.
pub fn metric_sum(text: &str, series: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            rest.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls `/readyz` on `addr` until it answers `status`; the last body.
pub fn ready_becomes(addr: SocketAddr, status: u16, what: &str) -> String {
    let mut last = String::new();
    eventually(&format!("{what}: /readyz answers {status}"), || {
        let (s, body) = scrape(addr, "/readyz");
        last = body;
        s == status
    });
    last
}

/// Polls `f` until it holds, or fails the test after [`WAIT`].
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET key` over RESP; `None` for nil.
pub fn redis_get(addr: SocketAddr, key: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("GET {key}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let r = String::from_utf8_lossy(&buf[..n]).into_owned();
    if r.starts_with("$-1") {
        None
    } else {
        r.split("\r\n").nth(1).map(str::to_string)
    }
}
