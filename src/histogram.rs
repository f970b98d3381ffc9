//! The request-duration histogram: how many requests took at most each of a fixed list of
//! durations, and the sum of all durations.
//!
//! Recording is lock-free (one atomic add for the bucket, one for the sum), so every worker can
//! record every request. Each bucket counts only the requests that fall into it; a
//! [`HistogramSnapshot`] turns those counts into the cumulative counts Prometheus expects, from one
//! read of each bucket, so a snapshot's buckets never decrease and its last bucket is its count
//! even while requests are being recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in microseconds: from 1 ms to 10 s. A last bucket, with no
/// bound (`+Inf`), takes everything slower.
pub const BUCKET_BOUNDS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Request durations, bucketed.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Requests per bucket (not cumulative); the last one is the `+Inf` bucket.
    buckets: [AtomicU64; BUCKET_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// One reading of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// For each bound of [`BUCKET_BOUNDS_MICROS`], how many requests took at most that long
    /// (cumulative, so never decreasing).
    pub cumulative: [u64; BUCKET_BOUNDS_MICROS.len()],
    /// Every request recorded: the `+Inf` bucket.
    pub count: u64,
    pub sum_micros: u64,
}

impl LatencyHistogram {
    pub fn record(&self, duration: Duration) {
        let nanos = duration.as_nanos();
        let bucket = BUCKET_BOUNDS_MICROS
            .iter()
            .position(|&bound| nanos <= u128::from(bound) * 1000)
            .unwrap_or(BUCKET_BOUNDS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKET_BOUNDS_MICROS.len()];
        let mut running = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            if let Some(slot) = cumulative.get_mut(index) {
                *slot = running;
            }
        }
        HistogramSnapshot { cumulative, count: running, sum_micros: self.sum_micros.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_lands_in_the_first_bucket_that_holds_it_and_counts_cumulatively() {
        let histogram = LatencyHistogram::default();
        for micros in [0, 1_000, 1_001, 7_000, 10_000_000, 10_000_001, 60_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        histogram.record(Duration::from_nanos(1_000_001));
        let snapshot = histogram.snapshot();
        // ≤1ms: 0 and 1000 µs; ≤2.5ms: + 1001 µs and 1000.001 µs; ≤10ms: + 7000 µs; ≤10s: + 10 s.
        assert_eq!(snapshot.cumulative, [2, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6]);
        assert_eq!(snapshot.count, 8);
        assert_eq!(snapshot.sum_micros, 1_000 + 1_001 + 7_000 + 10_000_000 + 10_000_001 + 60_000_000 + 1_000);
    }

    #[test]
    fn an_empty_histogram_reads_all_zero() {
        assert_eq!(LatencyHistogram::default().snapshot(), HistogramSnapshot::default());
    }
}
