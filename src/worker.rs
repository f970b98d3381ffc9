//! Thread `worker-N`: Serves client connections taken from the acceptor's channel, one at a time.
//!
//! For each connection the worker loops: gather a request ([`gather_request`]), answer it (the
//! metrics document itself, everything else through [`proxy::handle`] and its forward/reverse
//! pair), write the access log line ([`access_log`]), and go round again while the connection is
//! kept alive.
//!
//! This is also the panic boundary: a panic while handling one request (on the worker or in its
//! pair) is caught here, logged, answered with `500` if no response byte was sent yet, and the
//! connection is closed. The worker itself lives on, so the pool never shrinks.
//!
//! A worker never waits for a client. It reads only what has already arrived; when that is not a
//! whole request it can act on (nothing at all on an idle connection, half a head from a slow
//! client, a head whose small body is still on its way), it parks the connection, with the bytes
//! read so far, with the [`crate::watcher`] and takes other work. The watcher gathers the rest and
//! hands the connection back once the request is complete, or answers `408` itself. So idle and
//! slow clients cost no worker, however many there are.
//!
//! One exception makes busy keep-alive clients cheaper: while some other worker is free to take
//! new work, a worker waits up to `LINGER` (2 ms) on its own connection before parking it, and at
//! most `LINGER_PER_REQUEST` in all while one request arrives. A client that sends its next
//! request at once is then served without the two wake-ups of a trip through the watcher, and
//! nobody waits for a worker meanwhile.
//!
//! Nor may a busy client keep its worker while others wait: when every worker is busy and a
//! connection waits for one, a worker that has finished a request puts its own connection at
//! the back of the line ([`crate::watcher::Watcher::requeue`]) instead of reading its next
//! request, so with more busy clients than workers each is served in turn.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

use crate::access_log::{self, AccessEntry, RequestLine};
use crate::client_ip::client_address;
use crate::config::Config;
use crate::connection::ClientConnection;
use crate::endpoints::{self, Listener};
use crate::http::buffer::Inbound;
use crate::http::complete::{KeptBody, kept_body};
use crate::http::head::{BodyFraming, HeadLimits, RequestError, RequestHead, parse_request};
use crate::http::reply::Reply;
use crate::metrics::{Defence, Outcome};
use crate::min_rate::{Direction, Floored, is_below_floor};
use crate::pair::PairRunner;
use crate::proxy::{self, Client, Exchange, RequestBuffers};
use crate::shared::Shared;
use crate::stream::{ReadNow, Stream};
use crate::tls::{Advanced, HandshakeFailure};
use crate::watcher::{Cut, ParkRefused, Waiting};

/// How long a worker keeps waiting on its own connection for more bytes, when other workers
/// are free, before handing it to the watcher.
const LINGER: Duration = Duration::from_millis(2);
/// The most a worker lingers, in several waits, while one request arrives.
const LINGER_PER_REQUEST: Duration = Duration::from_millis(10);

/// The worker loop: serves connections, those coming back from the watcher first, until the
/// acceptor's channel closes at shutdown.
pub fn run(
    shared: &Shared,
    queue: &Receiver<ClientConnection>,
    returned: &Receiver<ClientConnection>,
    pair: &PairRunner,
) {
    let mut buffers = RequestBuffers::new(&shared.config().limits);
    let mut requeued = false;
    loop {
        // Right after putting its own connection back in line (behind the watcher's), a worker
        // takes a new connection first if one waits, so a new client is not passed over forever.
        let new_first = if requeued { queue.try_recv().ok() } else { None };
        let connection = match new_first {
            Some(connection) => connection,
            None => {
                let _waiting = shared.wait_for_work();
                crossbeam_channel::select_biased! {
                    recv(returned) -> connection => match connection {
                        Ok(connection) => connection,
                        Err(_) => break,
                    },
                    recv(queue) -> connection => match connection {
                        Ok(connection) => connection,
                        Err(_) => break,
                    },
                }
            }
        };
        buffers.fit(&shared.config().limits);
        requeued = serve_connection(shared, connection, &mut buffers, pair, &Backlog { queue, returned });
    }
    // Shutting down: whatever the watcher still hands back is served (its request is complete).
    while let Ok(connection) = returned.try_recv() {
        let _ = serve_connection(shared, connection, &mut buffers, pair, &Backlog { queue, returned });
    }
}

