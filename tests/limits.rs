//! Limits and timeouts, each set small in the config and checked through the real binary: a request
//! over a size limit gets its status (431, 414, 413) and the connection closes with nothing sent to
//! a backend; a slow or silent client is answered 408 or dropped after its timeout; a backend that
//! does not accept in time counts as a failed connect; a client that stops reading is dropped; and
//! connections beyond `maxConnections` are refused while those already open are still served.
//!
//! Backends here record every byte they receive on connections other than health probes, so "nothing
//! reached the backend" is checked on the wire. Health checks run once at start-up only (`1m`).

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Client, EchoBackend, LoadBalancer, ScriptedBackend, answer_health, assert_refused, assert_took, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// A config over `servers` with health probes out of the way and extra top-level keys (a JSON
/// fragment, may be empty).
fn lb_config(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
    let extra = if extra.is_empty() { String::new() } else { format!("{extra},") };
    format!("{{{extra} \"healthCheckInterval\": \"1m\", \"servers\": [{}]}}", list.join(", "))
}

/// One connection a recording backend accepted: every byte read on it, and whether it ended.
#[derive(Default)]
struct Connection {
    bytes: Vec<u8>,
    heads: Vec<String>,
    finished: bool,
}

/// What reached a recording backend, connection by connection.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Connection>>>);

impl Received {
    fn is_probe(connection: &Connection) -> bool {
        connection.bytes.starts_with(b"GET /health ")
    }

    /// Every byte received on connections other than health probes, in connection order.
    fn bytes(&self) -> Vec<u8> {
        let connections = self.0.lock().unwrap();
        connections.iter().filter(|c| !Self::is_probe(c)).flat_map(|c| c.bytes.iter().copied()).collect()
    }

    /// The request line of every complete request head received (health probes left out).
    fn request_lines(&self) -> Vec<String> {
        let connections = self.0.lock().unwrap();
        connections
            .iter()
            .filter(|c| !Self::is_probe(c))
            .flat_map(|c| c.heads.iter().map(|head| head.lines().next().unwrap_or("").to_string()))
            .collect()
    }

    /// Waits until every connection the backend accepted has ended.
    fn wait_all_finished(&self) {
        wait_until(DEADLINE, "the backend's connections to end", || {
            self.0.lock().unwrap().iter().all(|connection| connection.finished)
        });
    }
}

/// A backend connection that records every byte read from it.
struct Tap {
    stream: TcpStream,
    received: Received,
    index: usize,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.stream.read(buf)?;
        self.received.0.lock().unwrap()[self.index].bytes.extend_from_slice(&buf[..count]);
        Ok(count)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.received.0.lock().unwrap()[self.index].finished = true;
    }
}

impl Tap {
    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if self.read(&mut byte).ok()? == 0 {
                return None;
            }
            line.push(byte[0]);
        }
        line.truncate(line.len() - 2);
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    fn head(&mut self) -> Option<String> {
        let mut head = String::new();
        loop {
            let line = self.line()?;
            head.push_str(&line);
            head.push_str("\r\n");
            if line.is_empty() {
                return Some(head);
            }
        }
    }

    /// Reads the body the head announces (Content-Length or chunked).
    fn body(&mut self, head: &str) -> Option<()> {
        let lower = head.to_ascii_lowercase();
        if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
            loop {
                let size = usize::from_str_radix(self.line()?.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    return Some(());
                }
                let mut chunk = vec![0u8; size + 2];
                self.read_exact(&mut chunk).ok()?;
            }
        }
        let length = common::content_length(&lower).unwrap_or(0);
        let mut body = vec![0u8; length];
        self.read_exact(&mut body).ok()
    }
}

/// When a recording backend answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// After reading the whole request: `200 ok`.
    AfterBody,
    /// Right after the head, without waiting for the body: `200 ok`, then it keeps reading.
    AfterHead,
}

