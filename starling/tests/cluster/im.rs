//! The IM deployment under test (reference im.md §9 "split tiers"): Redis, the broker and
//! PostgreSQL on the bridge; two logic nodes sharing PostgreSQL (the IM store) and Redis (goim's
//! sessions and IM's device table); two comets, each balancing over both logic nodes; job.
//! Every process can be killed (SIGKILL) and started again.

use super::deploy::{REGISTRY, TOPIC, comet_conf_many, job_conf, logic_conf};
use super::{Net, Proc, bin};
use crate::common::im_client::{ImClient, Login};
use crate::common::im_server::{ADMIN, SECRET};
use starling_cluster::testkit::{Daemon, Postgres, Redis, Tansu};
use starling_im::token::Tokens;
use starling_proto::im::v1::{Message, MsgKind};
use starling_proto::op::Codec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ImCluster {
    pub redis: Daemon,
    pub broker: Daemon,
    pub pg: Daemon,
    pub logic: Vec<Proc>,
    pub comet: Vec<Proc>,
    pub job: Proc,
    /// Each logic node's HTTP API (`/im/v1` included) and gRPC port (`starling.im.v1.Admin`).
    pub http: Vec<SocketAddr>,
    pub grpc: Vec<SocketAddr>,
    /// Each comet's TCP listener.
    pub comets: Vec<SocketAddr>,
    started: Instant,
    dir: PathBuf,
    // Dropped last: the namespaces outlive the processes in them.
    _net: Net,
}

/// `[im]` of both logic nodes: PostgreSQL at `pg_url`, the test secrets, senders unthrottled.
fn im_conf(pg_url: &str) -> String {
    format!(
        r#"
[im]
enabled = true
store = "postgres"
postgres_url = "{pg_url}"
store_timeout = "3s"
token_secret = "{SECRET}"
admin_token = "{ADMIN}"
send_rate = 100000
max_group_members = 2000
"#
    )
}

impl ImCluster {
    pub fn start() -> ImCluster {
        let started = Instant::now();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "starling-im-cluster-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // A failed run keeps its directory; a later process given the same pid starts clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net::new();
        let root: std::net::IpAddr = net.root_ip().parse().unwrap();
        let redis = Redis::start_on(root);
        let broker = Tansu::start_on(root);
        broker.create_topic(TOPIC, 3);
        let pg = Postgres::start_on(root);
        let pg_url = pg.create_database();
        let (url, brokers) = (redis.url(), broker.addr.to_string());
        let hosts: Vec<(String, String)> = [("comet1", 11), ("comet2", 12)]
            .iter()
            .chain(&[("logic1", 13), ("logic2", 14), ("job", 15)])
            .map(|(name, n)| net.host(name, *n))
            .collect();
        let ip = |i: usize| hosts[i].1.clone();
        let start = |name: &str, host: usize, binary: &str, conf: String| {
            Proc::start(&dir, name, &hosts[host].0, bin(binary), &conf)
        };
        let logic_ips = [ip(2), ip(3)];
        let logics: Vec<&str> = logic_ips.iter().map(String::as_str).collect();
        let logic = (0..2)
            .map(|i| {
                start(
                    &format!("logic{}", i + 1),
                    2 + i,
                    "logic",
                    logic_conf(&url, &brokers, &im_conf(&pg_url)),
                )
            })
            .collect();
        let comet = (0..2)
            .map(|i| {
                let name = format!("comet{}", i + 1);
                let conf = comet_conf_many(&name, &ip(i), &logics, &url);
                start(&name, i, "comet", conf)
            })
            .collect();
        let c = ImCluster {
            job: start("job", 4, "job", job_conf(&url, &brokers)),
            logic,
            comet,
            http: logic_ips
                .iter()
                .map(|l| format!("{l}:3111").parse().unwrap())
                .collect(),
            grpc: logic_ips
                .iter()
                .map(|l| format!("{l}:3119").parse().unwrap())
                .collect(),
            comets: (0..2)
                .map(|i| format!("{}:3101", ip(i)).parse().unwrap())
                .collect(),
            redis,
            broker,
            pg,
            started,
            dir,
            _net: net,
        };
        let _ = REGISTRY;
        c.phase(&format!(
            "hosts: comets {:?}, logic nodes {:?}; redis {}, broker {}, postgres {}",
            c.comets, c.http, c.redis.addr, c.broker.addr, c.pg.addr
        ));
        // Pushes go through job, which reads the registry on its own schedule.
        super::eventually("job knows both comets", || {
            c.job.job_knows(&["comet1", "comet2"])
        });
        // logic binds its HTTP port once its IM store is open.
        for http in c.http.clone() {
            super::eventually("a logic node serving /im/v1", || {
                std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_ok()
            });
        }
        c
    }