/// The connections waiting for a worker: new ones from the acceptor, and those the watcher
/// handed back with a request.
struct Backlog<'a> {
    queue: &'a Receiver<ClientConnection>,
    returned: &'a Receiver<ClientConnection>,
}

impl Backlog<'_> {
    /// Whether another connection waits for a worker while none is free: then a connection whose
    /// client keeps sending goes to the back of the line after each request, instead of keeping
    /// its worker for as long as it likes.
    fn others_wait(&self, shared: &Shared) -> bool {
        let others_waiting = !self.returned.is_empty() || !self.queue.is_empty();
        others_waiting && !shared.a_worker_is_waiting()
    }
}

/// What becomes of a connection once its worker stops serving it.
enum Next {
    /// Closed (or to be closed): nothing more to do.
    Close,
    /// Its next request is not all here: it waits with the watcher.
    Wait(Waiting),
    /// Its next request may be here, but others were waiting for a worker: back of the line.
    Requeue,
}

/// Where a connection stands between requests.
struct Progress {
    /// When the request being gathered began to arrive, if any byte of it has.
    request_started: Option<Instant>,
    /// Requests served on the connection so far.
    requests: u64,
}

/// What gathering a request produced.
enum Gathered {
    /// A request to act on now; a chunked body is kept up to `chunked_budget` payload bytes.
    Request {
        head: RequestHead,
        chunked_budget: u64,
    },
    /// Not all here: the connection waits with the watcher.
    Wait(Waiting),
    /// The connection ended or failed: close it without a word.
    Closed,
    Refused(RequestError),
    /// Answered as the watcher would: a head past `headerReadTimeout` (408), or a body the client
    /// stopped sending (400).
    Cut(Cut),
}

/// Serves `connection` until it closes, waits with the watcher, or goes back in line; returns
/// whether it went back in line.
fn serve_connection(
    shared: &Shared,
    mut connection: ClientConnection,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
    backlog: &Backlog,
) -> bool {
    if connection.handshake.is_some() {
        match establish(shared, connection) {
            Some(established) => connection = established,
            None => return false,
        }
    }
    let ClientConnection { stream, handshake: _, accepted, peer, carried, request_started, requests, permit } =
        connection;
    buffers.client_inbound.clear();
    buffers.client_outbound.discard();
    if !carried.is_empty() {
        buffers.client_inbound.load(&carried);
    }
    drop(carried);
    let stream = Arc::new(stream);
    let mut progress = Progress { request_started, requests };
    let next = serve_requests(shared, &stream, peer, &mut progress, buffers, pair, backlog);
    let waiting = match next {
        Next::Close => {
            // A TLS client learns the session ended on purpose (`close_notify`), not by accident.
            if stream.is_tls() {
                stream.finish_sending();
            }
            return false;
        }
        Next::Wait(waiting) => Some(waiting),
        Next::Requeue => None,
    };
    let Ok(stream) = Arc::try_unwrap(stream) else { return false };
    let carried = buffers.client_inbound.take_buffered();
    let connection = ClientConnection {
        stream,
        handshake: None,
        accepted,
        peer,
        carried,
        request_started: progress.request_started,
        requests: progress.requests,
        permit,
    };
    match waiting {
        Some(waiting) => park(shared, connection, waiting),
        None => {
            shared.watcher.requeue(connection);
            return true;
        }
    }
    false
}

