//! A circuit breaker per endpoint: after repeated failures it stops sending, waits, then lets one probe
//! through; a success closes it, a failure re-opens it for longer.

use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 10;
/// First open period.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// Longest open period.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Sending; counts consecutive failures.
    Closed {
        /// Failures in a row.
        failures: u32,
    },
    /// Not sending until `until`.
    Open {
        /// When to probe.
        until: Instant,
        /// How long it was open this time.
        cooldown: Duration,
    },
    /// One probe allowed (`probing` once it is out).
    HalfOpen {
        /// Whether the probe is in flight.
        probing: bool,
        /// The cooldown to use if the probe fails.
        cooldown: Duration,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed { failures: 0 }
    }
}

impl Breaker {
    /// Whether an attempt may start now; takes the probe slot when half-open.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match *self {
            Breaker::Closed { .. } => true,
            Breaker::Open { until, cooldown } if now >= until => {
                *self = Breaker::HalfOpen { probing: true, cooldown };
                true
            }
            Breaker::Open { .. } => false,
            Breaker::HalfOpen { probing: false, cooldown } => {
                *self = Breaker::HalfOpen { probing: true, cooldown };
                true
            }
            Breaker::HalfOpen { probing: true, .. } => false,
        }
    }

    /// Whether [`Breaker::try_acquire`] would let an attempt start now (changes nothing).
    pub fn can_acquire(&self, now: Instant) -> bool {
        match *self {
            Breaker::Closed { .. } | Breaker::HalfOpen { probing: false, .. } => true,
            Breaker::Open { until, .. } => now >= until,
            Breaker::HalfOpen { probing: true, .. } => false,
        }
    }

    /// Gives the probe slot back when the probe said nothing about the endpoint's health (for
    /// example, the destination was refused before any connection).
    pub fn release_probe(&mut self) {
        if let Breaker::HalfOpen { probing: true, cooldown } = *self {
            *self = Breaker::HalfOpen { probing: false, cooldown };
        }
    }

    /// Records an attempt's result. Returns true when this call opened the breaker.
    pub fn record(&mut self, success: bool, now: Instant) -> bool {
        match (*self, success) {
            (_, true) => {
                *self = Breaker::Closed { failures: 0 };
                false
            }
            (Breaker::Closed { failures }, false) if failures + 1 >= FAILURE_THRESHOLD => {
                *self = Breaker::Open { until: now + MIN_COOLDOWN, cooldown: MIN_COOLDOWN };
                true
            }
            (Breaker::Closed { failures }, false) => {
                *self = Breaker::Closed { failures: failures + 1 };
                false
            }
            (Breaker::HalfOpen { cooldown, .. }, false) => {
                let cooldown = (cooldown * 2).min(MAX_COOLDOWN);
                *self = Breaker::Open { until: now + cooldown, cooldown };
                true
            }
            // Results of attempts that started before the breaker opened.
            (Breaker::Open { .. }, false) => false,
        }
    }

    /// When an open breaker wants to probe.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self {
            Breaker::Open { until, .. } => Some(*until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            assert!(!b.record(false, t0));
            assert!(b.try_acquire(t0));
        }
        assert!(b.record(false, t0));
        assert!(!b.try_acquire(t0));
        let t1 = t0 + MIN_COOLDOWN;
        assert!(b.try_acquire(t1), "one probe after the cooldown");
        assert!(!b.try_acquire(t1), "only one");
        assert!(b.record(false, t1));
        assert_eq!(b.reopens_at(), Some(t1 + MIN_COOLDOWN * 2), "a failed probe doubles the cooldown");
        let t2 = t1 + MIN_COOLDOWN * 2;
        assert!(b.can_acquire(t2));
        assert!(b.try_acquire(t2));
        assert!(!b.can_acquire(t2));
        b.release_probe();
        assert!(b.try_acquire(t2), "a released probe slot can be taken again");
        b.record(true, t2);
        assert_eq!(b, Breaker::Closed { failures: 0 });
    }
}
