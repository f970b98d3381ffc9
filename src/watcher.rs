//! Thread `watcher`: every wait on a client, so that a worker is taken only for a request it can
//! act on at once.
//!
//! A fixed pool of blocking workers cannot afford to wait on clients: a hundred idle keep-alive
//! connections, or a hundred slowloris clients trickling a head one byte at a time, would hold a
//! hundred workers. As in Apache httpd's event MPM with `mod_reqtimeout`, a worker that finds a
//! connection with nothing (or not enough) to act on parks it here, with the bytes it has read so
//! far, and takes other work. This one thread waits on all of them at once with `epoll`, reads
//! what each client sends (without blocking), and hands a connection back to the workers, ahead of
//! new ones, only once its bytes hold a request ready to act on ([`crate::http::complete`]): a
//! complete head, and the whole body when the body is one the load balancer keeps.
//!
//! A parked connection is in one of five states, each with its own deadline:
//! - *handshaking*: a TLS client whose next handshake bytes have not come; closed (and counted)
//!   unless the handshake is done `tlsHandshakeTimeout` after the connection was accepted. The
//!   watcher does none of the handshake's work: it reads what the client sends and hands the
//!   connection back to a worker as soon as any bytes arrive ([`crate::tls::accept`]);
//! - *idle*: nothing read; closed silently after `idleTimeout` (or `headerReadTimeout`, for a new
//!   connection whose first request never came);
//! - *reading head*: `408` and close unless the head is complete `headerReadTimeout` after its
//!   first byte;
//! - *reading body*: `408` and close if the client is silent for `bodyReadTimeout`, or once it is
//!   below `minRequestBodyRate` after that rate's grace;
//! - *closing*: answered by the watcher itself (`408`, `503`); what the client still sends is read
//!   and dropped for up to 2 s before the close, so it reads the answer rather than a reset.
//!
//! Memory is bounded: each connection holds at most a head of `maxHeaderBytes` and one kept body
//! ([`MAX_KEPT_BODY_BUFFER`]), and all of them together at most `maxWaitingBytes`; a client whose
//! bytes would take the total past that gets `503` and is closed, rather than letting the total
//! grow. An idle connection holds no buffer at all.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustix::event::epoll;
use serde::Serialize;

use crate::connection::{ClientConnection, Scheme};
use crate::http::complete::{Completeness, MAX_KEPT_BODY_BUFFER, assess};
use crate::http::head::HeadLimits;
use crate::http::reply::Reply;
use crate::min_rate::MinRate;
use crate::tls::HandshakeFailure;

/// How often the watcher wakes with nothing to report, to close expired connections and to
/// notice shutdown.
const TICK: Duration = Duration::from_millis(250);
/// Most readiness events taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
/// Most bytes taken from one client in one read.
const READ_CHUNK: usize = 16 * 1024;

/// What a parked connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The client's next TLS handshake bytes. Closed at `until`.
    Handshake { until: Instant },
    /// Its next request (or its first): nothing is buffered. Closed silently at `until`.
    Idle { until: Instant },
    /// The rest of a request head.
    Head,
    /// The rest of a body the load balancer keeps before the first attempt.
    Body,
    /// Nothing more: the watcher answered it and closed its sending side, and now reads and
    /// discards what the client still sends until it closes too or `until` passes, so that the
    /// answer is not lost to a reset (nginx's lingering close).
    Closing { until: Instant },
}

/// How long a connection the watcher answered is drained before it is closed outright.
const LINGERING_CLOSE: Duration = Duration::from_secs(2);

/// The running config's rules for waiting clients, taken afresh for each batch of events.
#[derive(Debug, Clone, Copy)]
pub struct WaitPolicy {
    pub head_limits: HeadLimits,
    pub max_body: u64,
    pub header_read: Duration,
    pub body_read: Duration,
    pub body_rate: Option<MinRate>,
    /// `maxWaitingBytes`: the most bytes all parked connections may hold together.
    pub max_waiting_bytes: usize,
}

impl WaitPolicy {
    /// The most bytes one connection may hold while it waits.
    fn per_connection(&self) -> usize {
        self.head_limits.max_bytes + MAX_KEPT_BODY_BUFFER
    }
}

