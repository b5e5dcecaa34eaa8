//! IM crash scenarios (reference im.md §9 T3, T14): the all-in-one binary killed with SIGKILL
//! under load and restarted on the same store; nothing it acknowledged may be lost, seqs stay
//! contiguous, and each sender's messages keep their order.

mod common;

use common::im_client::{ImClient, Login, group};
use starling_im::token::Tokens;
use starling_proto::im::v1::{ConvRef, Message, PullReply, PullReq, pull_req::Direction};
use starling_proto::op::{self, Codec};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "crash-secret-0123456789abcdef";
const ADMIN: &str = "crash-admin-token";

fn spare_port() -> u16 {
    starling_cluster::testkit::spare_port([127, 0, 0, 1].into())
}

/// The all-in-one binary on fixed spare ports and a store directory that outlive it.
struct Node {
    config: PathBuf,
    tcp: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn new(dir: &Path, extra: &str) -> Node {
        let (tcp, ws, http) = (spare_port(), spare_port(), spare_port());
        let config = dir.join("starling.toml");
        std::fs::write(
            &config,
            format!(
                "[comet]\nworkers = 1\n[comet.tcp]\nbind = [\"127.0.0.1:{tcp}\"]\n\
                 [comet.websocket]\nbind = [\"127.0.0.1:{ws}\"]\ntls_bind = []\n\
                 [logic.http]\nbind = \"127.0.0.1:{http}\"\n[grpc]\nbind = \"127.0.0.1:0\"\n\
                 [im]\nenabled = true\ntoken_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n\
                 path = \"{}\"\nsend_rate = 100000\n{extra}\n[log]\nfilter = \"info\"\n",
                dir.join("im").display()
            ),
        )
        .unwrap();
        Node {
            config,
            tcp: format!("127.0.0.1:{tcp}").parse().unwrap(),
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            child: None,
            stdout: Arc::default(),
            stderr: Arc::default(),
        }
    }

    /// Starts the binary and waits until it serves.
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let log = self.stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("starling running") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while rx.recv_timeout(Duration::from_millis(20)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers finish
                panic!(
                    "starling exited with {status}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "starling did not start");
        }
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no flush.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn login(&self, mid: i64, key: &str) -> Login {
        Login {
            addr: self.tcp,
            ws: false,
            codec: Codec::Protobuf,
            mid,
            key: key.into(),
            platform: "test".into(),
            im_token: Tokens::new(SECRET)
                .unwrap()
                .mint(mid, "test", 3600)
                .unwrap(),
        }
    }

    fn admin(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        common::im_server::admin_call(self.http, ADMIN, method, path, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every message of `conv` as `reader` may read it, ascending.
fn whole_log(node: &Node, reader: i64, conv: ConvRef) -> Vec<Message> {
    let mut c = ImClient::connect(node.login(reader, "checker")).unwrap();
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let r: PullReply = c
            .call(
                op::im::PULL,
                &PullReq {
                    conv: Some(conv),
                    dir: Direction::Forward as i32,
                    from_seq: from,
                    limit: 200,
                },
            )
            .unwrap();
        out.extend(r.messages);
        if !r.has_more {
            return out;
        }
        from = r.next_seq;
    }
}

/// T3: three senders × 2,000 messages to one group while the process is killed three times.
#[test]
fn t3_kill_9_under_load_loses_nothing_acknowledged() {
    const PER_SENDER: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "");
    node.start();
    let (status, v) = node.admin(
        "POST",
        "/im/v1/groups",
        r#"{"gid":"7","name":"crash","owner":"1","members":["2","3","4"],"history":"all"}"#,
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let acked: Arc<Mutex<Vec<(i64, usize, u64)>>> = Arc::default();
    let mut senders = Vec::new();
    for mid in 1..=3i64 {
        let login = node.login(mid, &format!("s{mid}"));
        let acked = acked.clone();
        senders.push(std::thread::spawn(move || {
            let mut c = loop {
                match ImClient::connect(login.clone()) {
                    Ok(c) => break c,
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            for k in 0..PER_SENDER {
                let acks = c.send(group(7), &format!("{mid}-{k}"), &format!("{k}"));
                let last = acks.last().unwrap();
                assert_eq!(last.code, 0, "{acks:?}");
                acked.lock().unwrap().push((mid, k, last.seq));
            }
        }));
    }
    // Three kills at random-ish points of the run, each followed by a restart.
    let mut rng = std::process::id() as u64 | 1;
    for _ in 0..3 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = 300 + rng % 900;
        std::thread::sleep(Duration::from_millis(wait));
        node.kill();
        std::thread::sleep(Duration::from_millis(100));
        node.start();
    }
    for s in senders {
        s.join().unwrap();
    }
    let log = whole_log(&node, 4, group(7));
    let acked = acked.lock().unwrap();
    common::im_server::assert_nothing_acknowledged_lost(&log, &acked, 3, PER_SENDER);
}

/// T14: with durability "sync", a kill right after each ack, 200 times: nothing acked lost.
#[test]
fn t14_kill_right_after_each_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "durability = \"sync\"");
    let mut acked = Vec::new();
    for i in 0..200 {
        node.start();
        let mut c = ImClient::connect(node.login(1, "a")).unwrap();
        let acks = c.send(
            common::im_client::p2p(2),
            &format!("k-{i}"),
            &format!("{i}"),
        );
        assert_eq!(acks.last().unwrap().code, 0);
        acked.push(acks.last().unwrap().seq);
        node.kill();
    }
    node.start();
    let log = whole_log(&node, 2, common::im_client::p2p(1));
    assert_eq!(log.len(), 200);
    for (i, seq) in acked.iter().enumerate() {
        assert_eq!(log[*seq as usize - 1].client_msg_id, format!("k-{i}"));
    }
}

/// "buffer" durability is never a default: set explicitly, it is logged loudly at start.
#[test]
fn t14_buffer_durability_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "durability = \"buffer\"");
    node.start();
    node.kill();
    let log = node.stdout.lock().unwrap().clone();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("im.durability = \"buffer\"")),
        "{log}"
    );
    assert_eq!(
        starling_im::Config::default().durability,
        starling_im::config::DurabilitySetting::Sync
    );
    // The default (sync) says nothing of the kind.
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = Node::new(dir.path(), "");
    quiet.start();
    quiet.kill();
    assert!(!quiet.stdout.lock().unwrap().contains("im.durability"));
}
