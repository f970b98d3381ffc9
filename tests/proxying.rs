//! Proxying through real processes with raw bytes on both sides: what reaches the backend is the
//! client's request minus hop-by-hop fields plus the forwarding fields; what reaches the client is
//! the backend's response; bodies stream in both framings; connections are kept alive and reused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use common::{Client, EchoBackend, LoadBalancer, ScriptedBackend, answer_health, config, read_head, read_request};

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
fn random_bytes(count: usize, mut seed: u64) -> Vec<u8> {
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A backend that records each request (head and Content-Length body) and answers `response`.
fn recording_backend(response: &'static [u8]) -> (ScriptedBackend, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut stream: TcpStream, _| {
        while let Some((head, body)) = read_request(&mut stream) {
            let mut message = head.into_bytes();
            message.extend_from_slice(&body);
            record.lock().unwrap().push(message);
            stream.write_all(response).unwrap();
        }
    });
    (backend, seen)
}

fn slow_health_config(servers: &[String]) -> String {
    let list: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
    format!("{{\"healthCheckInterval\": \"1m\", \"servers\": [{}]}}", list.join(", "))
}

#[test]
fn backend_gets_the_request_as_sent_minus_hop_by_hop_plus_forwarding_fields() {
    let (backend, seen) = recording_backend(
        b"HTTP/1.1 201 Created Here\r\nX-Backend-Case: AbC\r\nSet-Cookie: a=1\r\nConnection: keep-alive\r\n\
          Set-Cookie: b=2\r\nKeep-Alive: timeout=5\r\nContent-Length: 4\r\n\r\ndone",
    );
    let lb = LoadBalancer::start(&slow_health_config(&[backend.url()]));
    let mut client = Client::connect(lb.addr());
    client.send(
        b"POST /path/x?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\nX-Custom-Case: Value  with  spaces\r\n\
          Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\n\
          accept: */*\r\nContent-Length: 5\r\n\r\nhello",
    );
    let response = client.response(false);
    assert_eq!(
        response.head,
        "HTTP/1.1 201 Created Here\r\nX-Backend-Case: AbC\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 4\r\n\r\n"
    );
    assert_eq!(response.body, b"done");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        String::from_utf8(seen[0].clone()).unwrap(),
        "POST /path/x?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\nX-Custom-Case: Value  with  spaces\r\n\
         X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\naccept: */*\r\nContent-Length: 5\r\n\
         X-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\nhello"
    );
}

#[test]
fn a_one_mebibyte_random_body_echoes_byte_for_byte() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let body = random_bytes(1 << 20, 0x9e37_79b9_7f4a_7c15);
    let mut client = Client::connect(lb.addr());
    let head = format!("POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\n\r\n", body.len());
    let response = common::exchange_concurrently(&mut client, head, &body);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("1048576"));
    assert!(response.body == body, "the echoed body differs from what was sent");
}

#[test]
fn chunked_bodies_pass_both_ways() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: dropped\r\n\r\n",
    );
    let response = client.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"), "the backend answered chunked");
    assert_eq!(response.body, b"hello, world");

    // The JSON endpoint counts the decoded body bytes the backend received.
    client.send(b"PUT /count HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.json()["body_bytes"], 3);
    let headers = response.json()["headers"].to_string();
    assert!(headers.contains("[\"Transfer-Encoding\",\"chunked\"]"), "{headers}");
}

#[test]
fn keep_alive_reuses_client_and_backend_connections() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&slow_health_config(&[backend.url()]));
    let mut client = Client::connect(lb.addr());
    let mut on_backend_connection = Vec::new();
    for _ in 0..3 {
        client.send(b"GET /keep HTTP/1.1\r\nHost: lb\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), None, "HTTP/1.1 keeps alive without saying so");
        on_backend_connection.push(response.json()["connection_requests"].as_u64().unwrap());
    }
    assert_eq!(on_backend_connection, [1, 2, 3], "one backend connection carried all three");
}

#[test]
fn head_204_and_304_carry_no_body_and_keep_the_connection() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(b"HEAD /bytes/100 HTTP/1.1\r\nHost: lb\r\n\r\n");
    let head = client.response(true);
    assert_eq!((head.status, head.header("content-length")), (200, Some("100")));
    for status in [204u16, 304] {
        client.send(format!("GET /status/{status} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
        assert_eq!(client.response(false).status, status);
    }
    client.send(b"GET /bytes/10 HTTP/1.1\r\nHost: lb\r\n\r\n");
    let after = client.response(false);
    assert_eq!(after.body, [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9], "no stray body bytes were left on the connection");
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut plain = Client::connect(lb.addr());
    plain.send(b"GET /ping HTTP/1.0\r\n\r\n");
    let response = plain.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(plain.is_closed());

    let mut kept = Client::connect(lb.addr());
    for _ in 0..2 {
        kept.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = kept.response(false);
        assert_eq!((response.status, response.header("connection")), (200, Some("keep-alive")));
    }
}

#[test]
fn a_close_delimited_response_reaches_the_client_and_ends_the_connection() {
    let backend = ScriptedBackend::start(|mut stream: TcpStream, _| {
        if let Some(head) = read_head(&mut stream) {
            if answer_health(&mut stream, &head) {
                return;
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Kind: until-close\r\n\r\nevery byte until the end");
        }
    });
    let lb = LoadBalancer::start(&slow_health_config(&[backend.url()]));
    let mut client = Client::connect(lb.addr());
    client.send(b"GET /stream HTTP/1.1\r\nHost: lb\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.head, "HTTP/1.1 200 OK\r\nX-Kind: until-close\r\nConnection: close\r\n\r\n");
    assert_eq!(response.body, b"every byte until the end");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(b"GET /first HTTP/1.1\r\nHost: lb\r\n\r\nPOST /second HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n\r\nhiGET /third HTTP/1.1\r\nHost: lb\r\n\r\n");
    for path in ["/first", "/second", "/third"] {
        let response = client.response(false);
        assert_eq!(response.json()["path"], path);
    }
}

#[test]
fn expect_100_continue_works_end_to_end() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let mut client = Client::connect(lb.addr());
    client.send(b"POST /echo HTTP/1.1\r\nHost: lb\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = client.response(false);
    assert_eq!(interim.status, 100);
    client.send(b"data");
    let response = client.response(false);
    assert_eq!((response.status, response.body.as_slice()), (200, &b"data"[..]));
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let cases: [(&[u8], u16); 4] = [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let mut client = Client::connect(lb.addr());
        client.send(raw);
        let response = client.response(false);
        assert_eq!(response.status, status, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(response.header("connection"), Some("close"));
        assert!(client.is_closed());
    }
    assert_eq!(lb.get("/ping").status, 200, "still serving");
}

#[test]
fn a_response_cut_off_by_its_client_never_leaks_to_the_next_client() {
    let backend = EchoBackend::start(&[]);
    // One worker, so the next client is served with the same reused buffers.
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"workers\": 1"));
    for round in 0..5 {
        let mut quitter = Client::connect(lb.addr());
        quitter.send(b"GET /bytes/50000000 HTTP/1.1\r\nHost: lb\r\n\r\n");
        let mut start = [0u8; 4096];
        quitter.stream.read_exact(&mut start).unwrap();
        drop(quitter);
        let next = lb.get("/ping");
        assert_eq!(next.status, 200, "round {round}: {}", next.head);
        assert_eq!(next.text(), format!("pong from backend :{}", backend.port), "round {round}");
    }
}