/// Why the watcher answered a connection itself and closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The head was not complete within `headerReadTimeout`: 408.
    HeadTimeout,
    /// The kept body stalled or crawled: 408.
    BodyTimeout,
    /// Its bytes would take the watcher past `maxWaitingBytes`: 503.
    MemoryFull,
    /// The client closed its sending side before the end of a kept body: 400.
    IncompleteBody,
}

impl Cut {
    pub fn reply(self) -> Reply {
        match self {
            Cut::HeadTimeout => Reply::error(408, Some("Request Timeout: the request head stalled")),
            Cut::BodyTimeout => Reply::error(408, Some("Request Timeout: the request body stalled")),
            Cut::MemoryFull => Reply::error(503, Some("Service Unavailable: too many requests are arriving slowly")),
            Cut::IncompleteBody => Reply::error(400, Some("Bad Request: incomplete or malformed body")),
        }
    }
}

/// What the watcher needs from the rest of the load balancer.
pub trait WatcherHost {
    fn is_shutting_down(&self) -> bool;
    fn wait_policy(&self) -> WaitPolicy;
    /// The watcher answered and closed a connection (counting and logging it is the host's job).
    fn cut(&self, peer: SocketAddr, scheme: Scheme, cut: Cut, bytes_out: u64);
    /// A TLS handshake failed while the watcher held the connection (it is closed).
    fn handshake_failed(&self, peer: SocketAddr, failure: HandshakeFailure);
}

/// Connections with the watcher now, by state, and the bytes they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitingCounts {
    /// TLS clients in the middle of their handshake.
    pub handshaking: usize,
    pub idle: usize,
    pub reading_head: usize,
    pub reading_body: usize,
    /// Answered by the watcher and draining before the close.
    pub closing: usize,
    pub bytes: usize,
}

impl WaitingCounts {
    pub fn total(&self) -> usize {
        self.handshaking + self.idle + self.reading_head + self.reading_body + self.closing
    }
}

/// Why a connection could not be parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkRefused {
    /// Its bytes would take the watcher past `maxWaitingBytes`: answer 503.
    MemoryFull,
    /// epoll refused the socket.
    Epoll,
}

struct Parked {
    connection: ClientConnection,
    waiting: Waiting,
    /// When a byte last arrived (for a body's `bodyReadTimeout`).
    last_byte: Instant,
}

impl Parked {
    fn deadline(&self, policy: &WaitPolicy) -> Instant {
        let started = self.connection.request_started.unwrap_or(self.last_byte);
        match self.waiting {
            Waiting::Handshake { until } | Waiting::Idle { until } | Waiting::Closing { until } => until,
            Waiting::Head => started + policy.header_read,
            Waiting::Body => {
                let silent = self.last_byte + policy.body_read;
                match policy.body_rate {
                    Some(rate) => {
                        let earned = self.connection.carried.len() as f64 / rate.bytes_per_second.max(1) as f64;
                        silent.min(started + rate.grace + Duration::from_secs_f64(earned))
                    }
                    None => silent,
                }
            }
        }
    }
}

/// The parked connections and the epoll instance watching them. Workers park connections here;
/// the watcher thread ([`Watcher::run`]) hands them back when they hold a request.
pub struct Watcher {
    epoll: OwnedFd,
    parked: Mutex<Parking>,
    ready: Sender<ClientConnection>,
}

#[derive(Default)]
struct Parking {
    connections: HashMap<RawFd, Parked>,
    /// Buffer bytes (capacity) held by parked connections, and by the one being read.
    bytes: usize,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("waiting", &self.waiting()).finish()
    }
}

