//! The state every thread of one running load balancer shares: the running config, the backend
//! [`Pools`], the counters, the rate limiter, the connection counts, the watcher's parked
//! connections and the shutdown flag. Built by `main` through [`crate::server`], then read by the
//! `acceptor`, every `worker-N` and its pair, the `watcher`, `health`, `config-watcher` and
//! `admin` threads.
//!
//! The config and the pools sit behind read-write locks as `Arc`s that a reload replaces whole, so
//! readers take a cheap clone and never hold a lock while they work. This module imports no thread
//! file but the watcher's data types; the thread files import it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::RwLock;

use crate::access_log::{self, AccessEntry};
use crate::config::Config;
use crate::config::file::ConfigFile;
use crate::connection::{ClientConnection, ConnectionCounts, Scheme};
use crate::http::head::HeadLimits;
use crate::metrics::{Defence, Snapshot, Stats};
use crate::pool::Pools;
use crate::ratelimit::RateLimiter;
use crate::tls::{HandshakeFailure, TlsServer};
use crate::watcher::{Cut, WaitPolicy, Watcher, WatcherHost};

/// State shared by every thread of one running load balancer.
#[derive(Debug)]
pub struct Shared {
    /// The running config; a reload replaces it whole.
    config: RwLock<Arc<Config>>,
    pools: RwLock<Arc<Pools>>,
    pub stats: Stats,
    rate_limiter: RwLock<Option<Arc<RateLimiter>>>,
    /// The file a reload reads, if the config came from one.
    pub config_file: Option<ConfigFile>,
    shutting_down: AtomicBool,
    started: Instant,
    next_request_id: AtomicU64,
    /// Client connections open, in all and per client address.
    pub connections: Arc<ConnectionCounts>,
    /// Workers waiting for a connection to serve, with nothing in hand.
    waiting_workers: AtomicUsize,
    /// Client connections waiting for (the rest of) a request.
    pub watcher: Watcher,
    /// The HTTPS listener's TLS configuration and certificates, with `tlsListen`.
    pub tls: Option<TlsServer>,
    /// The port the HTTPS listener is bound to, for `redirectToHttps` (the configured one until
    /// the listener is bound: they differ only for port 0).
    https_port: AtomicU16,
}

/// A worker counted as waiting for work (see [`Shared::wait_for_work`]).
#[derive(Debug)]
pub struct WaitingWorker<'a> {
    shared: &'a Shared,
}

