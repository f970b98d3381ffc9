//! Slow clients cannot starve the pool: more stalled heads and trickled bodies than there are
//! workers, and a normal client is still served at once; the watcher answers `408` for what
//! stalls; streamed uploads and slow readers are cut by the minimum transfer rates; one client
//! address is capped by `maxConnectionsPerClient` while another is not; the watcher's memory is
//! bounded by `maxWaitingBytes`; and when the slow clients are gone, no thread or descriptor is
//! left behind. The metrics report each state and each defence.
//!
//! Every test runs the real binaries on loopback with a small pool (4 workers), so "more slow
//! clients than workers" takes only a few dozen connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Client, EchoBackend, LoadBalancer, assert_refused, assert_took, config, connect, connect_from, fd_count,
    lowest_over, thread_count, wait_for_rest, wait_until,
};

const WORKERS: usize = 4;
/// Slow clients held at once in the starvation tests: ten times the pool.
const SLOW_CLIENTS: usize = 10 * WORKERS;
const DEADLINE: Duration = Duration::from_secs(10);

fn start(backend: &EchoBackend, extra: &str) -> LoadBalancer {
    let extra = if extra.is_empty() { String::new() } else { format!(", {extra}") };
    let lb = LoadBalancer::start(&config(&[backend.url()], &format!("\"workers\": {WORKERS}{extra}")));
    wait_until(DEADLINE, "the start-up health probe", || lb.metrics()["backends"][0]["last_checked"].is_string());
    lb
}

fn waiting(lb: &LoadBalancer, state: &str) -> u64 {
    lb.metrics()["waiting_connections"][state].as_u64().unwrap()
}

fn defence(lb: &LoadBalancer, name: &str) -> u64 {
    lb.metrics()["slow_clients"][name].as_u64().unwrap()
}

/// A fresh client's `GET /ping` gets its `200` (a starved pool would leave it unanswered until
/// the client's read timeout fails the test).
fn assert_served(addr: SocketAddr) {
    let mut client = Client::connect(addr);
    client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(response.text().starts_with("pong from backend"), "{}", response.text());
}

/// Opens `count` connections, each from one of a few 127.0.1.x addresses, and sends `bytes` on each.
fn slow_clients(addr: SocketAddr, count: usize, bytes: &[u8]) -> Vec<TcpStream> {
    (0..count)
        .map(|index| {
            let mut stream = connect_from([127, 0, 1, 1 + (index % 8) as u8], addr);
            stream.write_all(bytes).unwrap();
            stream
        })
        .collect()
}

#[test]
fn stalled_heads_outnumbering_the_workers_leave_the_pool_free_and_nothing_behind() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"headerReadTimeout\": \"60s\"");
    let pid = lb.pid();
    let (threads, fds) = (
        lowest_over(Duration::from_millis(300), || thread_count(pid)),
        lowest_over(Duration::from_millis(300), || fd_count(pid)),
    );

    let stalled = slow_clients(lb.addr(), SLOW_CLIENTS, b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ");
    wait_until(DEADLINE, "every stalled head waiting with the watcher", || {
        waiting(&lb, "reading_head") == SLOW_CLIENTS as u64
    });
    assert!(lb.metrics()["waiting_connections"]["bytes"].as_u64().unwrap() > 0);
    for _ in 0..3 {
        assert_served(lb.addr());
    }
    // A kept-alive client is served too, request after request.
    let mut keep_alive = Client::connect(lb.addr());
    for _ in 0..3 {
        keep_alive.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
        assert_eq!(keep_alive.response(false).status, 200);
    }
    drop(keep_alive);
    assert_eq!(defence(&lb, "head_timeout"), 0, "nobody was cut: the heads are within their timeout");

    drop(stalled);
    wait_until(DEADLINE, "the watcher holding nothing", || {
        let metrics = lb.metrics();
        metrics["waiting_connections"]["reading_head"] == 0 && metrics["waiting_connections"]["bytes"] == 0
    });
    assert_eq!(wait_for_rest(pid, threads, fds), (threads, fds));
}

#[test]
fn trickled_small_bodies_wait_with_the_watcher_and_arrive_whole() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"bodyReadTimeout\": \"60s\"");
    let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    let mut slow = slow_clients(lb.addr(), SLOW_CLIENTS, &[&head[..], &[b'a'; 10]].concat());
    wait_until(DEADLINE, "every body waiting with the watcher", || waiting(&lb, "reading_body") == SLOW_CLIENTS as u64);
    assert_served(lb.addr());

    // The rest of one body, in pieces: the backend gets all of it, the carried bytes first.
    let mut finishing = slow.pop().unwrap();
    for piece in [[b'b'; 495], [b'c'; 495]] {
        finishing.write_all(&piece).unwrap();
    }
    let mut client = Client::from_stream(finishing);
    let response = client.response(false);
    assert_eq!(response.status, 200, "{}", response.head);
    let expected: Vec<u8> = [&[b'a'; 10][..], &[b'b'; 495], &[b'c'; 495]].concat();
    assert_eq!(response.body, expected);
    assert_eq!(waiting(&lb, "reading_body"), SLOW_CLIENTS as u64 - 1);
}

