//! [worker-N] Serves client connections taken from the acceptor's channel, one at a time.
//!
//! For each connection the worker loops: read and parse a request head, answer it (the metrics
//! document itself, everything else through [`proxy::handle`] and its forward/reverse pair), write
//! the access log line, and go round again while the connection is kept alive.
//!
//! This is also the panic boundary: a panic while handling one request (on the worker or in its
//! pair) is caught here, logged, answered with `500` if no response byte was sent yet, and the
//! connection is closed. The worker itself lives on, so the pool never shrinks.
//!
//! Fairness: a worker serves one connection at a time, so a connection kept alive holds a worker.
//! While other connections wait in the channel and no worker is free to take them, a response
//! ends its connection (`Connection:
//! close`) and an idle connection is given up after [`IDLE_POLL`]; otherwise a connection may sit
//! idle between requests for `idleTimeout`. With more busy clients than workers, keep-alive is
//! traded for every client being served in turn.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::client_ip::client_address;
use crate::http::buffer::Inbound;
use crate::http::framing::is_timeout;
use crate::http::head::{BodyFraming, HeadLimits, RequestError, RequestHead, parse_request};
use crate::http::reply::Reply;
use crate::metrics::Outcome;
use crate::pair::PairRunner;
use crate::proxy::{self, Client, Exchange, RequestBuffers};
use crate::server::Shared;

/// How often a waiting worker looks up from its socket to check for shutdown and for queued
/// connections.
pub const IDLE_POLL: Duration = Duration::from_millis(250);

/// The worker loop: serves connections until the channel closes at shutdown.
pub fn run(shared: &Shared, queue: &Receiver<TcpStream>, pair: &PairRunner) {
    let mut buffers = RequestBuffers::new(&shared.config.limits);
    loop {
        let waiting = shared.worker_waiting();
        let Ok(stream) = queue.recv() else { break };
        drop(waiting);
        serve_connection(shared, queue, stream, &mut buffers, pair);
    }
}

/// Whether connections are waiting in the channel with no worker free to take them.
fn others_wait(shared: &Shared, queue: &Receiver<TcpStream>) -> bool {
    queue.len() > shared.workers_waiting()
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
    queue: &Receiver<TcpStream>,
    stream: TcpStream,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
) {
    let _slot = shared.connection_slot();
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.config.timeouts.write));
    let stream = Arc::new(stream);
    let response_started = Arc::new(AtomicBool::new(false));
    let mut client = Client {
        stream: &stream,
        ip: peer.ip(),
        address: peer.ip(),
        response_started: &response_started,
        keep_alive_allowed: true,
    };
    buffers.client_inbound.clear();
    let mut first_request = true;
    loop {
        let head = match read_request_head(shared, queue, &stream, &mut buffers.client_inbound, first_request) {
            HeadRead::Request(head) => head,
            HeadRead::Closed => return,
            HeadRead::Refused(error) => {
                let reply =
                    Reply::error(error.status(), Some(&format!("{}: {}", reason(error.status()), error.reason())));
                refuse(shared, &client, peer, &reply);
                return;
            }
            HeadRead::TimedOut => {
                refuse(shared, &client, peer, &Reply::error(408, Some("Request Timeout: the request head stalled")));
                return;
            }
        };
        first_request = false;
        response_started.store(false, Ordering::Release);
        client.keep_alive_allowed = !others_wait(shared, queue) && !shared.is_shutting_down();
        client.address = client_address(peer.ip(), &head.fields, &shared.config.trusted_proxies);
        let started = Instant::now();

        if shared.config.admin_listen.is_none() && head.path() == shared.config.metrics_path {
            let keep_alive = head.wants_keep_alive() && head.framing == BodyFraming::Empty && client.keep_alive_allowed;
            send_reply(&client, &head, &Reply::json(shared.metrics().to_json()), keep_alive);
            log::debug!("{} \"{} {}\" 200 metrics", peer.ip(), head.method, head.target);
            if keep_alive {
                continue;
            }
            return;
        }

        let exchange =
            guard_panics(&head, peer, buffers, |buffers| proxy::handle(shared, &client, &head, buffers, pair));
        // Count first, then let the last bytes go: a client holding its whole response always
        // finds it in the metrics.
        let latency = started.elapsed();
        shared.stats.record_request(exchange.outcome, latency);
        let mut keep_alive = exchange.keep_alive;
        if let Some(reply) = &exchange.reply {
            send_reply(&client, &head, reply, keep_alive);
        }
        if buffers.client_outbound.flush(&*stream).is_err() {
            keep_alive = false;
        }
        log_access(client.address, &head, &exchange, latency);
        if !keep_alive {
            return;
        }
    }
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
        }
    })
}

