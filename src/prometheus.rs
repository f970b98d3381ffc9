//! The metrics in the Prometheus text exposition format (version 0.0.4), served at
//! `{metricsPath}/prometheus`.
//!
//! Rendered from the same [`Snapshot`] as the JSON document, so the two endpoints always agree:
//! the sum of `lb_requests_total` over its `outcome` label and `lb_request_duration_seconds_count`
//! are the JSON `total_requests`. Every family has a `# HELP` and a `# TYPE` line, names start
//! with `lb_`, counters end in `_total` and durations are in seconds. Every per-backend series
//! carries a `pool` label first, so the same URL in two pools is two series; the `lb_pool_*`
//! families sum each pool's backends, while the families without a `pool` label count the whole
//! load balancer. This module only formats; it owns no state and keeps no registry.

use std::fmt::{Display, Write};

use crate::histogram::BUCKET_BOUNDS_MICROS;
use crate::metrics::{BACKEND_STATES, BackendSnapshot, PoolSnapshot, Snapshot};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    requests(&mut out, snapshot);
    server_gauges(&mut out, snapshot);
    pools(&mut out, &snapshot.pools);
    backends(&mut out, &snapshot.backends);
    duration_histogram(&mut out, snapshot);
    out.text
}

fn requests(out: &mut Exposition, snapshot: &Snapshot) {
    out.family(
        "lb_requests_total",
        Kind::Counter,
        "Requests counted, by outcome: success (a backend's response reached the client, whatever its status) \
         or failed (the load balancer answered with an error of its own, rate limiting included).",
    );
    out.sample("lb_requests_total", &[("outcome", "success")], snapshot.success_requests);
    out.sample("lb_requests_total", &[("outcome", "failed")], snapshot.failed_requests);
    let counters = [
        ("lb_retries_total", "Attempts retried on another backend.", snapshot.retry_attempts),
        (
            "lb_rate_limited_requests_total",
            "Requests refused with 429 by the rate limiter (also counted as failed).",
            snapshot.rate_limited_requests,
        ),
        ("lb_config_reloads_total", "Config changes applied without a restart.", snapshot.config_reloads),
        (
            "lb_config_reload_failures_total",
            "Changed config files refused as invalid (the running config stayed).",
            snapshot.config_reload_failures,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, Kind::Counter, help);
        out.sample(name, &[], value);
    }
}

fn server_gauges(out: &mut Exposition, snapshot: &Snapshot) {
    let in_flight: usize = snapshot.backends.iter().map(|backend| backend.active_connections).sum();
    let gauges = [
        ("lb_requests_in_flight", "Requests in flight to the backends now.", in_flight as u64),
        ("lb_open_connections", "Client connections open now.", snapshot.open_connections as u64),
        ("lb_healthy_backends", "Backends in the healthy state now.", snapshot.healthy_backends as u64),
        ("lb_backends", "Backends configured.", snapshot.total_backends as u64),
        ("lb_uptime_seconds", "Seconds since the load balancer started.", snapshot.uptime_seconds),
    ];
    for (name, help, value) in gauges {
        out.family(name, Kind::Gauge, help);
        out.sample(name, &[], value);
    }
    let waiting = &snapshot.waiting_connections;
    out.family(
        "lb_waiting_connections",
        Kind::Gauge,
        "Client connections held by the watcher now, by what they wait for: handshaking (a TLS client's \
         next handshake bytes), idle (their next request), reading_head or reading_body (the rest of a \
         request a worker can act on), closing (answered, draining before the close).",
    );
    let states = [
        ("handshaking", waiting.handshaking),
        ("idle", waiting.idle),
        ("reading_head", waiting.reading_head),
        ("reading_body", waiting.reading_body),
        ("closing", waiting.closing),
    ];
    for (state, count) in states {
        out.sample("lb_waiting_connections", &[("state", state)], count as u64);
    }
    out.family(
        "lb_waiting_bytes",
        Kind::Gauge,
        "Bytes the watcher holds for clients still sending their requests (bounded by maxWaitingBytes).",
    );
    out.sample("lb_waiting_bytes", &[], waiting.bytes as u64);
    out.family(
        "lb_slow_clients_total",
        Kind::Counter,
        "Clients cut or refused by a slow-client defence, by defence: head_timeout and body_timeout (408), \
         waiting_bytes_full (503), slow_upload and slow_reader (below the minimum transfer rate), \
         per_client_cap (503 at accept).",
    );
    for (defence, count) in &snapshot.slow_clients {
        out.sample("lb_slow_clients_total", &[("defence", defence)], *count);
    }
    out.family(
        "lb_listener_requests_total",
        Kind::Counter,
        "Requests counted (as in lb_requests_total), by the listener they came through: http or https.",
    );
    for (listener, count) in &snapshot.listener_requests {
        out.sample("lb_listener_requests_total", &[("listener", listener)], *count);
    }
    out.family(
        "lb_tls_handshakes_total",
        Kind::Counter,
        "TLS handshakes completed on the HTTPS listener: full (a key exchange and a signature) or resumed.",
    );
    out.sample("lb_tls_handshakes_total", &[("kind", "full")], snapshot.tls.full_handshakes);
    out.sample("lb_tls_handshakes_total", &[("kind", "resumed")], snapshot.tls.resumed_handshakes);
    out.family(
        "lb_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes failed, by reason: timeout (tlsHandshakeTimeout), plain_http (an HTTP request \
         sent to the TLS port), protocol (a broken, garbage or unsupported hello), closed (the client left).",
    );
    for (reason, count) in &snapshot.tls.handshake_failures {
        out.sample("lb_tls_handshake_failures_total", &[("reason", reason)], *count);
    }
}

