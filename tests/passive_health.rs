//! Passive health checks, failOpen and `/lb-health` through the real process: a backend whose
//! `/health` passes but whose requests fail is ejected after the threshold and the retries stop;
//! after its cooldown one trial request decides; ejection is capped; with every backend down
//! `/lb-health` says 503 and `failOpen` still tries them.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, ScriptedBackend, config, read_head, request, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

fn backend_record(lb: &LoadBalancer, url: &str) -> serde_json::Value {
    let metrics = lb.metrics();
    metrics["backends"].as_array().unwrap().iter().find(|backend| backend["url"] == url).unwrap().clone()
}

fn retries(lb: &LoadBalancer) -> u64 {
    lb.metrics()["retry_attempts"].as_u64().unwrap()
}

#[test]
fn a_backend_failing_real_requests_is_ejected_and_the_retries_stop() {
    let good_a = EchoBackend::start(&["--name", "good-a"]);
    let failing = EchoBackend::start(&["--name", "failing", "--fail"]);
    let good_b = EchoBackend::start(&["--name", "good-b"]);
    let lb = LoadBalancer::start(&config(
        &[good_a.url(), failing.url(), good_b.url()],
        "\"passiveHealth\": {\"failures\": 5, \"cooldown\": \"30s\"}",
    ));
    for index in 0..30 {
        let response = lb.get(&format!("/item/{index}"));
        assert_eq!(response.status, 200, "request {index}: every failure is hidden by a retry");
    }
    assert_eq!(retries(&lb), 5, "five requests met the failing backend first, then it was ejected");
    let record = backend_record(&lb, &failing.url());
    assert_eq!(record["state"], "ejected");
    assert_eq!(record["total_failures"], 5);
    assert_eq!(lb.metrics()["healthy_backends"], 2);
    let line = lb.log.wait_for("ejected for 30s", DEADLINE);
    assert!(line.contains(&format!("backend {} ejected for 30s after 5 consecutive failed requests", failing.url())));

    for index in 0..30 {
        assert_eq!(lb.get(&format!("/more/{index}")).status, 200);
    }
    assert_eq!(retries(&lb), 5, "the retry counter stopped climbing");
    assert_eq!(backend_record(&lb, &failing.url())["total_requests"], 5, "no request reached it since");
    assert_eq!(backend_record(&lb, &failing.url())["state"], "ejected", "its /health still passes: still ejected");
}

#[test]
fn after_the_cooldown_one_trial_request_decides() {
    let good = EchoBackend::start(&["--name", "good"]);
    let mut failing = EchoBackend::start(&["--name", "flaky", "--fail"]);
    let port = failing.port;
    let lb = LoadBalancer::start(&config(
        &[good.url(), failing.url()],
        "\"algorithm\": \"round_robin\", \"passiveHealth\": {\"failures\": 2, \"cooldown\": \"1s\"}",
    ));
    for _ in 0..6 {
        assert_eq!(lb.get("/").status, 200);
    }
    assert_eq!(backend_record(&lb, &failing.url())["state"], "ejected");
    let before = retries(&lb);

    // Cooldown over: exactly one request tries it, fails, and it is out again, for twice as long.
    std::thread::sleep(Duration::from_millis(1_200));
    for _ in 0..6 {
        assert_eq!(lb.get("/").status, 200);
    }
    assert_eq!(retries(&lb), before + 1, "one trial request");
    lb.log.wait_for("failed its trial request: ejected again for 2s", DEADLINE);

    // Mended: the next trial passes and it is back in rotation.
    failing.kill();
    let _mended = EchoBackend::start_on(port, &["--name", "flaky"]);
    std::thread::sleep(Duration::from_millis(2_200));
    let served: Vec<String> =
        (0..6).map(|_| lb.get("/").json()["server"].as_str().unwrap_or_default().to_string()).collect();
    assert!(served.iter().any(|name| name == "flaky"), "{served:?}");
    lb.log.wait_for("passed its trial request and is back in rotation", DEADLINE);
    assert_eq!(backend_record(&lb, &format!("http://127.0.0.1:{port}"))["state"], "healthy");
}

#[test]
fn ejection_never_takes_out_more_than_max_ejected_percent() {
    let first = EchoBackend::start(&["--name", "first", "--fail"]);
    let second = EchoBackend::start(&["--name", "second", "--fail"]);
    let lb = LoadBalancer::start(&config(&[first.url(), second.url()], "\"passiveHealth\": {\"failures\": 2}"));
    for _ in 0..10 {
        assert_eq!(lb.get("/").status, 502);
    }
    let metrics = lb.metrics();
    let states: Vec<&str> =
        metrics["backends"].as_array().unwrap().iter().map(|backend| backend["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|state| **state == "ejected").count(), 1, "50% of two: one, {states:?}");
    assert_eq!(states.iter().filter(|state| **state == "healthy").count(), 1, "{states:?}");
}

#[test]
fn lb_health_says_whether_any_backend_is_available() {
    let mut first = EchoBackend::start(&["--name", "first"]);
    let mut second = EchoBackend::start(&["--name", "second"]);
    let lb = LoadBalancer::start(&config(&[first.url(), second.url()], ""));
    let ready = lb.get("/lb-health");
    assert_eq!((ready.status, ready.text().as_str()), (200, "2 of 2 backends available\n"));
    first.kill();
    second.kill();
    wait_until(DEADLINE, "both backends unhealthy", || lb.metrics()["healthy_backends"] == 0);
    let unready = lb.get("/lb-health");
    assert_eq!(unready.status, 503);
    assert_eq!(unready.text(), "Service Unavailable: 0 of 2 backends available\n");
}

/// A backend whose health check fails but whose requests are answered.
fn failing_health_check_only() -> ScriptedBackend {
    ScriptedBackend::start(|mut stream, _| {
        while let Some(head) = read_head(&mut stream) {
            let answer: &[u8] = if head.starts_with("GET /health ") {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nserved\n"
            };
            if stream.write_all(answer).is_err() || head.starts_with("GET /health ") {
                return;
            }
        }
    })
}

#[test]
fn fail_open_tries_backends_that_are_all_marked_down() {
    let backend = failing_health_check_only();
    let closed = LoadBalancer::start(&config(&[backend.url()], ""));
    let open = LoadBalancer::start(&config(&[backend.url()], "\"failOpen\": true"));
    for lb in [&closed, &open] {
        wait_until(DEADLINE, "the backend marked unhealthy", || lb.metrics()["healthy_backends"] == 0);
    }
    assert_eq!(closed.get("/").status, 503, "by default: all backends are down");
    let response = open.get("/");
    assert_eq!((response.status, response.text().as_str()), (200, "served\n"), "failOpen: tried anyway");
    assert_eq!(request(open.addr(), "GET /lb-health HTTP/1.1\r\nHost: a\r\n\r\n").status, 503);
}
