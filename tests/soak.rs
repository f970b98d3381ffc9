//! A bounded soak: 20,480 GETs over 64 concurrent keep-alive connections while one of three
//! backends is killed a third of the way through and restarted on its port at two thirds. Every
//! request gets a 2xx (the load balancer's retries hide the failure, and no client had to send a
//! request twice), the load balancer's threads and file descriptors
//! return to their start values, nothing is left open or in flight, and its peak RSS stays under
//! [`PEAK_RSS_BOUND_KIB`].

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{EchoBackend, LoadBalancer, config, fd_count, lowest_over, thread_count, wait_for_rest, wait_until};

/// Concurrent client connections: as many as the default worker pool, so each holds a worker.
const CLIENTS: usize = 64;
/// Requests each client sends: 64 × 320 = 20,480 in all.
const REQUESTS_PER_CLIENT: usize = 320;
const TOTAL_REQUESTS: usize = CLIENTS * REQUESTS_PER_CLIENT;
/// The whole request phase must end by then (it takes a few seconds in a debug build).
const SOAK_DEADLINE: Duration = Duration::from_secs(40);
/// A response must start within this; a proxy this close should answer in milliseconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often one request may find its connection closed before any answer and be sent again on a
/// new one (the keep-alive race every HTTP client must live with) before that counts as a failure.
/// Every resend is counted, and the test asserts there were none at all (see [`RESENDS_ALLOWED`]):
/// the resending only keeps a lost request from ending the client early, so it is reported as such.
const MAX_RESENDS: usize = 3;
/// Resends the whole soak may legitimately need: none. A resend means the load balancer closed a
/// kept-alive connection without answering the request on it, which it does only when the
/// connection idled past `idleTimeout` (5 s; these clients send each request the moment the last
/// answer is in) or while shutting down (it is not). The killed backend cannot cause one: every
/// request it fails (a refused connect, a pooled connection found dead, a request read and never
/// answered) is a bodiless GET, which the load balancer itself retries on another backend, so the
/// client gets an answer on the same connection. A kill in the middle of a response would cut the
/// response short, which is a failure of its own, never a resend. So any resend is a dropped
/// request that the client's own retry would otherwise hide.
const RESENDS_ALLOWED: usize = 0;

/// Bound on the load balancer's peak resident memory (VmHWM) over the whole soak, debug build.
/// Measured at 9.8–10.3 MiB over six runs (3.9 MiB at rest): its 64 workers each with an 80 KiB
/// inbound buffer (5 MiB), up to 128 short-lived pair threads at a time whose stacks are touched
/// only a few pages deep, and the allocator's per-thread arenas. 64 MiB is about six times that:
/// room for a slower or busier machine, while a leak of a few KiB per request (20,480 of them)
/// or per connection (thousands) still trips it.
const PEAK_RSS_BOUND_KIB: u64 = 64 * 1024;

/// One parsed response on a kept-alive connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    close: bool,
}

/// How reading a response ended, other than with a response.
enum ReadFailure {
    /// The connection closed (EOF or reset) before a single byte of a response: the server had
    /// given the connection up, so the request may be sent again on a new one.
    ClosedBeforeAnswer(String),
    /// Anything else: a timeout, a response cut short, a malformed head.
    Broken(String),
}

/// A client's keep-alive connection with the bytes read past the last response.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream =
            TcpStream::connect_timeout(&addr, RESPONSE_TIMEOUT).map_err(|error| format!("connect: {error}"))?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Ok(Connection { stream, buf: Vec::new() })
    }

    /// Reads more bytes; `Ok(0)` at EOF.
    fn more(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let count = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..count]);
        Ok(count)
    }

    fn read_answer(&mut self) -> Result<Answer, ReadFailure> {
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let nothing_yet = self.buf.is_empty();
            match self.more() {
                Ok(0) if nothing_yet => return Err(ReadFailure::ClosedBeforeAnswer("EOF".into())),
                Err(error) if nothing_yet && error.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(ReadFailure::ClosedBeforeAnswer(error.to_string()));
                }
                Ok(0) => return Err(ReadFailure::Broken(format!("EOF mid-head: {:?}", self.text()))),
                Ok(_) => {}
                Err(error) => return Err(ReadFailure::Broken(format!("{error} reading the head: {:?}", self.text()))),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| ReadFailure::Broken(format!("not a status line: {head:?}")))?;
        let field = |name: &str| {
            head.lines().find_map(|line| {
                let (field, value) = line.split_once(':')?;
                field.eq_ignore_ascii_case(name).then(|| value.trim().to_ascii_lowercase())
            })
        };
        let length: usize = field("content-length")
            .and_then(|length| length.parse().ok())
            .ok_or_else(|| ReadFailure::Broken(format!("no Content-Length: {head:?}")))?;
        let close = field("connection").is_some_and(|value| value.contains("close"));
        while self.buf.len() < length {
            match self.more() {
                Ok(0) => {
                    return Err(ReadFailure::Broken(format!("EOF with {} of {length} body bytes", self.buf.len())));
                }
                Ok(_) => {}
                Err(error) => return Err(ReadFailure::Broken(format!("{error} reading the body of {head:?}"))),
            }
        }
        let body = self.buf.drain(..length).collect();
        Ok(Answer { status, head, body, close })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// What all the clients saw, shared between them.
