//! A real all-in-one (the `starling` library, as `starling/tests` start it) with IM on, on
//! fixed loopback ports so it can be restarted in place, and helpers to read events.
#![allow(dead_code)]

use starling::{Config, Running};
use starling_client::backoff::Backoff;
use starling_client::codec::Codec;
use starling_client::im::{ConvKind, ConvRef};
use starling_client::{
    Client, Config as ClientConfig, ConnState, Event, Events, Identity, Servers, Transport,
};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a test waits for something that should happen (a pass never waits it out).
pub const WAIT: Duration = Duration::from_secs(15);

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Server {
    pub config: Config,
    running: Option<Running>,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

impl Server {
    /// The all-in-one with IM on (`insecure_trust_mid`: no tokens to mint), a 200 ms
    /// gap wait, its store in a fresh directory.
    pub fn start(edit: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (tcp, ws, http) = (free_addr(), free_addr(), free_addr());
        let mut c = Config::default();
        c.comet.workers = 1;
        c.comet.server_id = "comet-client-test".into();
        c.comet.tcp.bind = vec![tcp];
        c.comet.websocket.bind = vec![ws];
        c.comet.websocket.tls_bind = vec![];
        c.comet.online_interval = Duration::from_millis(100);
        c.comet.protocol.tick = Duration::from_millis(20);
        c.logic.http.bind = http;
        c.grpc.bind = free_addr();
        c.log.filter = "warn".into();
        c.im.enabled = true;
        c.im.insecure_trust_mid = true;
        c.im.path = dir.path().join("im");
        c.im.send_rate = 100_000;
        c.im.gap_wait = Duration::from_millis(200);
        edit(&mut c);
        let running = starling::start(c.clone()).expect("server starts");
        Server {
            config: c,
            running: Some(running),
            tcp,
            ws,
            http,
            _dir: dir,
        }
    }

    /// A client config for `mid` over `transport`, with a fast backoff.
    pub fn client(&self, mid: i64, key: &str, transport: Transport) -> ClientConfig {
        let (addr, codec) = match transport {
            Transport::Tcp => (self.tcp, Codec::Protobuf),
            Transport::WebSocket => (self.ws, Codec::Json),
        };
        let mut c = ClientConfig::new(
            Identity {
                mid,
                key: key.into(),
                platform: "test".into(),
                im: Some(codec),
                ..Default::default()
            },
            transport,
            Servers::Addrs(vec![addr.to_string()]),
        );
        c.heartbeat = Some(Duration::from_secs(1));
        c.backoff = Some(Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(300),
            factor: 2.0,
        });
        c
    }
}

/// The `starling` binary as a child process on fixed ports and one store, so it can be
/// killed (SIGKILL: no drain) and started again in place. The in-process library cannot be
/// restarted on the same store: its shutdown leaves the embedded store locked.
pub struct Process {
    config: std::path::PathBuf,
    child: Option<std::process::Child>,
    pub tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `target/<profile>/starling`, next to this test's `deps/` directory; built if missing.
fn binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("starling");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = std::process::Command::new(cargo)
            .args(["build", "-p", "starling", "--bin", "starling"])
            .status()
            .unwrap()
            .success();
        assert!(ok && bin.exists(), "cannot build {}", bin.display());
    }
    bin
}

impl Process {
    pub fn new() -> Process {
        let dir = tempfile::tempdir().unwrap();
        let (tcp, ws, http) = (free_addr(), free_addr(), free_addr());
        let config = dir.path().join("starling.toml");
        std::fs::write(
            &config,
            format!(
                "[comet]\nworkers = 1\n[comet.tcp]\nbind = [\"{tcp}\"]\n\
                 [comet.websocket]\nbind = [\"{ws}\"]\ntls_bind = []\n\
                 [logic.http]\nbind = \"{http}\"\n[grpc]\nbind = \"127.0.0.1:0\"\n\
                 [im]\nenabled = true\ninsecure_trust_mid = true\npath = \"{}\"\n\
                 send_rate = 100000\ngap_wait = \"200ms\"\n[log]\nfilter = \"warn\"\n",
                dir.path().join("im").display()
            ),
        )
        .unwrap();
        Process {
            config,
            child: None,
            tcp,
            _dir: dir,
        }
    }

    /// Starts the binary and waits until its TCP port accepts.
    pub fn start(&mut self) {
        let child = std::process::Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.tcp).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "starling did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self, mid: i64, key: &str) -> ClientConfig {
        let mut c = ClientConfig::new(
            Identity {
                mid,
                key: key.into(),
                platform: "test".into(),
                im: Some(Codec::Protobuf),
                ..Default::default()
            },
            Transport::Tcp,
            Servers::Addrs(vec![self.tcp.to_string()]),
        );
        c.heartbeat = Some(Duration::from_secs(1));
        c.backoff = Some(Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(300),
            factor: 2.0,
        });
        c
    }
}

pub fn p2p(peer: i64) -> ConvRef {
    ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    }
}

/// A tokio runtime for the client side (the server runs its own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a client and waits until its first sync pass is over.
pub async fn synced(config: ClientConfig) -> (Client, Events) {
    let (c, mut ev) = Client::start(config);
    next_matching(&mut ev, "synced", |e| {
        matches!(e, Event::State(ConnState::Synced))
    })
    .await;
    (c, ev)
}

/// Reads events until one matches (returned); the ones before it are returned too.
pub async fn next_matching(
    ev: &mut Events,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let mut seen = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        loop {
            match ev.recv().await {
                Some(e) if f(&e) => return e,
                Some(e) => seen.push(e),
                None => panic!("event stream ended before {what}: {seen:?}"),
            }
        }
    })
    .await;
    match r {
        Ok(e) => (e, seen),
        Err(_) => panic!("no {what} within {WAIT:?}: {seen:?}"),
    }
}

/// Collects the seqs of `conv`'s messages until `n` arrived.
pub async fn seqs(ev: &mut Events, conv: ConvRef, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while got.len() < n {
            match ev.recv().await {
                Some(Event::Message(m)) if m.conv == Some(conv) => got.push(m.seq),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "only {got:?} of {n} messages arrived");
    got
}
