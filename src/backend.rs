//! One backend server's shared record: health, requests in flight, counters, idle connections.
//!
//! A `Backend` is created from its validated [`ServerConfig`] and shared (`Arc`) by every worker,
//! every forward/reverse pair and the health thread. Single counters are atomics; the health
//! progress and the idle-connection pool each sit behind their own short `parking_lot` mutex that
//! is never held across I/O and never nested inside another lock. The addresses the host name
//! resolves to sit behind a `parking_lot` read-write lock as an `Arc` replaced whole: a connect
//! takes a clone and releases the lock before connecting; the health round that looks the name
//! up again replaces it (after the lookup, never during it).
//!
//! An `https://` backend also holds what a TLS connection to it needs ([`ServerTls`]: the pool's
//! rustls client configuration and the name to verify), behind its own read-write lock for a
//! reload to replace. [`Backend::connect`] then connects the socket and runs the TLS handshake
//! on the calling thread (a worker, or a health probe), so every connection it returns, and every
//! one in the idle pool, is ready for HTTP: [`Stream::Plain`] or [`Stream::Tls`].

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::atomic_instant::AtomicInstant;
use crate::config::{ServerConfig, ServerTls};
use crate::connection::{Readiness, readiness};
use crate::ejection::{Ejection, Standing};
use crate::stream::Stream;
use crate::tls::TlsError;

/// How many idle keep-alive connections each backend keeps for reuse.
pub const IDLE_CONNECTIONS_PER_BACKEND: usize = 16;

/// An idle backend connection older than this is closed rather than reused: backends commonly
/// drop idle keep-alive connections after 5–60 s, and reusing one just as it closes loses a request.
pub const IDLE_CONNECTION_MAX_AGE: Duration = Duration::from_secs(4);

/// How much one response time moves the moving average: `ewma += (sample - ewma) × 0.3`, so
/// the last handful of responses dominate.
pub const RESPONSE_TIME_SMOOTHING: f64 = 0.3;

/// A failed attempt counts as a response this slow for `least_time`, so that a backend that
/// fails fast does not look fast.
pub const FAILED_ATTEMPT_PENALTY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Backend {
    pub url: String,
    /// What the backend is called where its address should not show (the `stickyCookie`), and
    /// what identifies it to the hashing algorithms: the same name in every instance, whatever
    /// order the servers are listed in.
    pub name: String,
    /// A fixed hash of `name`, for rendezvous hashing.
    pub identity: u64,
    pub host_header: String,
    /// The host as written in the URL, and the port: what is looked up each health round.
    pub host: String,
    pub port: u16,
    /// A backup server: chosen only while no other server of its pool is available
    /// ([`crate::balance::tiers`]).
    pub backup: bool,
    /// Where the host resolves to now, and whether the last lookup failed.
    addresses: RwLock<Arc<Addresses>>,
    /// For an `https://` backend, how its connections are secured; `None` for `http://`. A
    /// reload may replace it (a new `backendCaFile` or `tlsServerName`), never add or remove it,
    /// since the scheme is part of the URL that identifies the backend.
    tls: RwLock<Option<ServerTls>>,
    /// The configured weight; a config reload may change it.
    weight: AtomicU32,
    healthy: AtomicBool,
    /// Passive health: ejection on the evidence of failed requests.
    pub ejection: Ejection,
    /// When the backend last turned healthy; none if it has been healthy since start-up. Drives
    /// `slowStart`.
    healthy_since: AtomicInstant,
    /// Moving average of response times in microseconds (`f64` bits); 0 before the first sample.
    response_time_ewma: AtomicU64,
    active: AtomicUsize,
    total_requests: AtomicU64,
    total_failures: AtomicU64,
    probes: Mutex<ProbeHistory>,
    idle: Mutex<Vec<IdleConnection>>,
}

