//! A subscriber process: opens its share of the connections from one source address, joins,
//! heartbeats, and accounts for every delivery. It talks to the coordinator by JSON lines: it
//! prints `ready`, `progress` and finally `result`; it reads `stop` on stdin.

use crate::epoll::Epoll;
use crate::sys::now_ns;
use crate::track::{Plan, SubResult, Tracker};
use crate::wire::{self, Decoder, Event, Peer};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[arg(long, value_enum)]
    pub peer: Peer,
    /// Where subscribers connect (comet TCP or WebSocket port, Redis, NATS, MQTT).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Source address of this process's connections.
    #[arg(long, default_value = "127.0.0.1")]
    pub source: IpAddr,
    /// Global index of this process's first subscriber.
    #[arg(long, default_value_t = 0, hide = true)]
    pub first: u64,
    /// Connections (subscribers) to open.
    #[arg(long, short = 'n')]
    pub count: u64,
    /// Subscribers over all processes (key mode routes message `s` to `s % subscribers`).
    #[arg(long, default_value_t = 0, hide = true)]
    pub subscribers: u64,
    /// Messages the run publishes (0: connections only).
    #[arg(long, short = 'm', default_value_t = 0)]
    pub messages: u32,
    /// Key pushes (one message per subscriber in turn) instead of one room.
    #[arg(long)]
    pub keys: bool,
    /// New connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub heartbeat: Duration,
    /// After `stop`, how long without a delivery before giving up on missing messages.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub quiet: Duration,
    /// Read buffer (one for all connections in the delivery loop).
    #[arg(long, default_value_t = 16384)]
    pub read_buf: usize,
    /// After a wake-up that found sockets ready, wait this long before looking again, so
    /// what arrives meanwhile is read in one batch instead of waking the reader per socket
    /// (0: read as soon as anything is ready).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub batch_wait: Duration,
    /// Authenticate as IM connections (`"im":"pb"` and an `im_token` signed with this
    /// secret, the server's `im.token_secret`), mid = index + 1; Starling over TCP only.
    #[arg(long)]
    pub im_secret: Option<String>,
}

/// A line a subscriber process prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    Ready {
        connected: u64,
        failed: BTreeMap<String, u64>,
        connect_ns: u64,
    },
    Progress {
        connected: u64,
        deliveries: u64,
    },
    Result(SubResult),
}

fn emit(r: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

struct Ctx {
    args: SubArgs,
    tracker: RefCell<Tracker>,
    connected: Cell<u64>,
    failed: RefCell<BTreeMap<String, u64>>,
    disconnected: RefCell<BTreeMap<String, u64>>,
    handshakes: Semaphore,
    /// Connections that have joined, for the delivery loop.
    joined: RefCell<Vec<Conn>>,
    /// `--im-secret`: mints each connection's `im_token`.
    im_tokens: Option<starling_im::token::Tokens>,
}

impl Ctx {
    fn count(map: &RefCell<BTreeMap<String, u64>>, reason: String) {
        *map.borrow_mut().entry(reason).or_default() += 1;
    }
}

/// A joined connection, as the delivery loop holds it.
struct Conn {
    /// `None` once closed.
    stream: Option<std::net::TcpStream>,
    decoder: Decoder,
    local: usize,
    heartbeat: Option<Vec<u8>>,
    /// When its next heartbeat is due.
    next_heartbeat: u64,
}

impl Conn {
    /// Sends the heartbeat if it is due, and schedules the next one `every` from now (at
    /// least 1 ms, so a zero interval cannot spin); `Err` if the socket failed.
    fn heartbeat_due(&mut self, now: u64, every: u64) -> Result<(), String> {
        let (Some(stream), Some(hb)) = (&self.stream, &self.heartbeat) else {
            return Ok(());
        };
        if self.next_heartbeat > now {
            return Ok(());
        }
        self.next_heartbeat = now + every.max(1_000_000);
        (&*stream).write_all(hb).map_err(|e| io_reason(&e))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::ConnectionReset => "reset".into(),
        ErrorKind::AddrNotAvailable => "no_source_port".into(),
        ErrorKind::TimedOut => "timeout".into(),
        ErrorKind::UnexpectedEof => "closed".into(),
        ErrorKind::WouldBlock => "write_blocked".into(),
        _ if e.raw_os_error() == Some(libc::EMFILE) => "too_many_files".into(),
        k => format!("{k:?}").to_lowercase(),
    }
}

/// Joins every connection on a tokio runtime (connect rate, handshakes in flight, timeouts),
/// then reads deliveries in a plain epoll loop: one `recv` per ready socket and no task,
/// waker or timer per connection, so the client costs as little as it can of the CPU it
/// shares with the server under test.
pub fn run(args: SubArgs) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    let stop = stdin_stops();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ctx = local.block_on(&rt, open(args))?;
    drop(local);
    drop(rt);
    let conns = std::mem::take(&mut *ctx.joined.borrow_mut());
    deliver(&ctx, conns, &stop)?;
    // Connections are not closed one by one: the process exit does it.
    std::process::exit(0);
}