/// A backend that records every byte it receives (health probes are answered and told apart).
fn recording_backend(answer: Answer) -> (ScriptedBackend, Received) {
    let received = Received::default();
    let record = received.clone();
    let backend = ScriptedBackend::start(move |stream, _| {
        let index = {
            let mut connections = record.0.lock().unwrap();
            connections.push(Connection::default());
            connections.len() - 1
        };
        let mut tap = Tap { stream, received: record.clone(), index };
        while let Some(head) = tap.head() {
            if answer_health(&mut tap.stream, &head) {
                return;
            }
            record.0.lock().unwrap()[index].heads.push(head.clone());
            if answer == Answer::AfterHead {
                let _ = tap.stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let mut sink = [0u8; 65536];
                while matches!(tap.read(&mut sink), Ok(count) if count > 0) {}
                return;
            }
            if tap.body(&head).is_none() {
                return;
            }
            if tap.stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    });
    (backend, received)
}

/// A request expected to pass through to a backend answering `200 ok`, on a fresh connection.
fn assert_passes(lb: &LoadBalancer, raw: &[u8]) {
    let mut client = Client::connect(lb.addr());
    client.send(raw);
    let response = client.response(false);
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]), "{}", response.head);
}

/// A `GET` head of exactly `length` bytes, padded with an `X-Pad` field.
fn head_of_length(length: usize) -> Vec<u8> {
    let bare = "GET /padded HTTP/1.1\r\nHost: lb\r\nX-Pad: \r\n\r\n".len();
    let pad = "p".repeat(length - bare);
    let head = format!("GET /padded HTTP/1.1\r\nHost: lb\r\nX-Pad: {pad}\r\n\r\n").into_bytes();
    assert_eq!(head.len(), length);
    head
}

/// Writes and ignores failures: for bytes the load balancer may refuse before reading them all.
fn send_regardless(client: &mut Client, bytes: &[u8]) {
    let _ = client.stream.write_all(bytes);
}

/// The address of the admin listener (started with `"adminListen": "127.0.0.2:0"`, so that its
/// log line cannot be mistaken for the main listener's), where metrics requests do not count as
/// open client connections.
fn admin_addr(lb: &LoadBalancer) -> SocketAddr {
    let line = lb.log.wait_for(" on 127.0.0.2:", DEADLINE);
    let rest = line.split(" on ").nth(1).unwrap();
    rest.split(": ").next().unwrap().parse().unwrap()
}

fn admin_metrics(admin: SocketAddr) -> serde_json::Value {
    let response = common::request(admin, "GET /lb-metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// Sends `bytes` on a clone of `stream` one byte every `pace`, until all are sent, a write fails,
/// or the returned guard drops.
struct Trickle(Arc<AtomicBool>);

impl Trickle {
    fn start(stream: &TcpStream, bytes: Vec<u8>, pace: Duration) -> Trickle {
        let mut stream = stream.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            for byte in bytes {
                if stopped.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                    break;
                }
                thread::sleep(pace);
            }
        });
        Trickle(stop)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A head that never ends: the request line, a field and an endless value.
fn endless_head() -> Vec<u8> {
    let mut head = b"GET /slow HTTP/1.1\r\nHost: lb\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 600));
    head
}

#[test]
fn max_header_bytes_in_either_form_refuses_a_larger_head_with_431() {
    for limit in ["\"2KiB\"", "2048"] {
        let (backend, received) = recording_backend(Answer::AfterBody);
        // maxUriBytes may not exceed maxHeaderBytes, and its default (8 KiB) does.
        let extra = format!("\"maxHeaderBytes\": {limit}, \"maxUriBytes\": 1024");
        let lb = LoadBalancer::start(&lb_config(&[backend.url()], &extra));

        assert_passes(&lb, &head_of_length(2048));

        let mut client = Client::connect(lb.addr());
        client.send(&head_of_length(2049));
        assert_refused(&mut client, 431, "Request Header Fields Too Large: request head too large");

        assert_eq!(received.request_lines(), ["GET /padded HTTP/1.1"], "only the head within the limit ({limit})");
        assert_eq!(lb.get("/ping").status, 200, "still serving");
    }
}

#[test]
fn max_uri_bytes_refuses_a_longer_target_with_414() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"maxUriBytes\": 1024"));
    let target = |length: usize| format!("/{}", "u".repeat(length - 1));

    assert_passes(&lb, format!("GET {} HTTP/1.1\r\nHost: lb\r\n\r\n", target(1024)).as_bytes());

    let mut client = Client::connect(lb.addr());
    client.send(format!("GET {} HTTP/1.1\r\nHost: lb\r\n\r\n", target(1025)).as_bytes());
    assert_refused(&mut client, 414, "URI Too Long: request target too long");

    assert_eq!(received.request_lines(), [format!("GET {} HTTP/1.1", target(1024))]);
}