/// A backend's addresses: those its host last resolved to (connects try them in order), and why
/// the latest lookup failed, if it did. A failed lookup keeps the addresses of the last one that
/// succeeded (none if none did) for the requests that may still come before the health checks
/// mark the backend down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    pub addrs: Vec<SocketAddr>,
    pub error: Option<String>,
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
    stream: Stream,
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
        if let Some(reason) = &server.resolve_error {
            log::warn!("backend {}: {reason}; it is down until it resolves", server.url);
        }
        Backend {
            url: server.url.clone(),
            name: server.name.clone(),
            identity: crate::balance::hash::key_hash(server.name.as_bytes()),
            host_header: server.host_header.clone(),
            host: server.host.clone(),
            port: server.port,
            backup: server.backup,
            addresses: RwLock::new(Arc::new(Addresses {
                addrs: server.addrs.clone(),
                error: server.resolve_error.clone(),
            })),
            tls: RwLock::new(server.tls.clone()),
            weight: AtomicU32::new(server.weight),
            // A host that does not resolve is a backend that is down, until it does and passes
            // its health checks.
            healthy: AtomicBool::new(server.resolve_error.is_none()),
            ejection: Ejection::default(),
            healthy_since: AtomicInstant::default(),
            response_time_ewma: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            total_requests: AtomicU64::new(0),
            total_failures: AtomicU64::new(0),
            probes: Mutex::new(ProbeHistory::default()),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A backend for a config reload: unhealthy until its first probe passes
    /// ([`Backend::admit`]), so it gets no traffic before it has been checked.
    pub fn new_unchecked(server: &ServerConfig) -> Backend {
        let backend = Backend::new(server);
        backend.healthy.store(false, Ordering::Release);
        backend
    }

    /// Applies the first probe of a backend added by a reload: healthy at once if it passed.
    pub fn admit(&self, probe_passed: bool) {
        self.probes.lock().last_checked = Some(SystemTime::now());
        if probe_passed {
            self.healthy.store(true, Ordering::Release);
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Whether the balancer may choose this backend now: healthy, and not ejected by the
    /// passive checks (or on probation with its trial request still to take).
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_healthy() && self.ejection.admits(now)
    }

    /// What the metrics say about it: `healthy`, `unhealthy` or `ejected`.
    pub fn state(&self, now: Instant) -> &'static str {
        if !self.is_healthy() {
            "unhealthy"
        } else if self.ejection.standing(now) == Standing::InRotation {
            "healthy"
        } else {
            "ejected"
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Takes a reloaded config's weight.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
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

    /// The weight the balancer should use now: the configured weight, ramped up linearly over
    /// `slow_start` after the backend turned healthy (never below a thousandth of it, so it is
    /// tried at once). Backends healthy since start-up get their full weight.
    pub fn effective_weight(&self, now: Instant, slow_start: Duration) -> f64 {
        let weight = f64::from(self.weight());
        let Some(since) = self.healthy_since.load().filter(|_| !slow_start.is_zero()) else {
            return weight;
        };
        let healthy_for = now.saturating_duration_since(since);
        weight * (healthy_for.as_secs_f64() / slow_start.as_secs_f64()).clamp(0.001, 1.0)
    }

    /// Records that the backend turned healthy at `at` (for `slowStart`).
    pub fn mark_healthy_since(&self, at: Instant) {
        self.healthy_since.store(Some(at));
    }

    /// The moving average of response times, if any response was timed yet.
    pub fn response_time(&self) -> Option<Duration> {
        match f64::from_bits(self.response_time_ewma.load(Ordering::Relaxed)) {
            micros if micros > 0.0 => Some(Duration::from_secs_f64(micros / 1e6)),
            _ => None,
        }
    }

    /// Folds one attempt's time into the moving average (a failed one as
    /// [`FAILED_ATTEMPT_PENALTY`], if that is longer).
    pub fn record_response_time(&self, elapsed: Duration, succeeded: bool) {
        let elapsed = if succeeded { elapsed } else { elapsed.max(FAILED_ATTEMPT_PENALTY) };
        // At least a microsecond, so that 0 keeps meaning "no sample".
        let sample = (elapsed.as_secs_f64() * 1e6).max(1.0);
        let _ = self.response_time_ewma.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            let average = f64::from_bits(bits);
            let next = if average > 0.0 { average + (sample - average) * RESPONSE_TIME_SMOOTHING } else { sample };
            Some(next.to_bits())
        });
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
                self.mark_healthy_since(Instant::now());
                self.ejection.reset();
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

    /// Where the host resolves to now.
    pub fn addresses(&self) -> Arc<Addresses> {
        Arc::clone(&self.addresses.read())
    }

    /// Looks the host up again (a health round does, before each probe) and takes the result
    /// with [`Backend::take_resolution`].
    pub fn resolve_again(&self) -> Result<(), String> {
        self.take_resolution(crate::resolve::resolve(&self.host, self.port))
    }

    /// Takes the result of a lookup of the host: new addresses replace the old, a failure keeps
    /// them and is returned. Each change is logged once: the addresses changing, the host no
    /// longer resolving (or failing for another reason), and resolving again.
    pub fn take_resolution(&self, resolved: Result<Vec<SocketAddr>, String>) -> Result<(), String> {
        let current = self.addresses();
        let next = match &resolved {
            Ok(addrs) if current.error.is_none() && crate::resolve::same_set(addrs, &current.addrs) => return Ok(()),
            Ok(addrs) => {
                let list = crate::resolve::list(addrs);
                if current.error.is_some() {
                    log::info!("backend {}: {} resolves again, to {list}", self.url, self.host);
                } else {
                    let was = crate::resolve::list(&current.addrs);
                    log::info!("backend {}: {} now resolves to {list} (was {was})", self.url, self.host);
                }
                Addresses { addrs: addrs.clone(), error: None }
            }
            Err(reason) if current.error.as_ref() == Some(reason) => return resolved.map(drop),
            Err(reason) => {
                log::warn!("backend {}: {reason}; it is down until it resolves", self.url);
                Addresses { addrs: current.addrs.clone(), error: Some(reason.clone()) }
            }
        };
        *self.addresses.write() = Arc::new(next);
        resolved.map(drop)
    }

    /// Connects to the first address that answers within `timeout`, and for an `https://`
    /// backend runs the TLS handshake, connect and handshake together within `timeout`. Every
    /// later read and write on the connection may block for at most `io_timeout`; set once here,
    /// for its whole life.
    ///
    /// A handshake that fails is the error, with no other address tried: the address answered,
    /// and what failed (a certificate that does not verify, most likely) is the backend's. Its
    /// text is the [`TlsError`]'s, rustls's reason included ("TLS handshake failed: invalid peer
    /// certificate: UnknownIssuer"), for the warning the caller logs.
    pub fn connect(&self, timeout: Duration, io_timeout: Duration) -> io::Result<Stream> {
        let addresses = self.addresses();
        let why_none = addresses.error.as_deref().unwrap_or("backend has no address");
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, why_none);
        for addr in &addresses.addrs {
            let started = Instant::now();
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(io_timeout))?;
                    stream.set_write_timeout(Some(io_timeout))?;
                    return self.secure(stream, started + timeout);
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// A connected socket as the stream requests go over: as it is for `http://`, after a TLS
    /// handshake finished by `deadline` for `https://`.
    fn secure(&self, stream: TcpStream, deadline: Instant) -> io::Result<Stream> {
        // A clone, so that no lock is held across the handshake.
        let Some(tls) = self.tls.read().clone() else {
            return Ok(Stream::Plain(stream));
        };
        match crate::tls::client::connect(stream, tls.client, tls.verified_name, deadline) {
            Ok(session) => Ok(Stream::Tls(Box::new(session))),
            Err(error) => {
                let kind = match &error {
                    TlsError::Io(error) => error.kind(),
                    TlsError::Tls(_) => io::ErrorKind::InvalidData,
                    TlsError::Closed => io::ErrorKind::UnexpectedEof,
                    TlsError::TimedOut => io::ErrorKind::TimedOut,
                };
                Err(io::Error::new(kind, error))
            }
        }
    }

    /// Takes a reloaded config's TLS settings (the pool's new client configuration, perhaps a new
    /// `backendCaFile` or `tlsServerName`). The idle connections go: they were verified under the
    /// old settings, and the next connections are verified under the new.
    pub fn set_tls(&self, tls: Option<ServerTls>) {
        *self.tls.write() = tls;
        self.idle.lock().clear();
    }

    /// Takes the most recently used idle connection that still looks open, if any.
    pub fn take_idle(&self) -> Option<Stream> {
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
    pub fn put_idle(&self, stream: Stream) {
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
fn looks_open(stream: &Stream) -> bool {
    !stream.has_buffered() && readiness(stream.socket()) == Readiness::Idle
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
    test_server(port, weight, false)
}

/// A backup server, as [`test_backend`] otherwise.
#[cfg(test)]
pub(crate) fn test_backup(port: u16, weight: u32) -> Backend {
    test_server(port, weight, true)
}

#[cfg(test)]
fn test_server(port: u16, weight: u32, backup: bool) -> Backend {
    Backend::new(&ServerConfig {
        url: format!("http://127.0.0.1:{port}"),
        name: format!("backend-{port}"),
        host_header: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".to_string(),
        port,
        addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        resolve_error: None,
        weight,
        backup,
        tls: None,
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
    fn coming_back_up_by_the_active_checks_ends_an_ejection() {
        let backend = test_backend(1, 1);
        let settings = crate::ejection::PassiveHealthSettings::default();
        let now = Instant::now();
        for _ in 0..settings.failures {
            backend.ejection.record_failure(now, &settings, || true);
        }
        assert_eq!(backend.state(now), "ejected");
        assert_eq!(backend.record_probe(true, 1, 1), None, "passing /health while ejected changes nothing");
        assert_eq!(backend.state(now), "ejected");
        backend.record_probe(false, 1, 1);
        assert_eq!(backend.state(now), "unhealthy");
        assert_eq!(backend.record_probe(true, 1, 1), Some(HealthFlip::BecameHealthy));
        assert_eq!(backend.state(now), "healthy");
        assert!(backend.is_available(now));
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn a_lookup_replaces_the_addresses_only_when_they_change_and_a_failure_keeps_them() {
        let backend = test_backend(1, 1);
        let before = backend.addresses();
        assert_eq!(backend.take_resolution(Ok(addrs(&["127.0.0.1:1"]))), Ok(()));
        assert!(Arc::ptr_eq(&before, &backend.addresses()), "the same addresses: nothing replaced");

        let moved = addrs(&["127.0.0.2:1", "127.0.0.3:1"]);
        assert_eq!(backend.take_resolution(Ok(moved.clone())), Ok(()));
        assert_eq!(*backend.addresses(), Addresses { addrs: moved.clone(), error: None }, "a changed record followed");
        let rotated = backend.addresses();
        assert_eq!(backend.take_resolution(Ok(addrs(&["127.0.0.3:1", "127.0.0.2:1"]))), Ok(()));
        assert!(Arc::ptr_eq(&rotated, &backend.addresses()), "a new order is not a change");

        let reason = "cannot resolve host \"app\": gone".to_string();
        let failed: Result<Vec<SocketAddr>, String> = Err(reason.clone());
        assert_eq!(backend.take_resolution(failed.clone()), Err(reason.clone()));
        assert_eq!(*backend.addresses(), Addresses { addrs: moved.clone(), error: Some(reason.clone()) });
        let still_failing = backend.addresses();
        assert_eq!(backend.take_resolution(failed), Err(reason), "failing again fails the probe again");
        assert!(Arc::ptr_eq(&still_failing, &backend.addresses()));
        let error = backend.connect(Duration::from_secs(1), Duration::from_secs(1));
        assert!(error.is_err(), "nothing listens on the last addresses");

        assert_eq!(backend.take_resolution(Ok(addrs(&["127.0.0.1:1"]))), Ok(()));
        assert_eq!(*backend.addresses(), Addresses { addrs: addrs(&["127.0.0.1:1"]), error: None }, "resolves again");
    }

    /// A server config for `host:port` as a config load would give it: resolved to `addrs`, or not.
    fn server(host: &str, port: u16, resolved: Result<Vec<SocketAddr>, String>) -> ServerConfig {
        ServerConfig {
            url: format!("http://{host}:{port}"),
            name: format!("{host}-{port}"),
            host_header: format!("{host}:{port}"),
            host: host.to_string(),
            port,
            addrs: resolved.clone().unwrap_or_default(),
            resolve_error: resolved.err(),
            weight: 1,
            backup: false,
            tls: None,
        }
    }

    #[test]
    fn a_host_that_did_not_resolve_starts_down_and_connects_fail_with_the_reason() {
        let backend = Backend::new(&server("app", 80, Err("cannot resolve host \"app\": no such name".into())));
        assert!(!backend.is_healthy() && backend.state(Instant::now()) == "unhealthy");
        let error = backend.connect(Duration::from_secs(1), Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.to_string(), "cannot resolve host \"app\": no such name");
        assert!(Backend::new(&server("127.0.0.1", 80, Ok(addrs(&["127.0.0.1:80"])))).is_healthy());
    }

    #[test]
    fn each_health_round_looks_the_host_up_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for mut stream in listener.incoming().take(2).flatten() {
                let _ = stream.read(&mut [0u8; 1024]);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let settings = crate::config::Config::from_json(
            r#"{"healthyThreshold": 1, "healthCheckTimeout": "5s", "servers": ["http://127.0.0.1:1"]}"#,
            "config.json",
            &crate::config::Overrides::default(),
        )
        .unwrap()
        .pools[0]
            .health
            .clone();
        // A name that did not resolve when the config was read (a resolver slow at boot), and
        // one whose record has moved since: the round follows both, with no DNS change needed.
        let late = Arc::new(Backend::new(&server("localhost", port, Err("cannot resolve host: not yet".into()))));
        let moved = Arc::new(Backend::new(&server("127.0.0.1", port, Ok(addrs(&["127.0.0.1:1"])))));
        crate::health::probe_round(&[(&late, &settings), (&moved, &settings)]);
        assert!(late.is_healthy(), "resolved, probed and up: {:?}", late.addresses());
        assert!(late.addresses().addrs.contains(&SocketAddr::from(([127, 0, 0, 1], port))));
        assert_eq!(*moved.addresses(), Addresses { addrs: addrs(&[&format!("127.0.0.1:{port}")]), error: None });
        assert!(moved.is_healthy());
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

    #[test]
    fn slow_start_ramps_the_weight_linearly_after_recovery() {
        let backend = test_backend(1, 4);
        let ramp = Duration::from_secs(10);
        // The clock that times are stored against starts first, as it does in a running process.
        let _ = crate::atomic_instant::start();
        let now = Instant::now();
        assert_eq!(backend.effective_weight(now, ramp), 4.0, "healthy since start-up: full weight");
        backend.mark_healthy_since(now);
        let at = |seconds: u64| backend.effective_weight(now + Duration::from_secs(seconds), ramp);
        assert!((at(5) - 2.0).abs() < 0.01, "{}", at(5));
        assert_eq!(at(10), 4.0);
        assert_eq!(at(60), 4.0);
        assert!(at(0) > 0.0 && at(0) < 0.01, "tried at once, with a tiny share");
        assert_eq!(backend.effective_weight(now, Duration::ZERO), 4.0, "slowStart off");
    }

    #[test]
    fn response_times_form_a_moving_average() {
        let backend = test_backend(1, 1);
        assert_eq!(backend.response_time(), None);
        backend.record_response_time(Duration::from_millis(10), true);
        assert_eq!(backend.response_time(), Some(Duration::from_millis(10)));
        backend.record_response_time(Duration::from_millis(20), true);
        assert_eq!(backend.response_time(), Some(Duration::from_millis(13)));
        backend.record_response_time(Duration::from_millis(1), false);
        assert!(backend.response_time().unwrap() > Duration::from_millis(300), "a failure counts as slow");
    }
}
