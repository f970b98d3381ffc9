//! Starting and stopping the load balancer: bind, spawn every thread, shut down gracefully.
//!
//! The threads, all named after their files:
//!
//! - `acceptor`: accepts connections and hands them to the workers over a bounded channel;
//! - `worker-N` (a fixed pool of `workers`): serves one client connection at a time;
//! - `req-N-fwd` / `req-N-rev`: the pair a worker spawns for each request attempt, or with
//!   `"pairThreads": "pooled"`, `worker-N-fwd` / `worker-N-rev`, the pair each worker owns;
//! - `watcher`: holds every client connection that has no whole request to act on yet (idle,
//!   or still sending its head or a small body), so no worker waits on a client;
//! - `health`: probes every backend each `healthCheckInterval`;
//! - `config-watcher` (when the config came from a file): applies changes to it without a restart;
//! - `admin` (with `adminListen`): serves the metrics on their own address.
//!
//! What they share is [`crate::shared::Shared`]: the validated config, the backend
//! [`crate::pool::Pool`], the counters, the rate limiter and the shutdown flag. This file only
//! builds it and starts and stops the threads around it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::acceptor::Listening;
use crate::config::Config;
use crate::config::file::ConfigFile;
use crate::connection::Scheme;
use crate::connection::{ClientConnection, client_connection_ceiling};
use crate::pair::PairRunner;
use crate::reload;
use crate::shared::Shared;
use crate::{acceptor, admin, health, worker};

/// Connections that may wait in the hand-off channel, per worker.
pub const QUEUED_CONNECTIONS_PER_WORKER: usize = 16;
/// How long requests in flight may take to finish after SIGTERM or SIGINT (what a service
/// manager's stop timeout must exceed).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running load balancer.
pub struct Server {
    shared: Arc<Shared>,
    /// The plain HTTP listener's address, and the HTTPS one's.
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    acceptor: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    watcher: JoinHandle<()>,
    health: JoinHandle<()>,
    /// Dropped at shutdown: stops the health thread and the config watcher.
    health_stop: Sender<()>,
    reloader: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the listener and starts every thread. Fails only if binding or spawning fails.
    pub fn start(config: Config) -> io::Result<Server> {
        Server::start_watching(config, None)
    }

    /// Starts as [`Server::start`]; with `config_file`, the file is also watched for changes
    /// (every `reloadInterval`) and `POST /lb-reload` rereads it on the admin listener.
    pub fn start_watching(config: Config, config_file: Option<ConfigFile>) -> io::Result<Server> {
        let bind = |address: &str, key: &str| {
            bind_listener(address)
                .map_err(|error| io::Error::new(error.kind(), format!("cannot listen on {address} ({key}): {error}")))
        };
        let mut listeners = Vec::new();
        if let Some(address) = &config.listen {
            listeners.push(Listening { listener: bind(address, "listenPort")?, scheme: Scheme::Http });
        }
        if let Some(tls) = &config.tls {
            listeners.push(Listening { listener: bind(&tls.listen, "tlsListen")?, scheme: Scheme::Https });
        }
        let address_of = |scheme: Scheme| {
            listeners.iter().find(|listening| listening.scheme == scheme).and_then(|l| l.listener.local_addr().ok())
        };
        let (http_addr, https_addr) = (address_of(Scheme::Http), address_of(Scheme::Https));
        let open_files = raise_open_file_limit();
        let admin_listener = match &config.admin_listen {
            Some(address) => Some(bind_listener(address).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot listen on {address} (adminListen): {error}"))
            })?),
            None => None,
        };
        let worker_count = config.workers;
        let (shared, returned) = Shared::new(config, config_file)?;
        let shared = Arc::new(shared);
        if let Some(https) = https_addr {
            shared.set_https_port(https.port());
        }

        let watcher = spawn_named("watcher", {
            let shared = Arc::clone(&shared);
            move || shared.watcher.run(&*shared)
        })?;

        let (health_stop, health_stopped) = crossbeam_channel::bounded::<()>(1);
        let health_stopped_for_reload = health_stopped.clone();
        let health = spawn_named("health", {
            let shared = Arc::clone(&shared);
            move || health::run(&shared, &health_stopped)
        })?;

        let (connections, queue): (Sender<ClientConnection>, Receiver<ClientConnection>) =
            crossbeam_channel::bounded(worker_count * QUEUED_CONNECTIONS_PER_WORKER);
        let workers = (0..worker_count)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let (queue, returned) = (queue.clone(), returned.clone());
                let pair = PairRunner::new(shared.config().pair_threads, index)?;
                spawn_named(&format!("worker-{index}"), move || worker::run(&shared, &queue, &returned, &pair))
            })
            .collect::<io::Result<Vec<_>>>()?;
        drop(queue);

        let acceptor = spawn_named("acceptor", {
            let shared = Arc::clone(&shared);
            move || acceptor::run(&shared, &listeners, connections)
        })?;

        let admin = match admin_listener {
            Some(listener) => {
                let address = listener.local_addr()?;
                let shared = Arc::clone(&shared);
                log::info!(
                    "admin endpoint on {address}{}: {} is served there only",
                    both_families(address),
                    shared.config().metrics_path
                );
                Some((address, spawn_named("admin", move || admin::run(&shared, &listener))?))
            }
            None => None,
        };

        let reloader = match shared.config_file {
            Some(_) => Some(spawn_named("config-watcher", {
                let shared = Arc::clone(&shared);
                let stop = health_stopped_for_reload.clone();
                move || reload::watch(&shared, &stop)
            })?),
            None => None,
        };

        let config = shared.config();
        let pools = shared.pools();
        let pool_list: Vec<String> = pools
            .list
            .iter()
            .map(|pool| {
                let backends: Vec<String> = pool
                    .backends
                    .iter()
                    .map(|backend| {
                        let role = if backend.backup { ", backup" } else { "" };
                        format!("{} (weight {}{role})", backend.url, backend.weight())
                    })
                    .collect();
                format!("pool {} ({}): {}", pool.name(), pool.config.algorithm.name(), backends.join(", "))
            })
            .collect();
        if let Some(tls) = &shared.tls {
            log::info!("HTTPS certificates: {}", certificate_list(&tls.certificates()));
        }
        let listening = match (http_addr, https_addr) {
            (Some(http), Some(https)) => {
                format!("{http}{}, HTTPS on {https}{}", both_families(http), both_families(https))
            }
            (Some(http), None) => format!("{http}{}", both_families(http)),
            (None, Some(https)) => format!("{https}{} (HTTPS only)", both_families(https)),
            (None, None) => unreachable!("the config always has a listener"),
        };
        log::info!(
            "listening on {listening}, {worker_count} workers ({} pair threads), {}",
            config.pair_threads.name(),
            pool_list.join("; ")
        );
        log_connection_limit(&shared, &config, open_files);
        Ok(Server { shared, http_addr, https_addr, admin, acceptor, workers, watcher, health, health_stop, reloader })
    }

    /// The plain HTTP listener's address, or the HTTPS one's when there is no plain listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.http_addr.or(self.https_addr).expect("a server has a listener")
    }

    /// The HTTPS listener's address, with `tlsListen`.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, and stops every thread.
    /// Returns whether every worker finished within `grace`.
    pub fn shutdown(self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        self.shared.begin_shutdown();
        acceptor::wake(self.local_addr());
        let _ = self.acceptor.join();
        if let Some((address, admin)) = self.admin {
            acceptor::wake(address);
            let _ = admin.join();
        }
        drop(self.health_stop);
        let _ = self.health.join();
        if let Some(reloader) = self.reloader {
            let _ = reloader.join();
        }
        let _ = self.watcher.join();
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

/// How many connections may wait to be accepted on a listener bound here.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listener on `address` (`HOST:PORT`). The unspecified IPv6 address, `[::]:PORT` (what
/// `":PORT"` stands for), gets one socket for IPv6 and IPv4 both (`IPV6_V6ONLY` off, whatever the
/// system default); on a host without IPv6 it falls back to `0.0.0.0:PORT`, IPv4 only, and logs
/// that. A port taken or not permitted is an error either way.
pub fn bind_listener(address: &str) -> io::Result<TcpListener> {
    match address.parse::<SocketAddr>() {
        Ok(SocketAddr::V6(all)) if all.ip().is_unspecified() => match bind_dual_stack(all.port()) {
            Ok(listener) => Ok(listener),
            Err(error) if matches!(error.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied) => {
                Err(error)
            }
            Err(error) => {
                let ipv4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, all.port()));
                log::warn!("cannot listen on IPv6 ({address}: {error}): listening on {ipv4}, IPv4 only");
                TcpListener::bind(ipv4)
            }
        },
        _ => TcpListener::bind(address),
    }
}

