//! Health checks and failure handling through real processes: a killed backend goes unhealthy
//! after the threshold and comes back after a restart; which statuses count as healthy
//! (`healthCheckStatus`); a `--fail` backend is hidden by retries; with every backend down the
//! client gets the 503.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, ScriptedBackend, config, read_head, unused_port};

fn state_of(lb: &LoadBalancer, url: &str) -> String {
    let metrics = lb.metrics();
    let backends = metrics["backends"].as_array().unwrap().clone();
    let backend = backends.iter().find(|backend| backend["url"] == url).unwrap();
    backend["state"].as_str().unwrap().to_string()
}

#[test]
fn killed_backend_goes_unhealthy_after_the_threshold_and_returns_after_restart() {
    let steady = EchoBackend::start(&["--name", "steady"]);
    let mut flaky = EchoBackend::start(&["--name", "flaky"]);
    let flaky_port = flaky.port;
    let lb = LoadBalancer::start(&config(
        &[steady.url(), flaky.url()],
        "\"unhealthyThreshold\": 3, \"healthyThreshold\": 2",
    ));
    assert_eq!(state_of(&lb, &flaky.url()), "healthy");
    assert_eq!(lb.metrics()["healthy_backends"], 2);

    flaky.kill();
    common::wait_until(Duration::from_secs(10), "flaky marked unhealthy", || {
        state_of(&lb, &format!("http://127.0.0.1:{flaky_port}")) == "unhealthy"
    });
    let warning = lb.log.wait_for("is now unhealthy", Duration::from_secs(1));
    assert!(warning.contains("WARN") && warning.contains(&format!(":{flaky_port}")), "{warning}");
    assert!(warning.contains("after 3 failed health checks"), "{warning}");
    assert_eq!(lb.metrics()["healthy_backends"], 1);
    for _ in 0..10 {
        let response = lb.get("/");
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["server"], "steady", "no traffic to an unhealthy backend");
    }

    let restarted = EchoBackend::start_on(flaky_port, &["--name", "flaky"]);
    common::wait_until(Duration::from_secs(10), "flaky healthy again", || state_of(&lb, &restarted.url()) == "healthy");
    let recovery = lb.log.wait_for("is healthy again", Duration::from_secs(1));
    assert!(recovery.contains("INFO") && recovery.contains("after 2 successful health checks"), "{recovery}");
    let mut names: Vec<String> = (0..4).map(|_| lb.get("/").json()["server"].as_str().unwrap().to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["flaky", "steady"]);
}

#[test]
fn one_unhealthy_threshold_is_not_one_failure() {
    // With a long interval, only the start-up probe runs: one failure must not flip the state.
    let lb = LoadBalancer::start(&format!(
        "{{\"healthCheckInterval\": \"1m\", \"servers\": [\"http://127.0.0.1:{}\"]}}",
        unused_port()
    ));
    lb.log.wait_for("listening on", Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lb.metrics()["backends"][0]["state"], "healthy");
    assert!(lb.metrics()["backends"][0]["last_checked"].is_string(), "probed once at start-up");
}

#[test]
fn a_failing_backend_is_hidden_by_retries() {
    let good_a = EchoBackend::start(&["--name", "good-a"]);
    let good_b = EchoBackend::start(&["--name", "good-b"]);
    let failing = EchoBackend::start(&["--name", "failing", "--fail"]);
    // Passive health checks off: every third request meets the failing backend first.
    let passive_off = "\"passiveHealth\": {\"maxEjectedPercent\": 0}";
    let lb = LoadBalancer::start(&config(&[good_a.url(), failing.url(), good_b.url()], passive_off));
    for index in 0..100 {
        let response = lb.get(&format!("/item/{index}"));
        assert_eq!(response.status, 200, "request {index}: {}", response.text());
        assert_ne!(response.json()["server"], "failing");
    }
    let metrics = lb.metrics();
    assert_eq!(metrics["total_requests"], 100);
    assert_eq!(metrics["success_requests"], 100);
    let retries = metrics["retry_attempts"].as_u64().unwrap();
    assert!((30..=40).contains(&retries), "about a third of requests first went to the failing backend: {retries}");
    let failing_record =
        metrics["backends"].as_array().unwrap().iter().find(|b| b["url"] == failing.url()).unwrap().clone();
    assert_eq!(failing_record["total_failures"], retries, "each failure is recorded on the failing backend");
    assert_eq!(failing_record["state"], "healthy", "its /health still answers 200");
}