/// Drives a new HTTPS connection's handshake with what the client has sent ([`crate::tls::accept`]),
/// lingering as for a request head while other workers are free. Returns the connection once its
/// session is made; `None` when it failed (counted, and closed) or waits with the watcher.
fn establish(shared: &Shared, mut connection: ClientConnection) -> Option<ClientConnection> {
    let config = shared.config();
    let timeout =
        config.tls.as_ref().map_or(crate::config::tls::DEFAULT_TLS_HANDSHAKE_TIMEOUT, |tls| tls.handshake_timeout);
    let deadline = connection.accepted + timeout;
    let linger_ends = Instant::now() + LINGER_PER_REQUEST;
    loop {
        let pending = connection.handshake.take()?;
        let Stream::Plain(socket) = connection.stream else { return None };
        match pending.advance(socket, &mut connection.carried) {
            Advanced::Established(session) => {
                let resumed = session.details().kind == Some(rustls::HandshakeKind::Resumed);
                shared.stats.record_handshake(resumed);
                connection.stream = Stream::Tls(session);
                connection.carried = Vec::new();
                return Some(connection);
            }
            Advanced::Failed(failure) => {
                shared.record_handshake_failure(connection.peer, failure);
                return None;
            }
            Advanced::Pending(pending, socket) => {
                connection.stream = Stream::Plain(socket);
                connection.handshake = Some(pending);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            shared.record_handshake_failure(connection.peer, HandshakeFailure::Timeout);
            return None;
        }
        let left = linger_ends.saturating_duration_since(now).min(LINGER);
        if left.is_zero() || !shared.a_worker_is_waiting() || !readable_within(&connection.stream, left) {
            park(shared, connection, Waiting::Handshake { until: deadline });
            return None;
        }
    }
}

/// Hands a connection to the watcher, or, if it has no room, answers and closes it.
fn park(shared: &Shared, connection: ClientConnection, waiting: Waiting) {
    let limit = shared.config().limits.max_waiting_bytes;
    let Err(refused) = shared.watcher.park(connection, waiting, limit) else {
        // The watcher holds it now, and closing it is the watcher's business.
        return;
    };
    match *refused {
        (connection, ParkRefused::MemoryFull) if connection.handshake.is_none() => {
            let reply = Cut::MemoryFull.reply();
            let mut stream = &connection.stream;
            let bytes = reply.to_bytes(1, false, false);
            let sent = if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 };
            shared.record_cut(connection.peer, connection.scheme(), Cut::MemoryFull, sent);
        }
        // A handshake cannot be answered in HTTP: the close is the answer.
        (_, ParkRefused::MemoryFull) => {}
        (_, ParkRefused::Epoll) => log::warn!("cannot watch a client connection: closing it"),
    }
}