#[test]
fn the_watcher_answers_408_for_a_trickled_head_and_for_a_body_below_the_minimum_rate() {
    let backend = EchoBackend::start(&[]);
    let timeout = Duration::from_secs(1);
    let lb = start(
        &backend,
        "\"headerReadTimeout\": \"1s\", \"bodyReadTimeout\": \"60s\", \
         \"minRequestBodyRate\": {\"bytesPerSecond\": 1000, \"grace\": \"1s\"}",
    );
    // A head that keeps coming, a byte every 100 ms, but never ends: 408 counted from its first byte.
    let mut head = Client::connect(lb.addr());
    let started = Instant::now();
    head.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let trickler = {
        let mut stream = head.stream.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..60 {
                thread::sleep(Duration::from_millis(100));
                if stream.write_all(b"X").is_err() {
                    return;
                }
            }
        })
    };
    assert_refused(&mut head, 408, "Request Timeout: the request head stalled");
    assert_took(started.elapsed(), timeout, "the 408 for a trickled head");
    trickler.join().unwrap();

    // A small body at 100 bytes/s, far below the floor of 1000: cut after the grace plus what
    // its bytes earned, though it never pauses for bodyReadTimeout.
    let mut body = Client::connect(lb.addr());
    let started = Instant::now();
    body.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n");
    let trickler = {
        let mut stream = body.stream.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..60 {
                if stream.write_all(&[b'z'; 10]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert_refused(&mut body, 408, "Request Timeout: the request body stalled");
    assert_took(started.elapsed(), timeout, "the 408 for a crawling body");
    trickler.join().unwrap();
    assert_eq!((defence(&lb, "head_timeout"), defence(&lb, "body_timeout")), (1, 1));
    assert_eq!(lb.log.count_containing("\"-\" 408"), 2, "both are in the access log");
}

#[test]
fn a_streamed_upload_below_the_minimum_rate_is_cut_with_408() {
    let backend = EchoBackend::start(&[]);
    let grace = Duration::from_secs(1);
    let lb = start(&backend, "\"minRequestBodyRate\": {\"bytesPerSecond\": 10000, \"grace\": \"1s\"}");
    // Too large to keep, so the forward thread streams it; the backend answers only once it has
    // the whole body, so nothing is answered when the cut comes.
    let mut client = Client::connect(lb.addr());
    let started = Instant::now();
    client.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
    let trickler = {
        let mut stream = client.stream.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..100 {
                if stream.write_all(&[b'u'; 100]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert_refused(&mut client, 408, "Request Timeout: the request body stalled");
    assert_took(started.elapsed(), grace, "the cut of an upload at 1,000 bytes/s");
    trickler.join().unwrap();
    assert_eq!(defence(&lb, "slow_upload"), 1);
    // The same upload at full speed goes through.
    let mut fast = Client::connect(lb.addr());
    let body = vec![b'f'; 1_000_000];
    fast.send(&[&b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"[..], &body].concat());
    let response = fast.response(false);
    assert_eq!((response.status, response.body.len()), (200, body.len()));
}

#[test]
fn a_reader_below_the_minimum_response_rate_is_cut_and_a_fast_one_is_not() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"minResponseRate\": {\"bytesPerSecond\": 10000000, \"grace\": \"1s\"}");
    const SIZE: usize = 64 << 20;
    let request = format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: x\r\n\r\n");

    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&lb.addr().into(), DEADLINE).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    slow.write_all(request.as_bytes()).unwrap();
    // It reads nothing until the load balancer has given up on it.
    wait_until(Duration::from_secs(20), "the slow reader cut", || defence(&lb, "slow_reader") == 1);
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match slow.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => received += count,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the cut connection is closed, not left open: {error}"),
        }
        assert!(received <= SIZE);
    }
    assert!(received < SIZE, "the response was cut short");

    let mut fast = Client::connect(lb.addr());
    fast.send(request.as_bytes());
    let response = fast.response(false);
    assert_eq!((response.status, response.body.len()), (200, SIZE));
    assert_eq!(defence(&lb, "slow_reader"), 1, "the fast reader was not cut");
}

#[test]
fn max_connections_per_client_caps_one_address_and_not_another_nor_a_trusted_proxy() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"maxConnectionsPerClient\": 3, \"trustedProxies\": [\"127.0.0.4\"]");
    let addr = lb.addr();
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from([127, 0, 0, 2], addr)).collect();
    // Three held, and the metrics request's own connection.
    wait_until(DEADLINE, "the three connections open", || lb.metrics()["open_connections"] == 4);
    let mut refused = Client::from_stream(connect_from([127, 0, 0, 2], addr));
    assert_refused(&mut refused, 503, "Service Unavailable: too many connections from your address");
    assert_eq!(defence(&lb, "per_client_cap"), 1);

    let mut other = Client::from_stream(connect_from([127, 0, 0, 3], addr));
    other.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(other.response(false).status, 200, "another address is not capped");
    let mut proxied: Vec<Client> = (0..5).map(|_| Client::from_stream(connect_from([127, 0, 0, 4], addr))).collect();
    for client in &mut proxied {
        client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
        assert_eq!(client.response(false).status, 200, "a trusted proxy is exempt");
    }

    drop(held);
    wait_until(DEADLINE, "the capped address's connections closed", || {
        // The trusted proxy's, the other address's, and the metrics request's own.
        lb.metrics()["open_connections"] == proxied.len() + 2
    });
    let mut again = Client::from_stream(connect_from([127, 0, 0, 2], addr));
    again.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(again.response(false).status, 200, "the places were given back");
    assert_eq!(defence(&lb, "per_client_cap"), 1);
}

