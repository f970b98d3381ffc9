//! From one algorithm's samples to the numbers `compare` reports: throughput, latency
//! percentiles, errors, and each backend's share of the successful answers. Pure: no I/O here.

use std::time::Duration;

use super::load::LoadRun;

/// One algorithm's results, ready for the table and the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmResult {
    pub algorithm: String,
    /// Requests sent (answered or not).
    pub requests: usize,
    pub elapsed: Duration,
    /// Requests not answered `200` by a backend: other statuses, broken connections.
    pub errors: usize,
    /// Attempts the load balancer retried on another backend (its own counter).
    pub retries: u64,
    /// Latency percentiles over every request sent.
    pub p50: Duration,
    pub p99: Duration,
    /// Per backend, in the order of the backend list: percent of the successful answers it gave.
    pub shares: Vec<f64>,
}

impl AlgorithmResult {
    /// Summarises `run` for `algorithm`; `backends` names the backends in the order shares are wanted.
    pub fn from_run(algorithm: &str, run: &LoadRun, retries: u64, backends: &[&str]) -> AlgorithmResult {
        let mut latencies: Vec<Duration> = run.samples.iter().map(|sample| sample.latency).collect();
        latencies.sort_unstable();
        let answered_by =
            run.samples.iter().filter(|sample| sample.is_success()).filter_map(|sample| sample.backend.as_deref());
        AlgorithmResult {
            algorithm: algorithm.to_string(),
            requests: run.samples.len(),
            elapsed: run.elapsed,
            errors: run.samples.iter().filter(|sample| !sample.is_success()).count(),
            retries,
            p50: percentile(&latencies, 50.0).unwrap_or_default(),
            p99: percentile(&latencies, 99.0).unwrap_or_default(),
            shares: shares(backends, answered_by),
        }
    }

    /// Requests finished per second of the run.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 }
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted`, which must be in ascending order:
/// the smallest value with at least `p`% of the values at or below it. `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Each of `backends`' share, in percent, of the answers in `answered_by` (backend names).
/// Answers from names not listed are left out; the shares sum to 100, or are all 0 when no listed
/// backend answered.
pub fn shares<'a>(backends: &[&str], answered_by: impl IntoIterator<Item = &'a str>) -> Vec<f64> {
    let mut counts = vec![0usize; backends.len()];
    for name in answered_by {
        if let Some(index) = backends.iter().position(|backend| *backend == name) {
            counts[index] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    counts.iter().map(|&count| if total == 0 { 0.0 } else { 100.0 * count as f64 / total as f64 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::load::Sample;

    fn sample(millis: u64, status: Option<u16>, backend: Option<&str>) -> Sample {
        Sample { latency: Duration::from_millis(millis), status, backend: backend.map(str::to_string) }
    }

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&value| Duration::from_millis(value)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&hundred, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&hundred, 100.0), Some(Duration::from_millis(100)));
        let few = millis(&[3, 7, 20]);
        assert_eq!(percentile(&few, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&few, 99.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&few, 1.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&millis(&[4]), 99.0), Some(Duration::from_millis(4)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn shares_sum_to_a_hundred_percent() {
        let backends = ["a", "b", "c", "d"];
        let answers = ["a", "a", "b", "c", "a", "b", "unknown"];
        let shares = shares(&backends, answers);
        assert_eq!(shares.len(), 4);
        assert!((shares[0] - 50.0).abs() < 1e-9, "{shares:?}");
        assert!((shares[1] - 100.0 / 3.0).abs() < 1e-9, "{shares:?}");
        assert_eq!(shares[3], 0.0);
        assert!((shares.iter().sum::<f64>() - 100.0).abs() < 1e-9, "{shares:?}");

        let thirds = super::shares(&["x", "y", "z"], ["x", "y", "z"]);
        assert!((thirds.iter().sum::<f64>() - 100.0).abs() < 1e-9, "{thirds:?}");
        assert_eq!(super::shares(&backends, []), [0.0; 4], "no answers: no shares");
    }

    #[test]
    fn a_run_becomes_counts_percentiles_and_shares_of_successes_only() {
        let samples = vec![
            sample(2, Some(200), Some("fast")),
            sample(4, Some(200), Some("fast")),
            sample(30, Some(200), Some("slow")),
            sample(9, Some(502), Some("fast")),
            sample(1, None, None),
        ];
        let run = LoadRun { samples, elapsed: Duration::from_millis(500) };
        let result = AlgorithmResult::from_run("round_robin", &run, 3, &["fast", "slow", "failing"]);
        assert_eq!((result.requests, result.errors, result.retries), (5, 2, 3));
        assert_eq!((result.p50, result.p99), (Duration::from_millis(4), Duration::from_millis(30)));
        assert_eq!(result.shares.len(), 3);
        assert!((result.shares[0] - 200.0 / 3.0).abs() < 1e-9, "{:?}", result.shares);
        assert_eq!(result.shares[2], 0.0);
        assert!((result.throughput() - 10.0).abs() < 1e-9);
    }
}
