//! Thread `worker-N`: Serves client connections taken from the acceptor's channel, one at a time.
//!
//! For each connection the worker loops: read and parse a request head, answer it (the metrics
//! document itself, everything else through [`proxy::handle`] and its forward/reverse pair), write
//! the access log line ([`access_log`]), and go round again while the connection is kept alive.
//!
//! This is also the panic boundary: a panic while handling one request (on the worker or in its
//! pair) is caught here, logged, answered with `500` if no response byte was sent yet, and the
//! connection is closed. The worker itself lives on, so the pool never shrinks.
//!
//! A worker never waits for a connection that has nothing to say: when a connection has no bytes
//! waiting (a new one whose request has not arrived, or a kept-alive one after its response), the
//! worker parks it with the [`crate::watcher`] and takes other work. The watcher hands it back
//! when its next request arrives. So idle clients cost no worker, however many there are.
//!
//! One exception makes busy keep-alive clients cheaper: while some other worker is free to take
//! new work, a worker waits up to `LINGER` (2 ms) on its own connection before parking it. A client
//! that sends its next request at once is then served without the two wake-ups of a trip
//! through the watcher, and nobody waits for a worker meanwhile.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

use crate::access_log::{self, AccessEntry, RequestLine};
use crate::client_ip::client_address;
use crate::config::Config;
use crate::endpoints::{self, Listener};
use crate::http::buffer::Inbound;
use crate::http::framing::is_timeout;
use crate::http::head::{BodyFraming, HeadLimits, RequestError, RequestHead, parse_request};
use crate::http::reply::Reply;
use crate::metrics::Outcome;
use crate::pair::PairRunner;
use crate::proxy::{self, Client, Exchange, RequestBuffers};
use crate::server::Shared;
use crate::watcher::{Readiness, readiness};

/// How long a worker keeps waiting on its own kept-alive connection, when other workers are
/// free, before handing it to the watcher.
const LINGER: Duration = Duration::from_millis(2);

/// The worker loop: serves connections, those coming back from the watcher first, until the
/// acceptor's channel closes at shutdown.
pub fn run(shared: &Shared, queue: &Receiver<TcpStream>, returned: &Receiver<TcpStream>, pair: &PairRunner) {
    let mut buffers = RequestBuffers::new(&shared.config().limits);
    loop {
        let waiting = shared.wait_for_work();
        let (stream, arrival) = crossbeam_channel::select_biased! {
            recv(returned) -> stream => match stream {
                Ok(stream) => (stream, Arrival::Returning),
                Err(_) => break,
            },
            recv(queue) -> stream => match stream {
                Ok(stream) => (stream, Arrival::New),
                Err(_) => break,
            },
        };
        drop(waiting);
        buffers.fit(&shared.config().limits);
        serve_connection(shared, stream, arrival, &mut buffers, pair);
    }
    // Shutting down: whatever the watcher still hands back is closed.
    while let Ok(stream) = returned.try_recv() {
        serve_connection(shared, stream, Arrival::Returning, &mut buffers, pair);
    }
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Just accepted: its first request may not have arrived yet.
    New,
    /// Back from the watcher: bytes are waiting.
    Returning,
}

/// What waiting for a request head produced.
enum HeadRead {
    Request(RequestHead),
    /// The connection ended, idled out, or is given up: close it without a word.
    Closed,
    Refused(RequestError),
    /// The head started but did not finish in time: 408.
    TimedOut,
}

fn serve_connection(
    shared: &Shared,
    stream: TcpStream,
    arrival: Arrival,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
) {
    let slot = shared.adopt_connection();
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    // An IPv4 client of a listener on `[::]` arrives as `::ffff:a.b.c.d`: it is `a.b.c.d` to the
    // forwarding fields, the access log, the rate limiter and the hashes.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if arrival == Arrival::New {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(shared.config().timeouts.write));
    }
    let stream = Arc::new(stream);
    let park_for = serve_requests(shared, &stream, peer, arrival, buffers, pair);
    if let Some(wait) = park_for
        && let Ok(stream) = Arc::try_unwrap(stream)
        && shared.watcher.park(stream, Instant::now() + wait).is_ok()
    {
        // Still open: the watcher holds it now, and closing it is the watcher's business.
        slot.keep();
    }
}