#[test]
fn max_headers_refuses_more_fields_with_431() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"maxHeaders\": 10"));
    let request = |fields: usize| {
        let mut raw = "GET /fields HTTP/1.1\r\nHost: lb\r\n".to_string();
        for index in 1..fields {
            raw.push_str(&format!("X-Field-{index}: {index}\r\n"));
        }
        raw.push_str("\r\n");
        raw.into_bytes()
    };

    assert_passes(&lb, &request(10));

    let mut client = Client::connect(lb.addr());
    client.send(&request(11));
    assert_refused(&mut client, 431, "Request Header Fields Too Large: request head too large");

    assert_eq!(received.request_lines(), ["GET /fields HTTP/1.1"]);
}

#[test]
fn max_body_bytes_refuses_a_longer_content_length_at_once_with_413() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    // A long body timeout: had the load balancer waited for the body, the client would time out.
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"maxBodyBytes\": 1000, \"bodyReadTimeout\": \"1m\""));

    let mut at_limit = b"POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000\r\n\r\n".to_vec();
    at_limit.extend_from_slice(&[b'b'; 1000]);
    assert_passes(&lb, &at_limit);

    // Only the head is sent: the answer must come without the body.
    let mut client = Client::connect(lb.addr());
    client.send(b"POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: 1001\r\n\r\n");
    assert_refused(&mut client, 413, "Content Too Large");

    let mut client = Client::connect(lb.addr());
    client.send(b"PUT /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000000\r\n\r\n");
    assert_refused(&mut client, 413, "Content Too Large");

    assert_eq!(received.request_lines(), ["POST /upload HTTP/1.1"], "only the body within the limit");
}

/// A chunked body of chunks of the given sizes, each filled with its index's letter.
fn chunked(sizes: &[usize]) -> Vec<u8> {
    let mut body = Vec::new();
    for (index, &size) in sizes.iter().enumerate() {
        body.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a' + (index % 26) as u8, size));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

#[test]
fn max_body_bytes_refuses_a_chunked_body_in_its_first_64_kib_before_any_byte_reaches_a_backend() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"maxBodyBytes\": 1000"));
    let head = b"POST /chunks HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n";

    assert_passes(&lb, &[&head[..], &chunked(&[400, 400, 200])].concat());

    // The third chunk crosses the limit: refused, and not even the first two reach the backend.
    let mut client = Client::connect(lb.addr());
    send_regardless(&mut client, &[&head[..], &chunked(&[400, 400, 400])].concat());
    assert_refused(&mut client, 413, "Content Too Large: the request body is over the limit");

    assert_eq!(received.request_lines(), ["POST /chunks HTTP/1.1"], "only the body within the limit");
}

/// The payload bytes of the complete chunks at the start of `body`.
fn chunked_payload(mut body: &[u8]) -> usize {
    let mut total = 0;
    while let Some(end) = body.windows(2).position(|pair| pair == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap(), 16).unwrap();
        if size == 0 || body.len() < end + 2 + size + 2 {
            break;
        }
        total += size;
        body = &body[end + 2 + size + 2..];
    }
    total
}

