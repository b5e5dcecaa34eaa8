//! Starting comet: listeners, one thread per worker, accept loops.

use crate::bucket::Buckets;
use crate::close::{Refusal, Stats};
use crate::config::{Config, Driver};
use crate::conn::Kind;
use crate::handle::{Addrs, Comet, CometError};
use crate::logic::LogicClient;
use crate::worker::{Shared, Worker};
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Depth of each worker's command channel; senders wait when it is full.
const CMD_QUEUE: usize = 4096;

/// How long a port found in use is tried again: a comet killed a moment ago may still hold
/// its listening socket while the kernel tears its io_uring down (asynchronously, after the
/// process is gone), and a supervisor restarting it at once must not fail for that.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// [`bind_group_once`], tried again for up to [`BIND_RETRY`] while the port is in use.
fn bind_group(
    addr: SocketAddr,
    n: usize,
    backlog: i32,
) -> Result<Vec<std::net::TcpListener>, CometError> {
    let start = std::time::Instant::now();
    loop {
        match bind_group_once(addr, n, backlog) {
            Err(CometError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && start.elapsed() < BIND_RETRY =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Binds `addr` once per worker with SO_REUSEPORT, so the kernel spreads connections over the
/// workers. Port 0 is resolved by the first bind and reused by the others.
///
/// SO_REUSEPORT would also let a second comet (the same user's) bind a port this one holds,
/// and the kernel would then hand it part of the connections: a fixed port is first bound
/// without SO_REUSEPORT, which fails with "address in use" if any process listens there.
fn bind_group_once(
    addr: SocketAddr,
    n: usize,
    backlog: i32,
) -> Result<Vec<std::net::TcpListener>, CometError> {
    if addr.port() != 0 {
        let err = |e: std::io::Error| CometError::Bind { addr, source: e };
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(err)?;
        // SO_REUSEADDR: a closed connection lingering in TIME_WAIT is no owner.
        probe.set_reuse_address(true).map_err(err)?;
        probe.bind(&addr.into()).map_err(err)?;
    }
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let err = |e: std::io::Error| CometError::Bind { addr, source: e };
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&addr.into()).map_err(err)?;
        s.listen(backlog).map_err(err)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr().map_err(err)?;
        out.push(l);
    }
    Ok(out)
}

/// Starts comet: binds every listener, starts the workers and returns once each has built its
/// runtime. Errors (a port in use, a bad certificate) are returned, not logged and ignored.
pub fn start(config: Config, logic: Arc<dyn LogicClient>) -> Result<Comet, CometError> {
    config.validate()?;
    let n = config.worker_count();
    let tls = if config.tls_enabled() {
        Some(crate::tls::server_config(
            &config.websocket.cert_file,
            &config.websocket.key_file,
        )?)
    } else {
        None
    };
    let mut groups: Vec<(Kind, Vec<std::net::TcpListener>)> = Vec::new();
    let mut addrs = Addrs::default();
    let backlog = config.tcp.backlog;
    for &a in &config.tcp.bind {
        let g = bind_group(a, n, backlog)?;
        addrs.tcp.push(g[0].local_addr().expect("bound"));
        groups.push((Kind::Tcp, g));
    }
    for &a in &config.websocket.bind {
        let g = bind_group(a, n, backlog)?;
        addrs.ws.push(g[0].local_addr().expect("bound"));
        groups.push((Kind::Ws, g));
    }
    if tls.is_some() {
        for &a in &config.websocket.tls_bind {
            let g = bind_group(a, n, backlog)?;
            addrs.wss.push(g[0].local_addr().expect("bound"));
            groups.push((Kind::Wss, g));
        }
    }
    let server_id = if config.server_id.is_empty() {
        crate::io::hostname()
    } else {
        config.server_id.clone()
    };
    let shared = Arc::new(Shared {
        buckets: Buckets::new(config.bucket.size),
        limits: crate::limits::ConnLimits::new(&config.limits),
        rate: crate::limits::Rate::new(&config.limits),
        config,
        server_id,
        stats: Arc::new(Stats::default()),
        logic,
        senders: OnceLock::new(),
        tls,
    });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::bounded(CMD_QUEUE)).unzip();
    let _ = shared.senders.set(senders);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(n);
    for (i, rx) in receivers.into_iter().enumerate() {
        let listeners: Vec<(Kind, std::net::TcpListener)> = groups
            .iter_mut()
            .map(|(k, g)| (*k, g.pop().expect("one per worker")))
            .collect();
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("comet-{i}"))
            .spawn(move || run_worker(i as u16, shared, rx, listeners, ready))
            .map_err(CometError::Thread)?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CometError::Runtime(e)),
            Err(_) => return Err(CometError::Runtime("a worker exited during start".into())),
        }
    }
    info!(workers = n, tcp = ?addrs.tcp, ws = ?addrs.ws, wss = ?addrs.wss, server = %shared.server_id, "comet started");
    Ok(Comet::new(shared, threads, addrs))
}