/// Serves requests on `stream` while they keep coming. Returns how long the connection may then
/// idle in the watcher, or `None` when it must close.
fn serve_requests(
    shared: &Shared,
    stream: &Arc<TcpStream>,
    peer: SocketAddr,
    arrival: Arrival,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
) -> Option<Duration> {
    let response_started = Arc::new(AtomicBool::new(false));
    let mut client = Client {
        stream,
        ip: peer.ip(),
        address: peer.ip(),
        response_started: &response_started,
        keep_alive_allowed: true,
    };
    buffers.client_inbound.clear();
    buffers.client_outbound.discard();
    // A new connection may wait `headerReadTimeout` for its first request, later ones `idleTimeout`.
    let mut awaiting_first_request = arrival == Arrival::New;
    loop {
        // The running config, taken once for the whole of this request: a reload may replace it
        // meanwhile, and one request sees one config.
        let config = shared.config();
        let idle_allowance = if awaiting_first_request { config.timeouts.header_read } else { config.timeouts.idle };
        if buffers.client_inbound.is_empty() {
            if shared.is_shutting_down() {
                return None;
            }
            match readiness(stream) {
                Readiness::Readable => {}
                Readiness::Idle if shared.a_worker_is_waiting() && next_request_soon(stream) => {}
                Readiness::Idle => return Some(idle_allowance),
                Readiness::Closed => return None,
            }
        }
        let head = match read_request_head(&config, stream, &mut buffers.client_inbound) {
            HeadRead::Request(head) => head,
            HeadRead::Closed => return None,
            HeadRead::Refused(error) => {
                refuse(shared, &config, &client, peer, &error.reply());
                return None;
            }
            HeadRead::TimedOut => {
                let reply = Reply::error(408, Some("Request Timeout: the request head stalled"));
                refuse(shared, &config, &client, peer, &reply);
                return None;
            }
        };
        awaiting_first_request = false;
        response_started.store(false, Ordering::Release);
        client.keep_alive_allowed = !shared.is_shutting_down();
        client.address = client_address(peer.ip(), &head.fields, &config.trusted_proxies);
        let started = Instant::now();

        if let Some(reply) = endpoints::answer(shared, &config, &head, Listener::Public) {
            let keep_alive = head.wants_keep_alive() && head.framing == BodyFraming::Empty && client.keep_alive_allowed;
            send_reply(&client, &head, &reply, keep_alive);
            log::debug!("{} \"{} {}\" {} (own endpoint)", peer.ip(), head.method, head.target, reply.status);
            if keep_alive {
                continue;
            }
            return None;
        }

        let mut exchange =
            guard_panics(&head, peer, buffers, |buffers| proxy::handle(shared, &config, &client, &head, buffers, pair));
        // Count first, then let the last bytes go: a client holding its whole response always
        // finds it in the metrics.
        let latency = started.elapsed();
        shared.stats.record_request(exchange.outcome, latency);
        let mut keep_alive = exchange.keep_alive;
        if let Some(reply) = &exchange.reply {
            exchange.bytes_out += send_reply(&client, &head, reply, keep_alive);
        }
        if buffers.client_outbound.flush(&**stream).is_err() {
            keep_alive = false;
        }
        log_access(&config, client.address, &head, &exchange, latency);
        if !keep_alive {
            return None;
        }
    }
}

/// Waits up to [`LINGER`] for `stream` to become readable (or to close).
///
/// Called only while another worker is free to take new work, so the wait costs no one a
/// worker: a client that sends its next request within the linger is served by the same
/// thread, without the two wake-ups of a trip through the watcher.
fn next_request_soon(stream: &TcpStream) -> bool {
    let linger = rustix::event::Timespec { tv_sec: 0, tv_nsec: LINGER.as_nanos() as i64 };
    let mut interest = [rustix::event::PollFd::new(stream, rustix::event::PollFlags::IN)];
    matches!(rustix::event::poll(&mut interest, Some(&linger)), Ok(ready) if ready > 0)
}

/// Runs `handle` for one request, turning a panic (on this thread or re-raised from the pair)
/// into a `500` exchange that closes the connection. The buffers, possibly lost mid-request,
/// start afresh.
fn guard_panics(
    head: &RequestHead,
    peer: SocketAddr,
    buffers: &mut RequestBuffers,
    handle: impl FnOnce(&mut RequestBuffers) -> Exchange,
) -> Exchange {
    catch_unwind(AssertUnwindSafe(|| handle(buffers))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        log::error!("panic while handling {} {} from {}: {message}", head.method, head.target, peer.ip());
        buffers.reset();
        Exchange {
            status: 500,
            outcome: Outcome::Failed,
            backend: None,
            attempts: 0,
            keep_alive: false,
            reply: Some(Reply::error(500, None)),
            bytes_in: 0,
            bytes_out: 0,
        }
    })
}