#[test]
fn max_body_bytes_cuts_a_streamed_chunked_body_at_the_chunk_that_crosses_it() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"maxBodyBytes\": \"100KiB\""));
    let mut raw = b"POST /stream HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // 64 KiB are read ahead, the rest streamed; the seventh chunk takes the total to 112 KiB.
    raw.extend_from_slice(&chunked(&[16 * 1024; 8]));

    let mut client = Client::connect(lb.addr());
    send_regardless(&mut client, &raw);
    assert_refused(&mut client, 413, "Content Too Large: the request body is over the limit");

    // The backend's side may still be on its way: the answer can overtake it.
    wait_until(DEADLINE, "the streamed request at the backend", || !received.request_lines().is_empty());
    received.wait_all_finished();
    assert_eq!(received.request_lines(), ["POST /stream HTTP/1.1"]);
    let bytes = received.bytes();
    let body_start = bytes.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
    let payload = chunked_payload(&bytes[body_start..]);
    assert!((64 * 1024..=100 * 1024).contains(&payload), "the backend got {payload} payload bytes");
    assert!(!bytes.ends_with(b"0\r\n\r\n"), "the backend never saw the body end");
    assert_eq!(lb.metrics()["backends"][0]["total_failures"], 0, "the client's fault, not the backend's");
}

#[test]
fn header_read_timeout_answers_a_slowloris_head_with_408_counted_from_its_first_byte() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let timeout = Duration::from_millis(500);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"headerReadTimeout\": \"500ms\""));

    // A byte every 100 ms never lets a single read wait 500 ms, yet the head must be done by then.
    let mut client = Client::connect(lb.addr());
    let started = Instant::now();
    let trickle = Trickle::start(&client.stream, endless_head(), Duration::from_millis(100));
    assert_refused(&mut client, 408, "Request Timeout: the request head stalled");
    assert_took(started.elapsed(), timeout, "the 408 for a stalled head");
    drop(trickle);

    // On a kept-alive connection the clock starts at the next head's first byte, not at the end of
    // the previous exchange: after an idle gap longer than the timeout, the head still gets its
    // full time.
    let mut client = Client::connect(lb.addr());
    client.send(b"GET /first HTTP/1.1\r\nHost: lb\r\n\r\n");
    let first = client.response(false);
    assert_eq!((first.status, first.header("connection")), (200, None));
    thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let trickle = Trickle::start(&client.stream, endless_head(), Duration::from_millis(100));
    assert_refused(&mut client, 408, "Request Timeout: the request head stalled");
    assert_took(started.elapsed(), timeout, "the 408 counted from the head's first byte");
    drop(trickle);

    // A new connection that never sends a byte is closed silently.
    let started = Instant::now();
    let mut silent = Client::connect(lb.addr());
    assert!(silent.is_closed(), "closed without a word");
    assert_took(started.elapsed(), timeout, "the close of a silent connection");

    assert_eq!(received.request_lines(), ["GET /first HTTP/1.1"], "no part of a stalled head reached the backend");
    assert!(received.bytes().starts_with(b"GET /first HTTP/1.1\r\n"));
}

#[test]
fn idle_timeout_closes_a_kept_alive_connection_silently() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let timeout = Duration::from_millis(300);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"idleTimeout\": \"300ms\""));
    let mut client = Client::connect(lb.addr());
    client.send(b"GET /one HTTP/1.1\r\nHost: lb\r\n\r\n");
    let one = client.response(false);
    assert_eq!((one.status, one.header("connection")), (200, None), "kept alive");

    let sent = Instant::now();
    client.send(b"GET /two HTTP/1.1\r\nHost: lb\r\n\r\n");
    let two = client.response(false);
    assert_eq!((two.status, two.header("connection")), (200, None), "the same connection serves the next request");

    assert!(client.is_closed(), "closed without a byte once idle");
    assert_took(sent.elapsed(), timeout, "the close of an idle connection");
    assert_eq!(received.request_lines(), ["GET /one HTTP/1.1", "GET /two HTTP/1.1"]);
}

#[test]
fn body_read_timeout_answers_a_stalled_small_body_with_408_before_contacting_a_backend() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"bodyReadTimeout\": \"300ms\""));
    let mut client = Client::connect(lb.addr());
    let sent = Instant::now();
    client.send(b"POST /small HTTP/1.1\r\nHost: lb\r\nContent-Length: 100\r\n\r\nonly ten b");
    assert_refused(&mut client, 408, "Request Timeout: the request body stalled");
    assert_took(sent.elapsed(), Duration::from_millis(300), "the 408 for a stalled body");
    assert!(received.bytes().is_empty(), "a body read in advance stalled: nothing reached the backend");
    assert_eq!(lb.metrics()["backends"][0]["total_requests"], 0);
}

