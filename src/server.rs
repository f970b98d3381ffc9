//! Starting and stopping the load balancer: bind, spawn every thread, shut down gracefully.
//!
//! The threads, all named after their files:
//!
//! - `acceptor`: accepts connections and hands them to the workers over a bounded channel;
//! - `worker-N` (a fixed pool of `workers`): serves one client connection at a time;
//! - `req-N-fwd` / `req-N-rev`: the pair a worker spawns for each request attempt, or with
//!   `"pairThreads": "pooled"`, `worker-N-fwd` / `worker-N-rev`, the pair each worker owns;
//! - `health`: probes every backend each `healthCheckInterval`;
//! - `admin` (with `adminListen`): serves the metrics on their own address.
//!
//! What they share is [`Shared`]: the validated config, the backend [`Pool`], the counters, the
//! rate limiter and the shutdown flag. The pool sits behind a lock as an `Arc` that is replaced
//! whole, so readers take a cheap clone and never hold the lock while they work.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::RwLock;

use crate::backend::Backend;
use crate::balance::Balancer;
use crate::config::Config;
use crate::metrics::{Snapshot, Stats};
use crate::pair::PairRunner;
use crate::ratelimit::RateLimiter;
use crate::{acceptor, admin, health, worker};

/// Connections that may wait in the hand-off channel, per worker.
pub const QUEUED_CONNECTIONS_PER_WORKER: usize = 16;

/// The backends and the balancer that picks among them, replaced together.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Balancer,
}

impl Pool {
    pub fn new(config: &Config) -> Pool {
        let backends: Vec<Arc<Backend>> = config.servers.iter().map(|server| Arc::new(Backend::new(server))).collect();
        let balancer = Balancer::new(config.algorithm, backends.len());
        Pool { backends, balancer }
    }
}

/// State shared by every thread of one running load balancer.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pool: RwLock<Arc<Pool>>,
    pub stats: Stats,
    pub rate_limiter: Option<RateLimiter>,
    shutting_down: AtomicBool,
    started: Instant,
    next_request_id: AtomicU64,
    open_connections: AtomicUsize,
    workers_waiting: AtomicUsize,
}

/// A worker waiting for its next connection, counted while this lives.
#[derive(Debug)]
pub struct WorkerWaiting<'a> {
    shared: &'a Shared,
}

impl Drop for WorkerWaiting<'_> {
    fn drop(&mut self) {
        self.shared.workers_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One client connection counted against `maxConnections`, from accept until it closes.
#[derive(Debug)]
pub struct ConnectionSlot<'a> {
    shared: &'a Shared,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            pool: RwLock::new(Arc::new(Pool::new(&config))),
            rate_limiter: config.rate_limit.map(RateLimiter::new),
            config,
            stats: Stats::default(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            next_request_id: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            workers_waiting: AtomicUsize::new(0),
        }
    }

    /// Counts a newly accepted connection, unless `maxConnections` are open already.
    pub fn try_open_connection(&self) -> bool {
        let limit = self.config.limits.max_connections;
        self.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1))
            .is_ok()
    }

    /// Takes over the count of one connection opened with [`Shared::try_open_connection`]; it is
    /// released when the slot drops.
    pub fn connection_slot(&self) -> ConnectionSlot<'_> {
        ConnectionSlot { shared: self }
    }

    /// Marks the calling worker as free for a new connection until the result drops.
    pub fn worker_waiting(&self) -> WorkerWaiting<'_> {
        self.workers_waiting.fetch_add(1, Ordering::AcqRel);
        WorkerWaiting { shared: self }
    }

    /// Workers free to take a new connection now.
    pub fn workers_waiting(&self) -> usize {
        self.workers_waiting.load(Ordering::Acquire)
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    /// The current backend pool.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::clone(&self.pool.read())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A process-wide request number, used to name the pair threads.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn metrics(&self) -> Snapshot {
        let pool = self.pool();
        let mut snapshot =
            Snapshot::take(&self.stats, self.started.elapsed(), self.config.algorithm.name(), &pool.backends);
        snapshot.open_connections = self.open_connections();
        snapshot
    }
}

/// A running load balancer.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    acceptor: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    health: JoinHandle<()>,
    health_stop: Sender<()>,
}

impl Server {
    /// Binds the listener and starts every thread. Fails only if binding or spawning fails.
    pub fn start(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind(&config.listen)
            .map_err(|error| io::Error::new(error.kind(), format!("cannot listen on {}: {error}", config.listen)))?;
        let local_addr = listener.local_addr()?;
        let admin_listener = match &config.admin_listen {
            Some(address) => Some(TcpListener::bind(address).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot listen on {address} (adminListen): {error}"))
            })?),
            None => None,
        };
        let worker_count = config.workers;
        let shared = Arc::new(Shared::new(config));

        let (health_stop, health_stopped) = crossbeam_channel::bounded(1);
        let health = spawn_named("health", {
            let shared = Arc::clone(&shared);
            move || health::run(&shared, &health_stopped)
        })?;

        let (connections, queue): (Sender<TcpStream>, Receiver<TcpStream>) =
            crossbeam_channel::bounded(worker_count * QUEUED_CONNECTIONS_PER_WORKER);
        let workers = (0..worker_count)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let queue = queue.clone();
                let pair = PairRunner::new(shared.config.pair_threads, index)?;
                spawn_named(&format!("worker-{index}"), move || worker::run(&shared, &queue, &pair))
            })
            .collect::<io::Result<Vec<_>>>()?;
        drop(queue);

        let acceptor = spawn_named("acceptor", {
            let shared = Arc::clone(&shared);
            move || acceptor::run(&shared, &listener, connections)
        })?;

        let admin = match admin_listener {
            Some(listener) => {
                let address = listener.local_addr()?;
                let shared = Arc::clone(&shared);
                log::info!("admin endpoint on {address}: {} is served there only", shared.config.metrics_path);
                Some((address, spawn_named("admin", move || admin::run(&shared, &listener))?))
            }
            None => None,
        };

        let pool = shared.pool();
        let backend_list: Vec<String> =
            pool.backends.iter().map(|backend| format!("{} (weight {})", backend.url, backend.weight)).collect();
        log::info!(
            "listening on {local_addr}, algorithm {}, {worker_count} workers, backends: {}",
            shared.config.algorithm.name(),
            backend_list.join(", ")
        );
        Ok(Server { shared, local_addr, admin, acceptor, workers, health, health_stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, and stops every thread.
    /// Returns whether every worker finished within `grace`.
    pub fn shutdown(self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        self.shared.shutting_down.store(true, Ordering::Release);
        acceptor::wake(self.local_addr);
        let _ = self.acceptor.join();
        if let Some((address, admin)) = self.admin {
            acceptor::wake(address);
            let _ = admin.join();
        }
        let _ = self.health_stop.send(());
        let _ = self.health.join();
        while Instant::now() < deadline && !self.workers.iter().all(JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(20));
        }
        let unfinished = self.workers.iter().filter(|worker| !worker.is_finished()).count();
        if unfinished > 0 {
            log::warn!("{unfinished} workers still busy after {} s; exiting anyway", grace.as_secs());
            return false;
        }
        for worker in self.workers {
            let _ = worker.join();
        }
        true
    }
}

fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_string()).spawn(body)
}
