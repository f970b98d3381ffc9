//! Retry rules, each checked with backends that record what reached them: a failed connect is
//! always retried; a backend that read the request and hung up is retried only for idempotent
//! requests (GET, HEAD, OPTIONS, PUT, DELETE, TRACE; method by method) whose body was kept, up to
//! exactly 64 KiB of payload with either framing; a POST, PATCH or unknown method that reached a
//! backend is never replayed, nor is a response already under way; `maxRetries` bounds the
//! attempts exactly and `retryDelay` comes before each retry.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, LoadBalancer, ScriptedBackend, answer_health, content_length, read_head, read_request};

/// What a scripted backend saw: each request's head and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A backend that reads each request completely and then drops the connection unanswered.
fn dropping_backend() -> (ScriptedBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        if let Some(request) = read_request(&mut stream) {
            record.lock().unwrap().push(request);
        }
    });
    (backend, seen)
}

/// A backend that answers every request 200 with body `ok`.
fn answering_backend() -> (ScriptedBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        while let Some(request) = read_request(&mut stream) {
            record.lock().unwrap().push(request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (backend, seen)
}

/// Round robin over [first, second] with health checks out of the way: the first request of a
/// fresh load balancer goes to `first`.
fn balancer(first: &str, second: &str, extra: &str) -> LoadBalancer {
    LoadBalancer::start(&format!(
        "{{\"healthCheckInterval\": \"1m\", \"retryDelay\": \"10ms\", {extra} \"servers\": [\"{first}\", \"{second}\"]}}"
    ))
}

fn send(lb: &LoadBalancer, raw: &[u8]) -> common::Response {
    let mut client = Client::connect(lb.addr());
    client.send(raw);
    client.response(false)
}

#[test]
fn a_failed_connect_is_retried_even_for_post() {
    let dead = format!("http://127.0.0.1:{}", {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    let (live, seen) = answering_backend();
    let lb = balancer(&dead, &live.url(), "");
    let response = send(&lb, b"POST /order HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].0.starts_with("POST /order HTTP/1.1\r\n"));
    assert_eq!(seen[0].1, b"abc");
    let metrics = lb.metrics();
    assert_eq!(metrics["retry_attempts"], 1);
    assert_eq!(metrics["backends"][0]["total_failures"], 1, "the failure is recorded on the dead backend");
}

#[test]
fn an_idempotent_request_with_a_kept_body_is_replayed_whole() {
    let (dropper, dropped) = dropping_backend();
    let (live, seen) = answering_backend();
    let lb = balancer(&dropper.url(), &live.url(), "");
    let body = vec![b'x'; 10_000];
    let mut raw = format!("PUT /doc HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(&body);
    let response = send(&lb, &raw);
    assert_eq!(response.status, 200);
    assert_eq!(dropped.lock().unwrap().len(), 1, "the first backend read the request");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, body, "the replay carried the whole body");
    assert_eq!(lb.metrics()["retry_attempts"], 1);
}

#[test]
fn a_post_that_reached_a_backend_is_never_replayed() {
    let (dropper, dropped) = dropping_backend();
    let (live, seen) = answering_backend();
    let lb = balancer(&dropper.url(), &live.url(), "");
    let response = send(&lb, b"POST /pay HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\n100.0");
    assert_eq!(response.status, 502);
    assert_eq!(dropped.lock().unwrap().len(), 1);
    assert!(seen.lock().unwrap().is_empty(), "the POST was not sent to a second backend");
    let metrics = lb.metrics();
    assert_eq!(metrics["retry_attempts"], 0);
    assert_eq!(metrics["failed_requests"], 1);
    assert_eq!(metrics["backends"][0]["total_failures"], 1);
}

#[test]
fn a_streamed_body_is_never_replayed() {
    let (dropper, dropped) = dropping_backend();
    let (live, seen) = answering_backend();
    let lb = balancer(&dropper.url(), &live.url(), "");
    let body = vec![b'y'; 200_000];
    let mut raw = format!("PUT /big HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(&body);
    let response = send(&lb, &raw);
    assert_eq!(response.status, 502);
    assert_eq!(dropped.lock().unwrap()[0].1.len(), body.len(), "the first backend got the streamed body");
    assert!(seen.lock().unwrap().is_empty(), "a body that was streamed on cannot be replayed");
}

#[test]
fn an_idempotent_get_is_retried_and_retries_are_bounded() {
    let (first, first_seen) = dropping_backend();
    let (second, second_seen) = dropping_backend();
    let lb = balancer(&first.url(), &second.url(), "\"maxRetries\": 5,");
    let response = send(&lb, b"GET /x HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(response.status, 502, "every backend failed");
    assert_eq!(response.text(), "Bad Gateway: no backend could answer");
    assert_eq!(first_seen.lock().unwrap().len(), 1, "each backend is tried once per request");
    assert_eq!(second_seen.lock().unwrap().len(), 1);
    assert_eq!(lb.metrics()["retry_attempts"], 1);

    let (third, _) = dropping_backend();
    let (fourth, fourth_seen) = answering_backend();
    let no_retries = balancer(&third.url(), &fourth.url(), "\"maxRetries\": 0,");
    assert_eq!(send(&no_retries, b"GET /x HTTP/1.1\r\nHost: lb\r\n\r\n").status, 502);
    assert!(fourth_seen.lock().unwrap().is_empty(), "maxRetries 0 means one attempt");
}

#[test]
fn a_slow_backend_gets_the_client_a_504() {
    let sleeper = ScriptedBackend::start(|mut stream, _| {
        if let Some(head) = read_head(&mut stream) {
            if answer_health(&mut stream, &head) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    });
    let (spare, spare_seen) = answering_backend();
    let lb = balancer(&sleeper.url(), &spare.url(), "\"requestTimeout\": \"300ms\",");
    let started = Instant::now();
    let response = send(&lb, b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(response.status, 504);
    common::assert_took(started.elapsed(), Duration::from_millis(300), "the 504 for a backend that does not answer");
    assert!(spare_seen.lock().unwrap().is_empty(), "a timeout is not retried: the backend may be working on it");
    assert_eq!(lb.metrics()["backends"][0]["total_failures"], 1);
}

/// An answer for `head`: 200 `ok`, without the body for a HEAD request.
fn ok_for(head: &str) -> &'static [u8] {
    if head.starts_with("HEAD ") {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    }
}

/// A backend that answers every request 200 `ok` (HEAD without the body).
fn answering_any_method() -> (ScriptedBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        while let Some(request) = read_request(&mut stream) {
            let answer = ok_for(&request.0);
            record.lock().unwrap().push(request);
            if stream.write_all(answer).is_err() {
                return;
            }
        }
    });
    (backend, seen)
}

#[test]
fn exactly_the_idempotent_methods_are_replayed_after_a_backend_hangs_up() {
    // (method, replayed on the second backend). Methods are case-sensitive: `get` is not GET.
    let table = [
        ("GET", true),
        ("HEAD", true),
        ("OPTIONS", true),
        ("PUT", true),
        ("DELETE", true),
        ("TRACE", true),
        ("POST", false),
        ("PATCH", false),
        ("PURGE", false),
        ("FOO", false),
        ("get", false),
    ];
    for (method, replayed) in table {
        let (dropper, dropped) = dropping_backend();
        let (live, seen) = answering_any_method();
        let lb = balancer(&dropper.url(), &live.url(), "");
        let mut client = Client::connect(lb.addr());
        client.send(format!("{method} /thing HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
        let response = client.response(method == "HEAD");
        let dropped = dropped.lock().unwrap().clone();
        assert_eq!(dropped.len(), 1, "{method}: the first backend read the request");
        assert!(dropped[0].0.starts_with(&format!("{method} /thing HTTP/1.1\r\n")), "{method}: {dropped:?}");
        let seen = seen.lock().unwrap().clone();
        let metrics = lb.metrics();
        if replayed {
            assert_eq!(response.status, 200, "{method}: replayed and answered");
            assert_eq!(seen.len(), 1, "{method}: the second backend got it once");
            assert!(seen[0].0.starts_with(&format!("{method} /thing HTTP/1.1\r\n")), "{method}: {seen:?}");
            assert_eq!(metrics["retry_attempts"], 1, "{method}");
        } else {
            assert_eq!(response.status, 502, "{method}: not replayed");
            assert_eq!(response.text(), "Bad Gateway: the backend closed the connection without a response");
            assert!(seen.is_empty(), "{method}: the second backend saw nothing: {seen:?}");
            assert_eq!(metrics["retry_attempts"], 0, "{method}");
        }
    }
}

/// Byte `i` of a test body is `i % 251`, so a replay that lost or moved bytes shows.
fn patterned(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index % 251) as u8).collect()
}

/// Reads a chunked body (after its head) from a scripted backend's connection; the payload, and
/// the chunk sizes in order (the last, 0, included).
fn read_chunked(stream: &mut TcpStream) -> Option<(Vec<u8>, Vec<usize>)> {
    let mut reader = std::io::BufReader::new(stream);
    let mut body = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim_end().split(';').next()?, 16).ok()?;
        sizes.push(size);
        if size == 0 {
            // Trailers (none are forwarded) up to the empty line.
            loop {
                let mut trailer = String::new();
                reader.read_line(&mut trailer).ok()?;
                if trailer == "\r\n" {
                    return Some((body, sizes));
                }
                if trailer.is_empty() {
                    return None;
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
        if &crlf != b"\r\n" {
            return None;
        }
    }
}

/// A backend that reads one request (a `Content-Length` or chunked body) and, if `answer`, answers
/// it 200 `ok`; otherwise drops the connection unanswered. Records head and payload.
fn body_backend(answer: bool) -> (ScriptedBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        let Some(head) = read_head(&mut stream) else { return };
        if answer_health(&mut stream, &head) {
            return;
        }
        let body = if head.to_ascii_lowercase().contains("\r\ntransfer-encoding: chunked\r\n") {
            read_chunked(&mut stream).map(|(body, _)| body)
        } else {
            let mut body = vec![0u8; content_length(&head).unwrap_or(0)];
            stream.read_exact(&mut body).ok().map(|()| body)
        };
        let Some(body) = body else { return };
        record.lock().unwrap().push((head, body));
        if answer {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (backend, seen)
}

/// `length` payload bytes as chunks of at most 1024 bytes: the wire form is longer than the
/// payload, so a limit counted on the wire would show.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in body.chunks(1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

#[test]
fn a_body_of_exactly_64_kib_is_replayed_and_one_byte_more_is_not() {
    // MAX_KEPT_BODY in src/proxy.rs: 65,536 payload bytes. For chunked bodies the budget counts
    // decoded payload, not the chunk framing on the wire (whole chunks are kept while their total
    // stays within it).
    const KEPT: usize = 64 * 1024;
    for (framing, length, replayed) in [
        ("content-length", KEPT, true),
        ("content-length", KEPT + 1, false),
        ("chunked", KEPT, true),
        ("chunked", KEPT + 1, false),
    ] {
        let case = format!("{framing} {length}");
        let (dropper, dropped) = body_backend(false);
        let (live, seen) = body_backend(true);
        let lb = balancer(&dropper.url(), &live.url(), "");
        let body = patterned(length);
        let mut raw = if framing == "chunked" {
            let mut raw = b"PUT /upload HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(&chunked(&body));
            raw
        } else {
            format!("PUT /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: {length}\r\n\r\n").into_bytes()
        };
        if framing != "chunked" {
            raw.extend_from_slice(&body);
        }
        let response = send(&lb, &raw);
        let dropped = dropped.lock().unwrap().clone();
        assert_eq!(dropped.len(), 1, "{case}: the first backend read the request");
        assert!(dropped[0].1 == body, "{case}: the first backend got the whole body");
        let seen = seen.lock().unwrap().clone();
        if replayed {
            assert_eq!(response.status, 200, "{case}: kept, so replayed");
            assert_eq!(seen.len(), 1, "{case}");
            assert!(seen[0].1 == body, "{case}: the replay carried the whole body, byte for byte");
            assert_eq!(lb.metrics()["retry_attempts"], 1, "{case}");
        } else {
            assert_eq!(response.status, 502, "{case}: streamed, so not replayed");
            assert!(seen.is_empty(), "{case}: the second backend saw nothing");
            assert_eq!(lb.metrics()["retry_attempts"], 0, "{case}");
        }
    }
}

#[test]
fn max_retries_bounds_the_attempts_exactly() {
    for max_retries in [1usize, 3] {
        let backends: Vec<(ScriptedBackend, Seen)> = (0..5).map(|_| dropping_backend()).collect();
        let servers: Vec<String> = backends.iter().map(|(backend, _)| format!("\"{}\"", backend.url())).collect();
        let lb = LoadBalancer::start(&format!(
            "{{\"healthCheckInterval\": \"1m\", \"retryDelay\": \"0s\", \"maxRetries\": {max_retries}, \
             \"servers\": [{}]}}",
            servers.join(", ")
        ));
        let response = send(&lb, b"GET /bounded HTTP/1.1\r\nHost: lb\r\n\r\n");
        assert_eq!(response.status, 502, "maxRetries {max_retries}: five failing backends, too few retries");
        let per_backend: Vec<usize> = backends.iter().map(|(_, seen)| seen.lock().unwrap().len()).collect();
        assert_eq!(
            per_backend.iter().sum::<usize>(),
            max_retries + 1,
            "maxRetries {max_retries}: exactly maxRetries + 1 attempts: {per_backend:?}"
        );
        assert!(per_backend.iter().all(|&count| count <= 1), "never the same backend twice: {per_backend:?}");
        assert_eq!(lb.metrics()["retry_attempts"], max_retries as u64);
        let line = lb.log.wait_for("\"GET /bounded HTTP/1.1\" 502", Duration::from_secs(5));
        assert!(line.ends_with(&format!("attempts={} pool=default", max_retries + 1)), "{line}");
    }
}

#[test]
fn retry_delay_comes_before_each_retry() {
    for (delay, retries) in [("300ms", 2u32), ("0s", 2)] {
        let backends: Vec<(ScriptedBackend, Seen)> = (0..3).map(|_| dropping_backend()).collect();
        let servers: Vec<String> = backends.iter().map(|(backend, _)| format!("\"{}\"", backend.url())).collect();
        let lb = LoadBalancer::start(&format!(
            "{{\"healthCheckInterval\": \"1m\", \"retryDelay\": \"{delay}\", \"maxRetries\": {retries}, \
             \"servers\": [{}]}}",
            servers.join(", ")
        ));
        let started = Instant::now();
        let response = send(&lb, b"GET /delayed HTTP/1.1\r\nHost: lb\r\n\r\n");
        let elapsed = started.elapsed();
        assert_eq!(response.status, 502);
        let attempts: usize = backends.iter().map(|(_, seen)| seen.lock().unwrap().len()).sum();
        assert_eq!(attempts, 3, "{delay}: three attempts, two retries");
        if delay == "300ms" {
            // Two pauses of 300 ms: at least 600 ms, and well under four times that.
            assert!(elapsed >= Duration::from_millis(600), "{delay}: took only {elapsed:?}");
            assert!(elapsed < Duration::from_millis(2_400), "{delay}: took {elapsed:?}");
        } else {
            // No pause at all: three loopback attempts take milliseconds; 600 ms is what the
            // two 300 ms pauses alone would cost.
            assert!(elapsed < Duration::from_millis(600), "{delay}: took {elapsed:?}");
        }
    }
}

/// How reading a connection to its end went.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// An orderly close (EOF).
    Closed,
    /// A reset.
    Reset,
}

/// Reads `stream` until the peer closes or resets it; a read timeout fails the test (it would
/// mean the connection stayed open).
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (received, Ending::Closed),
            Ok(count) => received.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return (received, Ending::Reset),
            Err(error) => panic!("the connection neither ended nor was reset: {error}; have {received:?}"),
        }
    }
}

/// A backend that reads each request, sends `partial` and resets the connection.
fn resetting_after(partial: &'static [u8]) -> (ScriptedBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        if let Some(request) = read_request(&mut stream) {
            record.lock().unwrap().push(request);
            let _ = stream.write_all(partial);
            let _ = stream.flush();
            // Linger 0: the close sends a reset, not a FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    });
    (backend, seen)
}

#[test]
fn a_response_already_under_way_is_never_retried() {
    // Only a status line, then a reset: nothing reached the client yet, so the load balancer
    // answers 502 itself, and does not try the next backend either.
    let (resetter, reset_seen) = resetting_after(b"HTTP/1.1 200 OK\r\n");
    let (live, seen) = answering_backend();
    let lb = balancer(&resetter.url(), &live.url(), "");
    let response = send(&lb, b"GET /half-head HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(response.status, 502);
    assert_eq!(response.text(), "Bad Gateway: the backend sent a malformed response");
    assert_eq!(reset_seen.lock().unwrap().len(), 1);
    assert!(seen.lock().unwrap().is_empty(), "a response had started: not retried");
    assert_eq!(lb.metrics()["retry_attempts"], 0);

    // A whole head and 10 of 100 body bytes, then a reset: the client has the head and those
    // bytes, then its connection ends, without the rest and without a second response.
    let (resetter, reset_seen) = resetting_after(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let (live, seen) = answering_backend();
    let lb = balancer(&resetter.url(), &live.url(), "");
    let mut stream = common::connect(lb.addr());
    stream.write_all(b"GET /half-body HTTP/1.1\r\nHost: lb\r\n\r\n").unwrap();
    let (received, _ending) = read_to_end(&mut stream);
    let received = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = received.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {received:?}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: 100"), "{head}");
    assert_eq!(body, "0123456789", "the bytes the backend sent, and nothing after them");
    assert_eq!(reset_seen.lock().unwrap().len(), 1);
    assert!(seen.lock().unwrap().is_empty(), "a response under way is never retried");
    let metrics = lb.metrics();
    assert_eq!(metrics["retry_attempts"], 0);
    assert_eq!(metrics["failed_requests"], 1);
}
