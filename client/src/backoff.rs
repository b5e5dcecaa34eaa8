//! Reconnect delays: capped exponential backoff with full jitter (AWS Architecture Blog,
//! "Exponential Backoff And Jitter"): attempt `n` waits a uniform random time in
//! `[0, min(max, base × factorⁿ)]`, so a fleet dropped at once by a restart does not come back
//! in lockstep. The defaults are goim's `logic.backoff` (base 3 s, max 300 s, factor 1.8),
//! which `/goim/nodes/weighted` also advertises.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first retry.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// Growth of the ceiling per attempt (≥ 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(3),
            max: Duration::from_secs(300),
            factor: 1.8,
        }
    }
}

impl Backoff {
    /// The upper bound of attempt `attempt`'s delay (attempt 0 is the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let grown = self.base.as_secs_f64() * self.factor.max(1.0).powi(attempt.min(64) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }

    /// A delay for attempt `attempt`: uniform in `[0, ceiling(attempt)]`, drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        self.ceiling(attempt).mul_f64(rng.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_by_the_factor_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
        };
        let c: Vec<_> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_full_jitter_under_the_ceiling() {
        let b = Backoff::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..200).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= b.ceiling(3)));
        let low = delays.iter().filter(|d| **d < b.ceiling(3) / 2).count();
        assert!(
            (60..140).contains(&low),
            "about half below the middle: {low}"
        );
        assert_ne!(delays[0], delays[1], "jittered");
    }
}