impl Watcher {
    /// A watcher, and the channel on which it returns connections ready for a worker.
    pub fn new() -> io::Result<(Watcher, Receiver<ClientConnection>)> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let (ready, returned) = crossbeam_channel::unbounded();
        Ok((Watcher { epoll, parked: Mutex::new(Parking::default()), ready }, returned))
    }

    /// Takes a connection until it holds a request ready to act on, or its deadline passes.
    /// `max_waiting_bytes` bounds the bytes all parked connections hold together.
    pub fn park(
        &self,
        connection: ClientConnection,
        waiting: Waiting,
        max_waiting_bytes: usize,
    ) -> Result<(), Box<(ClientConnection, ParkRefused)>> {
        let fd = connection.stream.as_raw_fd();
        let held = connection.carried.capacity();
        let interest = interest(&connection);
        // Registered and recorded under one lock, so the watcher never sees an event for a
        // connection it cannot find.
        let mut parking = self.parked.lock();
        if held > 0 && parking.bytes + held > max_waiting_bytes {
            return Err(Box::new((connection, ParkRefused::MemoryFull)));
        }
        if epoll::add(&self.epoll, &connection.stream, epoll::EventData::new_u64(fd as u64), interest).is_err() {
            return Err(Box::new((connection, ParkRefused::Epoll)));
        }
        parking.bytes += held;
        parking.connections.insert(fd, Parked { connection, waiting, last_byte: Instant::now() });
        Ok(())
    }

    /// Connections parked now, by state, and the bytes they hold.
    pub fn waiting(&self) -> WaitingCounts {
        let parking = self.parked.lock();
        let mut counts = WaitingCounts { bytes: parking.bytes, ..WaitingCounts::default() };
        for parked in parking.connections.values() {
            match parked.waiting {
                Waiting::Handshake { .. } => counts.handshaking += 1,
                Waiting::Idle { .. } => counts.idle += 1,
                Waiting::Head => counts.reading_head += 1,
                Waiting::Body => counts.reading_body += 1,
                Waiting::Closing { .. } => counts.closing += 1,
            }
        }
        counts
    }

    /// The watcher thread's loop: reads what parked clients send, returns those whose request is
    /// ready, answers and closes those past their deadline, until the host shuts down; then closes
    /// all that are left.
    pub fn run(&self, host: &impl WatcherHost) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
        let mut scratch = vec![0u8; READ_CHUNK];
        let tick = rustix::event::Timespec { tv_sec: 0, tv_nsec: TICK.as_nanos() as i64 };
        let mut next_sweep = Instant::now() + TICK;
        while !host.is_shutting_down() {
            events.clear();
            if let Err(error) = epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), Some(&tick))
                && error != rustix::io::Errno::INTR
            {
                log::error!("epoll_wait failed: {error}");
                std::thread::sleep(TICK);
            }
            let policy = host.wait_policy();
            for event in &events {
                let fd = event.data.u64() as RawFd;
                let Some(parked) = self.parked.lock().connections.remove(&fd) else { continue };
                self.on_readable(parked, &policy, &mut scratch, host);
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + TICK;
                for parked in self.take_where(|parked| parked.deadline(&policy) <= now) {
                    self.expire(parked, host);
                }
            }
        }
        for parked in self.take_where(|_| true) {
            self.forget(parked);
        }
    }

    /// Reads what the client sent and decides: hand it back, keep waiting, or close it.
    fn on_readable(&self, mut parked: Parked, policy: &WaitPolicy, scratch: &mut [u8], host: &impl WatcherHost) {
        if let Waiting::Closing { .. } = parked.waiting {
            return self.drain(parked, scratch);
        }
        let limit = policy.per_connection();
        loop {
            let room = limit.saturating_sub(parked.connection.carried.len()).min(scratch.len());
            if room == 0 {
                break;
            }
            match parked.connection.read_now(&mut scratch[..room]) {
                Ok(0) if parked.connection.handshake.is_some() => {
                    host.handshake_failed(parked.connection.peer, HandshakeFailure::Closed);
                    return self.forget(parked);
                }
                Ok(0) => {
                    // The client is done sending: serve what it sent, if that is a whole request.
                    let complete = assess(&parked.connection.carried, &policy.head_limits, policy.max_body);
                    return match complete {
                        Completeness::Ready => self.hand_back(parked),
                        Completeness::Body => self.answer(parked, Cut::IncompleteBody, host),
                        Completeness::Head => self.forget(parked),
                    };
                }
                Ok(count) => {
                    let carried = &mut parked.connection.carried;
                    let before = carried.capacity();
                    let needed = carried.len() + count;
                    if needed > before {
                        let target = needed.next_power_of_two().clamp(1024, limit.max(needed));
                        let mut parking = self.parked.lock();
                        if parking.bytes + (target - before) > policy.max_waiting_bytes {
                            drop(parking);
                            return self.answer(parked, Cut::MemoryFull, host);
                        }
                        carried.reserve_exact(target - carried.len());
                        parking.bytes += carried.capacity() - before;
                    }
                    carried.extend_from_slice(&scratch[..count]);
                    let now = Instant::now();
                    parked.last_byte = now;
                    parked.connection.request_started.get_or_insert(now);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.forget(parked),
            }
        }
        if parked.connection.handshake.is_some() {
            // Whatever came is the worker's to feed to the handshake.
            if !parked.connection.carried.is_empty() {
                return self.hand_back(parked);
            }
            if parked.deadline(policy) <= Instant::now() {
                return self.expire(parked, host);
            }
            return self.rearm(parked);
        }
        parked.waiting = match assess(&parked.connection.carried, &policy.head_limits, policy.max_body) {
            Completeness::Ready => return self.hand_back(parked),
            Completeness::Head if parked.connection.carried.is_empty() => parked.waiting,
            Completeness::Head => Waiting::Head,
            Completeness::Body => Waiting::Body,
        };
        if parked.deadline(policy) <= Instant::now() {
            return self.expire(parked, host);
        }
        self.rearm(parked);
    }

    /// Watches a connection again after its bytes were read.
    fn rearm(&self, parked: Parked) {
        let stream = &parked.connection.stream;
        let fd = stream.as_raw_fd();
        let interest = interest(&parked.connection);
        let mut parking = self.parked.lock();
        if epoll::modify(&self.epoll, stream, epoll::EventData::new_u64(fd as u64), interest).is_err() {
            drop(parking);
            return self.forget(parked);
        }
        parking.connections.insert(fd, parked);
    }

    /// Puts a connection at the back of the workers' line as it is, without watching it: its
    /// next request may already be buffered or on the socket, and the worker that takes it reads
    /// what is there (and parks it here if that is not a whole request).
    pub fn requeue(&self, connection: ClientConnection) {
        let _ = self.ready.send(connection);
    }

    /// Gives a connection with a request ready to the workers.
    fn hand_back(&self, parked: Parked) {
        let _ = epoll::delete(&self.epoll, &parked.connection.stream);
        self.parked.lock().bytes -= parked.connection.carried.capacity();
        // The workers' end lives as long as any worker; if it is gone we are shutting down, and
        // dropping the connection closes it.
        let _ = self.ready.send(parked.connection);
    }

    /// Reads and discards what a closing connection's client still sends; closes it at the end.
    fn drain(&self, parked: Parked, scratch: &mut [u8]) {
        loop {
            match parked.connection.read_now(scratch) {
                Ok(0) => return self.forget(parked),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return self.rearm(parked),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.forget(parked),
            }
        }
    }

    /// A connection past its deadline: an idle one is closed, one in the middle of a request is
    /// told why first.
    fn expire(&self, parked: Parked, host: &impl WatcherHost) {
        match parked.waiting {
            Waiting::Handshake { .. } => {
                host.handshake_failed(parked.connection.peer, HandshakeFailure::Timeout);
                self.forget(parked)
            }
            Waiting::Idle { .. } | Waiting::Closing { .. } => self.forget(parked),
            Waiting::Head => self.answer(parked, Cut::HeadTimeout, host),
            Waiting::Body => self.answer(parked, Cut::BodyTimeout, host),
        }
    }

    /// Sends the answer for `cut` without waiting for the client, and closes the connection
    /// (after a lingering close, while the client may still be sending).
    fn answer(&self, mut parked: Parked, cut: Cut, host: &impl WatcherHost) {
        let bytes = cut.reply().to_bytes(1, false, false);
        let sent = parked.connection.stream.send_without_waiting(&bytes);
        // Counted, and its bytes given back, before the client can see the end of the answer.
        host.cut(parked.connection.peer, parked.connection.scheme(), cut, sent as u64);
        if sent == 0 || host.is_shutting_down() {
            return self.forget(parked);
        }
        let held = parked.connection.carried.capacity();
        parked.connection.carried = Vec::new();
        self.parked.lock().bytes -= held;
        parked.connection.stream.finish_sending();
        parked.waiting = Waiting::Closing { until: Instant::now() + LINGERING_CLOSE };
        self.rearm(parked);
    }

    /// Unregisters a connection and closes it (dropping it gives back its connection permit).
    fn forget(&self, parked: Parked) {
        let _ = epoll::delete(&self.epoll, &parked.connection.stream);
        self.parked.lock().bytes -= parked.connection.carried.capacity();
    }

    /// Takes the parked connections that match out of the map; each then goes to
    /// [`Watcher::forget`], [`Watcher::answer`] or [`Watcher::hand_back`].
    fn take_where(&self, matches: impl Fn(&Parked) -> bool) -> Vec<Parked> {
        let mut parking = self.parked.lock();
        let fds: Vec<RawFd> =
            parking.connections.iter().filter(|(_, parked)| matches(parked)).map(|(&fd, _)| fd).collect();
        fds.into_iter().filter_map(|fd| parking.connections.remove(&fd)).collect()
    }
}

