//! Real servers for tests: a `redis-server` and a `tansu` Kafka-protocol broker, each on a
//! spare port in its own temporary directory, which a test can stop and start again on the
//! same port. `tools/test.sh` installs both when absent; a test that finds one missing fails
//! and says how to get it (it never passes without the real server).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, on `ip`, below the kernel's ephemeral range: a
/// server stopped and started again on it must find it free, and a port from the ephemeral
/// range can meanwhile become the source port of some client's connection (then the restart
/// fails with "address in use").
pub fn spare_port(ip: IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    // Spread processes apart (several test binaries run at once), then walk.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = from + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(l) = TcpListener::bind((ip, port as u16)) {
            return l.local_addr().expect("a bound listener's address").port();
        }
    }
    panic!("no spare port below {low} on {ip}");
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

/// A server process on a fixed address with its own scratch directory; `stop` kills it,
/// `resume` starts it again on the same address (with whatever its directory kept).
pub struct Daemon {
    pub addr: SocketAddr,
    name: &'static str,
    dir: PathBuf,
    command: fn(SocketAddr, &Path) -> Command,
    child: Option<Child>,
}

impl Daemon {
    fn start(ip: IpAddr, name: &'static str, command: fn(SocketAddr, &Path) -> Command) -> Self {
        let mut d = Daemon {
            addr: SocketAddr::new(ip, spare_port(ip)),
            name,
            dir: scratch_dir(name),
            command,
            child: None,
        };
        d.resume();
        d
    }

    /// Kills the server (SIGKILL, as a crash).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address.
    pub fn resume(&mut self) {
        let child = (self.command)(self.addr, &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
        wait_listening(self.addr, self.name);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` without persistence: a stop loses its data, as a crash would.
pub struct Redis;

impl Redis {
    pub fn start() -> Daemon {
        Redis::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    pub fn start_on(ip: IpAddr) -> Daemon {
        Daemon::start(ip, "redis-server", |addr, dir| {
            let mut c = Command::new(find("redis-server", &[]));
            c.args(["--port", &addr.port().to_string()])
                .args(["--bind", &addr.ip().to_string()])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(dir);
            c
        })
    }
}

impl Daemon {
    /// `redis://addr`, for a Redis daemon.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The bootstrap list, for a broker daemon.
    pub fn brokers(&self) -> Vec<String> {
        vec![self.addr.to_string()]
    }

    /// Creates a topic with `partitions` partitions on a tansu broker.
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
}

/// The `tansu` broker on its SQLite engine, which keeps messages and committed offsets over
/// a restart (its memory engine lost committed offsets here).
pub struct Tansu;

fn tansu_bin() -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"));
    find("tansu", &cargo_bin.into_iter().collect::<Vec<_>>())
}

impl Tansu {
    pub fn start() -> Daemon {
        Tansu::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    pub fn start_on(ip: IpAddr) -> Daemon {
        Daemon::start(ip, "tansu", |addr, dir| {
            let url = format!("tcp://{addr}");
            let mut c = Command::new(tansu_bin());
            c.arg("broker")
                .args(["--listener-url", &url, "--advertised-listener-url", &url])
                // tansu reads the path after `sqlite://` relative to its working directory.
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir);
            c
        })
    }
}