/// Serves requests on `stream` while they keep coming (and no other connection waits for a
/// worker). Returns what becomes of the connection then.
fn serve_requests(
    shared: &Shared,
    stream: &Arc<Stream>,
    peer: SocketAddr,
    progress: &mut Progress,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
    backlog: &Backlog,
) -> Next {
    let response_started = Arc::new(AtomicBool::new(false));
    let mut client = Client {
        stream,
        scheme: stream.scheme(),
        ip: peer.ip(),
        address: peer.ip(),
        response_started: &response_started,
        keep_alive_allowed: true,
    };
    loop {
        // The running config, taken once for the whole of this request: a reload may replace it
        // meanwhile, and one request sees one config.
        let config = shared.config();
        let (head, chunked_budget) =
            match gather_request(shared, &config, stream, &mut buffers.client_inbound, progress) {
                Gathered::Request { head, chunked_budget } => (head, chunked_budget),
                Gathered::Wait(waiting) => return Next::Wait(waiting),
                Gathered::Closed => return Next::Close,
                Gathered::Refused(error) => {
                    refuse(shared, &config, &client, peer, &error.reply());
                    return Next::Close;
                }
                Gathered::Cut(cut) => {
                    let mut stream: &Stream = stream;
                    let bytes = cut.reply().to_bytes(1, false, false);
                    let sent = if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 };
                    shared.record_cut(peer, client.scheme, cut, sent);
                    return Next::Close;
                }
            };
        progress.request_started = None;
        progress.requests += 1;
        response_started.store(false, Ordering::Release);
        client.keep_alive_allowed = !shared.is_shutting_down();
        client.address = client_address(peer.ip(), &head.fields, &config.trusted_proxies);
        let started = Instant::now();

        if let Some(reply) = endpoints::answer(shared, &config, &head, Listener::Public) {
            let keep_alive = head.wants_keep_alive() && head.framing == BodyFraming::Empty && client.keep_alive_allowed;
            send_reply(&client, &head, &reply, keep_alive);
            log::debug!("{} \"{} {}\" {} (own endpoint)", peer.ip(), head.method, head.target, reply.status);
            if !keep_alive {
                return Next::Close;
            }
            if backlog.others_wait(shared) {
                return Next::Requeue;
            }
            continue;
        }

        let mut exchange = guard_panics(&head, peer, buffers, |buffers| {
            proxy::handle(shared, &config, &client, &head, chunked_budget, buffers, pair)
        });
        // Count first, then let the last bytes go: a client holding its whole response always
        // finds it in the metrics.
        let latency = started.elapsed();
        shared.stats.record_request(exchange.outcome, latency, client.scheme);
        let mut keep_alive = exchange.keep_alive;
        if let Some(reply) = &exchange.reply {
            exchange.bytes_out += send_reply(&client, &head, reply, keep_alive);
        }
        let mut last_bytes =
            Floored::new(stream, &mut buffers.response_clock, Direction::Writing, config.timeouts.write);
        if let Err(error) = buffers.client_outbound.flush(&mut last_bytes) {
            if is_below_floor(&error) {
                shared.stats.record_slow_client(Defence::SlowReader);
            }
            keep_alive = false;
        }
        drop(last_bytes);
        log_access(&config, &client, &head, &exchange, latency);
        if !keep_alive {
            return Next::Close;
        }
        if backlog.others_wait(shared) {
            return Next::Requeue;
        }
    }
}

/// Reads what the client has sent, without waiting for it (beyond the short linger), until
/// `inbound` holds a request the worker can act on at once ([`crate::http::complete`]).
fn gather_request(
    shared: &Shared,
    config: &Config,
    stream: &Stream,
    inbound: &mut Inbound,
    progress: &mut Progress,
) -> Gathered {
    let limits = HeadLimits::from(&config.limits);
    let max_body = config.limits.max_body_bytes.unwrap_or(u64::MAX);
    let linger_ends = Instant::now() + LINGER_PER_REQUEST;
    loop {
        let mut waiting = if progress.requests == 0 {
            Waiting::Idle { until: Instant::now() + config.timeouts.header_read }
        } else {
            Waiting::Idle { until: Instant::now() + config.timeouts.idle }
        };
        if !inbound.is_empty() {
            let started = *progress.request_started.get_or_insert_with(Instant::now);
            match parse_request(inbound.buffered(), &limits) {
                Ok(Some((head, used))) => match kept_body(&head, &inbound.buffered()[used..], max_body) {
                    KeptBody::Ready { chunked_budget } => {
                        inbound.consume(used);
                        return Gathered::Request { head, chunked_budget };
                    }
                    KeptBody::Incomplete => waiting = Waiting::Body,
                },
                Ok(None) if started.elapsed() >= config.timeouts.header_read => return Gathered::Cut(Cut::HeadTimeout),
                Ok(None) => waiting = Waiting::Head,
                Err(error) => return Gathered::Refused(error),
            }
        } else if shared.is_shutting_down() {
            return Gathered::Closed;
        }
        match inbound.fill(ReadNow(stream)) {
            Ok(0) if waiting == Waiting::Body => return Gathered::Cut(Cut::IncompleteBody),
            Ok(0) => return Gathered::Closed,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let left = linger_ends.saturating_duration_since(Instant::now()).min(LINGER);
                if left.is_zero() || !shared.a_worker_is_waiting() || !readable_within(stream, left) {
                    return Gathered::Wait(waiting);
                }
            }
            // The worker's buffer is full of a kept body: the watcher has room for the rest.
            Err(error) if error.kind() == io::ErrorKind::OutOfMemory => return Gathered::Wait(waiting),
            Err(_) => return Gathered::Closed,
        }
    }
}

