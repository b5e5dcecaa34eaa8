//! Real servers for tests: a `redis-server`, a `tansu` Kafka-protocol broker and a PostgreSQL
//! cluster (Debian's binaries), each on a spare port in its own temporary directory, which a
//! test can stop and start again on the same port. `tools/test.sh` installs them when absent;
//! a test that finds one missing fails and says how to get it (it never passes without the
//! real server).

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
/// `resume` starts it again on the same address (with whatever its directory kept); `freeze`
/// and `thaw` hang it and let it go on.
pub struct Daemon {
    pub addr: SocketAddr,
    name: &'static str,
    dir: PathBuf,
    command: fn(SocketAddr, &Path) -> Command,
    /// Beyond listening: true once the server answers (PostgreSQL listens while it recovers).
    ready: Option<fn(SocketAddr, &Path) -> bool>,
    child: Option<Child>,
    /// The processes [`Daemon::freeze`] stopped (the server and its descendants), until
    /// [`Daemon::thaw`].
    frozen: Vec<i32>,
}

impl Daemon {
    fn start(ip: IpAddr, name: &'static str, command: fn(SocketAddr, &Path) -> Command) -> Self {
        let mut d = Daemon::new(ip, name, command);
        d.resume();
        d
    }

    fn new(ip: IpAddr, name: &'static str, command: fn(SocketAddr, &Path) -> Command) -> Self {
        Daemon {
            addr: SocketAddr::new(ip, spare_port(ip)),
            name,
            dir: scratch_dir(name),
            command,
            ready: None,
            child: None,
            frozen: Vec::new(),
        }
    }

