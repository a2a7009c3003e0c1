//! Latency percentiles (HDR histograms, microseconds) and rates.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a batch of timed requests came to.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Successful requests per second over the batch's wall time.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub struct Latencies {
    histogram: Histogram<u64>,
    errors: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // Constant, valid bounds: 1 µs to 10 min at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            errors: 0,
        }
    }
}

impl Latencies {
    pub fn record(&mut self, took: Duration) {
        let _ = self.histogram.record((took.as_micros() as u64).max(1));
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn summary(&self, wall: Duration) -> Summary {
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        let seconds = wall.as_secs_f64().max(1e-9);
        Summary {
            count: self.histogram.len(),
            errors: self.errors,
            seconds,
            per_second: self.histogram.len() as f64 / seconds,
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: self.histogram.max() as f64 / 1000.0,
        }
    }
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Percentile `q` (0..1) of `values`, nearest rank.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&v), 3.0);
        assert_eq!(median(&[1.0, 2.0]), 1.5);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.99), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary(Duration::from_secs(1));
        assert_eq!(s.count, 100);
        assert!((s.p99_ms - 99.0).abs() < 0.5, "{s:?}");
    }
}