/// What to watch a connection for: its socket becoming readable, and, for a TLS session that
/// already holds bytes the socket will not announce again, writable too, which is at once, so
/// that the watcher reads those bytes without waiting for more.
fn interest(connection: &ClientConnection) -> epoll::EventFlags {
    let readable = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
    if connection.stream.has_buffered() { readable | epoll::EventFlags::OUT } else { readable }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnectionCounts;
    use crate::tests_support::{socket_pair, wait_for};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct TestHost {
        stop: AtomicBool,
        policy: WaitPolicy,
        cuts: Mutex<Vec<Cut>>,
    }

    impl WatcherHost for TestHost {
        fn is_shutting_down(&self) -> bool {
            self.stop.load(Ordering::Relaxed)
        }
        fn wait_policy(&self) -> WaitPolicy {
            self.policy
        }
        fn cut(&self, _peer: SocketAddr, _scheme: Scheme, cut: Cut, _bytes_out: u64) {
            self.cuts.lock().push(cut);
        }
        fn handshake_failed(&self, _peer: SocketAddr, _failure: HandshakeFailure) {}
    }

    struct Running {
        watcher: Arc<Watcher>,
        returned: Receiver<ClientConnection>,
        host: Arc<TestHost>,
        counts: Arc<ConnectionCounts>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(header_read: Duration, max_waiting_bytes: usize) -> Running {
            let (watcher, returned) = Watcher::new().unwrap();
            let watcher = Arc::new(watcher);
            let policy = WaitPolicy {
                head_limits: HeadLimits::default(),
                max_body: u64::MAX,
                header_read,
                body_read: Duration::from_secs(30),
                body_rate: None,
                max_waiting_bytes,
            };
            let host = Arc::new(TestHost { stop: AtomicBool::new(false), policy, cuts: Mutex::new(Vec::new()) });
            let thread = {
                let (watcher, host) = (Arc::clone(&watcher), Arc::clone(&host));
                std::thread::spawn(move || watcher.run(&*host))
            };
            Running { watcher, returned, host, counts: Arc::new(ConnectionCounts::default()), thread: Some(thread) }
        }

        /// A connection as a worker would park it: (the client's end, the connection).
        fn connection(&self) -> (TcpStream, ClientConnection) {
            let (outside, inside) = socket_pair();
            let peer = inside.peer_addr().unwrap();
            let permit = self.counts.admit(peer.ip(), 100, None).unwrap();
            (outside, ClientConnection::new(inside, peer, permit))
        }

        fn park(&self, connection: ClientConnection, waiting: Waiting) {
            let limit = self.host.policy.max_waiting_bytes;
            assert!(self.watcher.park(connection, waiting, limit).is_ok());
        }

        fn stop(mut self) {
            self.host.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap();
        }
    }

    fn idle() -> Waiting {
        Waiting::Idle { until: Instant::now() + Duration::from_secs(30) }
    }

    #[test]
    fn a_trickled_head_comes_back_whole_with_its_bytes() {
        let running = Running::start(Duration::from_secs(30), 1 << 20);
        let (mut client, connection) = running.connection();
        running.park(connection, idle());
        for piece in [&b"GET / HT"[..], b"TP/1.1\r\nHost: a\r\n", b"X-a: b\r\n"] {
            client.write_all(piece).unwrap();
            wait_for(|| running.watcher.waiting().reading_head == 1 && running.watcher.waiting().bytes > 0);
            assert!(running.returned.try_recv().is_err(), "not while the head is partial");
        }
        client.write_all(b"\r\n").unwrap();
        let back = running.returned.recv_timeout(Duration::from_secs(5)).expect("the whole head comes back");
        assert_eq!(back.carried, b"GET / HTTP/1.1\r\nHost: a\r\nX-a: b\r\n\r\n");
        assert!(back.request_started.is_some());
        assert_eq!(running.watcher.waiting(), WaitingCounts::default(), "nothing held any more");
        running.stop();
    }

    #[test]
    fn a_small_body_is_gathered_too_and_a_closed_client_is_forgotten() {
        let running = Running::start(Duration::from_secs(30), 1 << 20);
        let (mut client, connection) = running.connection();
        running.park(connection, idle());
        client.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab").unwrap();
        wait_for(|| running.watcher.waiting().reading_body == 1);
        client.write_all(b"cd").unwrap();
        let back = running.returned.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(back.carried.ends_with(b"\r\n\r\nabcd"));
        let (client, connection) = running.connection();
        running.park(connection, idle());
        drop(client);
        wait_for(|| running.watcher.waiting().total() == 0);
        assert_eq!(running.counts.open(), 1, "the closed one gave its place back; the returned one holds its own");
        drop(back);
        running.stop();
    }

    #[test]
    fn a_stalled_head_gets_408_from_the_watcher_and_an_idle_one_is_closed_silently() {
        let running = Running::start(Duration::from_millis(300), 1 << 20);
        let (mut stalled, connection) = running.connection();
        running.park(connection, idle());
        stalled.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-a: ").unwrap();
        let (mut quiet, connection) = running.connection();
        running.park(connection, Waiting::Idle { until: Instant::now() + Duration::from_millis(300) });
        let mut answer = String::new();
        stalled.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        let mut nothing = Vec::new();
        quiet.read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty());
        assert_eq!(*running.host.cuts.lock(), [Cut::HeadTimeout]);
        wait_for(|| running.counts.open() == 0);
        running.stop();
    }

    #[test]
    fn past_the_memory_bound_a_waiting_client_gets_503() {
        let running = Running::start(Duration::from_secs(30), 40 * 1024);
        let (mut greedy, connection) = running.connection();
        running.park(connection, idle());
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-a: ".to_vec();
        head.resize(60 * 1024, b'a');
        greedy.write_all(&head).unwrap();
        let mut answer = String::new();
        greedy.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert_eq!(*running.host.cuts.lock(), [Cut::MemoryFull]);
        assert_eq!(running.watcher.waiting().bytes, 0);
        // A connection that brings bytes of its own is refused at the door the same way.
        let (_client, mut connection) = running.connection();
        connection.carried = vec![b'x'; 41 * 1024];
        let refused = running.watcher.park(connection, Waiting::Head, 40 * 1024).unwrap_err();
        assert_eq!(refused.1, ParkRefused::MemoryFull);
        running.stop();
    }

    #[test]
    fn stopping_closes_everything_held() {
        let running = Running::start(Duration::from_secs(30), 1 << 20);
        let (mut client, connection) = running.connection();
        running.park(connection, idle());
        client.write_all(b"GET / HT").unwrap();
        wait_for(|| running.watcher.waiting().reading_head == 1);
        let counts = Arc::clone(&running.counts);
        running.stop();
        assert_eq!(counts.open(), 0);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
    }
}