    /// Kills the server and every process it started (SIGKILL, as a host crash). Killing
    /// only the parent left PostgreSQL's backends alive for a moment, and one of them could
    /// still commit on its pooled connection after the server was "stopped" (a CI run saw a
    /// send stored at seq 53 where the test expected 503). The parent is stopped first, so
    /// that it starts no new child while they are listed. A frozen server is thawed first.
    pub fn stop(&mut self) {
        self.thaw();
        if let Some(mut c) = self.child.take() {
            let root = c.id() as i32;
            signal(root, libc::SIGSTOP);
            let children = descendants(root);
            let _ = c.kill();
            for pid in children {
                signal(pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Hangs the server as a stalled host would: SIGSTOP to it, then to every process it
    /// started (PostgreSQL's backends, each holding one client connection). Its sockets stay
    /// open: connects complete in the kernel's backlog, and nothing is answered until
    /// [`Daemon::thaw`]. Does nothing when it is not running or already frozen.
    pub fn freeze(&mut self) {
        let Some(c) = &self.child else { return };
        if !self.frozen.is_empty() {
            return;
        }
        let root = c.id() as i32;
        // The parent first, so that it starts no new child meanwhile.
        signal(root, libc::SIGSTOP);
        self.frozen.push(root);
        for pid in descendants(root) {
            signal(pid, libc::SIGSTOP);
            self.frozen.push(pid);
        }
    }

    /// Lets a frozen server go on (SIGCONT to every process `freeze` stopped).
    pub fn thaw(&mut self) {
        for pid in std::mem::take(&mut self.frozen).into_iter().rev() {
            signal(pid, libc::SIGCONT);
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
        if let Some(ready) = self.ready {
            let start = Instant::now();
            while !ready(self.addr, &self.dir) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{} on {} did not become ready within 60 s",
                    self.name,
                    self.addr
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Sends `sig` to `pid`; a process already gone is no error (it cannot hang anything).
fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Every process below `root` (children, their children, ...), read from `/proc/<pid>/stat`
/// (field 4 is the parent's pid; the command name before it is in parentheses and may hold
/// spaces, so the fields are counted after the last `)`).
fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let ppid = after_name.split_whitespace().nth(1)?.parse::<i32>().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = Vec::new();
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent {
                out.push(pid);
                next.push(pid);
            }
        }
    }
    out
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

/// PostgreSQL from Debian's `postgresql` package: `initdb` into the scratch directory, then
/// `postgres` on `127.0.0.1:<spare port>` (unix socket in the scratch directory), trust auth,
/// default durability (`fsync = on`), small `shared_buffers`. As root, both run as the
/// `postgres` system user (PostgreSQL refuses root) and the scratch directory is chowned to
/// it. `stop` is a SIGKILL (a crash); `resume` starts it again on the same directory, which
/// runs crash recovery.
///
/// The binaries are looked up in `$STARLING_PG_BIN`, else the highest
/// `/usr/lib/postgresql/<version>/bin`.
pub struct Postgres;

/// The directory holding `initdb`, `postgres` and `psql`.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STARLING_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL not found (no /usr/lib/postgresql/<version>/bin/postgres): run \
             tools/test.sh, which installs Debian's postgresql, or set STARLING_PG_BIN"
        )
    })
}

/// `(uid, gid)` of the `postgres` system user when this process runs as root, else `None`.
fn pg_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .unwrap_or_else(|| {
            panic!(
                "running as root and no `postgres` user to run PostgreSQL as: run tools/test.sh, \
                 which installs Debian's postgresql (it creates the user)"
            )
        });
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

/// A command for a PostgreSQL binary, as the `postgres` user when we are root, killed when
/// the thread that started it ends (so a test binary leaves no server behind).
fn pg_command(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(pg_bin().join(program));
    if let Some((uid, gid)) = pg_user() {
        c.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe; it runs in the child after the uid change (which
    // would clear it) and before exec.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.env("LC_ALL", "C");
    c
}

/// Removes scratch directories of PostgreSQL servers whose test process is gone (a shared
/// server's directory outlives its process: statics are never dropped).
fn sweep_stale_pg_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("starling-postgres-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Postgres {
    /// A new server of its own (a test that kills it).
    pub fn start() -> Daemon {
        Postgres::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// A new server of its own listening on `ip` (the multi-host test's bridge address), which
    /// trusts every client address: tier processes in other network namespaces connect to it.
    pub fn start_on(ip: IpAddr) -> Daemon {
        sweep_stale_pg_dirs();
        let mut d = Daemon::new(ip, "postgres", |addr, dir| {
            let mut c = pg_command("postgres");
            c.arg("-D")
                .arg(dir.join("data"))
                .args(["-p", &addr.port().to_string()])
                .args(["-h", &addr.ip().to_string()])
                .arg("-k")
                .arg(dir)
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=300"])
                .args(["-c", "fsync=on"]);
            c
        });
        d.ready = Some(|addr, _| {
            pg_command("psql")
                .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-XAtqc", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if let Some((uid, gid)) = pg_user() {
            std::os::unix::fs::chown(&d.dir, Some(uid), Some(gid))
                .expect("chown of the scratch directory to postgres");
        }
        // -N: initdb skips its final sync (only a power loss during the test could matter);
        // the server itself runs with fsync on.
        let out = pg_command("initdb")
            .arg("-D")
            .arg(d.dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running initdb: {e}: run tools/test.sh"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // initdb trusts loopback only; the hosts of the multi-host test come over a bridge.
        let hba = d.dir.join("data").join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).expect("writing pg_hba.conf");
        d.resume();
        d
    }

    /// One server shared by every test of this process (started on first use by a thread
    /// that lives as long as the process; the server dies with it). Each test takes its own
    /// database from it with [`Daemon::create_database`].
    pub fn shared() -> &'static Daemon {
        static SHARED: std::sync::OnceLock<&'static Daemon> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("testkit-postgres".into())
                .spawn(move || {
                    // Started here so the parent-death signal fires only at process exit.
                    let d: &'static Daemon = Box::leak(Box::new(Postgres::start()));
                    tx.send(d).expect("handing the shared server over");
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawning the postgres keeper thread");
            rx.recv()
                .expect("the shared PostgreSQL server did not start (see the panic above)")
        })
    }
}

impl Daemon {
    /// `postgres://postgres@addr/db`, for a PostgreSQL daemon.
    pub fn pg_url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr)
    }

    /// Creates a fresh database on a PostgreSQL daemon and returns its URL.
    pub fn create_database(&self) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let db = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = pg_command("psql")
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-XAtqc"])
            .arg(format!("CREATE DATABASE {db}"))
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.pg_url(&db)
    }
}

/// File descriptors this process has open now (`/proc/self/fd`).
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// Sets this process's soft `RLIMIT_NOFILE` to `soft` (at most the hard limit) and returns
/// the old soft limit, for tests of running out of descriptors (EMFILE).
pub fn set_nofile(soft: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        let old = r.rlim_cur;
        r.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        old
    }
}