fn run_worker(
    id: u16,
    shared: Arc<Shared>,
    rx: flume::Receiver<crate::worker::Cmd>,
    listeners: Vec<(Kind, std::net::TcpListener)>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if shared.config.pin_workers
        && let Err(e) = monoio::utils::bind_to_cpu_set(Some(id as usize))
    {
        warn!(worker = id, error = ?e, "could not pin worker");
    }
    let driver = shared.config.driver;
    let ready_main = ready.clone();
    let main = async move {
        let w = match Worker::new(id, shared) {
            Ok(w) => Rc::new(w),
            Err(e) => {
                let _ = ready_main.send(Err(format!("readiness set: {e}")));
                return;
            }
        };
        for (kind, l) in listeners {
            let fd = l.as_raw_fd();
            match TcpListener::from_std(l) {
                Ok(l) => {
                    w.listen_fds.borrow_mut().push(fd);
                    monoio::spawn(accept_loop(w.clone(), l, kind));
                }
                Err(e) => {
                    let _ = ready_main.send(Err(format!("listener: {e}")));
                    return;
                }
            }
        }
        monoio::spawn(w.clone().poll_loop());
        monoio::spawn(w.clone().tick_loop());
        if id == 0 {
            monoio::spawn(w.clone().online_loop());
        }
        let _ = ready_main.send(Ok(()));
        w.command_loop(rx).await;
    };
    let built = match driver {
        Driver::Auto => monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
            .map(|mut rt| {
                let name = match &rt {
                    monoio::FusionRuntime::Uring(_) => "io_uring",
                    monoio::FusionRuntime::Legacy(_) => "epoll",
                };
                info!(worker = id, driver = name, "worker running");
                rt.block_on(main)
            }),
        Driver::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
            .map(|mut rt| {
                info!(worker = id, driver = "io_uring", "worker running");
                rt.block_on(main)
            }),
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| {
                info!(worker = id, driver = "epoll", "worker running");
                rt.block_on(main)
            }),
    };
    if let Err(e) = built {
        let _ = ready.send(Err(format!("runtime ({driver:?}): {e}")));
    }
}

/// Submission queue entries of each worker's io_uring.
const URING_ENTRIES: u32 = 4096;

/// Backoff of an accept loop out of file descriptors: doubled per failure, from the first to
/// the last.
const ACCEPT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_millis(100));

/// Whether an accept(2) error means the process or system is out of descriptors or kernel
/// memory: it clears only when connections close, so the loop waits instead of spinning.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn accept_loop(w: Rc<Worker>, listener: TcpListener, kind: Kind) {
    use std::sync::atomic::Ordering::Relaxed;
    // Failures in the current burst (0: accepting normally) and the next wait.
    let mut failures: u64 = 0;
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if w.stopping.get() || w.draining.get() {
                    return;
                }
                let stats = w.stats();
                if out_of_resources(&e) {
                    stats.accept_fd_errors.fetch_add(1, Relaxed);
                } else {
                    stats.accept_other_errors.fetch_add(1, Relaxed);
                }
                // Logged once per burst; open connections go on meanwhile (none is touched).
                if failures == 0 {
                    warn!(worker = w.id, error = %e, ?kind, "accept failed: backing off until it succeeds");
                }
                failures += 1;
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        if failures > 0 {
            info!(worker = w.id, failures, ?kind, "accepting again");
            failures = 0;
            backoff = ACCEPT_BACKOFF.0;
        }
        if w.stopping.get() || w.draining.get() {
            return;
        }
        w.stats().accepted.fetch_add(1, Relaxed);
        // From here the worker's readiness set, not the runtime, watches the socket.
        // SAFETY: `into_raw_fd` hands over sole ownership of the accepted socket.
        let sock = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
        let fd = sock.as_raw_fd();
        if let Err(reason) = w.shared.limits.admit(peer.ip()) {
            refuse(&w, sock, peer, kind, reason);
            continue;
        }
        if let Err(e) = crate::io::set_nonblocking(fd) {
            warn!(error = %e, "set_nonblocking failed");
            w.shared.limits.release(peer.ip());
            continue;
        }
        let tcp = &w.shared.config.tcp;
        let opts = SockRef::from(&sock);
        let _ = opts.set_nodelay(tcp.nodelay);
        let _ = opts.set_keepalive(tcp.keepalive);
        if tcp.sndbuf > 0 {
            let _ = opts.set_send_buffer_size(tcp.sndbuf);
        }
        if tcp.rcvbuf > 0 {
            let _ = opts.set_recv_buffer_size(tcp.rcvbuf);
        }
        if tcp.notsent_lowat > 0
            && let Err(e) = crate::io::set_notsent_lowat(fd, tcp.notsent_lowat)
        {
            debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
        }
        crate::worker::serve(&w, sock, peer, kind);
    }
}

/// A connection over `[comet.limits]`: counted, logged at debug (a flood of them would flood
/// the log), and closed at once, never entering the worker. goim's TCP protocol has no word
/// for "refused" before auth: the client sees the connection end. A plain WebSocket client
/// gets `503 Service Unavailable` with `Retry-After` (RFC 9110 §15.6.4, §10.2.3), written
/// without waiting for its upgrade request (a server may answer early, RFC 9112 §9.6; the
/// request bytes already here are read first, so closing sends a FIN, not a reset that could
/// destroy the answer). WSS is closed bare: answering would need a TLS handshake, the work
/// the limit is there to avoid.
fn refuse(w: &Worker, sock: OwnedFd, peer: SocketAddr, kind: Kind, reason: Refusal) {
    w.stats().record_refusal(reason);
    debug!(peer = %peer.ip(), ?kind, reason = reason.as_str(), "connection refused");
    let fd = sock.as_raw_fd();
    if kind == Kind::Ws {
        let secs = w.shared.config.limits.retry_after.as_secs().max(1);
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {secs}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            reason.as_str().len(),
            reason.as_str()
        );
        let _ = crate::io::set_nonblocking(fd);
        let mut sink = [0u8; 4096];
        let _ = crate::io::read(fd, &mut sink);
        let _ = crate::io::send_vectored(fd, &[std::io::IoSlice::new(answer.as_bytes())]);
    }
    crate::io::shutdown(fd);
}
