//! The load balancer's counters and the JSON document served at `metricsPath`.
//!
//! Counters are plain atomics owned by the server's shared state (no global registry); the
//! document is a snapshot built on demand from them and from each backend's record. The same
//! snapshot feeds the Prometheus exposition ([`crate::prometheus`]), so the two always agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::connection::Scheme;
use crate::histogram::{HistogramSnapshot, LatencyHistogram};
use crate::pool::{Pool, Pools};
use crate::timestamp::rfc3339;
use crate::tls::HandshakeFailure;
use crate::watcher::WaitingCounts;

/// Whole-server request counters.
#[derive(Debug, Default)]
pub struct Stats {
    total_requests: AtomicU64,
    success_requests: AtomicU64,
    failed_requests: AtomicU64,
    retry_attempts: AtomicU64,
    rate_limited_requests: AtomicU64,
    /// The duration of every counted request (its sum gives the average latency).
    latency: LatencyHistogram,
    config_reloads: AtomicU64,
    config_reload_failures: AtomicU64,
    /// Clients cut or refused by each slow-client defence, indexed by [`Defence`].
    defences: [AtomicU64; Defence::ALL.len()],
    /// Requests counted per listener, indexed by [`Scheme`].
    listener_requests: [AtomicU64; 2],
    /// TLS handshakes completed: full, and resumed from a ticket or a cached session.
    tls_full_handshakes: AtomicU64,
    tls_resumed_handshakes: AtomicU64,
    /// TLS handshakes failed, indexed by [`HandshakeFailure`].
    tls_failures: [AtomicU64; HandshakeFailure::ALL.len()],
}

/// A defence against slow or greedy clients, for counting what each one stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defence {
    /// A head not complete within `headerReadTimeout` (408).
    HeadTimeout,
    /// A kept body that stalled or crawled (408).
    BodyTimeout,
    /// A waiting client refused because the watcher held `maxWaitingBytes` (503).
    WaitingBytesFull,
    /// A streamed upload below `minRequestBodyRate`.
    SlowUpload,
    /// A client taking its response below `minResponseRate`.
    SlowReader,
    /// A connection refused at accept by `maxConnectionsPerClient` (503).
    PerClientCap,
}

impl Defence {
    pub const ALL: [Defence; 6] = [
        Defence::HeadTimeout,
        Defence::BodyTimeout,
        Defence::WaitingBytesFull,
        Defence::SlowUpload,
        Defence::SlowReader,
        Defence::PerClientCap,
    ];

    /// The label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Defence::HeadTimeout => "head_timeout",
            Defence::BodyTimeout => "body_timeout",
            Defence::WaitingBytesFull => "waiting_bytes_full",
            Defence::SlowUpload => "slow_upload",
            Defence::SlowReader => "slow_reader",
            Defence::PerClientCap => "per_client_cap",
        }
    }
}

impl Defence {
    /// The defence a cut by the watcher counts under, if it is one.
    pub fn of_cut(cut: crate::watcher::Cut) -> Option<Defence> {
        match cut {
            crate::watcher::Cut::HeadTimeout => Some(Defence::HeadTimeout),
            crate::watcher::Cut::BodyTimeout => Some(Defence::BodyTimeout),
            crate::watcher::Cut::MemoryFull => Some(Defence::WaitingBytesFull),
            crate::watcher::Cut::IncompleteBody => None,
        }
    }
}

/// How a request ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A backend's response reached the client, whatever its status.
    Success,
    /// The load balancer answered with an error of its own, or the exchange broke.
    Failed,
    /// Refused by the rate limiter (also counted as failed).
    RateLimited,
}