#[test]
fn body_read_timeout_answers_a_stalled_streamed_body_with_408_if_the_backend_has_not_answered() {
    let (backend, received) = recording_backend(Answer::AfterBody);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"bodyReadTimeout\": \"300ms\""));
    let mut raw = b"PUT /large HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'L'; 100_000]);
    let mut client = Client::connect(lb.addr());
    let sent = Instant::now();
    client.send(&raw);
    assert_refused(&mut client, 408, "Request Timeout: the request body stalled");
    assert_took(sent.elapsed(), Duration::from_millis(300), "the 408 for a stalled body");

    received.wait_all_finished();
    assert_eq!(received.request_lines(), ["PUT /large HTTP/1.1"], "the head was streamed on");
    let metrics = lb.metrics();
    assert_eq!(metrics["backends"][0]["total_failures"], 0, "the client's fault, not the backend's");
    assert_eq!(metrics["backends"][0]["active_connections"], 0);
}

#[test]
fn body_read_timeout_after_the_backend_answered_relays_that_answer_then_closes() {
    let (backend, received) = recording_backend(Answer::AfterHead);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"bodyReadTimeout\": \"300ms\""));
    let mut raw = b"PUT /early HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'E'; 100_000]);
    let mut client = Client::connect(lb.addr());
    client.send(&raw);
    let response = client.response(false);
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]), "{}", response.head);
    // The head was framed before the body stalled, so it may lack `Connection: close`; what
    // matters is that no 408 follows the backend's answer and the connection ends.
    assert!(client.is_closed(), "no 408 after the backend's answer; the connection just ends");
    assert_eq!(received.request_lines(), ["PUT /early HTTP/1.1"]);
}

/// A loopback listener that never accepts and whose accept queue is full, so connecting to it
/// hangs (the kernel drops the SYNs). `None` if connects cannot be made to hang here.
struct Unaccepting {
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
    addr: SocketAddr,
}

fn unaccepting() -> Option<Unaccepting> {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(_) => break,
        }
    }
    // Confirm: a connect now must time out, not succeed nor be refused.
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(error) if matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            Some(Unaccepting { _listener: listener, _queued: queued, addr })
        }
        _ => None,
    }
}

#[test]
fn connect_timeout_treats_a_backend_that_does_not_accept_as_a_failed_connect() {
    let hanging = unaccepting().expect("a full accept queue makes loopback connects hang");
    let hanging_url = format!("http://{}", hanging.addr);
    let live = EchoBackend::start(&[]);
    let timeout = Duration::from_millis(300);

    // Round robin starts with the hanging backend; the request is retried on the live one.
    let lb = LoadBalancer::start(&lb_config(&[hanging_url.clone(), live.url()], "\"connectTimeout\": \"300ms\""));
    let started = Instant::now();
    let response = lb.get("/ping");
    assert_eq!((response.status, response.text()), (200, format!("pong from backend :{}", live.port)));
    assert_took(started.elapsed(), timeout, "the retry after a connect that hung");
    lb.log.wait_for(&format!("cannot connect to {hanging_url}"), DEADLINE);
    let metrics = lb.metrics();
    assert_eq!(metrics["retry_attempts"], 1);
    assert_eq!(metrics["backends"][0]["total_failures"], 1, "the failed connect is the hanging backend's");
    assert_eq!(metrics["backends"][1]["total_failures"], 0);

    // With no other backend left, the client gets 502; the connection stays usable.
    let alone = LoadBalancer::start(&lb_config(&[hanging_url], "\"connectTimeout\": \"300ms\""));
    let mut client = Client::connect(alone.addr());
    for _ in 0..2 {
        let started = Instant::now();
        client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
        let response = client.response(false);
        assert_eq!((response.status, response.text().as_str()), (502, "Bad Gateway: no backend could answer"));
        assert_eq!(response.header("connection"), None, "a GET without a body keeps its connection");
        assert_took(started.elapsed(), timeout, "the 502 after a connect that hung");
    }
}

