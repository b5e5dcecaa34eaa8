//! A subscriber process: opens its share of the connections from one source address, joins,
//! heartbeats, and accounts for every delivery. It talks to the coordinator by JSON lines: it
//! prints `ready`, `progress` and finally `result`; it reads `stop` on stdin.

use crate::sys::now_ns;
use crate::track::{Plan, SubResult, Tracker};
use crate::wire::{self, Decoder, Event, Peer};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
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
    /// Read buffer per connection.
    #[arg(long, default_value_t = 16384)]
    pub read_buf: usize,
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
    attempted: Cell<u64>,
    failed: RefCell<BTreeMap<String, u64>>,
    disconnected: RefCell<BTreeMap<String, u64>>,
    handshakes: Semaphore,
}

impl Ctx {
    fn count(map: &RefCell<BTreeMap<String, u64>>, reason: String) {
        *map.borrow_mut().entry(reason).or_default() += 1;
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::ConnectionReset => "reset".into(),
        ErrorKind::AddrNotAvailable => "no_source_port".into(),
        ErrorKind::TimedOut => "timeout".into(),
        ErrorKind::UnexpectedEof => "closed".into(),
        _ if e.raw_os_error() == Some(libc::EMFILE) => "too_many_files".into(),
        k => format!("{k:?}").to_lowercase(),
    }
}

pub fn run(args: SubArgs) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(args))
}

async fn main(args: SubArgs) -> anyhow::Result<()> {
    let plan = Plan {
        messages: args.messages,
        room_mode: !args.keys,
        subscribers: args.subscribers,
    };
    let ctx = Rc::new(Ctx {
        tracker: RefCell::new(Tracker::new(plan, args.first..args.first + args.count)),
        connected: Cell::new(0),
        attempted: Cell::new(0),
        failed: RefCell::new(BTreeMap::new()),
        disconnected: RefCell::new(BTreeMap::new()),
        handshakes: Semaphore::new(args.inflight.max(1)),
        args,
    });

    // stdin: a `stop` line ends the run; its end (EOF) ends the process. Until then the
    // connections stay open, so the server's CPU can be read before it handles their closes.
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stopped = false;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "stop" && !stopped => {
                    stopped = true;
                    let _ = stop_tx.send(());
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if !stopped {
            let _ = stop_tx.send(());
        }
        let _ = stop_tx.send(());
    });

    let start = now_ns();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
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
        tokio::task::spawn_local(subscriber(ctx.clone(), i as usize, done_tx.clone()));
    }
    drop(done_tx);
    // Every connection has either joined or failed.
    for _ in 0..ctx.args.count {
        let _ = done_rx.recv().await;
    }
    emit(&Report::Ready {
        connected: ctx.connected.get(),
        failed: ctx.failed.borrow().clone(),
        connect_ns: now_ns() - start,
    });

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => emit(&Report::Progress {
                connected: ctx.connected.get(),
                deliveries: ctx.tracker.borrow().deliveries,
            }),
            _ = stop_rx.recv() => break,
        }
    }
    // Wait for what is still on its way, until everything is in or nothing comes for a while.
    let mut last = (ctx.tracker.borrow().deliveries, now_ns());
    while !ctx.tracker.borrow().complete() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = ctx.tracker.borrow().deliveries;
        if n != last.0 {
            last = (n, now_ns());
        } else if now_ns() - last.1 > ctx.args.quiet.as_nanos() as u64 {
            break;
        }
    }
    let result = ctx
        .tracker
        .borrow()
        .result(ctx.connected.get(), ctx.disconnected.borrow().clone());
    emit(&Report::Result(result));
    let _ = stop_rx.recv().await;
    // Connections are not closed one by one: the process exit does it.
    std::process::exit(0);
}

/// One connection: connect, join, then read deliveries and heartbeat until the end.
async fn subscriber(ctx: Rc<Ctx>, local: usize, done: tokio::sync::mpsc::UnboundedSender<()>) {
    let global = ctx.args.first + local as u64;
    ctx.attempted.set(ctx.attempted.get() + 1);
    let mut decoder = Decoder::new(ctx.args.peer);
    let mut buf = vec![0u8; ctx.args.read_buf];
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        join(&ctx, global, local, &mut decoder, &mut buf),
    )
    .await;
    ctx.handshakes.add_permits(1);
    let mut stream = match joined {
        Ok(Ok(s)) => s,
        Ok(Err(reason)) => {
            Ctx::count(&ctx.failed, reason);
            let _ = done.send(());
            return;
        }
        Err(_) => {
            Ctx::count(&ctx.failed, "handshake_timeout".into());
            let _ = done.send(());
            return;
        }
    };
    ctx.connected.set(ctx.connected.get() + 1);
    let _ = done.send(());
    drop(done);

    let heartbeat = wire::heartbeat(ctx.args.peer, global);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.args.heartbeat,
        ctx.args.heartbeat,
    );
    let reason = loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => break "closed".to_string(),
                Ok(n) => {
                    if let Err(e) = receive(&ctx, local, &mut decoder, &buf[..n], &mut stream).await {
                        break e;
                    }
                }
                Err(e) => break io_reason(&e),
            },
            _ = tick.tick(), if heartbeat.is_some() => {
                if let Err(e) = stream.write_all(heartbeat.as_deref().unwrap_or_default()).await {
                    break io_reason(&e);
                }
            }
        }
    };
    ctx.connected.set(ctx.connected.get() - 1);
    Ctx::count(&ctx.disconnected, reason);
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
    let hello = wire::hello(ctx.args.peer, !ctx.args.keys, global);
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

/// Accounts for one read's worth of bytes; answers what must be answered (NATS PING).
async fn receive(
    ctx: &Ctx,
    local: usize,
    decoder: &mut Decoder,
    data: &[u8],
    stream: &mut TcpStream,
) -> Result<(), String> {
    let now = now_ns();
    let mut reply: Option<&'static [u8]> = None;
    {
        let mut tracker = ctx.tracker.borrow_mut();
        decoder
            .feed(data, &mut |e| match e {
                Event::Payload(p) => tracker.deliver(local, p, now),
                Event::Reply(r) => reply = Some(r),
                Event::Ready => {}
            })
            .map_err(|e| e.to_string())?;
    }
    if let Some(r) = reply {
        stream.write_all(r).await.map_err(|e| io_reason(&e))?;
    }
    Ok(())
}