/// stdin: a `stop` line ends the run; its end (EOF) ends the process. Until then the
/// connections stay open, so the server's CPU can be read before it handles their closes.
/// The receiver gets one message for `stop` and one for the end.
fn stdin_stops() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stopped = false;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "stop" && !stopped => {
                    stopped = true;
                    let _ = tx.send(());
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if !stopped {
            let _ = tx.send(());
        }
        let _ = tx.send(());
    });
    rx
}

/// Opens and joins this process's share; reports `ready`.
async fn open(args: SubArgs) -> anyhow::Result<Rc<Ctx>> {
    let plan = Plan {
        messages: args.messages,
        room_mode: !args.keys,
        subscribers: args.subscribers,
    };
    let ctx = Rc::new(Ctx {
        tracker: RefCell::new(Tracker::new(plan, args.first..args.first + args.count)),
        connected: Cell::new(0),
        failed: RefCell::new(BTreeMap::new()),
        disconnected: RefCell::new(BTreeMap::new()),
        handshakes: Semaphore::new(args.inflight.max(1)),
        joined: RefCell::new(Vec::with_capacity(args.count as usize)),
        im_tokens: args
            .im_secret
            .as_deref()
            .map(starling_im::token::Tokens::new)
            .transpose()?,
        args,
    });
    let start = now_ns();
    // Connections that joined early heartbeat while the others connect (a slow connect rate
    // can outlast the server's heartbeat deadline); their replies wait in the socket.
    tokio::task::spawn_local(keep_alive(ctx.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..ctx.args.count {
        if ctx.args.rate > 0.0 {
            let due = start + (i as f64 * 1e9 / ctx.args.rate) as u64;
            let now = now_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            }
        }
        let permit = ctx.handshakes.acquire().await.expect("never closed");
        permit.forget();
        tasks.spawn_local(subscriber(ctx.clone(), i as usize));
    }
    // Every connection has either joined or failed.
    while tasks.join_next().await.is_some() {}
    emit(&Report::Ready {
        connected: ctx.connected.get(),
        failed: ctx.failed.borrow().clone(),
        connect_ns: now_ns() - start,
    });
    Ok(ctx)
}

/// Until the delivery loop takes over: sends the heartbeats that are due, looking every
/// second (or every heartbeat interval, if shorter).
async fn keep_alive(ctx: Rc<Ctx>) {
    let every = ctx.args.heartbeat.as_nanos() as u64;
    let tick = ctx
        .args
        .heartbeat
        .clamp(Duration::from_millis(1), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let now = now_ns();
        for c in ctx.joined.borrow_mut().iter_mut() {
            // A failed socket is found and counted by the delivery loop's read.
            let _ = c.heartbeat_due(now, every);
        }
    }
}

/// One connection: connect and join, then hand it to the delivery loop.
async fn subscriber(ctx: Rc<Ctx>, local: usize) {
    let global = ctx.args.first + local as u64;
    let mut decoder = Decoder::new(ctx.args.peer);
    let mut buf = vec![0u8; ctx.args.read_buf];
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        join(&ctx, global, local, &mut decoder, &mut buf),
    )
    .await;
    ctx.handshakes.add_permits(1);
    let reason = match joined {
        Ok(Ok(stream)) => match stream.into_std() {
            Ok(stream) => {
                ctx.connected.set(ctx.connected.get() + 1);
                ctx.joined.borrow_mut().push(Conn {
                    stream: Some(stream),
                    decoder,
                    local,
                    heartbeat: wire::heartbeat(ctx.args.peer, global),
                    next_heartbeat: now_ns() + ctx.args.heartbeat.as_nanos() as u64,
                });
                return;
            }
            Err(e) => io_reason(&e),
        },
        Ok(Err(reason)) => reason,
        Err(_) => "handshake_timeout".into(),
    };
    Ctx::count(&ctx.failed, reason);
}

