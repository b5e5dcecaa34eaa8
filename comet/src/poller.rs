//! A worker's readiness set: every connection's socket is registered in one epoll instance
//! owned by the worker, and the monoio driver (io_uring or epoll) waits on that one fd. A
//! wake-up hands the worker a batch of ready connections.
//!
//! Why not a task and a poll operation per connection: each costs user-space memory (a task
//! with its future, the runtime's per-fd state, the operation) and kernel memory (an armed
//! io_uring poll). An idle connection here is its slab entry and one epoll item, nothing
//! else: memory per connection is what sizes a million-connection node.

use crate::bucket::ConnId;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What a connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Input (the usual state).
    Read,
    /// Input, and room in the socket for queued output.
    ReadWrite,
    /// Room for queued output only: input waits while logic answers an auth request.
    Write,
    /// Nothing: input waits while logic answers an auth request. (Hang-ups and errors are
    /// still reported.)
    Paused,
}

impl Interest {
    fn events(self) -> u32 {
        let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        match self {
            Interest::Read => read,
            Interest::ReadWrite => read | libc::EPOLLOUT as u32,
            Interest::Write => libc::EPOLLOUT as u32,
            Interest::Paused => 0,
        }
    }
}

/// One readiness report.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub id: ConnId,
    /// Input, end of input, or an error: the reader finds out which.
    pub readable: bool,
    pub writable: bool,
}

pub struct Poller {
    epfd: RawFd,
    /// The epoll fd as a monoio stream, only to wait for it to become readable. It owns the
    /// fd and closes it on drop.
    waiter: monoio::net::UnixStream,
    events: std::cell::RefCell<Vec<libc::epoll_event>>,
}

/// Readiness reports taken per wake-up.
const BATCH: usize = 1024;

impl Poller {
    /// Must be called on a worker thread inside its monoio runtime.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epfd` is a fresh fd that nothing else owns. monoio treats it as an opaque
        // pollable fd (io_uring PollAdd, or registration in its own epoll).
        let owned = unsafe { OwnedFd::from_raw_fd(epfd) };
        let std = std::os::unix::net::UnixStream::from(owned);
        let waiter = monoio::net::UnixStream::from_std(std)?;
        Ok(Poller {
            epfd: waiter.as_raw_fd(),
            waiter,
            events: std::cell::RefCell::new(Vec::with_capacity(BATCH)),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, id: ConnId, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.events(),
            u64: id.to_u64(),
        };
        // SAFETY: `ev` outlives the call; the kernel checks the fds.
        if unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, id: ConnId) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, id, Interest::Read)
    }

    pub fn set(&self, fd: RawFd, id: ConnId, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, id, interest)
    }

    pub fn remove(&self, fd: RawFd) {
        // SAFETY: as in `ctl`; a fd that is not registered only returns an error.
        unsafe {
            libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
        }
    }

    /// Waits until some connections are ready and puts them in `out` (at most `BATCH`).
    /// Reports are level-triggered: what is not handled now is reported again. Returns
    /// whether it had to wait (`false`: they were ready at once, the worker is busy).
    pub async fn wait(&self, out: &mut Vec<Ready>) -> io::Result<bool> {
        out.clear();
        let mut waited = false;
        loop {
            if self.take(out)? {
                return Ok(waited);
            }
            // Nothing ready: sleep until the epoll fd is (only now, so an edge is never missed).
            self.waiter.readable(false).await?;
            waited = true;
        }
    }

    /// Takes what is ready now; `false` if nothing is.
    fn take(&self, out: &mut Vec<Ready>) -> io::Result<bool> {
        let mut events = self.events.borrow_mut();
        loop {
            // SAFETY: `events` has room for BATCH entries; the kernel fills at most that.
            let n = unsafe {
                libc::epoll_wait(self.epfd, events.as_mut_ptr(), BATCH as libc::c_int, 0)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                // SAFETY: the kernel initialised the first `n` entries.
                unsafe { events.set_len(n as usize) };
                let input =
                    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                out.extend(events.drain(..).map(|ev| Ready {
                    id: ConnId::from_u64(ev.u64),
                    readable: ev.events & input != 0,
                    writable: ev.events & libc::EPOLLOUT as u32 != 0,
                }));
            }
            return Ok(n > 0);
        }
    }
}
