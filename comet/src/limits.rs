//! Abuse limits (issue 15, `[comet.limits]`): how many connections a comet and one source
//! address may hold, checked at accept, and each connection's packet rate.
//!
//! The rate limit is GCRA (the generic cell rate algorithm: a token bucket stated as one
//! "theoretical arrival time"), kept in one `u64` of the connection with its strike count.
//! `governor` (already in the workspace, used by IM per key) was weighed: its direct limiter
//! is a struct of its own per connection (state, quota, clock) behind atomics, and its keyed
//! limiter a locked map lookup per packet; a connection here is 152 bytes in a single-thread
//! slab, so the eight bytes and the dozen lines below do the same with neither.

use crate::close::Refusal;
use crate::config::Limits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Connection counts shared by every worker: the total admitted and not yet released (an
/// atomic reserved at admission, so workers accepting at once cannot pass `max_conns`); per
/// source address a map, kept only when `max_conns_per_ip` is set.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    max_conns: usize,
    max_per_ip: usize,
    admitted: AtomicUsize,
    /// Open connections per address (only while `max_per_ip > 0`): locked once at accept and
    /// once at close, never on the data path.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl ConnLimits {
    pub fn new(limits: &Limits) -> Self {
        ConnLimits {
            max_conns: limits.max_conns,
            max_per_ip: limits.max_conns_per_ip,
            admitted: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a connection from `ip`, counting it in the total and against its address;
    /// [`ConnLimits::release`] undoes it when it closes. The total is reserved first (one
    /// atomic add), so at most `max_conns` are ever admitted at once.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        let before = self.admitted.fetch_add(1, Relaxed);
        if self.max_conns > 0 && before >= self.max_conns {
            self.admitted.fetch_sub(1, Relaxed);
            return Err(Refusal::MaxConns);
        }
        if self.max_per_ip > 0 {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n as usize >= self.max_per_ip {
                self.admitted.fetch_sub(1, Relaxed);
                return Err(Refusal::MaxConnsPerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// A connection admitted from `ip` is gone.
    pub fn release(&self, ip: IpAddr) {
        self.admitted.fetch_sub(1, Relaxed);
        if self.max_per_ip == 0 {
            return;
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// A connection's packet rate, from `max_packets_per_sec`, `packet_burst` and
/// `flood_strikes`; `None` when the limit is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Microseconds per packet at the sustained rate (GCRA's emission interval T).
    interval: u64,
    /// How far ahead of now the arrival time may run: T × (burst − 1) (GCRA's τ).
    tolerance: u64,
    strikes: u8,
}

impl Rate {
    pub fn new(limits: &Limits) -> Option<Rate> {
        if limits.max_packets_per_sec == 0 {
            return None;
        }
        let interval = (1_000_000 / u64::from(limits.max_packets_per_sec)).max(1);
        Some(Rate {
            interval,
            tolerance: interval * u64::from(limits.packet_burst.max(1) - 1),
            strikes: limits.flood_strikes.clamp(1, u32::from(u8::MAX)) as u8,
        })
    }
}

/// What the meter says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// Over the rate: refuse this packet.
    Refuse,
    /// Over the rate `flood_strikes` times with no pause: close the connection as `flood`.
    Close,
}

/// One connection's GCRA state: the theoretical arrival time in microseconds since its
/// worker started (the low 56 bits: two thousand years) and the strikes (the top 8 bits).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Meter(u64);

const TAT_BITS: u32 = 56;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

impl Meter {
    /// Meters one packet arriving at `now` (µs). A refused packet does not move the arrival
    /// time (refusals cost the client no future budget) but is a strike; a packet that finds
    /// the whole burst available (the client paused long enough) clears the strikes.
    pub fn check(&mut self, rate: &Rate, now: u64) -> Verdict {
        let tat = self.0 & TAT_MASK;
        let strikes = (self.0 >> TAT_BITS) as u8;
        if tat <= now {
            self.set(now + rate.interval, 0);
            return Verdict::Pass;
        }
        if tat - now <= rate.tolerance {
            self.set(tat + rate.interval, strikes);
            return Verdict::Pass;
        }
        let strikes = strikes.saturating_add(1);
        self.set(tat, strikes);
        if strikes >= rate.strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    fn set(&mut self, tat: u64, strikes: u8) {
        self.0 = (tat & TAT_MASK) | (u64::from(strikes) << TAT_BITS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: u32, burst: u32, strikes: u32) -> Rate {
        Rate::new(&Limits {
            max_packets_per_sec: per_sec,
            packet_burst: burst,
            flood_strikes: strikes,
            ..Limits::default()
        })
        .unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_sustained_rate() {
        let r = rate(10, 3, 100); // one packet per 100 ms, three at once
        let mut m = Meter::default();
        let t0 = 5_000_000;
        for _ in 0..3 {
            assert_eq!(m.check(&r, t0), Verdict::Pass);
        }
        assert_eq!(m.check(&r, t0), Verdict::Refuse);
        assert_eq!(m.check(&r, t0 + 99_999), Verdict::Refuse);
        assert_eq!(m.check(&r, t0 + 100_000), Verdict::Pass);
        assert_eq!(m.check(&r, t0 + 100_000), Verdict::Refuse);
        // Steady at the rate: every packet passes.
        for i in 2..50 {
            assert_eq!(m.check(&r, t0 + i * 100_000), Verdict::Pass, "{i}");
        }
    }

    #[test]
    fn strikes_close_a_flooder_and_clear_after_a_pause() {
        let r = rate(10, 2, 3);
        let mut m = Meter::default();
        let t0 = 1_000_000;
        assert_eq!(m.check(&r, t0), Verdict::Pass);
        assert_eq!(m.check(&r, t0), Verdict::Pass);
        assert_eq!(m.check(&r, t0), Verdict::Refuse);
        assert_eq!(m.check(&r, t0 + 1), Verdict::Refuse);
        // A pause long enough to refill the burst forgives the strikes.
        let t1 = t0 + 1_000_000;
        assert_eq!(m.check(&r, t1), Verdict::Pass);
        assert_eq!(m.check(&r, t1), Verdict::Pass);
        assert_eq!(m.check(&r, t1), Verdict::Refuse);
        assert_eq!(m.check(&r, t1), Verdict::Refuse);
        assert_eq!(m.check(&r, t1), Verdict::Close);
    }

    #[test]
    fn off_when_the_rate_is_zero_and_limits_count_per_address() {
        assert_eq!(
            Rate::new(&Limits {
                max_packets_per_sec: 0,
                ..Limits::default()
            }),
            None
        );
        let l = ConnLimits::new(&Limits {
            max_conns: 3,
            max_conns_per_ip: 2,
            ..Limits::default()
        });
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(
            l.admit(a),
            Err(Refusal::MaxConnsPerIp),
            "refusals take no room"
        );
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(b), Err(Refusal::MaxConns));
        l.release(a);
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(a), Err(Refusal::MaxConns));
    }

    /// Workers accepting at once never admit more than `max_conns` between them.
    #[test]
    fn concurrent_admissions_stop_at_max_conns() {
        let l = ConnLimits::new(&Limits {
            max_conns: 100,
            ..Limits::default()
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        let barrier = std::sync::Barrier::new(8);
        let admitted: usize = std::thread::scope(|s| {
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        (0..1000).filter(|_| l.admit(ip).is_ok()).count()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
    }
}