/// The delivery loop: reads every ready socket once per wake-up, sends heartbeats when due,
/// prints progress each second, and after `stop` waits for what is still on its way until
/// everything is in or nothing comes for `quiet`. Prints the result, then waits for the end.
fn deliver(ctx: &Ctx, mut conns: Vec<Conn>, stop: &mpsc::Receiver<()>) -> anyhow::Result<()> {
    let cpu_start = crate::sys::cpu_ns(std::process::id()).unwrap_or(0);
    let epoll = Epoll::new()?;
    for (i, c) in conns.iter().enumerate() {
        let fd = c.stream.as_ref().expect("joined").as_raw_fd();
        epoll.add(fd, i as u64)?;
    }
    let every = ctx.args.heartbeat.as_nanos() as u64;
    let mut due: VecDeque<(u64, usize)> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.next_heartbeat, i))
        .collect();
    due.make_contiguous().sort_unstable();
    let mut buf = vec![0u8; ctx.args.read_buf.max(4096)];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut next_progress = now_ns() + SECOND;
    // After `stop`: (deliveries last seen, when they last changed).
    let mut draining: Option<(u64, u64)> = None;
    loop {
        let now = now_ns();
        while let Some(&(at, i)) = due.front() {
            if at > now {
                break;
            }
            due.pop_front();
            let c = &mut conns[i];
            match c.heartbeat_due(now, every) {
                Ok(()) if c.stream.is_some() && c.heartbeat.is_some() => {
                    due.push_back((c.next_heartbeat, i));
                }
                Ok(()) => {}
                Err(reason) => close(ctx, c, reason),
            }
        }
        if now >= next_progress {
            next_progress = now + SECOND;
            emit(&Report::Progress {
                connected: ctx.connected.get(),
                deliveries: ctx.tracker.borrow().deliveries,
            });
        }
        if draining.is_none() && !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            draining = Some((ctx.tracker.borrow().deliveries, now));
        }
        if let Some((seen, since)) = &mut draining {
            let tracker = ctx.tracker.borrow();
            if tracker.complete() {
                break;
            }
            if tracker.deliveries != *seen {
                (*seen, *since) = (tracker.deliveries, now);
            } else if now - *since > ctx.args.quiet.as_nanos() as u64 {
                break;
            }
        }
        let mut wake = next_progress;
        if let Some(&(at, _)) = due.front() {
            wake = wake.min(at);
        }
        if draining.is_some() {
            wake = wake.min(now + 50 * MILLI);
        }
        let timeout_ms = wake.saturating_sub(now).div_ceil(MILLI) as i32;
        let ready = epoll.wait(&mut events, timeout_ms)?;
        for ev in ready {
            read(ctx, &mut conns[ev.u64 as usize], &mut buf);
        }
        if !ready.is_empty() && !ctx.args.batch_wait.is_zero() {
            std::thread::sleep(ctx.args.batch_wait);
        }
    }
    let mut result = ctx
        .tracker
        .borrow()
        .result(ctx.connected.get(), ctx.disconnected.borrow().clone());
    result.cpu_ns = crate::sys::cpu_ns(std::process::id())
        .unwrap_or(0)
        .saturating_sub(cpu_start);
    emit(&Report::Result(result));
    let _ = stop.recv();
    Ok(())
}