#[test]
fn write_timeout_drops_a_client_that_stops_reading_and_frees_the_backend() {
    let backend = EchoBackend::start(&[]);
    let lb =
        LoadBalancer::start(&lb_config(&[backend.url()], "\"writeTimeout\": \"1s\", \"adminListen\": \"127.0.0.2:0\""));
    let admin = admin_addr(&lb);

    let mut stalled = Client::connect(lb.addr());
    let sent = Instant::now();
    stalled.send(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: lb\r\n\r\n");
    wait_until(DEADLINE, "the 1 GiB response to be under way", || {
        admin_metrics(admin)["backends"][0]["active_connections"] == 1
    });

    // Other clients are served meanwhile.
    let other = lb.get("/ping");
    assert_eq!((other.status, other.text()), (200, format!("pong from backend :{}", backend.port)));

    wait_until(DEADLINE, "the stalled client to be dropped and the backend freed", || {
        let metrics = admin_metrics(admin);
        metrics["open_connections"] == 0 && metrics["backends"][0]["active_connections"] == 0
    });
    assert_took(sent.elapsed(), Duration::from_secs(1), "the drop of a client that stopped reading");

    // What the client can still read is what was buffered before the drop, then the end.
    let mut head = [0u8; 17];
    stalled.stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    let mut total = head.len() as u64;
    let mut chunk = vec![0u8; 1 << 20];
    let draining = Instant::now();
    loop {
        match stalled.stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(count) => total += count as u64,
        }
        assert!(draining.elapsed() < DEADLINE, "the connection did not end");
    }
    assert!(total < 1 << 30, "the response was cut short ({total} bytes)");
    assert_eq!(lb.get("/ping").status, 200, "still serving");
}

#[test]
fn max_connections_refuses_more_with_503_while_open_ones_are_served() {
    let backend = EchoBackend::start(&[]);
    let lb =
        LoadBalancer::start(&lb_config(&[backend.url()], "\"maxConnections\": 3, \"adminListen\": \"127.0.0.2:0\""));
    let admin = admin_addr(&lb);
    let pong = format!("pong from backend :{}", backend.port);

    let mut open: Vec<Client> = (0..3).map(|_| Client::connect(lb.addr())).collect();
    wait_until(DEADLINE, "three open connections", || admin_metrics(admin)["open_connections"] == 3);

    let mut refused = Client::connect(lb.addr());
    assert_refused(&mut refused, 503, "Service Unavailable: too many connections");
    assert_eq!(admin_metrics(admin)["open_connections"], 3, "the refused connection was never counted");

    for client in &mut open {
        client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
        let response = client.response(false);
        assert_eq!((response.status, response.text(), response.header("connection")), (200, pong.clone(), None));
    }

    drop(open);
    wait_until(DEADLINE, "the closed connections to be released", || admin_metrics(admin)["open_connections"] == 0);
    let response = lb.get("/ping");
    assert_eq!((response.status, response.text()), (200, pong));
}