#[derive(Default)]
struct Tally {
    /// Responses received, whatever their status.
    responses: AtomicUsize,
    /// Responses with a 2xx status.
    successes: AtomicUsize,
    /// Requests sent again because their connection closed before any answer.
    resends: AtomicUsize,
    /// Connections opened, the first of each client's included.
    connections: AtomicUsize,
    /// Every failed request, with what was seen.
    failures: Mutex<Vec<String>>,
    /// Set when a client gives up (the deadline passed), so the others stop too.
    stop: AtomicBool,
}

impl Tally {
    fn fail(&self, detail: String) {
        self.failures.lock().unwrap().push(detail);
    }
}

/// One client: `REQUESTS_PER_CLIENT` GETs on one keep-alive connection, reconnecting whenever the
/// server ends it.
fn run_client(addr: SocketAddr, client: usize, tally: &Tally, deadline: Instant) {
    let mut connection: Option<Connection> = None;
    for index in 0..REQUESTS_PER_CLIENT {
        if tally.stop.load(Ordering::Relaxed) {
            return;
        }
        if Instant::now() > deadline {
            tally.fail(format!("client {client}: deadline passed before request {index}"));
            tally.stop.store(true, Ordering::Relaxed);
            return;
        }
        // Alternate the echo backend's small fixed answer with its JSON description of the request.
        let target = if index % 2 == 0 { "/ping".to_string() } else { format!("/soak/{client}/{index}") };
        let request = format!("GET {target} HTTP/1.1\r\nHost: lb\r\nUser-Agent: soak-{client}\r\n\r\n");
        let mut resends = 0;
        let answer = loop {
            let open = match connection.take() {
                Some(open) => Ok(open),
                None => {
                    tally.connections.fetch_add(1, Ordering::Relaxed);
                    Connection::open(addr)
                }
            };
            let mut open = match open {
                Ok(open) => open,
                Err(error) => break Err(error),
            };
            let sent = open.stream.write_all(request.as_bytes());
            let outcome = match sent {
                Ok(()) => open.read_answer(),
                Err(error) => Err(ReadFailure::ClosedBeforeAnswer(format!("write: {error}"))),
            };
            match outcome {
                Ok(answer) => {
                    if !answer.close {
                        connection = Some(open);
                    }
                    break Ok(answer);
                }
                Err(ReadFailure::ClosedBeforeAnswer(_)) if resends < MAX_RESENDS => {
                    resends += 1;
                    tally.resends.fetch_add(1, Ordering::Relaxed);
                }
                Err(ReadFailure::ClosedBeforeAnswer(cause) | ReadFailure::Broken(cause)) => break Err(cause),
            }
        };
        match answer {
            Ok(answer) => {
                tally.responses.fetch_add(1, Ordering::Relaxed);
                let body = String::from_utf8_lossy(&answer.body);
                let expected_body = if target == "/ping" {
                    body.starts_with("pong from backend :")
                } else {
                    body.contains(&format!("\"path\":\"{target}\""))
                };
                if (200..300).contains(&answer.status) && expected_body {
                    tally.successes.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.fail(format!("client {client} request {index} GET {target}: {}{body}", answer.head));
                }
            }
            Err(cause) => tally.fail(format!("client {client} request {index} GET {target}: no response: {cause}")),
        }
    }
}

