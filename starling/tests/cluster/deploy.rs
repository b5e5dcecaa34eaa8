//! The deployment under test: Redis and the broker on the bridge, logic, two comets and job
//! each in its own namespace, with short intervals so failures show within seconds.

use super::{Member, Net, Proc, bin, call, eventually};
use starling_cluster::testkit::{Daemon, Redis, Tansu};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "goim-push-topic";
/// Every member joins this room.
pub const ROOM: &str = "live://7";
pub const ROOM_PUSH: &str = "/goim/push/room?operation=1000&type=live&room=7";

pub(super) const REGISTRY: &str = "[registry]\ninterval = \"300ms\"\nttl = \"1500ms\"\n";

/// The `[metrics]` listeners of the comet and job binaries, on their documented ports (every
/// process has a namespace of its own, so any address of it will do).
pub const COMET_OPS_PORT: u16 = 3190;
pub const JOB_OPS_PORT: u16 = 3191;

pub(super) fn comet_conf(name: &str, ip: &str, logic: &str, redis: &str) -> String {
    comet_conf_many(name, ip, &[logic], redis)
}

/// A comet calling every logic node in `logics` (tonic balances over them).
pub(super) fn comet_conf_many(name: &str, ip: &str, logics: &[&str], redis: &str) -> String {
    let addrs: Vec<String> = logics.iter().map(|l| format!("\"{l}:3119\"")).collect();
    let addrs = addrs.join(", ");
    // tools/test.sh runs the integration tests again on the epoll driver.
    let driver = std::env::var("STARLING_TEST_DRIVER").unwrap_or_else(|_| "auto".into());
    format!(
        r#"[comet]
server_id = "{name}"
driver = "{driver}"
workers = 1
online_interval = "300ms"
session_renew = "1s"
lame_duck = "2s"
[grpc]
bind = "{ip}:3109"
[logic]
addrs = [{addrs}]
[redis]
url = "{redis}"
[metrics]
bind = "0.0.0.0:{COMET_OPS_PORT}"
{REGISTRY}"#
    )
}

/// logic's file. `redis.expire` (12 s) outlives comet's close of a silent connection
/// (heartbeat × heartbeat_max = 10 s) plus comet's `session_renew` (1 s), as logic requires:
/// with 6 s, a client silent for 6–10 s kept its connection but lost its device entry, and
/// missed the pushes of that window (a CI failure of t4).
pub(super) fn logic_conf(redis: &str, brokers: &str, extra: &str) -> String {
    format!(
        r#"[logic]
online_expire = "5s"
[logic.node]
heartbeat = "2s"
heartbeat_max = 5
[grpc]
online_refresh = "300ms"
[redis]
url = "{redis}"
expire = "12s"
[kafka]
brokers = ["{brokers}"]
topic = "{TOPIC}"
{REGISTRY}{extra}"#
    )
}

pub(super) fn job_conf(redis: &str, brokers: &str) -> String {
    format!(
        r#"[kafka]
brokers = ["{brokers}"]
topic = "{TOPIC}"
session_timeout = "3s"
[redis]
url = "{redis}"
[comets]
timeout = "2s"
retries = 2
[metrics]
bind = "0.0.0.0:{JOB_OPS_PORT}"
{REGISTRY}"#
    )
}