/// Waits up to `wait` for `stream` to become readable (or to close).
///
/// Called only while another worker is free to take new work, so the wait costs no one a
/// worker: a client that sends its next request (or the rest of this one) within the linger is
/// served by the same thread, without the two wake-ups of a trip through the watcher.
fn readable_within(stream: &Stream, wait: Duration) -> bool {
    if stream.has_buffered() {
        return true;
    }
    let linger = rustix::event::Timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as i64 };
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
            pool: None,
            route: None,
        }
    })
}

/// Counts, answers and logs a request that could not be read.
fn refuse(shared: &Shared, config: &Config, client: &Client<'_>, peer: SocketAddr, reply: &Reply) {
    shared.stats.record_request(Outcome::Failed, Duration::ZERO, client.scheme);
    let mut stream: &Stream = client.stream;
    let bytes = reply.to_bytes(1, false, false);
    let bytes_out = if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 };
    access_log::write_line(config.access_log, &AccessEntry::unread(peer.ip(), client.scheme, reply.status, bytes_out));
}

/// Writes one of the load balancer's own replies, unless a response is already under way.
/// Returns the bytes written.
fn send_reply(client: &Client<'_>, head: &RequestHead, reply: &Reply, keep_alive: bool) -> u64 {
    if client.response_started.swap(true, Ordering::AcqRel) {
        return 0;
    }
    let bytes = reply.to_bytes(head.minor_version, keep_alive, head.method == "HEAD");
    let mut stream: &Stream = client.stream;
    if stream.write_all(&bytes).is_ok() { bytes.len() as u64 } else { 0 }
}

fn log_access(config: &Config, client: &Client<'_>, head: &RequestHead, exchange: &Exchange, latency: Duration) {
    let entry = AccessEntry {
        time: SystemTime::now(),
        client: client.address,
        scheme: client.scheme,
        request: Some(RequestLine { method: &head.method, target: &head.target, minor_version: head.minor_version }),
        status: exchange.status,
        backend: exchange.backend.as_deref(),
        bytes_in: exchange.bytes_in,
        bytes_out: exchange.bytes_out,
        latency,
        attempts: exchange.attempts,
        pool: exchange.pool.as_deref(),
        route: exchange.route.as_deref(),
    };
    access_log::write_line(config.access_log, &entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Scheme;
    use std::io::Read;

    fn head() -> RequestHead {
        parse_request(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n", &HeadLimits::default()).unwrap().unwrap().0
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// A connected pair of sockets: (the load balancer's side, the client's side).
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
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
        let server = Arc::new(Stream::Plain(server));
        let started = Arc::new(AtomicBool::new(false));
        let client = Client {
            stream: &server,
            scheme: Scheme::Http,
            ip: peer().ip(),
            address: peer().ip(),
            response_started: &started,
            keep_alive_allowed: true,
        };
        send_reply(&client, &head(), &Reply::error(500, None), false);
        // A response is under way now: a second reply must not be mixed into it.
        send_reply(&client, &head(), &Reply::error(502, None), false);
        server.finish_sending();
        let mut received = String::new();
        client_side.read_to_string(&mut received).unwrap();
        assert!(received.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{received}");
        assert!(received.contains("Connection: close\r\n"));
        assert!(!received.contains("502"), "{received}");
    }
}
