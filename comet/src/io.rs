//! Raw non-blocking socket calls. Connections wait for readiness through monoio (a PollAdd on
//! io_uring, epoll otherwise) and then read into the worker's one scratch buffer, so an idle
//! connection owns no read buffer, neither in user space nor pinned by an in-flight read.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// `recv(2)`, not `read(2)`: on a socket it skips the file layer (position lock, VFS checks).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes the slices in order in one call: `send(2)` for one slice, `sendmsg(2)` for more.
/// Socket calls rather than `writev(2)`, which goes through the file layer first (perf at one
/// message per second: `vfs_writev`, `fdget_pos` and the iovec import were 7.1% of the comet's
/// samples; `__sys_sendto` and `fdget` are 4.9%).
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `bufs` borrows every slice for the duration of the call, and `IoSlice` is ABI
    // compatible with `iovec` on Unix (std's guarantee), so the kernel reads only memory the
    // slices cover. The msghdr only borrows `bufs` for the call and the kernel does not
    // write through `msg_iov`.
    let n = unsafe {
        if let [one] = bufs {
            libc::send(fd, one.as_ptr().cast(), one.len(), flags)
        } else {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(fd, &msg, flags)
        }
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Ends both directions (the peer sees the end at once); the fd itself is closed when its
/// owner drops it.
pub fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall on an fd the caller still holds open.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// On a listening socket, `shutdown` stops it listening: new connections are refused and a
/// pending accept (io_uring or epoll) wakes with an error, so the accept loop can end.
pub fn stop_listening(fd: RawFd) {
    shutdown(fd);
}

/// `setsockopt(TCP_NOTSENT_LOWAT)`: the kernel holds at most about `bytes` unsent for the
/// socket; a send beyond returns EAGAIN, so output waits in comet's bounded queue instead.
pub fn set_notsent_lowat(fd: RawFd, bytes: u32) -> io::Result<()> {
    let v = bytes as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid `c_int`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
