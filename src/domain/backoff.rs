//! Retry timing: exponential backoff with jitter, capped.

use std::time::Duration;

/// The wait before attempt `attempts + 1`, after `attempts` failed:
/// `base * 2^(attempts-1)`, capped at `max`, then scaled by `jitter` (a
/// factor the caller draws, e.g. from 0.75..1.25, so retries of many jobs
/// that failed together do not arrive together).
pub fn delay(base: Duration, max: Duration, attempts: u32, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exponent).min(max);
    raw.mul_f64(jitter.clamp(0.0, 2.0))
}

/// The wait after a failure: what the provider asked for (`Retry-After`),
/// or the backoff, whichever is longer.
pub fn next_wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(backoff, |asked| asked.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(delay(s(1), s(60), 1, 1.0), s(1));
        assert_eq!(delay(s(1), s(60), 2, 1.0), s(2));
        assert_eq!(delay(s(1), s(60), 3, 1.0), s(4));
        assert_eq!(delay(s(1), s(60), 10, 1.0), s(60));
        assert_eq!(delay(s(1), s(60), 1_000, 1.0), s(60));
        assert_eq!(delay(s(2), s(60), 2, 0.75), s(3));
    }

    #[test]
    fn retry_after_is_honoured() {
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(1), Some(s(30))), s(30));
        assert_eq!(next_wait(s(8), Some(s(2))), s(8));
        assert_eq!(next_wait(s(1), None), s(1));
    }
}
