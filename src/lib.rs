//! loadbalancer: an HTTP/1.1 reverse-proxy load balancer on plain blocking threads.
//!
//! No async runtime: every concurrent activity is an ordinary OS thread with a name, so
//! `top -H` or a debugger's thread list reads like this diagram.
//!
//! ```text
//!                     ┌──────────┐  bounded channel of connections  ┌────────────┐
//!  clients ──accept──▶│ acceptor │ ───────────────────────────────▶ │ worker-0…N │ (fixed pool)
//!                     └──────────┘  (full: 503 from the acceptor)    └─────┬──────┘
//!                                                                        │ per request attempt
//!                                                         ┌──────────────┴──────────────┐
//!                                                         ▼                             ▼
//!                                                  ┌─────────────┐               ┌─────────────┐
//!                                client body ────▶ │ req-N-fwd   │ ──▶ backend ──▶│ req-N-rev   │ ──▶ client
//!                                                  └─────────────┘               └─────────────┘
//!   ┌─────────┐  every wait on a client (idle, a partial head or body, a TLS handshake
//!   │ watcher │  waiting for the client's next flight): parked by a worker, epoll-watched,
//!   └─────────┘  handed back to the workers when there is work to do
//!   ┌────────┐  every healthCheckInterval: one short probe thread per backend
//!   │ health │──────────────────────────────────────▶ Backend records (atomics + parking_lot)
//!   └────────┘                                        shared with every worker and pair
//!   ┌────────────────┐  every reloadInterval: reread config.json; a valid change replaces
//!   │ config-watcher │  the config and the backend pool (each an Arc swapped whole)
//!   └────────────────┘
//! ```
//!
//! Modules, by what they own:
//! - [`server`]: starting every thread, the shared state, graceful shutdown;
//! - [`acceptor`], [`worker`], [`pipe`] (with [`pair`] and [`tunnel`]), [`watcher`], [`health`],
//!   [`admin`], [`signals`]: one thread role each;
//! - [`proxy`]: one request: rate limit, choice of backend, retries;
//! - [`endpoints`]: the load balancer's own answers: metrics and operational pages, such as the
//!   [`status_page`];
//! - [`metrics`], [`histogram`] and [`prometheus`]: the counters, and their JSON and Prometheus forms;
//! - [`http`]: heads, body framing, header rewriting, the load balancer's own replies;
//! - [`backend`] (with [`atomic_instant`]), [`balance`], [`ejection`], [`ratelimit`]: shared state and pure logic;
//! - [`reload`]: applying a changed config file;
//! - [`access_log`]: the line written for each request, as text or JSON;
//! - `fault` (debug builds only): panics on purpose in a pair job, for the tests;
//! - [`tls`]: HTTPS: certificates, their choice by SNI, the handshake a worker drives, a TLS
//!   session shared by the pair, and the client side towards `https://` backends; [`stream`]: a
//!   connection's bytes, plain or TLS;
//! - [`timestamp`]: RFC 3339 times, for the metrics and the logs;
//! - [`config`], [`cli`], [`duration`]: configuration; [`demo`] and [`echo`]: the bundled backends;
//! - [`check`]: `loadbalancer check`, a config described, and one request's path through the routes;
//! - [`compare`]: `loadbalancer compare`, every algorithm on the same load, as a table and a chart.

pub mod acceptor;
pub mod access_log;
pub mod admin;
pub mod atomic_instant;
pub mod backend;
pub mod balance;
pub mod check;
pub mod cli;
pub mod client_ip;
pub mod compare;
pub mod config;
pub mod connection;
pub mod demo;
pub mod duration;
pub mod ejection;
pub mod endpoints;
#[cfg(debug_assertions)]
pub mod fault;
pub mod health;
pub mod histogram;
pub mod http;
pub mod metrics;
pub mod min_rate;
pub mod pair;
pub mod pipe;
pub mod pool;
pub mod prometheus;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod resolve;
pub mod routing;
pub mod server;
pub mod shared;
pub mod signals;
pub mod status_page;
pub mod stream;
pub mod timestamp;
pub mod tls;
pub mod tunnel;
pub mod watcher;
pub mod worker;

#[path = "../test_backends/echo/mod.rs"]
pub mod echo;

/// Small helpers for unit tests that work with real sockets, files and certificates.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory of its own under the system's temporary directory, removed when dropped.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(test: &str) -> TempDir {
            // Tests run in parallel, some making several: each gets a directory no other has.
            static MADE: AtomicUsize = AtomicUsize::new(0);
            let serial = MADE.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("lb-unit-{}-{serial}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A certificate authority made for one test. Not rcgen's default name, which its
    /// self-signed certificates have too: with it, an untrusted certificate would name this CA as
    /// its issuer and fail as `BadSignature` rather than `UnknownIssuer`.
    pub fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "loadbalancer test CA");
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    /// A connected pair of loopback sockets: (the outside end, the end a server would hold). The
    /// outside end's reads time out after 5 s.
    pub fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let outside = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (inside, _) = listener.accept().unwrap();
        outside.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        (outside, inside)
    }

    /// Polls `condition` every 5 ms for up to 5 s; panics if it never holds.
    pub fn wait_for(mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "condition not met within 5 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
