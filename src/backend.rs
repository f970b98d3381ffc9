//! One backend server's shared record: health, requests in flight, counters, idle connections.
//!
//! A `Backend` is created from its validated [`ServerConfig`] and shared (`Arc`) by every worker,
//! every forward/reverse pair and the health thread. Single counters are atomics; the health
//! progress and the idle-connection pool each sit behind their own short `parking_lot` mutex that
//! is never held across I/O and never nested inside another lock.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::config::ServerConfig;
use crate::watcher::{Readiness, readiness};

/// How many idle keep-alive connections each backend keeps for reuse.
pub const IDLE_CONNECTIONS_PER_BACKEND: usize = 16;

/// An idle backend connection older than this is closed rather than reused: backends commonly
/// drop idle keep-alive connections after 5–60 s, and reusing one just as it closes loses a request.
pub const IDLE_CONNECTION_MAX_AGE: Duration = Duration::from_secs(4);

#[derive(Debug)]
pub struct Backend {
    pub url: String,
    pub host_header: String,
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    healthy: AtomicBool,
    active: AtomicUsize,
    total_requests: AtomicU64,
    total_failures: AtomicU64,
    probes: Mutex<ProbeHistory>,
    idle: Mutex<Vec<IdleConnection>>,
}

/// What the health thread remembers between probes, for hysteresis.
#[derive(Debug, Default)]
struct ProbeHistory {
    consecutive_successes: u32,
    consecutive_failures: u32,
    last_checked: Option<SystemTime>,
}

#[derive(Debug)]
struct IdleConnection {
    stream: TcpStream,
    since: std::time::Instant,
}

/// A change of state worth logging, returned by [`Backend::record_probe`] only when the state flips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFlip {
    BecameHealthy,
    BecameUnhealthy,
}

impl Backend {
    pub fn new(server: &ServerConfig) -> Backend {
        Backend {
            url: server.url.clone(),
            host_header: server.host_header.clone(),
            addrs: server.addrs.clone(),
            weight: server.weight,
            healthy: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            total_requests: AtomicU64::new(0),
            total_failures: AtomicU64::new(0),
            probes: Mutex::new(ProbeHistory::default()),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Requests in flight to this backend.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn total_requests(&self) -> u64 {
        self.total_requests.load(Ordering::Relaxed)
    }

    pub fn total_failures(&self) -> u64 {
        self.total_failures.load(Ordering::Relaxed)
    }

    pub fn last_checked(&self) -> Option<SystemTime> {
        self.probes.lock().last_checked
    }

    /// Counts one attempt and marks it in flight until the returned guard drops.
    pub fn begin_request(&self) -> InFlight<'_> {
        self.total_requests.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight { backend: self }
    }

    pub fn record_failure(&self) {
        self.total_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one probe result with hysteresis: `unhealthy_threshold` consecutive failures mark
    /// the backend unhealthy, `healthy_threshold` consecutive successes mark it healthy again.
    /// Returns `Some` if and only if this probe flipped the state.
    pub fn record_probe(&self, success: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<HealthFlip> {
        let mut history = self.probes.lock();
        history.last_checked = Some(SystemTime::now());
        let healthy = self.is_healthy();
        if success {
            history.consecutive_failures = 0;
            history.consecutive_successes = history.consecutive_successes.saturating_add(1);
            if !healthy && history.consecutive_successes >= healthy_threshold {
                self.healthy.store(true, Ordering::Release);
                return Some(HealthFlip::BecameHealthy);
            }
        } else {
            history.consecutive_successes = 0;
            history.consecutive_failures = history.consecutive_failures.saturating_add(1);
            if healthy && history.consecutive_failures >= unhealthy_threshold {
                self.healthy.store(false, Ordering::Release);
                drop(history);
                self.idle.lock().clear();
                return Some(HealthFlip::BecameUnhealthy);
            }
        }
        None
    }

    /// Connects to the first address that answers within `timeout`. Every later read and write
    /// on the connection may block for at most `io_timeout`; set once here, for its whole life.
    pub fn connect(&self, timeout: Duration, io_timeout: Duration) -> io::Result<TcpStream> {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "backend has no address");
        for addr in &self.addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(io_timeout))?;
                    stream.set_write_timeout(Some(io_timeout))?;
                    return Ok(stream);
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Takes the most recently used idle connection that still looks open, if any.
    pub fn take_idle(&self) -> Option<TcpStream> {
        loop {
            let idle = self.idle.lock().pop()?;
            if idle.since.elapsed() < IDLE_CONNECTION_MAX_AGE && looks_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Closes idle connections too old to be reused, so their descriptors do not linger.
    pub fn prune_idle(&self) {
        self.idle.lock().retain(|connection| connection.since.elapsed() < IDLE_CONNECTION_MAX_AGE);
    }

    /// Idle connections kept for reuse now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }

    /// Offers a connection whose last response ended cleanly for reuse; drops it if the pool is full.
    pub fn put_idle(&self, stream: TcpStream) {
        if !self.is_healthy() {
            return;
        }
        let mut idle = self.idle.lock();
        idle.retain(|connection| connection.since.elapsed() < IDLE_CONNECTION_MAX_AGE);
        if idle.len() < IDLE_CONNECTIONS_PER_BACKEND {
            idle.push(IdleConnection { stream, since: std::time::Instant::now() });
        }
    }
}

/// An idle keep-alive connection that the backend has closed, or that holds unexpected bytes,
/// cannot carry a request. One non-blocking peek tells, without consuming anything.
fn looks_open(stream: &TcpStream) -> bool {
    readiness(stream) == Readiness::Idle
}

/// Marks one request in flight on a backend; the count drops when this does, even on panic.
#[derive(Debug)]
pub struct InFlight<'a> {
    backend: &'a Backend,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
pub(crate) fn test_backend(port: u16, weight: u32) -> Backend {
    Backend::new(&ServerConfig {
        url: format!("http://127.0.0.1:{port}"),
        host_header: format!("127.0.0.1:{port}"),
        addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_consecutive_results_and_reports_only_flips() {
        let backend = test_backend(1, 1);
        assert!(backend.is_healthy());
        assert_eq!(backend.record_probe(false, 2, 3), None);
        assert_eq!(backend.record_probe(false, 2, 3), None);
        assert_eq!(backend.record_probe(true, 2, 3), None, "a success resets the failure count");
        assert_eq!(backend.record_probe(false, 2, 3), None);
        assert_eq!(backend.record_probe(false, 2, 3), None);
        assert_eq!(backend.record_probe(false, 2, 3), Some(HealthFlip::BecameUnhealthy));
        assert!(!backend.is_healthy());
        assert_eq!(backend.record_probe(false, 2, 3), None, "already unhealthy: no second flip");
        assert_eq!(backend.record_probe(true, 2, 3), None);
        assert_eq!(backend.record_probe(true, 2, 3), Some(HealthFlip::BecameHealthy));
        assert!(backend.is_healthy());
        assert!(backend.last_checked().is_some());
    }

    #[test]
    fn in_flight_guard_counts_and_releases() {
        let backend = test_backend(1, 1);
        {
            let _first = backend.begin_request();
            let _second = backend.begin_request();
            assert_eq!(backend.active(), 2);
        }
        assert_eq!(backend.active(), 0);
        assert_eq!(backend.total_requests(), 2);
    }
}
