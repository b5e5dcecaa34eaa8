//! The soak's samples: each server process's memory (VmRSS), open file descriptors and
//! threads from `/proc`, its tokio tasks from its `/metrics` (`starling_tokio_alive_tasks`),
//! and the summary a soak is judged on: baseline, peak, the RSS slope after warm-up (least
//! squares), the fds and tasks after teardown.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io;

/// One process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcFigures {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// Tasks alive on its tokio runtime, for a process with a `--scrape` listener that
    /// answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
}

/// Reads `/proc/PID/status` (VmRSS, Threads) and counts `/proc/PID/fd`.
pub fn read(pid: u32) -> io::Result<ProcFigures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok(ProcFigures {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        tasks: None,
    })
}

/// `starling_tokio_alive_tasks` from the `/metrics` of the server at `addr`; `None` when it
/// does not answer within 2 s (a sample is not held up by a stalled server) or exports none.
pub async fn tokio_tasks(addr: std::net::SocketAddr) -> Option<u64> {
    let text = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::im::group::get_text(addr, "/metrics"),
    )
    .await
    .ok()?
    .ok()?;
    tasks_in(&text)
}

/// The value of the `starling_tokio_alive_tasks` sample in a Prometheus text exposition.
fn tasks_in(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix("starling_tokio_alive_tasks ")?
            .trim()
            .parse()
            .ok()
    })
}

/// One sampling moment: where the run was and every process's figures (a process that is
/// gone is left out).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the bench started.
    pub t_s: f64,
    /// Wall clock, ms since the Unix epoch (to line up with the Redis blips' log).
    pub unix_ms: u64,
    /// Seconds since traffic started (negative before).
    pub traffic_s: f64,
    pub phase: Phase,
    pub procs: BTreeMap<String, ProcFigures>,
    /// The bench's own counters at that moment.
    pub traffic: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before any client connected.
    Baseline,
    Connecting,
    Run,
    /// Traffic stopped: clients closing, then the final sync and check.
    Drain,
    /// Every client closed.
    Teardown,
    /// `--settle` after teardown.
    Settled,
}

/// Least-squares slope of `points` (x, y): y units per x unit; `None` under two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// One process over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSummary {
    pub baseline: ProcFigures,
    pub peak_rss_kib: u64,
    pub peak_fds: u64,
    pub peak_threads: u64,
    /// The most tokio tasks seen (processes scraped only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_tasks: Option<u64>,
    /// RSS growth over the run samples after warm-up, KiB per minute (least squares).
    pub rss_slope_kib_per_min: Option<f64>,
    /// Samples the slope is fitted on.
    pub slope_samples: usize,
    /// The last sample with traffic.
    pub end_of_run: Option<ProcFigures>,
    /// Right after every client closed, and `--settle` later.
    pub teardown: Option<ProcFigures>,
    pub settled: Option<ProcFigures>,
    /// settled.fds − baseline.fds.
    pub fds_vs_baseline: Option<i64>,
    /// settled.tasks − baseline.tasks (processes scraped at both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_vs_baseline: Option<i64>,
}

