//! Framing and request smuggling, with raw bytes on both sides: every request the load balancer
//! and a backend could read two ways is refused with 400 and the connection closed, and not one
//! byte of it reaches the backend; accepted bodies are re-framed unambiguously; malformed backend
//! responses become 502 and their connection is not reused.

mod common;

use std::io::Write;

use common::{Client, LoadBalancer, Received, ScriptedBackend, answer_health, read_head, recording_backend};

/// No byte of the refused requests reached the backend, and the load balancer still serves.
fn assert_nothing_reached_the_backend_and_still_serving(received: &Received, lb: &LoadBalancer) {
    assert!(
        received.lock().unwrap().is_empty(),
        "bytes reached the backend: {:?}",
        String::from_utf8_lossy(&received.lock().unwrap())
    );
    assert_eq!(lb.get("/after").status, 200, "still serving");
}

fn balancer(backend: &ScriptedBackend) -> LoadBalancer {
    LoadBalancer::start(&format!("{{\"healthCheckInterval\": \"1m\", \"servers\": [\"{}\"]}}", backend.url()))
}

/// Sends `raw` on a fresh connection; returns the response and whether the connection closed.
fn exchange(lb: &LoadBalancer, raw: &[u8]) -> (common::Response, bool) {
    let mut client = Client::connect(lb.addr());
    client.send(raw);
    let response = client.response(false);
    let closed = client.is_closed();
    (response, closed)
}