#[test]
fn twenty_thousand_requests_survive_a_backend_restart_and_leave_nothing_behind() {
    let started = Instant::now();
    let mut backends: Vec<EchoBackend> =
        ["soak-0", "soak-1", "soak-2"].iter().map(|name| EchoBackend::start(&["--name", name])).collect();
    let urls: Vec<String> = backends.iter().map(EchoBackend::url).collect();
    let lb = LoadBalancer::start(&config(&urls, "\"workers\": 64"));
    let pid = lb.pid();

    // Start-up has settled once every backend has had its first probe.
    wait_until(Duration::from_secs(5), "the start-up health probes", || {
        lb.metrics()["backends"].as_array().unwrap().iter().all(|backend| backend["last_checked"].is_string())
    });
    let start_threads = lowest_over(Duration::from_millis(500), || thread_count(pid));
    let start_fds = lowest_over(Duration::from_millis(500), || fd_count(pid));
    let (start_rss, _) = lb.memory_kib();

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + SOAK_DEADLINE;
    let addr = lb.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let tally = Arc::clone(&tally);
            thread::spawn(move || run_client(addr, client, &tally, deadline))
        })
        .collect();

    // Kill the middle backend a third of the way through, restart it on its port at two thirds.
    let victim_port = backends[1].port;
    let soak_started = Instant::now();
    let mut killed_at = None;
    let mut restarted_at = None;
    let mut peak_threads = 0;
    let mut peak_fds = 0;
    while !clients.iter().all(|client| client.is_finished()) {
        let done = tally.responses.load(Ordering::Relaxed);
        if killed_at.is_none() && done >= TOTAL_REQUESTS / 3 {
            backends[1].kill();
            killed_at = Some(done);
        }
        if killed_at.is_some() && restarted_at.is_none() && done >= TOTAL_REQUESTS * 2 / 3 {
            backends[1] = EchoBackend::start_on(victim_port, &["--name", "soak-1"]);
            restarted_at = Some(done);
        }
        peak_threads = peak_threads.max(thread_count(pid));
        peak_fds = peak_fds.max(fd_count(pid));
        thread::sleep(Duration::from_millis(5));
    }
    for client in clients {
        client.join().unwrap();
    }
    let soak_time = soak_started.elapsed();

    let responses = tally.responses.load(Ordering::Relaxed);
    let successes = tally.successes.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap().clone();
    let shown: Vec<&String> = failures.iter().take(20).collect();
    assert!(failures.is_empty(), "{} of {TOTAL_REQUESTS} requests failed; the first: {shown:#?}", failures.len());
    assert_eq!(successes, TOTAL_REQUESTS, "every request got a 2xx");
    assert_eq!(responses, TOTAL_REQUESTS);
    assert!(responses >= 20_000);
    let resends = tally.resends.load(Ordering::Relaxed);
    assert_eq!(resends, RESENDS_ALLOWED, "requests sent again after their connection closed without an answer");
    assert!(
        killed_at.is_some() && restarted_at.is_some(),
        "the backend was killed ({killed_at:?}) and restarted ({restarted_at:?}) midway"
    );

    // Everything the soak used goes away: pair threads at once, pooled backend connections once the
    // health thread prunes them (idle for 4 s).
    let (threads_now, fds_now) = wait_for_rest(pid, start_threads, start_fds);
    // Healthy again by the active checks. The passive checks may still hold the restarted one out
    // ("ejected") until its cooldown ends and a trial request passes: that is their job.
    wait_until(Duration::from_secs(10), "all three backends passing their health checks again", || {
        lb.metrics()["backends"].as_array().unwrap().iter().all(|backend| backend["state"] != "unhealthy")
    });
    let metrics = lb.metrics();
    assert_eq!(metrics["open_connections"], 1, "only the metrics request's own connection is open: {metrics}");
    for backend in metrics["backends"].as_array().unwrap() {
        assert_eq!(backend["active_connections"], 0, "nothing in flight: {backend}");
    }
    assert_eq!(metrics["total_requests"], responses as u64, "every response counted once, nothing else: {metrics}");
    assert_eq!(metrics["success_requests"], responses as u64, "{metrics}");
    assert_eq!(metrics["failed_requests"], 0, "{metrics}");
    let retries = metrics["retry_attempts"].as_u64().unwrap();
    let victim = &metrics["backends"][1];
    assert_eq!(victim["url"], format!("http://127.0.0.1:{victim_port}"));
    assert!(victim["total_failures"].as_u64().unwrap() > 0, "the killed backend's failures were recorded: {victim}");

    let (rss, peak_rss) = lb.memory_kib();
    eprintln!(
        "soak: {responses} responses in {soak_time:?} ({:.0}/s) over {} connections, {} resent after a \
         closed keep-alive connection, {retries} retries by the load balancer; killed at {killed_at:?}, \
         restarted at {restarted_at:?}; threads {start_threads} at rest, {peak_threads} at peak, \
         {threads_now} after; fds {start_fds} at rest, {peak_fds} at peak, {fds_now} after; \
         RSS {start_rss} KiB at rest, {rss} KiB after, {peak_rss} KiB peak; test time {:?}",
        responses as f64 / soak_time.as_secs_f64(),
        tally.connections.load(Ordering::Relaxed),
        tally.resends.load(Ordering::Relaxed),
        started.elapsed(),
    );
    assert!(peak_rss < PEAK_RSS_BOUND_KIB, "peak RSS {peak_rss} KiB is over the bound of {PEAK_RSS_BOUND_KIB} KiB");
}