fn pools(out: &mut Exposition, pools: &[PoolSnapshot]) {
    out.family(
        "lb_pool_backends",
        Kind::Gauge,
        "Backends of the pool in each state now (every state listed, 0 included).",
    );
    for pool in pools {
        for state in states_of(&pool.backends) {
            let count = pool.backends.iter().filter(|backend| backend.state == state).count();
            out.sample("lb_pool_backends", &[("pool", pool.name.as_str()), ("state", state)], count as u64);
        }
    }
    let counter = |out: &mut Exposition, name: &str, help: &str, value: fn(&PoolSnapshot) -> u64| {
        out.family(name, Kind::Counter, help);
        for pool in pools {
            out.sample(name, &[("pool", pool.name.as_str())], value(pool));
        }
    };
    counter(
        out,
        "lb_pool_requests_total",
        "Attempts sent to the pool's backends (the sum of their lb_backend_requests_total).",
        |pool| pool.total_requests,
    );
    counter(
        out,
        "lb_pool_failures_total",
        "Attempts to the pool's backends that failed (the sum of their lb_backend_failures_total).",
        |pool| pool.total_failures,
    );
}

/// Every state in [`BACKEND_STATES`], then any other state one of `backends` reports, once each.
fn states_of(backends: &[BackendSnapshot]) -> Vec<&'static str> {
    let mut states = BACKEND_STATES.to_vec();
    for backend in backends {
        if !states.contains(&backend.state) {
            states.push(backend.state);
        }
    }
    states
}

fn backends(out: &mut Exposition, backends: &[BackendSnapshot]) {
    let family = |out: &mut Exposition, name: &str, kind: Kind, help: &str, value: fn(&BackendSnapshot) -> u64| {
        out.family(name, kind, help);
        for backend in backends {
            out.sample(name, &backend_labels(backend), value(backend));
        }
    };
    family(out, "lb_backend_requests_total", Kind::Counter, "Attempts sent to the backend.", |backend| {
        backend.total_requests
    });
    family(out, "lb_backend_failures_total", Kind::Counter, "Attempts to the backend that failed.", |backend| {
        backend.total_failures
    });
    family(out, "lb_backend_in_flight", Kind::Gauge, "Requests in flight to the backend now.", |backend| {
        backend.active_connections as u64
    });
    family(out, "lb_backend_up", Kind::Gauge, "Whether the backend is in rotation (healthy): 1 or 0.", |backend| {
        u64::from(backend.state == "healthy")
    });
    family(out, "lb_backend_weight", Kind::Gauge, "The backend's configured weight.", |backend| {
        u64::from(backend.weight)
    });
    out.family("lb_backend_state", Kind::Gauge, "The backend's state: 1 for the state it is in, 0 for the others.");
    for backend in backends {
        let [pool_label, backend_label, name_label] = backend_labels(backend);
        for state in states_of(std::slice::from_ref(backend)) {
            let value = u64::from(backend.state == state);
            out.sample("lb_backend_state", &[pool_label, backend_label, name_label, ("state", state)], value);
        }
    }
}

