//! Real servers for tests: a `redis-server` and a `tansu` Kafka-protocol broker, each on a
//! spare port in its own temporary directory, which a test can stop and start again on the
//! same port. `tools/test.sh` installs both when absent; a test that finds one missing fails
//! and says how to get it (it never passes without the real server).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, on `ip`.
pub fn spare_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("binding port 0")
        .port()
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {addr} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starling-{name}-{}-{}",
        std::process::id(),
        spare_port(IpAddr::from([127, 0, 0, 1]))
    ));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

fn find(program: &str, extra: &[PathBuf]) -> PathBuf {
    if let Ok(p) = std::env::var(format!(
        "STARLING_{}",
        program.to_uppercase().replace('-', "_")
    )) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} not found: run tools/test.sh, which installs it, or put it on PATH")
        })
}

/// A process we started, killed when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-server` with no persistence, on `ip:port`.
pub struct Redis {
    pub addr: SocketAddr,
    dir: PathBuf,
    proc: Proc,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    pub fn start_on(ip: IpAddr) -> Redis {
        let addr = SocketAddr::new(ip, spare_port(ip));
        let mut r = Redis {
            addr,
            dir: scratch_dir("redis"),
            proc: Proc(None),
        };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (its data goes with it, as after a crash without persistence).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) {
        let bin = find("redis-server", &[]);
        let child = Command::new(bin)
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", &self.addr.ip().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.proc = Proc(Some(child));
        wait_listening(self.addr, "redis-server");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `tansu` broker on its SQLite engine (which survives a restart; its memory engine lost
/// committed offsets here).
pub struct Tansu {
    pub addr: SocketAddr,
    dir: PathBuf,
    proc: Proc,
}

fn tansu_bin() -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"));
    find("tansu", &cargo_bin.into_iter().collect::<Vec<_>>())
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    pub fn start_on(ip: IpAddr) -> Tansu {
        let addr = SocketAddr::new(ip, spare_port(ip));
        let mut t = Tansu {
            addr,
            dir: scratch_dir("tansu"),
            proc: Proc(None),
        };
        t.resume();
        t
    }

    pub fn brokers(&self) -> Vec<String> {
        vec![self.addr.to_string()]
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_bin())
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://{}", self.addr)])
            .args(["--partitions", &partitions.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("running tansu topic create");
        assert!(status.success(), "tansu topic create {name} failed");
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts it again on the same port, with the same data.
    pub fn resume(&mut self) {
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // tansu reads the path after `sqlite://` relative to its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.proc = Proc(Some(child));
        wait_listening(self.addr, "tansu");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
