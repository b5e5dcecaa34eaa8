//! What the bench reads from the system: a clock every process on the machine shares, and a
//! server's memory and CPU time from `/proc`.

use std::collections::BTreeMap;
use std::io;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on this machine, so a
/// timestamp written by the publisher is comparable with the subscriber's receive time.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch: comparable with a server's wall-clock
/// stamps (an IM message's `server_ts`, milliseconds) on the same machine.
pub fn wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Resident set size of a process, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS line"))
}

/// CPU time a process's live threads have run, in nanoseconds (the first field of each
/// thread's `schedstat`: nanosecond resolution, unlike the 10 ms ticks of `stat`).
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// CPU time of a process and of its direct children (live threads), in nanoseconds: a
/// PostgreSQL postmaster with its backends, say. 0 when the process is gone.
pub fn tree_cpu_ns(pid: u32) -> u64 {
    let mut total = cpu_ns(pid).unwrap_or(0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the parenthesised name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += cpu_ns(child).unwrap_or(0);
        }
    }
    total
}

/// CPU time of a process's live threads by thread name (`comm`), in nanoseconds: where a
/// server's time goes (comet workers, logic's runtime, the store's writer and flushers).
pub fn threads_cpu_ns(pid: u32) -> io::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = entry?.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        let ns = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(comm.trim().to_string()).or_default() += ns;
    }
    Ok(out)
}

/// The 1-minute load average (other work on the machine skews a run).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// This thread's CPU time in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The soft limit on open files of this process.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur
}

/// Raises the soft open-file limit to the hard limit (the machine may cap both).
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers; setrlimit only lowers or keeps within the hard limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    nofile_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        // A running thread's `schedstat` moves at scheduler ticks, not on every read: work
        // in slices until it has moved (a few ticks at most; the cap only stops a broken read).
        let before = cpu_ns(me).unwrap();
        let mut x = 0u64;
        let mut moved = false;
        for _ in 0..10_000 {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            if cpu_ns(me).unwrap() > before {
                moved = true;
                break;
            }
        }
        assert!(moved, "CPU time did not move");
        let a = now_ns();
        assert!(now_ns() >= a);
        let threads = threads_cpu_ns(me).unwrap();
        assert!(!threads.is_empty() && threads.values().sum::<u64>() > 0);
        assert!(load1() >= 0.0);
    }
}