pub struct Cluster {
    pub redis: Daemon,
    pub broker: Daemon,
    pub logic: Proc,
    pub comet1: Proc,
    pub comet2: Proc,
    pub job: Proc,
    /// logic's HTTP API, and each comet's TCP listener.
    pub http: SocketAddr,
    pub c1: SocketAddr,
    pub c2: SocketAddr,
    /// The `[metrics]` listeners (`/metrics`, `/healthz`, `/readyz`) of the comets and job.
    pub c1_ops: SocketAddr,
    pub c2_ops: SocketAddr,
    pub job_ops: SocketAddr,
    started: Instant,
    dir: PathBuf,
    // Dropped last: the namespaces outlive the processes in them.
    _net: Net,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(|_| String::new())
    }

    /// [`Cluster::start`], with tables added to logic's configuration; `logic_extra` gets the
    /// test's scratch directory (for an IM store, say).
    pub fn start_with(logic_extra: impl FnOnce(&std::path::Path) -> String) -> Cluster {
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("starling-multihost-{}", std::process::id()));
        // A failed run keeps its directory (logs to read); a later process given the same
        // pid must not read that run's logs as its own.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net::new();
        let root: std::net::IpAddr = net.root_ip().parse().unwrap();
        let redis = Redis::start_on(root);
        let broker = Tansu::start_on(root);
        broker.create_topic(TOPIC, 3);
        let (url, brokers) = (redis.url(), broker.addr.to_string());
        let (ns_c1, ip_c1) = net.host("comet1", 11);
        let (ns_c2, ip_c2) = net.host("comet2", 12);
        let (ns_l, ip_l) = net.host("logic", 13);
        let (ns_j, ip_j) = net.host("job", 14);
        let start = |name: &str, ns: &str, binary: &str, conf: String| {
            Proc::start(&dir, name, ns, bin(binary), &conf)
        };
        let c = Cluster {
            logic: start(
                "logic",
                &ns_l,
                "logic",
                logic_conf(&url, &brokers, &logic_extra(&dir)),
            ),
            comet1: start(
                "comet1",
                &ns_c1,
                "comet",
                comet_conf("comet1", &ip_c1, &ip_l, &url),
            ),
            comet2: start(
                "comet2",
                &ns_c2,
                "comet",
                comet_conf("comet2", &ip_c2, &ip_l, &url),
            ),
            job: start("job", &ns_j, "job", job_conf(&url, &brokers)),
            http: format!("{ip_l}:3111").parse().unwrap(),
            c1: format!("{ip_c1}:3101").parse().unwrap(),
            c2: format!("{ip_c2}:3101").parse().unwrap(),
            c1_ops: format!("{ip_c1}:{COMET_OPS_PORT}").parse().unwrap(),
            c2_ops: format!("{ip_c2}:{COMET_OPS_PORT}").parse().unwrap(),
            job_ops: format!("{ip_j}:{JOB_OPS_PORT}").parse().unwrap(),
            redis,
            broker,
            started,
            dir: dir.clone(),
            _net: net,
        };
        c.phase(&format!(
            "hosts: comet1 {ip_c1}, comet2 {ip_c2}, logic {ip_l}, job {ip_j}; redis {}, broker {}",
            c.redis.addr, c.broker.addr
        ));
        // Pushes go through job, which reads the registry on its own schedule: a room push
        // reaches only the comets job already knows, so a cluster is started once logic
        // lists both comets and job has added both.
        eventually("both comets registered", || c.listed(&["comet1", "comet2"]));
        eventually("job knows both comets", || {
            c.job.job_knows(&["comet1", "comet2"])
        });
        c
    }

    /// Prints a step of the test with the time since the start.
    pub fn phase(&self, what: &str) {
        println!("[{:>6.2}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// POSTs `body` to logic and asserts it was accepted.
    pub fn push(&self, path: &str, body: &str) {
        let (code, v) = call(self.http, "POST", path, body.as_bytes());
        assert_eq!(code, 0, "{path} {body}: {v}");
    }

    /// Whether `/goim/nodes/instances` lists exactly these comets.
    pub fn listed(&self, want: &[&str]) -> bool {
        let (code, v) = call(self.http, "GET", "/goim/nodes/instances", b"");
        let mut names: Vec<&str> = v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["hostname"].as_str()).collect())
            .unwrap_or_default();
        names.sort();
        code == 0 && names == want
    }

    /// A member in [`ROOM`], retried while its comet is still starting.
    pub fn join(&self, addr: SocketAddr, mid: i64, key: &str) -> Member {
        let mut r = Err(String::new());
        eventually(&format!("{key} joins"), || {
            r = Member::join(addr, mid, key, ROOM);
            r.is_ok()
        });
        r.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Each member's pushes with `prefix`, exactly `want`, in order.
pub fn assert_exact(m: &Member, prefix: &str, want: &[String]) {
    assert_eq!(m.with_prefix(prefix), want, "{} ({prefix})", m.key);
}

/// `prefix0`, `prefix1`, ...
pub fn seq(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Asserts `took` is under a bound the deployment promises (a push answered within 2 s).
pub fn within(took: Duration, bound: Duration, what: &str) {
    assert!(took < bound, "{what} took {took:?}");
}