/// The summary of each process that has a baseline sample; `warmup_s` counts from the start
/// of traffic.
pub fn summarize(samples: &[Sample], warmup_s: f64) -> BTreeMap<String, ProcSummary> {
    let mut out = BTreeMap::new();
    let Some(base) = samples.iter().find(|s| s.phase == Phase::Baseline) else {
        return out;
    };
    for (name, b) in &base.procs {
        let of = |s: &Sample| s.procs.get(name).copied();
        let all: Vec<ProcFigures> = samples.iter().filter_map(of).collect();
        let last_in = |phase: Phase| samples.iter().rev().find(|s| s.phase == phase).and_then(of);
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.phase == Phase::Run && s.traffic_s >= warmup_s)
            .filter_map(|s| Some((s.traffic_s / 60.0, of(s)?.rss_kib as f64)))
            .collect();
        let settled = last_in(Phase::Settled);
        out.insert(
            name.clone(),
            ProcSummary {
                baseline: *b,
                peak_rss_kib: all.iter().map(|f| f.rss_kib).max().unwrap_or(0),
                peak_fds: all.iter().map(|f| f.fds).max().unwrap_or(0),
                peak_threads: all.iter().map(|f| f.threads).max().unwrap_or(0),
                peak_tasks: all.iter().filter_map(|f| f.tasks).max(),
                rss_slope_kib_per_min: slope(&points),
                slope_samples: points.len(),
                end_of_run: last_in(Phase::Run),
                teardown: samples
                    .iter()
                    .find(|s| s.phase == Phase::Teardown)
                    .and_then(of),
                fds_vs_baseline: settled.map(|s| s.fds as i64 - b.fds as i64),
                tasks_vs_baseline: settled
                    .and_then(|s| s.tasks)
                    .zip(b.tasks)
                    .map(|(now, base)| now as i64 - base as i64),
                settled,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(slope(&[(0.0, 5.0), (1.0, 7.0), (2.0, 9.0)]), Some(2.0));
        // Noise around a flat line: the fit, not the last minus the first.
        let s = slope(&[(0.0, 10.0), (1.0, 14.0), (2.0, 6.0), (3.0, 10.0)]).unwrap();
        assert!((s - -0.8).abs() < 1e-9, "{s}");
        assert_eq!(slope(&[(1.0, 5.0)]), None);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 6.0)]), None);
    }

    #[test]
    fn reads_this_process() {
        let before = read(std::process::id()).unwrap();
        assert!(before.rss_kib > 0 && before.threads >= 1);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(read(std::process::id()).unwrap().fds, before.fds + 1);
        drop(f);
    }

    fn sample(t: f64, phase: Phase, rss: u64, fds: u64) -> Sample {
        let figures = ProcFigures {
            rss_kib: rss,
            fds,
            threads: 4,
            // Tasks follow the connections' fds in these samples.
            tasks: Some(fds / 10),
        };
        Sample {
            t_s: t,
            unix_ms: 0,
            traffic_s: t - 10.0,
            phase,
            procs: [("comet".to_string(), figures)].into(),
            traffic: serde_json::Value::Null,
        }
    }

    #[test]
    fn summary_fits_after_warmup_and_compares_settled_fds() {
        let s = [
            sample(0.0, Phase::Baseline, 1000, 20),
            sample(10.0, Phase::Run, 5000, 1020),
            // Warm-up ends at traffic_s = 60: only the next three count, flat at 8000 ± 0.
            sample(70.0, Phase::Run, 8000, 1020),
            sample(130.0, Phase::Run, 8000, 1020),
            sample(190.0, Phase::Run, 8000, 1021),
            sample(200.0, Phase::Teardown, 7000, 25),
            sample(260.0, Phase::Settled, 7000, 21),
        ];
        let c = &summarize(&s, 60.0)["comet"];
        assert_eq!(c.rss_slope_kib_per_min, Some(0.0));
        assert_eq!(c.slope_samples, 3);
        assert_eq!((c.peak_rss_kib, c.peak_fds), (8000, 1021));
        assert_eq!(c.teardown.map(|f| f.fds), Some(25));
        assert_eq!(c.fds_vs_baseline, Some(1));
        assert_eq!((c.peak_tasks, c.tasks_vs_baseline), (Some(102), Some(0)));
    }

    #[test]
    fn tasks_are_read_from_the_exposition() {
        let text = "# HELP starling_tokio_alive_tasks Tasks alive.\n\
                    # TYPE starling_tokio_alive_tasks gauge\n\
                    starling_tokio_alive_tasks 17\n\
                    starling_tokio_alive_tasks_other 3\n";
        assert_eq!(tasks_in(text), Some(17));
        assert_eq!(tasks_in("starling_other 1\n"), None);
    }
}