#[test]
fn all_backends_down_gives_503_with_its_body() {
    let lb = LoadBalancer::start(&config(
        &[format!("http://127.0.0.1:{}", unused_port()), format!("http://127.0.0.1:{}", unused_port())],
        "\"unhealthyThreshold\": 1",
    ));
    common::wait_until(Duration::from_secs(5), "both backends unhealthy", || lb.metrics()["healthy_backends"] == 0);
    let response = lb.get("/anything");
    assert_eq!(response.status, 503);
    assert_eq!(response.text(), "Service Unavailable: all backends are down");
    assert_eq!(response.header("content-length"), Some("42"));
    assert_eq!(response.header("connection"), Some("close"));
}

/// A backend whose `/health` answers `status` (counting the probes) and whose every other path
/// answers 200 `ok`.
fn health_answering(status: &'static str) -> (ScriptedBackend, Arc<AtomicUsize>) {
    let probes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&probes);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        while let Some(head) = read_head(&mut stream) {
            let answer = if head.starts_with("GET /health ") {
                counted.fetch_add(1, Ordering::SeqCst);
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
            };
            if stream.write_all(answer.as_bytes()).is_err() || head.starts_with("GET /health ") {
                return;
            }
        }
    });
    (backend, probes)
}

#[test]
fn a_backend_without_a_health_endpoint_is_healthy_by_default() {
    let (backend, probes) = health_answering("404 Not Found");
    // One failed probe would be enough to take it out.
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"unhealthyThreshold\": 1"));
    // When the third probe arrives, the first two have been judged.
    common::wait_until(Duration::from_secs(10), "three health probes", || probes.load(Ordering::SeqCst) >= 3);
    assert_eq!(state_of(&lb, &backend.url()), "healthy", "a 404 is an answer: the backend is up");
    assert_eq!(lb.get("/work").status, 200);
    assert_eq!(lb.log.count_containing("is now unhealthy"), 0, "{:?}", lb.log.all());
}

#[test]
fn health_check_status_2xx_takes_out_a_backend_answering_404() {
    let (backend, _) = health_answering("404 Not Found");
    let lb =
        LoadBalancer::start(&config(&[backend.url()], "\"unhealthyThreshold\": 1, \"healthCheckStatus\": \"2xx\""));
    common::wait_until(Duration::from_secs(10), "the backend marked unhealthy", || {
        state_of(&lb, &backend.url()) == "unhealthy"
    });
    let warning = lb.log.wait_for("is now unhealthy", Duration::from_secs(1));
    assert!(warning.contains("(status 404)"), "{warning}");
    assert_eq!(lb.get("/work").status, 503);
}

#[test]
fn a_backend_answering_503_is_unhealthy_by_default() {
    let (backend, _) = health_answering("503 Service Unavailable");
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"unhealthyThreshold\": 1"));
    common::wait_until(Duration::from_secs(10), "the backend marked unhealthy", || {
        state_of(&lb, &backend.url()) == "unhealthy"
    });
    let warning = lb.log.wait_for("is now unhealthy", Duration::from_secs(1));
    assert!(warning.contains("(status 503)"), "{warning}");
}

#[test]
fn a_new_backend_of_a_reload_is_admitted_by_the_same_rule() {
    let steady = EchoBackend::start(&["--name", "steady"]);
    let (no_health, _) = health_answering("404 Not Found");
    // Reread only on SIGHUP, and no probe rounds during the test: a new backend's state is what
    // its first probe, the one a reload makes, decided.
    let text = |extra: &str, servers: &[String]| {
        let list: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
        format!(
            "{{{extra}\"reloadInterval\": \"0s\", \"healthCheckInterval\": \"1m\", \"servers\": [{}]}}",
            list.join(", ")
        )
    };
    let reload = |lb: &LoadBalancer, config: &str, count: u64| {
        lb.rewrite_config(config);
        common::signal(lb.pid(), "HUP");
        common::wait_until(Duration::from_secs(10), "the reload", || lb.metrics()["config_reloads"] == count);
    };
    let lb = LoadBalancer::start(&text("", &[steady.url()]));

    // With "2xx", the new backend's first probe (a 404) fails, so it gets no traffic.
    reload(&lb, &text("\"healthCheckStatus\": \"2xx\", ", &[steady.url(), no_health.url()]), 1);
    let refused = lb.log.wait_for("failed its first health check", Duration::from_secs(1));
    assert!(refused.contains(&no_health.url()) && refused.contains("(status 404)"), "{refused}");
    assert_eq!(state_of(&lb, &no_health.url()), "unhealthy");

    // By the default rule, removed and added again, it is probed and admitted.
    reload(&lb, &text("", &[steady.url()]), 2);
    reload(&lb, &text("", &[steady.url(), no_health.url()]), 3);
    assert_eq!(state_of(&lb, &no_health.url()), "healthy");
    assert_eq!(lb.log.count_containing("failed its first health check"), 1, "{:?}", lb.log.all());
}

