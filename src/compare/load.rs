//! The closed-loop load `compare` sends through one load balancer.
//!
//! `clients` threads (`compare-client-N`), each with its own keep-alive [`Connection`], send
//! their [`Workload`] requests one after the other, each waiting for the answer before sending
//! the next. A client stops after `requests_per_client` requests or at the time limit, whichever
//! comes first, so a run is bounded even when an algorithm sends everything to a slow backend.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::client::Connection;
use super::workload::Workload;

/// How much load to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Concurrent clients, at most 256 (each speaks for its own `10.0.N.x` visitors).
    pub clients: usize,
    pub requests_per_client: usize,
    /// No client starts a request after this much time.
    pub time_limit: Duration,
    pub workload: Workload,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// From just before sending to the end of the answer (or the failure).
    pub latency: Duration,
    /// The answer's status; `None` when the connection broke or the answer was malformed.
    pub status: Option<u16>,
    /// The `X-Backend` that answered, if any.
    pub backend: Option<String>,
}

impl Sample {
    /// A 200 from a backend; anything else is an error.
    pub fn is_success(&self) -> bool {
        self.status == Some(200)
    }
}

/// Every sample of one run and how long it took from the first request to the last answer.
#[derive(Debug)]
pub struct LoadRun {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

/// Sends `load` to the load balancer at `addr` and waits for every client to finish.
pub fn run(addr: SocketAddr, load: &Load) -> io::Result<LoadRun> {
    let started = Instant::now();
    let deadline = started + load.time_limit;
    let per_client = thread::scope(|scope| {
        let clients = (0..load.clients.min(256))
            .map(|client| {
                thread::Builder::new()
                    .name(format!("compare-client-{client}"))
                    .spawn_scoped(scope, move || run_client(addr, load, client as u8, deadline))
            })
            .collect::<io::Result<Vec<_>>>()?;
        clients
            .into_iter()
            .map(|client| client.join().map_err(|_| io::Error::other("a compare client thread panicked")))
            .collect::<io::Result<Vec<Vec<Sample>>>>()
    })?;
    let elapsed = started.elapsed();
    Ok(LoadRun { samples: per_client.into_iter().flatten().collect(), elapsed })
}

/// One client's closed loop: its requests in order, until done or `deadline`.
fn run_client(addr: SocketAddr, load: &Load, client: u8, deadline: Instant) -> Vec<Sample> {
    let mut connection = Connection::new(addr);
    let mut samples = Vec::with_capacity(load.requests_per_client);
    for request in load.workload.requests(client).take(load.requests_per_client) {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        let sample = match connection.get(&request) {
            Ok(answer) => Sample { latency: began.elapsed(), status: Some(answer.status), backend: answer.backend },
            Err(error) => {
                log::debug!("compare-client-{client}: {} failed: {error}", request.path);
                Sample { latency: began.elapsed(), status: None, backend: None }
            }
        };
        samples.push(sample);
    }
    samples
}