const MILLI: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MILLI;

/// One `recv` from a ready socket, accounted for; answers what must be answered (NATS PING).
/// A socket with more than the buffer stays ready and is read again on the next wake-up.
fn read(ctx: &Ctx, c: &mut Conn, buf: &mut [u8]) {
    let Some(stream) = &c.stream else { return };
    let n = match (&*stream).read(buf) {
        Ok(0) => return close(ctx, c, "closed".into()),
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
        Err(e) => return close(ctx, c, io_reason(&e)),
    };
    let now = now_ns();
    let mut replies: Vec<&'static [u8]> = Vec::new();
    let fed = {
        let mut tracker = ctx.tracker.borrow_mut();
        c.decoder.feed(&buf[..n], &mut |e| match e {
            Event::Payload(p) => tracker.deliver(c.local, p, now),
            Event::Reply(r) => replies.push(r),
            Event::Ready => {}
        })
    };
    if let Err(e) = fed {
        return close(ctx, c, e.to_string());
    }
    for r in replies {
        if let Err(e) = (&*stream).write_all(r) {
            return close(ctx, c, io_reason(&e));
        }
    }
}

/// Closes a joined connection (its fd leaves the epoll set with it) and counts why.
fn close(ctx: &Ctx, c: &mut Conn, reason: String) {
    if c.stream.take().is_some() {
        ctx.connected.set(ctx.connected.get() - 1);
        Ctx::count(&ctx.disconnected, reason);
    }
}

/// Connects from the source address, sends the join bytes and reads until the peer says
/// the subscription is in place. Deliveries that arrive early are counted.
async fn join(
    ctx: &Ctx,
    global: u64,
    local: usize,
    decoder: &mut Decoder,
    buf: &mut [u8],
) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| io_reason(&e))?;
    bind_address_no_port(&socket);
    socket
        .bind(SocketAddr::new(ctx.args.source, 0))
        .map_err(|e| io_reason(&e))?;
    let mut stream = socket
        .connect(ctx.args.addr)
        .await
        .map_err(|e| io_reason(&e))?;
    let _ = stream.set_nodelay(true);
    let hello = match &ctx.im_tokens {
        Some(tokens) => {
            let mid = global as i64 + 1;
            let t = tokens
                .mint(mid, "bench", 24 * 3600)
                .map_err(|e| e.to_string())?;
            wire::hello_im(global, mid, t)
        }
        None => wire::hello(ctx.args.peer, !ctx.args.keys, global),
    };
    stream.write_all(&hello).await.map_err(|e| io_reason(&e))?;
    loop {
        let n = stream.read(buf).await.map_err(|e| io_reason(&e))?;
        if n == 0 {
            return Err("closed_in_handshake".into());
        }
        let mut ready = false;
        let mut replies: Vec<&'static [u8]> = Vec::new();
        let now = now_ns();
        {
            let mut tracker = ctx.tracker.borrow_mut();
            decoder
                .feed(&buf[..n], &mut |e| match e {
                    Event::Ready => ready = true,
                    Event::Payload(p) => tracker.deliver(local, p, now),
                    Event::Reply(r) => replies.push(r),
                })
                .map_err(|e| {
                    // Reasons are map keys: keep the start of a long server message.
                    let mut r = format!("handshake: {e}");
                    r.truncate(r.floor_char_boundary(60));
                    r
                })?;
        }
        for r in replies {
            stream.write_all(r).await.map_err(|e| io_reason(&e))?;
        }
        if ready {
            return Ok(stream);
        }
    }
}

/// Binding to a source address with port 0 makes the kernel pick the port at `bind`, before
/// it knows the destination, so each source address gets one ephemeral range for all
/// destinations and the search slows as it fills. This defers the choice to `connect`.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
