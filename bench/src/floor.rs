//! The kernel's floor: what one small write to a loopback TCP socket costs the writing thread
//! when its reader is asleep waiting for it, which is what a server pays per delivery when
//! nothing can be merged (one message per second). A minimal sender, no server logic.

use crate::epoll::Epoll;
use crate::sys::thread_cpu_ns;
use clap::Args;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Connections written to in turn.
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub conns: usize,
    /// Rounds; each writes once to every connection, then pauses so readers go back to sleep.
    #[arg(long, default_value_t = 50)]
    pub rounds: usize,
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// Send through one io_uring per round (one submission for many sockets) instead of a
    /// write(2) per socket.
    #[arg(long)]
    pub uring: bool,
    /// The reader's pause after a wake-up that found sockets ready, as `fanout --batch-wait`
    /// (so the floor is measured against the same reader as the runs it is compared with).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub batch_wait: Duration,
}

#[derive(Debug, Serialize)]
pub struct FloorResult {
    pub conns: usize,
    pub rounds: usize,
    pub size: usize,
    pub writes: u64,
    /// The reader's `--batch-wait`, in µs.
    pub batch_wait_us: u64,
    /// CPU time of the writing thread per write (includes the loopback delivery and the
    /// reader's wake-up, which the kernel charges to the writer).
    pub cpu_us_per_write: f64,
}

pub fn run(args: FloorArgs) -> anyhow::Result<FloorResult> {
    crate::sys::raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(args.conns);
    let mut readers = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(true)?;
        let (r, _) = listener.accept()?;
        r.set_nonblocking(true)?;
        writers.push(w);
        readers.push(r);
    }
    // Readers wait in epoll, as subscribers do, on a thread of their own.
    let batch_wait = args.batch_wait;
    std::thread::spawn(move || read_all(&readers, batch_wait));
    std::thread::sleep(Duration::from_millis(200));
    let msg = vec![b'x'; args.size];
    let mut cpu = 0u64;
    let mut ring = io_uring::IoUring::new(4096)?;
    for _ in 0..args.rounds {
        let start = thread_cpu_ns();
        if args.uring {
            uring_round(&mut ring, &writers, &msg)?;
        } else {
            for w in &mut writers {
                w.write_all(&msg)?;
            }
        }
        cpu += thread_cpu_ns() - start;
        std::thread::sleep(Duration::from_millis(50));
    }
    let writes = (args.conns * args.rounds) as u64;
    Ok(FloorResult {
        conns: args.conns,
        rounds: args.rounds,
        size: args.size,
        writes,
        batch_wait_us: args.batch_wait.as_micros() as u64,
        cpu_us_per_write: cpu as f64 / 1e3 / writes as f64,
    })
}

/// The reader: the subscribers' loop, one `read` per ready socket, until an error.
fn read_all(readers: &[TcpStream], batch_wait: Duration) -> std::io::Result<()> {
    let epoll = Epoll::new()?;
    for (i, r) in readers.iter().enumerate() {
        epoll.add(r.as_raw_fd(), i as u64)?;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 4096];
    loop {
        let ready = epoll.wait(&mut events, -1)?;
        for ev in ready {
            match (&readers[ev.u64 as usize]).read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !ready.is_empty() && !batch_wait.is_zero() {
            std::thread::sleep(batch_wait);
        }
    }
}

/// One send per socket, submitted 4096 at a time.
fn uring_round(
    ring: &mut io_uring::IoUring,
    writers: &[TcpStream],
    msg: &[u8],
) -> anyhow::Result<()> {
    for chunk in writers.chunks(4096) {
        for (i, w) in chunk.iter().enumerate() {
            let e = io_uring::opcode::Send::new(
                io_uring::types::Fd(w.as_raw_fd()),
                msg.as_ptr(),
                msg.len() as u32,
            )
            .build()
            .user_data(i as u64);
            // SAFETY: `msg` outlives the submission, which is waited for below.
            unsafe { ring.submission().push(&e)? };
        }
        ring.submit_and_wait(chunk.len())?;
        for cqe in ring.completion() {
            anyhow::ensure!(cqe.result() == msg.len() as i32, "send: {}", cqe.result());
        }
    }
    Ok(())
}
