//! The disk's commit floor: append a small record to a file and `fdatasync` it, `count`
//! times, in the directory the store would use. Every durable IM batch pays at least this
//! once (fjall's `SyncData`), so it bounds commits per second and adds to each ack.

use super::percentiles_us;
use crate::fanout::Percentiles;
use crate::sys::now_ns;
use crate::track::new_histogram;
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct FsyncArgs {
    /// A directory on the store's disk (a scratch file is made and removed there).
    #[arg(long, default_value = "/tmp")]
    pub dir: PathBuf,
    #[arg(long, short = 'n', default_value_t = 500)]
    pub count: u32,
    /// Bytes appended before each fdatasync.
    #[arg(long, short = 's', default_value_t = 4096)]
    pub size: usize,
}

#[derive(Debug, Serialize)]
pub struct FsyncResult {
    pub scenario: &'static str,
    pub dir: PathBuf,
    pub count: u32,
    pub size: usize,
    pub write_fdatasync_us: Percentiles,
    pub per_s: f64,
}

pub fn run(args: FsyncArgs) -> anyhow::Result<FsyncResult> {
    let path = args
        .dir
        .join(format!("starling-bench-fsync-{}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let record = vec![b'x'; args.size.max(1)];
    let mut h = new_histogram();
    let start = now_ns();
    for _ in 0..args.count {
        let t = now_ns();
        f.write_all(&record)?;
        // SAFETY: a valid, open descriptor.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        h.record(now_ns() - t)?;
    }
    let secs = (now_ns() - start) as f64 / 1e9;
    drop(f);
    std::fs::remove_file(&path)?;
    let r = FsyncResult {
        scenario: "fsync",
        dir: args.dir,
        count: args.count,
        size: args.size,
        write_fdatasync_us: percentiles_us(&h),
        per_s: f64::from(args.count) / secs.max(1e-9),
    };
    eprintln!(
        "write {} B + fdatasync: p50 {:.0} µs, p99 {:.0} µs, {:.0}/s",
        r.size, r.write_fdatasync_us.p50, r.write_fdatasync_us.p99, r.per_s
    );
    Ok(r)
}