/// A host name that can never resolve and is never sent to a resolver: its first label is 64
/// bytes, one more than DNS can encode (RFC 1035 §2.3.4), so the C library refuses the lookup
/// itself, with no query leaving the machine. (A `.invalid` name would be refused too, but only
/// by the configured name server, after a query to it.)
const UNRESOLVABLE_HOST: &str = "a-host-name-label-that-is-longer-than-any-dns-label-may-ever-be-x.invalid";
const UNRESOLVABLE: &str = "http://a-host-name-label-that-is-longer-than-any-dns-label-may-ever-be-x.invalid:3001";

/// The metrics record of the backend with `url`.
fn record_of(lb: &LoadBalancer, url: &str) -> serde_json::Value {
    let metrics = lb.metrics();
    metrics["backends"].as_array().unwrap().iter().find(|backend| backend["url"] == url).unwrap().clone()
}

#[test]
fn a_backend_host_that_does_not_resolve_is_a_backend_that_is_down_not_a_bad_config() {
    let backend = EchoBackend::start(&[]);
    // Debug logging shows each round's failed probe, so the rounds can be counted.
    let lb =
        LoadBalancer::start_with(&config(&[backend.url(), UNRESOLVABLE.to_string()], ""), &[], &[("LB_DEBUG", "1")]);
    let record = record_of(&lb, UNRESOLVABLE);
    assert_eq!(record["state"], "unhealthy", "down from the start: {record}");
    let reason = record["resolve_error"].as_str().unwrap_or_else(|| panic!("a reason in the metrics: {record}"));
    assert!(reason.starts_with(&format!("cannot resolve host \"{UNRESOLVABLE_HOST}\"")), "{reason}");
    assert_eq!(record["addresses"], serde_json::json!([]));
    let served = record_of(&lb, &backend.url());
    assert_eq!((served["state"].as_str(), served["resolve_error"].is_null()), (Some("healthy"), true));
    assert_eq!(served["addresses"], serde_json::json!([format!("127.0.0.1:{}", backend.port)]));
    assert_eq!(lb.metrics()["healthy_backends"], 1);
    for _ in 0..4 {
        let response = lb.get("/ping");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), format!("pong from backend :{}", backend.port));
    }

    // Looked up again every round, failing each time, and logged once.
    let failed_probe = format!("health probe of {UNRESOLVABLE} failed: cannot resolve host");
    common::wait_until(Duration::from_secs(10), "three rounds of probes", || {
        lb.log.count_containing(&failed_probe) >= 3
    });
    let warning = format!("backend {UNRESOLVABLE}: cannot resolve host \"{UNRESOLVABLE_HOST}\"");
    assert_eq!(lb.log.count_containing(&warning), 1, "{:?}", lb.log.all());
    assert!(lb.log.wait_for(&warning, Duration::from_secs(1)).contains("WARN"));
    assert_eq!(record_of(&lb, UNRESOLVABLE)["state"], "unhealthy");
}

#[test]
fn a_reload_adding_a_host_that_does_not_resolve_is_applied_with_that_backend_down() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    lb.rewrite_config(&config(&[backend.url(), UNRESOLVABLE.to_string()], ""));
    let applied = lb.log.wait_for("config reloaded", Duration::from_secs(10));
    assert!(applied.contains("2 backends (1 added, 0 removed)"), "{applied}");
    let metrics = lb.metrics();
    assert_eq!((metrics["config_reloads"].as_u64(), metrics["config_reload_failures"].as_u64()), (Some(1), Some(0)));
    let record = record_of(&lb, UNRESOLVABLE);
    assert_eq!(record["state"], "unhealthy", "{record}");
    assert!(record["resolve_error"].as_str().is_some_and(|reason| reason.contains(UNRESOLVABLE_HOST)), "{record}");
    for _ in 0..4 {
        assert_eq!(lb.get("/ping").text(), format!("pong from backend :{}", backend.port));
    }
}