/// Counts, answers and logs a request that could not be read.
fn refuse(shared: &Shared, config: &Config, client: &Client<'_>, peer: SocketAddr, reply: &Reply) {
    shared.stats.record_request(Outcome::Failed, Duration::ZERO);
    let mut stream: &TcpStream = client.stream;
    let bytes = reply.to_bytes(1, false, false);
    let bytes_out = if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 };
    let entry = AccessEntry {
        time: SystemTime::now(),
        client: peer.ip(),
        request: None,
        status: reply.status,
        backend: None,
        bytes_in: 0,
        bytes_out,
        latency: Duration::ZERO,
        attempts: 0,
    };
    access_log::write_line(config.access_log, &entry);
}

/// Writes one of the load balancer's own replies, unless a response is already under way.
/// Returns the bytes written.
fn send_reply(client: &Client<'_>, head: &RequestHead, reply: &Reply, keep_alive: bool) -> u64 {
    if client.response_started.swap(true, Ordering::AcqRel) {
        return 0;
    }
    let bytes = reply.to_bytes(head.minor_version, keep_alive, head.method == "HEAD");
    let mut stream: &TcpStream = client.stream;
    if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 }
}

fn log_access(config: &Config, client: IpAddr, head: &RequestHead, exchange: &Exchange, latency: Duration) {
    let entry = AccessEntry {
        time: SystemTime::now(),
        client,
        request: Some(RequestLine { method: &head.method, target: &head.target, minor_version: head.minor_version }),
        status: exchange.status,
        backend: exchange.backend.as_deref(),
        bytes_in: exchange.bytes_in,
        bytes_out: exchange.bytes_out,
        latency,
        attempts: exchange.attempts,
    };
    access_log::write_line(config.access_log, &entry);
}

/// Reads and parses the next request head on `stream`, which has bytes waiting (or some
/// already in `inbound`). The head must be complete within `headerReadTimeout` of its first byte.
fn read_request_head(config: &Config, stream: &TcpStream, inbound: &mut Inbound) -> HeadRead {
    let limits = HeadLimits::from(&config.limits);
    let deadline = Instant::now() + config.timeouts.header_read;
    // With nothing buffered, the caller saw bytes waiting: the first read cannot block.
    let mut bytes_waiting = inbound.is_empty();
    loop {
        if !inbound.is_empty() {
            match parse_request(inbound.buffered(), &limits) {
                Ok(Some((head, used))) => {
                    inbound.consume(used);
                    return HeadRead::Request(head);
                }
                Ok(None) => {}
                Err(error) => return HeadRead::Refused(error),
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return if inbound.is_empty() { HeadRead::Closed } else { HeadRead::TimedOut };
        }
        // Later reads wait for the rest of the head at most until the deadline.
        if !std::mem::take(&mut bytes_waiting) {
            let _ = stream.set_read_timeout(Some(remaining));
        }
        match inbound.fill(stream) {
            Ok(0) => return HeadRead::Closed,
            Ok(_) => {}
            Err(error) if is_timeout(&error) => {}
            Err(_) => return HeadRead::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn head() -> RequestHead {
        parse_request(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n", &HeadLimits::default()).unwrap().unwrap().0
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// A connected pair of sockets: (the load balancer's side, the client's side).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let (client, server) = crate::tests_support::socket_pair();
        (server, client)
    }

    #[test]
    fn a_panic_becomes_a_500_that_closes_the_connection() {
        let mut buffers = RequestBuffers::default();
        let exchange = guard_panics(&head(), peer(), &mut buffers, |_| panic!("bug in a handler"));
        assert_eq!(exchange.status, 500);
        assert!(!exchange.keep_alive);
        assert_eq!(exchange.reply, Some(Reply::error(500, None)));
    }

    #[test]
    fn a_panic_in_a_spawned_pair_thread_is_caught_too() {
        let mut buffers = RequestBuffers::default();
        let exchange = guard_panics(&head(), peer(), &mut buffers, |_| {
            let pair_thread = std::thread::spawn(|| panic!("bug in a copy thread"));
            match pair_thread.join() {
                Ok(()) => unreachable!(),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        assert_eq!(exchange.status, 500);
    }

    #[test]
    fn the_500_is_sent_only_if_no_response_byte_was() {
        let (server, mut client_side) = socket_pair();
        let server = Arc::new(server);
        let started = Arc::new(AtomicBool::new(false));
        let client = Client {
            stream: &server,
            ip: peer().ip(),
            address: peer().ip(),
            response_started: &started,
            keep_alive_allowed: true,
        };
        send_reply(&client, &head(), &Reply::error(500, None), false);
        // A response is under way now: a second reply must not be mixed into it.
        send_reply(&client, &head(), &Reply::error(502, None), false);
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut received = String::new();
        client_side.read_to_string(&mut received).unwrap();
        assert!(received.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{received}");
        assert!(received.contains("Connection: close\r\n"));
        assert!(!received.contains("502"), "{received}");
    }
}