/// Counts, answers and logs a request that could not be read.
fn refuse(shared: &Shared, client: &Client<'_>, peer: SocketAddr, reply: &Reply) {
    shared.stats.record_request(Outcome::Failed, Duration::ZERO);
    let mut stream: &TcpStream = client.stream;
    let _ = stream.write_all(&reply.to_bytes(1, false, false));
    log::info!(target: "access", "{} \"-\" {} - 0ms", peer.ip(), reply.status);
}

/// Writes one of the load balancer's own replies, unless a response is already under way.
fn send_reply(client: &Client<'_>, head: &RequestHead, reply: &Reply, keep_alive: bool) {
    if client.response_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let bytes = reply.to_bytes(head.minor_version, keep_alive, head.method == "HEAD");
    let mut stream: &TcpStream = client.stream;
    let _ = stream.write_all(&bytes);
}

fn reason(status: u16) -> &'static str {
    crate::http::reply::reason_phrase(status)
}

fn log_access(client: IpAddr, head: &RequestHead, exchange: &Exchange, latency: Duration) {
    log::info!(
        target: "access",
        "{} \"{} {} HTTP/1.{}\" {} {} {}ms attempts={}",
        client,
        head.method,
        head.target,
        head.minor_version,
        exchange.status,
        exchange.backend.as_deref().unwrap_or("-"),
        latency.as_millis(),
        exchange.attempts
    );
}

/// Waits for and parses the next request head on `stream`.
fn read_request_head(
    shared: &Shared,
    queue: &Receiver<TcpStream>,
    stream: &TcpStream,
    inbound: &mut Inbound,
    first_request: bool,
) -> HeadRead {
    let timeouts = &shared.config.timeouts;
    let limits = HeadLimits::from(&shared.config.limits);
    let waiting_since = Instant::now();
    let mut head_started: Option<Instant> = None;
    loop {
        if !inbound.is_empty() {
            head_started.get_or_insert_with(Instant::now);
            match parse_request(inbound.buffered(), &limits) {
                Ok(Some((head, used))) => {
                    inbound.consume(used);
                    return HeadRead::Request(head);
                }
                Ok(None) => {}
                Err(error) => return HeadRead::Refused(error),
            }
        }
        let deadline = match head_started {
            Some(started) => started + timeouts.header_read,
            None => {
                if shared.is_shutting_down() {
                    return HeadRead::Closed;
                }
                if first_request {
                    waiting_since + timeouts.header_read
                } else {
                    if others_wait(shared, queue) && waiting_since.elapsed() >= IDLE_POLL {
                        return HeadRead::Closed;
                    }
                    waiting_since + timeouts.idle
                }
            }
        };
        let now = Instant::now();
        if now >= deadline {
            return if head_started.is_some() { HeadRead::TimedOut } else { HeadRead::Closed };
        }
        let wait = if head_started.is_some() { deadline - now } else { (deadline - now).min(IDLE_POLL) };
        let _ = stream.set_read_timeout(Some(wait));
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
    use std::net::TcpListener;

    fn head() -> RequestHead {
        parse_request(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n", &HeadLimits::default()).unwrap().unwrap().0
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// A connected pair of sockets: (the load balancer's side, the client's side).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
