//! Passive health checks, failOpen and `/lb-health` through the real process: a backend whose
//! `/health` passes but whose requests fail is ejected after the threshold and the retries stop;
//! a relayed 502, 503 or 504 counts as a failure and a 500 or 404 does not;
//! after its cooldown one trial request decides; ejection is capped; with every backend down
//! `/lb-health` says 503 and `failOpen` still tries them.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, ScriptedBackend, answer_health, config, read_head, request, wait_until};

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

/// A backend that answers every request (but `/health`) with `status`, keeping the connection.
fn answering_with(status: u16) -> ScriptedBackend {
    ScriptedBackend::start(move |mut stream, _| {
        while let Some(head) = read_head(&mut stream) {
            if answer_health(&mut stream, &head) {
                return;
            }
            let answer = format!("HTTP/1.1 {status} Scripted\r\nContent-Length: 7\r\n\r\nstatus\n");
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn relayed_502_503_and_504_are_passive_failures_and_other_statuses_are_not() {
    for (status, counts_as_failure) in [(502, true), (503, true), (504, true), (500, false), (404, false)] {
        let scripted = answering_with(status);
        let good = EchoBackend::start(&["--name", "good"]);
        let lb = LoadBalancer::start(&format!(
            "{{\"algorithm\": \"round_robin\", \"healthCheckInterval\": \"1m\", \
             \"passiveHealth\": {{\"failures\": 3, \"cooldown\": \"30s\"}}, \"servers\": [\"{}\", \"{}\"]}}",
            scripted.url(),
            good.url()
        ));
        // 20 requests: round robin offers the scripted backend every other one while it is in rotation.
        let mut relayed = 0;
        for index in 0..20 {
            let response = lb.get(&format!("/s/{index}"));
            if response.status == status {
                assert_eq!(response.text(), "status\n", "{status}: relayed as the backend sent it");
                relayed += 1;
            } else {
                assert_eq!(response.status, 200, "{status}: request {index}");
            }
        }
        let record = backend_record(&lb, &scripted.url());
        if counts_as_failure {
            assert_eq!(relayed, 3, "{status}: three relayed, then the backend was ejected");
            assert_eq!(record["state"], "ejected", "{status}: {record}");
            assert_eq!(record["total_requests"], 3, "{status}: {record}");
            lb.log.wait_for(
                &format!("backend {} ejected for 30s after 3 consecutive failed requests", scripted.url()),
                DEADLINE,
            );
        } else {
            assert_eq!(relayed, 10, "{status}: an ordinary answer, every other request");
            assert_eq!(record["state"], "healthy", "{status}: {record}");
            assert_eq!(record["total_requests"], 10, "{status}: {record}");
            assert_eq!(lb.log.count_containing("ejected"), 0, "{status}: {:?}", lb.log.all());
        }
        assert_eq!(retries(&lb), 0, "{status}: a relayed answer is never retried");
    }
}