/// The labels that name a backend in its series: its pool, its URL and its name.
fn backend_labels(backend: &BackendSnapshot) -> [(&'static str, &str); 3] {
    [("pool", backend.pool.as_str()), ("backend", backend.url.as_str()), ("name", backend.name.as_str())]
}

fn duration_histogram(out: &mut Exposition, snapshot: &Snapshot) {
    let name = "lb_request_duration_seconds";
    let histogram = &snapshot.latency;
    out.family(name, Kind::Histogram, "How long each counted request took, from its head being read to its response.");
    for (bound, count) in BUCKET_BOUNDS_MICROS.iter().zip(histogram.cumulative) {
        out.sample("lb_request_duration_seconds_bucket", &[("le", &seconds(*bound).to_string())], count);
    }
    out.sample("lb_request_duration_seconds_bucket", &[("le", "+Inf")], histogram.count);
    out.sample("lb_request_duration_seconds_sum", &[], seconds(histogram.sum_micros));
    out.sample("lb_request_duration_seconds_count", &[], histogram.count);
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// What a metric family is, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The exposition being written: families, each a `# HELP` and a `# TYPE` line and its samples.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        for (index, (label, label_value)) in labels.iter().enumerate() {
            let separator = if index == 0 { '{' } else { ',' };
            let _ = write!(self.text, "{separator}{label}=\"{}\"", escape_label_value(label_value));
        }
        if !labels.is_empty() {
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A `# HELP` text as the format wants it: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use crate::connection::Scheme;
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Outcome, Stats};
    use crate::pool::Pools;

    fn backend(url: &str, name: &str, state: &'static str) -> BackendSnapshot {
        pooled("default", url, name, state)
    }

    fn pooled(pool: &str, url: &str, name: &str, state: &'static str) -> BackendSnapshot {
        BackendSnapshot {
            pool: pool.to_string(),
            url: url.to_string(),
            name: name.to_string(),
            weight: 3,
            backup: false,
            state,
            active_connections: 2,
            total_requests: 40,
            total_failures: 1,
            response_time_ms: None,
            last_checked: None,
            addresses: Vec::new(),
            resolve_error: None,
        }
    }

    /// Gives `snapshot` these backends, and the pools they name (in order of first mention) with
    /// their counters summed, as [`Snapshot::take`] would.
    fn set_backends(snapshot: &mut Snapshot, backends: Vec<BackendSnapshot>) {
        let mut pools: Vec<PoolSnapshot> = Vec::new();
        for backend in &backends {
            let index = match pools.iter().position(|pool| pool.name == backend.pool) {
                Some(index) => index,
                None => {
                    pools.push(PoolSnapshot {
                        name: backend.pool.clone(),
                        algorithm: "round_robin",
                        healthy_backends: 0,
                        total_backends: 0,
                        active_connections: 0,
                        total_requests: 0,
                        total_failures: 0,
                        backends: Vec::new(),
                    });
                    pools.len() - 1
                }
            };
            let pool = &mut pools[index];
            pool.healthy_backends += usize::from(backend.state == "healthy");
            pool.total_backends += 1;
            pool.active_connections += backend.active_connections;
            pool.total_requests += backend.total_requests;
            pool.total_failures += backend.total_failures;
            pool.backends.push(backend.clone());
        }
        snapshot.healthy_backends = backends.iter().filter(|backend| backend.state == "healthy").count();
        snapshot.total_backends = backends.len();
        snapshot.pools = pools;
        snapshot.backends = backends;
    }

    /// A snapshot with three requests (one rate-limited) and two backends in pool `default`.
    fn sample_snapshot() -> Snapshot {
        let stats = Stats::default();
        stats.record_request(Outcome::Success, Duration::from_millis(3), Scheme::Http);
        stats.record_request(Outcome::Success, Duration::from_millis(40), Scheme::Http);
        stats.record_request(Outcome::RateLimited, Duration::ZERO, Scheme::Https);
        stats.record_retry();
        stats.record_slow_client(crate::metrics::Defence::SlowReader);
        let mut snapshot = Snapshot::take(&stats, Duration::from_secs(7), &Pools::empty());
        snapshot.waiting_connections = crate::watcher::WaitingCounts {
            handshaking: 4,
            idle: 6,
            reading_head: 2,
            reading_body: 1,
            closing: 3,
            bytes: 900,
        };
        stats.record_handshake(true);
        stats.record_handshake_failure(crate::tls::HandshakeFailure::PlainHttp);
        snapshot.tls = Snapshot::take(&stats, Duration::ZERO, &Pools::empty()).tls;
        set_backends(
            &mut snapshot,
            vec![backend("http://a:1", "a", "healthy"), backend("http://b:2", "b", "unhealthy")],
        );
        snapshot.open_connections = 5;
        snapshot
    }

    /// The value of the sample written exactly as `series` (name and labels).
    fn value_of(text: &str, series: &str) -> String {
        let line = text
            .lines()
            .find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
        line.rsplit(' ').next().unwrap().to_string()
    }

    #[test]
    fn counters_and_gauges_carry_the_snapshot_values() {
        let text = render(&sample_snapshot());
        let expected = [
            ("lb_requests_total{outcome=\"success\"}", "2"),
            ("lb_requests_total{outcome=\"failed\"}", "1"),
            ("lb_retries_total", "1"),
            ("lb_rate_limited_requests_total", "1"),
            ("lb_config_reloads_total", "0"),
            ("lb_config_reload_failures_total", "0"),
            ("lb_requests_in_flight", "4"),
            ("lb_open_connections", "5"),
            ("lb_healthy_backends", "1"),
            ("lb_backends", "2"),
            ("lb_uptime_seconds", "7"),
            ("lb_waiting_connections{state=\"idle\"}", "6"),
            ("lb_waiting_connections{state=\"reading_head\"}", "2"),
            ("lb_waiting_connections{state=\"reading_body\"}", "1"),
            ("lb_waiting_connections{state=\"closing\"}", "3"),
            ("lb_waiting_connections{state=\"handshaking\"}", "4"),
            ("lb_waiting_bytes", "900"),
            ("lb_listener_requests_total{listener=\"http\"}", "2"),
            ("lb_listener_requests_total{listener=\"https\"}", "1"),
            ("lb_tls_handshakes_total{kind=\"full\"}", "0"),
            ("lb_tls_handshakes_total{kind=\"resumed\"}", "1"),
            ("lb_tls_handshake_failures_total{reason=\"plain_http\"}", "1"),
            ("lb_tls_handshake_failures_total{reason=\"timeout\"}", "0"),
            ("lb_slow_clients_total{defence=\"slow_reader\"}", "1"),
            ("lb_slow_clients_total{defence=\"head_timeout\"}", "0"),
            ("lb_slow_clients_total{defence=\"per_client_cap\"}", "0"),
            ("lb_backend_requests_total{pool=\"default\",backend=\"http://a:1\",name=\"a\"}", "40"),
            ("lb_backend_failures_total{pool=\"default\",backend=\"http://b:2\",name=\"b\"}", "1"),
            ("lb_backend_in_flight{pool=\"default\",backend=\"http://a:1\",name=\"a\"}", "2"),
            ("lb_backend_up{pool=\"default\",backend=\"http://a:1\",name=\"a\"}", "1"),
            ("lb_backend_up{pool=\"default\",backend=\"http://b:2\",name=\"b\"}", "0"),
            ("lb_backend_weight{pool=\"default\",backend=\"http://b:2\",name=\"b\"}", "3"),
            ("lb_pool_backends{pool=\"default\",state=\"healthy\"}", "1"),
            ("lb_pool_backends{pool=\"default\",state=\"unhealthy\"}", "1"),
            ("lb_pool_backends{pool=\"default\",state=\"ejected\"}", "0"),
            ("lb_pool_requests_total{pool=\"default\"}", "80"),
            ("lb_pool_failures_total{pool=\"default\"}", "2"),
        ];
        for (series, value) in expected {
            assert_eq!(value_of(&text, series), value, "{series}");
        }
    }

    #[test]
    fn every_state_has_a_series_and_only_the_reported_one_is_1() {
        let mut snapshot = sample_snapshot();
        let mut backends = snapshot.backends.clone();
        backends.push(backend("http://c:3", "c", "ejected"));
        backends.push(backend("http://d:4", "d", "draining"));
        set_backends(&mut snapshot, backends);
        let text = render(&snapshot);
        let state = |backend: &str, name: &str, state: &str| {
            value_of(
                &text,
                &format!(
                    "lb_backend_state{{pool=\"default\",backend=\"{backend}\",name=\"{name}\",state=\"{state}\"}}"
                ),
            )
        };
        let table = [
            ("http://a:1", "a", ["1", "0", "0"]),
            ("http://b:2", "b", ["0", "1", "0"]),
            ("http://c:3", "c", ["0", "0", "1"]),
            ("http://d:4", "d", ["0", "0", "0"]),
        ];
        for (url, name, values) in table {
            let actual: Vec<String> = BACKEND_STATES.iter().map(|each| state(url, name, each)).collect();
            assert_eq!(actual, values, "{url}");
        }
        assert_eq!(state("http://d:4", "d", "draining"), "1", "a state outside the list still shows");
        assert_eq!(text.matches("lb_backend_state{").count(), 3 * 4 + 1);
        assert_eq!(
            value_of(&text, "lb_backend_up{pool=\"default\",backend=\"http://c:3\",name=\"c\"}"),
            "0",
            "ejected is not up"
        );
    }

    #[test]
    fn the_same_url_in_two_pools_is_two_series_and_each_pool_has_its_own() {
        let mut snapshot = sample_snapshot();
        let mut shared = pooled("api", "http://b:2", "b", "healthy");
        (shared.total_requests, shared.total_failures, shared.active_connections) = (7, 0, 0);
        let mut backends = snapshot.backends.clone();
        backends.push(shared);
        backends.push(pooled("api", "http://c:3", "c", "draining"));
        set_backends(&mut snapshot, backends);
        let text = render(&snapshot);
        let expected = [
            "lb_backend_requests_total{pool=\"default\",backend=\"http://b:2\",name=\"b\"} 40",
            "lb_backend_requests_total{pool=\"api\",backend=\"http://b:2\",name=\"b\"} 7",
            "lb_backend_up{pool=\"default\",backend=\"http://b:2\",name=\"b\"} 0",
            "lb_backend_up{pool=\"api\",backend=\"http://b:2\",name=\"b\"} 1",
            "lb_backend_state{pool=\"api\",backend=\"http://c:3\",name=\"c\",state=\"draining\"} 1",
            "lb_pool_backends{pool=\"default\",state=\"healthy\"} 1",
            "lb_pool_backends{pool=\"default\",state=\"unhealthy\"} 1",
            "lb_pool_backends{pool=\"default\",state=\"ejected\"} 0",
            "lb_pool_backends{pool=\"api\",state=\"healthy\"} 1",
            "lb_pool_backends{pool=\"api\",state=\"unhealthy\"} 0",
            "lb_pool_backends{pool=\"api\",state=\"ejected\"} 0",
            "lb_pool_backends{pool=\"api\",state=\"draining\"} 1",
            "lb_pool_requests_total{pool=\"default\"} 80",
            "lb_pool_requests_total{pool=\"api\"} 47",
            "lb_pool_failures_total{pool=\"default\"} 2",
            "lb_pool_failures_total{pool=\"api\"} 1",
            "lb_backends 4",
            "lb_healthy_backends 2",
            "lb_requests_in_flight 6",
        ];
        for line in expected {
            assert!(text.lines().any(|each| each == line), "no line {line} in:\n{text}");
        }
        assert_eq!(text.matches("lb_pool_backends{").count(), 3 + 4, "a state outside the list only where reported");
        assert_eq!(text.matches("lb_pool_requests_total{").count(), 2);
        assert_eq!(text.matches("lb_backend_requests_total{").count(), 4);

        let renamed = "a\\p\"i\n";
        snapshot.pools[0].name = renamed.to_string();
        for backend in snapshot.backends.iter_mut().filter(|backend| backend.pool == "default") {
            backend.pool = renamed.to_string();
        }
        let text = render(&snapshot);
        let escaped = [
            "lb_pool_requests_total{pool=\"a\\\\p\\\"i\\n\"} 80",
            "lb_pool_backends{pool=\"a\\\\p\\\"i\\n\",state=\"healthy\"} 1",
            "lb_backend_weight{pool=\"a\\\\p\\\"i\\n\",backend=\"http://a:1\",name=\"a\"} 3",
        ];
        for line in escaped {
            assert!(text.lines().any(|each| each == line), "no line {line} in:\n{text}");
        }
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut snapshot = sample_snapshot();
        set_backends(&mut snapshot, vec![backend("http://x/a\\b\"c\nd", "plain", "healthy")]);
        let text = render(&snapshot);
        assert!(
            text.contains(
                "lb_backend_weight{pool=\"default\",backend=\"http://x/a\\\\b\\\"c\\nd\",name=\"plain\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.lines().all(|line| !line.is_empty()), "no raw newline splits a sample");
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"", "help keeps quotes as they are");
    }

    #[test]
    fn duration_buckets_are_cumulative_in_seconds_and_end_with_the_count() {
        let text = render(&sample_snapshot());
        let bucket = |le: &str| value_of(&text, &format!("lb_request_duration_seconds_bucket{{le=\"{le}\"}}"));
        let table = [
            ("0.001", "1"),
            ("0.0025", "1"),
            ("0.005", "2"),
            ("0.01", "2"),
            ("0.025", "2"),
            ("0.05", "3"),
            ("0.1", "3"),
            ("0.25", "3"),
            ("0.5", "3"),
            ("1", "3"),
            ("2.5", "3"),
            ("5", "3"),
            ("10", "3"),
            ("+Inf", "3"),
        ];
        for (le, count) in table {
            assert_eq!(bucket(le), count, "le={le}");
        }
        assert_eq!(value_of(&text, "lb_request_duration_seconds_count"), "3");
        assert_eq!(value_of(&text, "lb_request_duration_seconds_sum"), "0.043");
        assert_eq!(text.matches("lb_request_duration_seconds_bucket{").count(), BUCKET_BOUNDS_MICROS.len() + 1);
    }

    #[test]
    fn histogram_invariants_hold_for_any_recorded_durations() {
        let stats = Stats::default();
        for step in 0..500u64 {
            stats.record_request(Outcome::Success, Duration::from_micros(step * step * 97 % 20_000_000), Scheme::Http);
        }
        let snapshot = Snapshot::take(&stats, Duration::ZERO, &Pools::empty());
        let text = render(&snapshot);
        let buckets: Vec<u64> = text
            .lines()
            .filter(|line| line.starts_with("lb_request_duration_seconds_bucket{"))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(buckets.windows(2).all(|pair| pair[0] <= pair[1]), "never decreasing: {buckets:?}");
        assert_eq!(buckets.last(), Some(&500), "+Inf holds every request");
        assert_eq!(value_of(&text, "lb_request_duration_seconds_count"), snapshot.total_requests.to_string());
        let sum: f64 = value_of(&text, "lb_request_duration_seconds_sum").parse().unwrap();
        let expected: u64 = (0..500u64).map(|step| step * step * 97 % 20_000_000).sum();
        assert!((sum - expected as f64 / 1e6).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn every_family_has_help_then_type_before_its_samples_and_appears_once() {
        let mut snapshot = sample_snapshot();
        let mut backends = snapshot.backends.clone();
        backends.push(pooled("api", "http://c:3", "c", "ejected"));
        set_backends(&mut snapshot, backends);
        let text = render(&snapshot);
        let mut families: HashMap<String, String> = HashMap::new();
        let mut current: Option<(String, String)> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap().to_string();
                let type_line = lines.next().unwrap_or_default();
                let kind = type_line
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("HELP {name} not followed by its TYPE: {type_line:?}"));
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
                assert!(name.starts_with("lb_"), "{name}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name}: _total is for counters");
                assert!(families.insert(name.clone(), kind.to_string()).is_none(), "{name} declared twice");
                current = Some((name, kind.to_string()));
                continue;
            }
            assert!(!line.starts_with('#'), "a comment outside HELP/TYPE: {line}");
            let series = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = current.as_ref().unwrap_or_else(|| panic!("{line} before any family"));
            let belongs = if kind == "histogram" {
                ["_bucket", "_sum", "_count"].iter().any(|suffix| series == format!("{family}{suffix}"))
            } else {
                series == family
            };
            assert!(belongs, "{series} is not in the family declared above it ({family})");
        }
        assert_eq!(families.len(), 26, "{families:?}");
        assert!(text.ends_with('\n'));
    }
}
