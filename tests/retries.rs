//! Retry rules, each checked with backends that record what reached them: a failed connect is
//! always retried; a backend that read the request and hung up is retried only for idempotent
//! requests whose body was kept; a POST that reached a backend is never replayed.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Client, LoadBalancer, ScriptedBackend, answer_health, read_head, read_request};

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
    let response = send(&lb, b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(response.status, 504);
    assert!(spare_seen.lock().unwrap().is_empty(), "a timeout is not retried: the backend may be working on it");
    assert_eq!(lb.metrics()["backends"][0]["total_failures"], 1);
}