#[test]
fn past_max_waiting_bytes_a_slow_client_gets_503_and_the_held_bytes_stay_bounded() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"maxWaitingBytes\": \"64KiB\", \"headerReadTimeout\": \"60s\"");
    let mut partial = b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ".to_vec();
    partial.resize(30_000, b'a');
    let mut held = Vec::new();
    for count in 1..=2 {
        let mut stream = connect(lb.addr());
        stream.write_all(&partial).unwrap();
        held.push(stream);
        wait_until(DEADLINE, "the partial head held", || waiting(&lb, "reading_head") == count);
    }
    let mut third = Client::connect(lb.addr());
    third.send(&partial);
    assert_refused(&mut third, 503, "Service Unavailable: too many requests are arriving slowly");
    let metrics = lb.metrics();
    assert_eq!(metrics["waiting_connections"]["reading_head"], 2);
    assert!(metrics["waiting_connections"]["bytes"].as_u64().unwrap() <= 64 * 1024, "{metrics}");
    assert_eq!(defence(&lb, "waiting_bytes_full"), 1);
    assert_served(lb.addr());
    // Finishing a held head serves it; its room is free again.
    held[0].write_all(b"\r\n\r\n").unwrap();
    let mut finished = Client::from_stream(held.remove(0));
    assert_eq!(finished.response(false).status, 200);
    wait_until(DEADLINE, "one head left waiting", || waiting(&lb, "reading_head") == 1);
}

#[test]
fn the_prometheus_exposition_reports_the_waiting_states_and_the_defences() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "\"headerReadTimeout\": \"60s\"");
    let _stalled = slow_clients(lb.addr(), 3, b"GET / HTTP/1.1\r\n");
    let _idle: Vec<TcpStream> = (0..2).map(|_| connect(lb.addr())).collect();
    wait_until(DEADLINE, "three heads and two idle connections waiting", || {
        waiting(&lb, "reading_head") == 3 && waiting(&lb, "idle") == 2
    });
    let text = lb.get("/lb-metrics/prometheus").text();
    for line in [
        "lb_waiting_connections{state=\"idle\"} 2",
        "lb_waiting_connections{state=\"reading_head\"} 3",
        "lb_waiting_connections{state=\"reading_body\"} 0",
        "lb_slow_clients_total{defence=\"head_timeout\"} 0",
        "lb_slow_clients_total{defence=\"per_client_cap\"} 0",
    ] {
        assert!(text.lines().any(|sample| sample == line), "no {line:?} in:\n{text}");
    }
}

/// Requests each busy client sends at once, pipelined, in the turn-taking test.
const BUSY_CLIENT_BATCH: usize = 2_000;

#[test]
fn busy_clients_as_many_as_the_workers_take_turns_with_a_new_one() {
    let backend = EchoBackend::start(&[]);
    let lb = start(&backend, "");
    let addr = lb.addr();
    let served: Vec<Arc<AtomicUsize>> = (0..WORKERS).map(|_| Arc::default()).collect();
    // One busy client per worker, each sending a whole batch of requests at once: its worker
    // always finds the next request already there, so nothing but taking turns frees a worker
    // before the batch is done.
    let busy: Vec<_> = served
        .iter()
        .map(|count| {
            let count = Arc::clone(count);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.send(&b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n".repeat(BUSY_CLIENT_BATCH));
                for _ in 0..BUSY_CLIENT_BATCH {
                    assert_eq!(client.response(false).status, 200);
                    count.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    let counts = || served.iter().map(|count| count.load(Ordering::Acquire)).collect::<Vec<_>>();
    wait_until(DEADLINE, "every busy client to be served", || counts().iter().all(|&count| count >= 20));

    // Every worker is taken by a client with requests waiting; a new one still gets its turn,
    // long before any of them is done.
    assert_served(addr);
    let when_answered = counts();
    for client in busy {
        client.join().unwrap();
    }
    assert!(
        when_answered.iter().all(|&count| count < BUSY_CLIENT_BATCH),
        "the new client waited for a busy one to finish: {when_answered:?}"
    );
}