#[test]
fn a_low_open_file_limit_lowers_max_connections_with_a_warning() {
    let backend = EchoBackend::start(&[]);
    // 200 descriptors, less 2 per worker and 64 kept back: room for 128 client connections.
    let lb = LoadBalancer::start_with_open_file_limit(
        &lb_config(&[backend.url()], "\"workers\": 4, \"adminListen\": \"127.0.0.2:0\""),
        200,
    );
    let admin = admin_addr(&lb);
    let warning = lb.log.wait_for("the open-file limit 200", DEADLINE);
    assert!(warning.contains("maxConnections is 10000") && warning.contains("serving at most 128"), "{warning}");

    // In batches of 16, each counted before the next, so the four workers' hand-off queue (64)
    // never fills and answers 503 for being at capacity.
    let mut open: Vec<Client> = Vec::new();
    for batch in 1..=8 {
        open.extend((0..16).map(|_| Client::connect(lb.addr())));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let counted = admin_metrics(admin)["open_connections"].clone();
            if counted == 16 * batch {
                break;
            }
            let log = lb.log.all().join("\n");
            assert!(
                Instant::now() < deadline,
                "batch {batch}: {counted} connections counted, not {}\n{log}",
                16 * batch
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut refused = Client::connect(lb.addr());
    assert_refused(&mut refused, 503, "Service Unavailable: too many connections");

    let last = open.last_mut().unwrap();
    last.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(last.response(false).status, 200, "the connections within the limit are served");
    drop(open);
    wait_until(DEADLINE, "the closed connections to be released", || admin_metrics(admin)["open_connections"] == 0);
    assert_eq!(lb.get("/ping").status, 200);
}

#[test]
fn an_early_answer_reaches_the_client_while_its_upload_is_still_stalled() {
    let (backend, _received) = recording_backend(Answer::AfterHead);
    let lb = LoadBalancer::start(&lb_config(&[backend.url()], "\"bodyReadTimeout\": \"1m\""));
    let mut raw = b"PUT /early HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'E'; 100_000]);
    let mut client = Client::connect(lb.addr());
    client.send(&raw);
    // The upload stalls for far longer than this read may wait: the answer must not be held
    // back until the body completes or times out.
    client.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let response = client.response(false);
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
}

/// A `GET` head with exactly `fields` header fields (`Host` and numbered `X-Field-N`s).
fn head_with_fields(fields: usize) -> Vec<u8> {
    let mut raw = "GET /fields HTTP/1.1\r\nHost: lb\r\n".to_string();
    for index in 1..fields {
        raw.push_str(&format!("X-Field-{index}: {index}\r\n"));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// Sends `raw` to the load balancer and returns the bundled echo backend's JSON description of
/// the request it received, checking that it got there with the load balancer's own fields.
fn echo_of(lb: &LoadBalancer, raw: &[u8]) -> serde_json::Value {
    let mut client = Client::connect(lb.addr());
    client.send(raw);
    let response = client.response(false);
    assert_eq!(response.status, 200, "{}{}", response.head, response.text());
    let echoed = response.json();
    let headers = echoed["headers"].as_array().unwrap();
    assert!(headers.iter().any(|pair| pair[0] == "X-Forwarded-For"), "forwarded by the load balancer");
    echoed
}

#[test]
fn heads_at_the_limits_reach_the_echo_backend_and_one_more_gets_431() {
    let backend = EchoBackend::start(&[]);
    // The defaults, and the largest limits the config allows.
    for (extra, max_bytes, max_fields) in
        [("", 64 * 1024, 100), ("\"maxHeaderBytes\": \"1MiB\", \"maxHeaders\": 256", 1 << 20, 256)]
    {
        let lb = LoadBalancer::start(&lb_config(&[backend.url()], extra));

        let head = head_of_length(max_bytes);
        let echoed = echo_of(&lb, &head);
        let pad = echoed["headers"].as_array().unwrap().iter().find(|pair| pair[0] == "X-Pad").unwrap()[1].clone();
        let bare = "GET /padded HTTP/1.1\r\nHost: lb\r\nX-Pad: \r\n\r\n".len();
        assert_eq!(pad.as_str().map(str::len), Some(max_bytes - bare), "the whole head arrived ({max_bytes} bytes)");

        let echoed = echo_of(&lb, &head_with_fields(max_fields));
        let sent: Vec<String> = (1..max_fields).map(|index| format!("X-Field-{index}")).collect();
        let received: Vec<String> = echoed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|pair| pair[0].as_str().filter(|name| name.starts_with("X-Field-")).map(str::to_string))
            .collect();
        assert_eq!(received, sent, "every one of {max_fields} fields arrived");

        let mut client = Client::connect(lb.addr());
        send_regardless(&mut client, &head_of_length(max_bytes + 1));
        assert_refused(&mut client, 431, "Request Header Fields Too Large: request head too large");
        let mut client = Client::connect(lb.addr());
        client.send(&head_with_fields(max_fields + 1));
        assert_refused(&mut client, 431, "Request Header Fields Too Large: request head too large");
        assert_eq!(lb.get("/ping").status, 200, "still serving");
    }
}