/// `[::]:port` with `IPV6_V6ONLY` off: IPv4 clients arrive as IPv4-mapped addresses.
fn bind_dual_stack(port: u16) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, listen, socket_with, sockopt};
    let socket = socket_with(AddressFamily::INET6, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    sockopt::set_ipv6_v6only(&socket, false)?;
    bind(&socket, &SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))?;
    listen(&socket, LISTEN_BACKLOG)?;
    Ok(TcpListener::from(socket))
}

/// `cert.pem (localhost, *.example.com); other.pem (...)`, for the log.
pub fn certificate_list(certs: &[crate::tls::LoadedCert]) -> String {
    let described: Vec<String> =
        certs.iter().map(|cert| format!("{} ({})", cert.cert_file.display(), cert.names.join(", "))).collect();
    described.join("; ")
}

/// `" (IPv6 and IPv4)"` for a listener bound by [`bind_listener`] on `[::]`, else nothing.
fn both_families(address: SocketAddr) -> &'static str {
    match address {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => " (IPv6 and IPv4)",
        _ => "",
    }
}

/// Caps the client connections at what the open-file limit leaves room for, and says which limit
/// holds: `maxConnections`, or the descriptors when they run out first.
fn log_connection_limit(shared: &Shared, config: &Config, open_files: Option<u64>) {
    let max_connections = config.limits.max_connections;
    let Some(limit) = open_files else {
        log::info!("open-file limit unlimited; at most {max_connections} client connections (maxConnections)");
        return;
    };
    shared.connections.set_descriptor_ceiling(client_connection_ceiling(limit, config.workers));
    let effective = shared.connections.effective_limit(max_connections);
    if effective < max_connections {
        log::warn!(
            "maxConnections is {max_connections} but the open-file limit {limit} leaves room for {effective} \
             client connections beside {} workers' backend connections: serving at most {effective} \
             (raise the limit, e.g. LimitNOFILE in the systemd unit)",
            config.workers
        );
    } else {
        log::info!("open-file limit {limit}; at most {max_connections} client connections (maxConnections)");
    }
}

/// Raises the open-file soft limit to the hard limit, as nginx's `worker_rlimit_nofile` does: every
/// client and backend connection is a descriptor, and the usual soft limit of 1024 would cap the
/// connections long before memory does. Returns the limit now in force, if known.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            log::warn!("cannot raise the open-file limit from {:?} to {:?}: {error}", limit.current, limit.maximum);
        }
    }
    getrlimit(Resource::Nofile).current
}

fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_string()).spawn(body)
}