    /// Prints a step of the test with the time since the start.
    pub fn phase(&self, what: &str) {
        println!("[{:>6.2}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// A protobuf IM login of `mid` on comet `comet` (0 or 1).
    pub fn login(&self, comet: usize, mid: i64, key: &str) -> Login {
        Login {
            addr: self.comets[comet],
            ws: false,
            codec: Codec::Protobuf,
            mid,
            key: key.into(),
            platform: "linux".into(),
            im_token: Tokens::new(SECRET)
                .unwrap()
                .mint(mid, "linux", 3600)
                .unwrap(),
        }
    }

    /// An IM client (auth and sync), retried while the tiers are still starting.
    pub fn connect(&self, comet: usize, mid: i64, key: &str) -> ImClient {
        let login = self.login(comet, mid, key);
        let mut r = Err(String::new());
        super::eventually(&format!("{key} logs in"), || {
            r = ImClient::connect(login.clone());
            r.is_ok()
        });
        r.unwrap()
    }

    /// `/im/v1` on logic node `node`, asserting success; the reply's `data`.
    pub fn admin_ok(&self, node: usize, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (status, v) =
            crate::common::im_server::admin_call(self.http[node], ADMIN, method, path, body);
        assert_eq!(
            (status, v["code"].as_i64()),
            (200, Some(0)),
            "{method} {path} {body}: {v}"
        );
        v["data"].clone()
    }

    /// Kills process `p` (SIGKILL) and starts it again after `down`.
    pub fn bounce(p: &mut Proc, down: Duration) {
        p.kill();
        std::thread::sleep(down);
        p.resume();
    }
}

impl Drop for ImCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// Helpers of the tests that run an `ImCluster` (im_cluster.rs, im_cluster_outage.rs).

/// One deployment at a time (within one test binary; cargo runs the binaries one by one).
static TURN: Mutex<()> = Mutex::new(());

pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The whole log of `conv` as a fresh client of `reader` sees it after its sync.
pub fn whole_log(
    c: &ImCluster,
    comet: usize,
    reader: i64,
    conv: starling_proto::im::v1::ConvRef,
) -> Vec<Message> {
    let r = c.connect(
        comet,
        reader,
        &format!("checker-{reader}-{}", std::process::id()),
    );
    r.messages(conv).to_vec()
}

/// Asserts the log is seqs 1..=n with no hole, and returns its NORMAL messages.
pub fn contiguous(log: &[Message]) -> Vec<&Message> {
    assert_eq!(
        log.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "seqs contiguous from 1"
    );
    log.iter()
        .filter(|m| m.kind == MsgKind::Normal as i32)
        .collect()
}

/// Pumps every client until `done` holds for each; fails after `limit`.
pub fn pump_all(clients: &mut [ImClient], limit: Duration, done: impl Fn(&ImClient) -> bool) {
    let end = Instant::now() + limit;
    loop {
        let mut all = true;
        for c in clients.iter_mut() {
            if !done(c) {
                all = false;
                if c.pump(Duration::from_millis(20)).is_err() {
                    let _ = c.reconnect();
                }
            }
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < end,
            "not every client got there: {:?}",
            clients
                .iter()
                .filter(|c| !done(c))
                .map(|c| (
                    c.login.key.clone(),
                    c.convs.values().map(|s| s.contig).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
    }
}
