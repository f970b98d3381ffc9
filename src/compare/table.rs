//! The text table `compare` prints: one header, then one row per algorithm as each run finishes.
//!
//! Column widths are fixed up front from every algorithm and backend name, so rows line up
//! although they are printed one at a time.

use super::summary::AlgorithmResult;

/// The columns before the backend shares: (heading, width).
const MEASURES: [(&str, usize); 6] =
    [("requests", 8), ("req/s", 8), ("p50 ms", 7), ("p99 ms", 7), ("errors", 6), ("retries", 7)];

/// Column widths for a set of algorithms and backends.
#[derive(Debug, Clone)]
pub struct Table {
    algorithm_width: usize,
    backends: Vec<String>,
}

impl Table {
    pub fn new(algorithms: &[&str], backends: &[&str]) -> Table {
        let algorithm_width = algorithms.iter().map(|name| name.len()).chain(["algorithm".len()]).max().unwrap_or(0);
        Table { algorithm_width, backends: backends.iter().map(|name| name.to_string()).collect() }
    }

    /// The heading line: `algorithm`, the measures, then one column per backend.
    pub fn header(&self) -> String {
        let mut line = format!("{:<width$}", "algorithm", width = self.algorithm_width);
        for (heading, width) in MEASURES {
            line.push_str(&format!("  {heading:>width$}"));
        }
        for backend in &self.backends {
            line.push_str(&format!("  {backend:>width$}", width = share_width(backend)));
        }
        line
    }

    /// One algorithm's line; backend shares are percentages of the successful answers.
    pub fn row(&self, result: &AlgorithmResult) -> String {
        let measures = [
            result.requests.to_string(),
            format!("{:.1}", result.throughput()),
            format!("{:.2}", result.p50.as_secs_f64() * 1000.0),
            format!("{:.2}", result.p99.as_secs_f64() * 1000.0),
            result.errors.to_string(),
            result.retries.to_string(),
        ];
        let mut line = format!("{:<width$}", result.algorithm, width = self.algorithm_width);
        for ((_, width), value) in MEASURES.iter().zip(measures) {
            line.push_str(&format!("  {value:>width$}"));
        }
        for (backend, share) in self.backends.iter().zip(&result.shares) {
            line.push_str(&format!("  {:>width$}", format!("{share:.1}%"), width = share_width(backend)));
        }
        line
    }
}

/// Wide enough for the backend's name and for `100.0%`.
fn share_width(backend: &str) -> usize {
    backend.len().max("100.0%".len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rows_line_up_under_the_header() {
        let table = Table::new(&["round_robin", "a_much_longer_algorithm_name"], &["fast-1", "slow", "failing"]);
        let result = AlgorithmResult {
            algorithm: "round_robin".to_string(),
            requests: 2000,
            elapsed: Duration::from_secs(2),
            errors: 0,
            retries: 517,
            p50: Duration::from_micros(412),
            p99: Duration::from_micros(21_306),
            shares: vec![62.5, 37.5, 0.0],
        };
        let header = table.header();
        let row = table.row(&result);
        assert_eq!(header.len(), row.len(), "\n{header}\n{row}");
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words, ["round_robin", "2000", "1000.0", "0.41", "21.31", "0", "517", "62.5%", "37.5%", "0.0%"]);
        let headings: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(headings[headings.len() - 3..], ["fast-1", "slow", "failing"]);
        for heading in ["failing", "slow", "fast-1"] {
            let end = header.find(heading).unwrap() + heading.len();
            assert!(row[..end].ends_with('%'), "the share ends under its backend's name: \n{header}\n{row}");
        }
    }
}