impl Stats {
    /// Counts one request by outcome and listener, and records its duration in the histogram.
    pub fn record_request(&self, outcome: Outcome, latency: Duration, scheme: Scheme) {
        self.total_requests.fetch_add(1, Ordering::Relaxed);
        self.listener_requests[scheme as usize].fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Success => &self.success_requests,
            Outcome::Failed => &self.failed_requests,
            Outcome::RateLimited => {
                self.rate_limited_requests.fetch_add(1, Ordering::Relaxed);
                &self.failed_requests
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency.record(latency);
    }

    pub fn record_retry(&self) {
        self.retry_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one client cut or refused by a slow-client defence.
    pub fn record_slow_client(&self, defence: Defence) {
        self.defences[defence as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished TLS handshake.
    pub fn record_handshake(&self, resumed: bool) {
        let counter = if resumed { &self.tls_resumed_handshakes } else { &self.tls_full_handshakes };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake.
    pub fn record_handshake_failure(&self, failure: HandshakeFailure) {
        self.tls_failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt to apply a changed config file: applied, or refused as invalid.
    pub fn record_reload(&self, applied: bool) {
        let counter = if applied { &self.config_reloads } else { &self.config_reload_failures };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub uptime_seconds: u64,
    pub algorithm: &'static str,
    pub total_requests: u64,
    pub success_requests: u64,
    pub failed_requests: u64,
    pub retry_attempts: u64,
    pub rate_limited_requests: u64,
    pub avg_latency_ms: f64,
    /// Config changes applied without a restart.
    pub config_reloads: u64,
    /// Changed config files refused as invalid (the running config stayed).
    pub config_reload_failures: u64,
    pub healthy_backends: usize,
    pub total_backends: usize,
    /// Client connections open now (accepted and not yet closed).
    pub open_connections: usize,
    /// Connections with the watcher now, by what they wait for, and the bytes it holds for them.
    pub waiting_connections: WaitingCounts,
    /// Clients cut or refused by each slow-client defence since start-up, by [`Defence::name`].
    pub slow_clients: BTreeMap<&'static str, u64>,
    /// Requests counted per listener: `http` and `https`.
    pub listener_requests: BTreeMap<&'static str, u64>,
    /// The HTTPS listener's handshakes (all zero without one).
    pub tls: TlsSnapshot,
    /// Each pool, with its own backends and their totals.
    pub pools: Vec<PoolSnapshot>,
    /// Every backend of every pool, pool by pool (each names its pool).
    pub backends: Vec<BackendSnapshot>,
    /// Request durations, for the Prometheus exposition only (the JSON has the average).
    #[serde(skip)]
    pub latency: HistogramSnapshot,
}

/// TLS handshakes since start-up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsSnapshot {
    /// Full handshakes (a key exchange and a signature each).
    pub full_handshakes: u64,
    /// Handshakes that resumed an earlier session.
    pub resumed_handshakes: u64,
    /// Failed handshakes by [`HandshakeFailure::name`].
    pub handshake_failures: BTreeMap<&'static str, u64>,
}

/// Every state a backend snapshot can report, so that the Prometheus exposition has a series for
/// each from the start: `healthy` (in rotation), `unhealthy` (failed its health checks) and
/// `ejected` (taken out of rotation by passive health checking).
pub const BACKEND_STATES: [&str; 3] = ["healthy", "unhealthy", "ejected"];

/// One pool in the metrics: its algorithm, its backends, and their counters summed.
#[derive(Debug, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    pub algorithm: &'static str,
    pub healthy_backends: usize,
    pub total_backends: usize,
    /// Requests in flight on the pool's backends now.
    pub active_connections: usize,
    /// Attempts sent to the pool's backends, and those that failed.
    pub total_requests: u64,
    pub total_failures: u64,
    pub backends: Vec<BackendSnapshot>,
}

impl PoolSnapshot {
    fn take(pool: &Pool, now: std::time::Instant) -> PoolSnapshot {
        let backends: Vec<BackendSnapshot> = pool
            .backends
            .iter()
            .map(|backend| (backend, backend.addresses()))
            .map(|(backend, addresses)| BackendSnapshot {
                pool: pool.name().to_string(),
                url: backend.url.clone(),
                name: backend.name.clone(),
                weight: backend.weight(),
                backup: backend.backup,
                state: backend.state(now),
                active_connections: backend.active(),
                total_requests: backend.total_requests(),
                total_failures: backend.total_failures(),
                response_time_ms: backend
                    .response_time()
                    .map(|average| (average.as_secs_f64() * 100_000.0).round() / 100.0),
                last_checked: backend.last_checked().map(rfc3339),
                addresses: addresses.addrs.iter().map(ToString::to_string).collect(),
                resolve_error: addresses.error.clone(),
            })
            .collect();
        PoolSnapshot {
            name: pool.name().to_string(),
            algorithm: pool.config.algorithm.name(),
            healthy_backends: backends.iter().filter(|backend| backend.state == "healthy").count(),
            total_backends: backends.len(),
            active_connections: backends.iter().map(|backend| backend.active_connections).sum(),
            total_requests: backends.iter().map(|backend| backend.total_requests).sum(),
            total_failures: backends.iter().map(|backend| backend.total_failures).sum(),
            backends,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendSnapshot {
    /// The pool the backend belongs to.
    pub pool: String,
    pub url: String,
    pub name: String,
    pub weight: u32,
    /// A backup server, chosen only while no other server is available.
    pub backup: bool,
    pub state: &'static str,
    pub active_connections: usize,
    pub total_requests: u64,
    pub total_failures: u64,
    /// Moving average of this backend's response times (what `least_time` weighs), if timed yet.
    pub response_time_ms: Option<f64>,
    pub last_checked: Option<String>,
    /// The addresses the backend's host resolves to (the last that did, if it no longer does).
    pub addresses: Vec<String>,
    /// Why the latest lookup of the host failed, if it did (then the backend is down).
    pub resolve_error: Option<String>,
}

impl Snapshot {
    pub fn take(stats: &Stats, uptime: Duration, pools: &Pools) -> Snapshot {
        let total_requests = stats.total_requests.load(Ordering::Relaxed);
        let latency = stats.latency.snapshot();
        let avg_latency_ms = if total_requests == 0 {
            0.0
        } else {
            (latency.sum_micros as f64 / total_requests as f64 / 10.0).round() / 100.0
        };
        let now = std::time::Instant::now();
        let pool_snapshots: Vec<PoolSnapshot> = pools.list.iter().map(|pool| PoolSnapshot::take(pool, now)).collect();
        let backends: Vec<BackendSnapshot> =
            pool_snapshots.iter().flat_map(|pool| pool.backends.iter().cloned()).collect();
        let algorithm = pools.default_pool().or(pools.list.first()).map_or("none", |pool| pool.config.algorithm.name());
        Snapshot {
            uptime_seconds: uptime.as_secs(),
            algorithm,
            total_requests,
            success_requests: stats.success_requests.load(Ordering::Relaxed),
            failed_requests: stats.failed_requests.load(Ordering::Relaxed),
            retry_attempts: stats.retry_attempts.load(Ordering::Relaxed),
            rate_limited_requests: stats.rate_limited_requests.load(Ordering::Relaxed),
            avg_latency_ms,
            config_reloads: stats.config_reloads.load(Ordering::Relaxed),
            config_reload_failures: stats.config_reload_failures.load(Ordering::Relaxed),
            healthy_backends: backends.iter().filter(|backend| backend.state == "healthy").count(),
            total_backends: backends.len(),
            open_connections: 0,
            waiting_connections: WaitingCounts::default(),
            slow_clients: Defence::ALL
                .iter()
                .map(|&defence| (defence.name(), stats.defences[defence as usize].load(Ordering::Relaxed)))
                .collect(),
            listener_requests: [Scheme::Http, Scheme::Https]
                .iter()
                .map(|&scheme| (scheme.name(), stats.listener_requests[scheme as usize].load(Ordering::Relaxed)))
                .collect(),
            tls: TlsSnapshot {
                full_handshakes: stats.tls_full_handshakes.load(Ordering::Relaxed),
                resumed_handshakes: stats.tls_resumed_handshakes.load(Ordering::Relaxed),
                handshake_failures: HandshakeFailure::ALL
                    .iter()
                    .map(|&failure| (failure.name(), stats.tls_failures[failure as usize].load(Ordering::Relaxed)))
                    .collect(),
            },
            pools: pool_snapshots,
            backends,
            latency,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec_pretty(self).unwrap_or_default();
        body.push(b'\n');
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_average_latency() {
        let stats = Stats::default();
        stats.record_request(Outcome::Success, Duration::from_millis(10), Scheme::Http);
        stats.record_request(Outcome::Failed, Duration::from_millis(20), Scheme::Http);
        stats.record_request(Outcome::RateLimited, Duration::from_micros(0), Scheme::Http);
        stats.record_retry();
        let snapshot = Snapshot::take(&stats, Duration::from_secs(3), &Pools::empty());
        assert_eq!((snapshot.total_requests, snapshot.success_requests, snapshot.failed_requests), (3, 1, 2));
        assert_eq!((snapshot.rate_limited_requests, snapshot.retry_attempts), (1, 1));
        assert_eq!(snapshot.avg_latency_ms, 10.0);
        assert_eq!(snapshot.uptime_seconds, 3);
    }
}