impl Drop for WaitingWorker<'_> {
    fn drop(&mut self) {
        self.shared.waiting_workers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// The shared state, and the channel on which the watcher returns readable connections.
    pub fn new(config: Config, config_file: Option<ConfigFile>) -> io::Result<(Shared, Receiver<ClientConnection>)> {
        let (watcher, returned) = Watcher::new()?;
        let config_https_port = config.tls.as_ref().map_or(443, |tls| tls.port());
        let tls = match &config.tls {
            Some(listen) => Some(
                TlsServer::new(listen.loaded.clone())
                    .map_err(|error| io::Error::other(format!("cannot set up TLS: {error}")))?,
            ),
            None => None,
        };
        let shared = Shared {
            pools: RwLock::new(Arc::new(Pools::new(&config))),
            rate_limiter: RwLock::new(config.rate_limit.map(|settings| Arc::new(RateLimiter::new(settings)))),
            config: RwLock::new(Arc::new(config)),
            config_file,
            stats: Stats::default(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            next_request_id: AtomicU64::new(1),
            connections: Arc::new(ConnectionCounts::default()),
            waiting_workers: AtomicUsize::new(0),
            watcher,
            tls,
            https_port: AtomicU16::new(config_https_port),
        };
        Ok((shared, returned))
    }

    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// Counts and logs a client the watcher (or a worker, for the same reasons) answered itself
    /// and closed: a stalled request, or one refused for want of room to wait.
    pub fn record_cut(&self, peer: SocketAddr, scheme: Scheme, cut: Cut, bytes_out: u64) {
        let reply = cut.reply();
        self.stats.record_request(crate::metrics::Outcome::Failed, Duration::ZERO, scheme);
        if let Some(defence) = Defence::of_cut(cut) {
            self.stats.record_slow_client(defence);
        }
        log::debug!("{}: {} ({cut:?})", peer.ip(), reply.status);
        let entry = AccessEntry::unread(peer.ip(), scheme, reply.status, bytes_out);
        access_log::write_line(self.config().access_log, &entry);
    }

    /// Marks one worker as waiting for work until the returned guard drops.
    pub fn wait_for_work(&self) -> WaitingWorker<'_> {
        self.waiting_workers.fetch_add(1, Ordering::AcqRel);
        WaitingWorker { shared: self }
    }

    /// Whether some worker is waiting for work: if so, a connection that arrives now is served
    /// at once, and a busy worker may keep waiting on its own connection a little longer.
    pub fn a_worker_is_waiting(&self) -> bool {
        self.waiting_workers.load(Ordering::Acquire) > 0
    }

    /// The current backend pools. Take them once per request: a reload may replace them meanwhile.
    pub fn pools(&self) -> Arc<Pools> {
        Arc::clone(&self.pools.read())
    }

    /// The running config. Take it once per request: a reload may replace it meanwhile.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read())
    }

    /// The per-client rate limiter, if `rateLimit` is set.
    pub fn rate_limiter(&self) -> Option<Arc<RateLimiter>> {
        self.rate_limiter.read().clone()
    }

    /// Puts a reloaded config in place with its new pools; the rate limiter is replaced only if its
    /// settings changed, so clients keep their buckets otherwise. Requests in flight finish with
    /// what they started with.
    pub fn replace_config(&self, config: Config, pools: Pools) {
        if self.config().rate_limit != config.rate_limit {
            *self.rate_limiter.write() = config.rate_limit.map(|settings| Arc::new(RateLimiter::new(settings)));
        }
        *self.config.write() = Arc::new(config);
        *self.pools.write() = Arc::new(pools);
    }

    /// From now on every thread winds down: the acceptor stops accepting, workers finish what they
    /// hold, the watcher lets its connections go.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A process-wide request number, used to name the pair threads.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The HTTPS listener's port, as bound.
    pub fn https_port(&self) -> u16 {
        self.https_port.load(Ordering::Relaxed)
    }

    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// Counts and logs (at debug: a public port sees plenty) a TLS handshake that failed.
    pub fn record_handshake_failure(&self, peer: SocketAddr, failure: HandshakeFailure) {
        self.stats.record_handshake_failure(failure);
        log::debug!("{}: TLS handshake failed ({})", peer.ip(), failure.name());
    }

    pub fn metrics(&self) -> Snapshot {
        let pools = self.pools();
        let mut snapshot = Snapshot::take(&self.stats, self.started.elapsed(), &pools);
        snapshot.open_connections = self.open_connections();
        snapshot.waiting_connections = self.watcher.waiting();
        snapshot
    }
}

impl WatcherHost for Shared {
    fn is_shutting_down(&self) -> bool {
        Shared::is_shutting_down(self)
    }

    fn wait_policy(&self) -> WaitPolicy {
        let config = self.config();
        WaitPolicy {
            head_limits: HeadLimits::from(&config.limits),
            max_body: config.limits.max_body_bytes.unwrap_or(u64::MAX),
            header_read: config.timeouts.header_read,
            body_read: config.timeouts.body_read,
            body_rate: config.min_rates.request_body,
            max_waiting_bytes: config.limits.max_waiting_bytes,
        }
    }

    fn cut(&self, peer: SocketAddr, scheme: Scheme, cut: Cut, bytes_out: u64) {
        self.record_cut(peer, scheme, cut, bytes_out);
    }

    fn handshake_failed(&self, peer: SocketAddr, failure: HandshakeFailure) {
        self.record_handshake_failure(peer, failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn waiting_workers_are_counted_while_their_guard_lives() {
        let config =
            Config::from_json(r#"{"servers": ["http://127.0.0.1:1"]}"#, "config.json", &Overrides::default()).unwrap();
        let (shared, _returned) = Shared::new(config, None).unwrap();
        assert!(!shared.a_worker_is_waiting());
        let first = shared.wait_for_work();
        let second = shared.wait_for_work();
        assert!(shared.a_worker_is_waiting());
        drop(first);
        assert!(shared.a_worker_is_waiting(), "one is still waiting");
        drop(second);
        assert!(!shared.a_worker_is_waiting());
    }
}