#[test]
fn ambiguous_or_malformed_requests_get_400_and_nothing_reaches_the_backend() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let cases: [(&str, &[u8]); 20] = [
        ("cl_te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ("double_content_length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("content_length_list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde"),
        ("content_length_sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd"),
        ("content_length_hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd"),
        ("te_not_last_chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("te_unknown_only", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("te_in_http_1_0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bad_chunk_size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk_size_overflow",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n",
        ),
        (
            "bad_chunk_extension",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01b\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk_without_crlf",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        ),
        ("space_before_colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"),
        ("obsolete_line_folding", b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"),
        ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n"),
        ("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x00b\r\n\r\n"),
        ("invalid_header_name", b"GET / HTTP/1.1\r\nHost: a\r\nBad[Name]: x\r\n\r\n"),
        ("missing_host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("multiple_host_headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ];
    for (name, raw) in cases {
        let (response, closed) = exchange(&lb, raw);
        assert_eq!(response.status, 400, "{name}: {}", response.text());
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(closed, "{name}: the connection must close");
    }
    let (control_in_head, closed) = exchange(&lb, b"GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n");
    assert_eq!((control_in_head.status, closed), (400, true), "DEL in a value");
    assert_nothing_reached_the_backend_and_still_serving(&received, &lb);
}

#[test]
fn accepted_bodies_are_reframed_unambiguously() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let mut client = Client::connect(lb.addr());
    client.send(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello");
    assert_eq!(client.response(false).status, 200);
    client.send(
        b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3;name=\"v\"\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(client.response(false).status, 200);
    let seen = String::from_utf8(received.lock().unwrap().clone()).unwrap();
    assert_eq!(
        seen,
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\
         X-Forwarded-Proto: http\r\n\r\nhello\
         POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\
         X-Forwarded-Proto: http\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    );
}

#[test]
fn a_smuggled_request_in_a_body_stays_body() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let mut client = Client::connect(lb.addr());
    client.send(b"POST /outer HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /inner HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(client.response(false).status, 200);
    let seen = String::from_utf8(received.lock().unwrap().clone()).unwrap();
    let request_lines: Vec<&str> = seen.lines().filter(|line| line.ends_with("HTTP/1.1")).collect();
    assert_eq!(request_lines, ["POST /outer HTTP/1.1", "GET /inner HTTP/1.1", "GET /next HTTP/1.1"]);
    assert!(
        seen.contains("\r\n\r\nGET /inner HTTP/1.1\r\nHost: a\r\n\r\nGET /next"),
        "the inner request travelled as body: {seen}"
    );
}

/// A backend whose every answer is `response`, counting its connections.
fn answering(response: &'static [u8]) -> ScriptedBackend {
    ScriptedBackend::start(move |mut stream, _| {
        while let Some(head) = read_head(&mut stream) {
            if answer_health(&mut stream, &head) {
                return;
            }
            if stream.write_all(response).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_malformed_response_gets_502_and_its_connection_is_not_reused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ] {
        let backend = answering(Box::leak(response.to_vec().into_boxed_slice()));
        let lb = balancer(&backend);
        let mut client = Client::connect(lb.addr());
        client.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
        let first = client.response(false);
        assert_eq!(first.status, 502, "{:?}", String::from_utf8_lossy(response));
        assert_eq!(first.text(), "Bad Gateway: the backend sent a malformed response");
        let connections_before = backend.accepted.load(std::sync::atomic::Ordering::SeqCst);
        client.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(client.response(false).status, 502);
        let connections_after = backend.accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(connections_after, connections_before + 1, "a new backend connection for the second request");
    }
}

#[test]
fn a_response_with_both_length_and_chunked_reaches_the_client_as_chunked_only() {
    let backend =
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    let lb = balancer(&backend);
    let mut client = Client::connect(lb.addr());
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(response.body, b"ok");
}

#[test]
fn connect_gets_405_with_allow_and_nothing_reaches_the_backend() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    for raw in [
        &b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"[..],
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\nbytes for the tunnel",
        b"CONNECT 127.0.0.1:22 HTTP/1.0\r\n\r\n",
    ] {
        let (response, closed) = exchange(&lb, raw);
        assert_eq!(response.status, 405, "{}", response.text());
        assert_eq!(response.header("allow"), Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"));
        assert_eq!(
            response.text(),
            "Method Not Allowed: CONNECT is not forwarded: this is a reverse proxy, not a tunnel"
        );
        assert_eq!(response.header("connection"), Some("close"));
        assert!(closed, "the connection closes: what follows a CONNECT is not HTTP");
    }
    assert_nothing_reached_the_backend_and_still_serving(&received, &lb);
}

#[test]
fn options_asterisk_is_forwarded_and_the_asterisk_with_any_other_method_is_400() {
    let (first, first_received) = recording_backend();
    let (second, second_received) = recording_backend();
    // url_hash picks the backend by the target, here one that is not a path.
    let lb = LoadBalancer::start(&format!(
        "{{\"algorithm\": \"url_hash\", \"healthCheckInterval\": \"1m\", \"servers\": [\"{}\", \"{}\"]}}",
        first.url(),
        second.url()
    ));
    for method in ["GET", "HEAD", "POST", "DELETE"] {
        let (response, closed) = exchange(&lb, format!("{method} * HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(response.status, 400, "{method} *");
        assert_eq!(response.text(), "Bad Request: the asterisk-form target \"*\" is only for OPTIONS");
        assert!(closed, "{method} *");
    }
    let received = || {
        let mut both = String::from_utf8(first_received.lock().unwrap().clone()).unwrap();
        both.push_str(&String::from_utf8(second_received.lock().unwrap().clone()).unwrap());
        both
    };
    assert_eq!(received(), "", "nothing reached a backend");

    let mut client = Client::connect(lb.addr());
    for _ in 0..2 {
        client.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        let response = client.response(false);
        assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    }
    let expected = "OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\
                    X-Forwarded-Proto: http\r\n\r\n";
    let on_first = String::from_utf8(first_received.lock().unwrap().clone()).unwrap();
    let on_second = String::from_utf8(second_received.lock().unwrap().clone()).unwrap();
    assert!(
        (on_first == expected.repeat(2) && on_second.is_empty())
            || (on_second == expected.repeat(2) && on_first.is_empty()),
        "both went, as sent, to the one backend the target hashes to: {on_first:?} / {on_second:?}"
    );
}
