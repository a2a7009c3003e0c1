//! The slowest an upload body may arrive: after a grace period, on average
//! at least `rate` bytes a second. A client trickling its body to hold an
//! upload slot is cut off once it falls behind.

use std::time::{Duration, Instant};

/// A body's progress against the minimum rate.
#[derive(Debug, Clone)]
pub struct BodyPace {
    started: Instant,
    received: u64,
    /// Bytes a second; 0 turns the rule off.
    rate: u64,
    grace: Duration,
}

impl BodyPace {
    pub fn new(rate: u64, grace: Duration, started: Instant) -> Self {
        Self {
            started,
            received: 0,
            rate,
            grace,
        }
    }

    pub fn received(&mut self, bytes: usize) {
        self.received = self.received.saturating_add(bytes as u64);
    }

    /// When the next byte must have arrived by, or `None` without a rule:
    /// the grace period, plus the time what came so far earns at the rate.
    pub fn deadline(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.rate as f64);
        self.started.checked_add(self.grace.saturating_add(earned))
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_time_by_what_it_sends() {
        let t0 = Instant::now();
        let mut pace = BodyPace::new(1000, Duration::from_secs(20), t0);
        assert_eq!(pace.deadline(), Some(t0 + Duration::from_secs(20)));
        pace.received(5000);
        assert_eq!(pace.deadline(), Some(t0 + Duration::from_secs(25)));
    }

    #[test]
    fn a_zero_rate_never_cuts_a_body_off() {
        let mut pace = BodyPace::new(0, Duration::ZERO, Instant::now());
        pace.received(1);
        assert_eq!(pace.deadline(), None);
    }
}
