//! The panic boundary through the real pair of the real binary, in both `pairThreads` modes: a
//! debug build started with `LB_FAULT_INJECTION=1` panics on purpose in a request's forward job
//! (`X-Lb-Fault: panic-forward`, before any byte reaches the backend) or its reverse job
//! (`X-Lb-Fault: panic-reverse`, once the response head is read, before any byte reaches the
//! client). Each gets the client exactly one `500` and the end of its connection; the process
//! keeps serving, with all its workers (as many slow requests as workers are served at once),
//! and with as many threads as before.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, connect, request, thread_count, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);
const WORKERS: usize = 4;

/// The admin listener's address, from the start-up log.
fn admin_addr(lb: &LoadBalancer) -> SocketAddr {
    let line = lb.log.wait_for("admin endpoint on ", DEADLINE);
    let rest = line.split("admin endpoint on ").nth(1).unwrap();
    rest.split(": ").next().unwrap().parse().unwrap_or_else(|error| panic!("{error}: {line}"))
}

fn admin_metrics(admin: SocketAddr) -> serde_json::Value {
    request(admin, "GET /lb-metrics HTTP/1.1\r\nHost: a\r\n\r\n").json()
}

/// Sends `raw` on a new connection and reads everything until the load balancer closes it. A read
/// timeout fails the test: the connection was meant to end.
fn exchange_to_close(addr: SocketAddr, raw: &str) -> String {
    let mut stream = connect(addr);
    stream.write_all(raw.as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => received.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the connection did not end: {error}; have {:?}", String::from_utf8_lossy(&received)),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The load balancer's own 500, whole, and nothing after it.
const INTERNAL_ERROR: &str = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n\
                              Content-Length: 21\r\nConnection: close\r\n\r\nInternal Server Error";

#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection exists in debug builds only")]
fn a_panic_in_a_forward_or_reverse_job_is_a_500_and_the_pool_keeps_its_size() {
    let backend = EchoBackend::start(&["--name", "slow", "--latency", "1s"]);
    for mode in ["spawn", "pooled"] {
        let lb = LoadBalancer::start_with(
            &format!(
                "{{\"pairThreads\": \"{mode}\", \"workers\": {WORKERS}, \"adminListen\": \"127.0.0.1:0\", \
                 \"healthCheckInterval\": \"1m\", \"servers\": [\"{}\"]}}",
                backend.url()
            ),
            &[],
            &[("LB_FAULT_INJECTION", "1")],
        );
        lb.log.wait_for("LB_FAULT_INJECTION=1: requests with an X-Lb-Fault field panic on purpose", DEADLINE);
        let admin = admin_addr(&lb);
        wait_until(DEADLINE, "the start-up health probe", || {
            admin_metrics(admin)["backends"][0]["last_checked"].is_string()
        });
        let pid = lb.pid();
        let threads_before = common::lowest_over(Duration::from_millis(300), || thread_count(pid));

        for (side, fault) in [("forward", "panic-forward"), ("reverse", "panic-reverse")] {
            let target = format!("/{mode}/{side}");
            let received = exchange_to_close(
                lb.addr(),
                &format!("GET {target} HTTP/1.1\r\nHost: lb\r\nX-Lb-Fault: {fault}\r\n\r\n"),
            );
            assert_eq!(received, INTERNAL_ERROR, "{mode}, panic in the {side} job");
            let panic = format!("panic while handling GET {target} from 127.0.0.1: fault injected on purpose: Panic");
            let line = lb.log.wait_for(&panic, DEADLINE);
            assert!(line.contains(if side == "forward" { "PanicForward" } else { "PanicReverse" }), "{line}");
        }
        let metrics = admin_metrics(admin);
        assert_eq!((metrics["total_requests"].as_u64(), metrics["failed_requests"].as_u64()), (Some(2), Some(2)));

        // Every worker still serves: one slow request each, all in flight at the same moment.
        let addr = lb.addr();
        let slow: Vec<_> = (0..WORKERS)
            .map(|index| {
                std::thread::spawn(move || {
                    request(addr, &format!("GET /after/{index} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"))
                })
            })
            .collect();
        wait_until(DEADLINE, "a slow request in flight on every worker at once", || {
            admin_metrics(admin)["backends"][0]["active_connections"] == WORKERS
        });
        for (index, response) in slow.into_iter().map(|client| client.join().unwrap()).enumerate() {
            assert_eq!(response.status, 200, "{mode}: {}", response.text());
            assert_eq!(response.json()["path"], format!("/after/{index}"));
        }
        // No thread lost or left behind: pooled pairs survived their panics, spawned ones are gone.
        wait_until(DEADLINE, "the thread count back to its value before the panics", || {
            thread_count(pid) == threads_before
        });
        if mode == "pooled" {
            assert!(threads_before >= 3 * WORKERS, "each worker with its own pair: {threads_before} threads");
        }
    }
}

#[test]
fn without_fault_injection_the_field_is_an_ordinary_one() {
    let backend = EchoBackend::start(&["--name", "plain"]);
    let lb = LoadBalancer::start(&common::config(&[backend.url()], ""));
    for fault in ["panic-forward", "panic-reverse"] {
        let response = request(
            lb.addr(),
            &format!("GET /calm HTTP/1.1\r\nHost: lb\r\nX-Lb-Fault: {fault}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(response.status, 200, "{fault}");
        let headers = response.json()["headers"].clone();
        assert!(
            headers.as_array().unwrap().iter().any(|pair| pair[0] == "X-Lb-Fault" && pair[1] == fault),
            "forwarded as it came: {headers}"
        );
    }
    assert_eq!(lb.log.count_containing("panic"), 0, "{:?}", lb.log.all());
}
