//! The Prometheus exposition at `{metricsPath}/prometheus`, read by Prometheus's own Python
//! client parser (`prometheus_client`), must agree with the JSON document: the same counts, per
//! backend too, and a duration histogram whose count is the number of requests.
//!
//! Without `prometheus_client` the comparison is skipped with a message, except under CI (`CI`
//! set), where it fails: `.ci/run` installs the parser.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{EchoBackend, LoadBalancer, ScriptedBackend, answer_health, read_head};

/// Parses the exposition on stdin with `prometheus_client` and prints every family as JSON:
/// `[{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]`.
const PARSE_SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]
    families.append({"name": family.name, "type": family.type, "help": family.documentation, "samples": samples})
json.dump(families, sys.stdout)
"#;

/// Whether `prometheus_client` can be imported; panics under CI if it cannot.
fn parser_available() -> bool {
    let imported = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !imported {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 cannot import prometheus_client; .ci/run should have installed it"
        );
        eprintln!("skipped: pip install prometheus_client (python3 cannot import it)");
    }
    imported
}

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// The families `prometheus_client` parses out of `text`: (name, type, help, samples).
fn parse(text: &str) -> Vec<(String, String, String, Vec<Sample>)> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    families
        .iter()
        .map(|family| {
            let samples = family["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|sample| Sample {
                    name: sample["name"].as_str().unwrap().to_string(),
                    labels: sample["labels"].as_object().unwrap().clone(),
                    value: sample["value"].as_f64().unwrap(),
                })
                .collect();
            let text = |key: &str| family[key].as_str().unwrap().to_string();
            (text("name"), text("type"), text("help"), samples)
        })
        .collect()
}

/// Every parsed sample, from every family.
fn all_samples(families: &[(String, String, String, Vec<Sample>)]) -> Vec<Sample> {
    families.iter().flat_map(|(_, _, _, samples)| samples.clone()).collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| labels.iter().all(|(label, wanted)| sample.labels.get(*label) == Some(&Value::from(*wanted))))
        .collect();
    assert_eq!(matching.len(), 1, "exactly one {name} with {labels:?}: {matching:?}");
    matching[0].value
}

/// A backend that answers health probes and drops every other request unanswered after reading
/// its head: each request sent there fails and is retried on another backend.
fn dropping_backend() -> ScriptedBackend {
    ScriptedBackend::start(|mut stream, _| {
        if let Some(head) = read_head(&mut stream) {
            answer_health(&mut stream, &head);
        }
    })
}

#[test]
fn the_exposition_parses_and_agrees_with_the_json_document() {
    if !parser_available() {
        return;
    }
    let echo = EchoBackend::start(&["--name", "echo"]);
    let dropping = dropping_backend();
    let dead = format!("http://127.0.0.1:{}", {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    // One probe round at start-up marks the dead backend unhealthy and no other round comes;
    // the rate limiter admits 9 requests and refills only after 100 s.
    let lb = LoadBalancer::start(&format!(
        "{{\"healthCheckInterval\": \"1m\", \"unhealthyThreshold\": 1, \"retryDelay\": \"10ms\", \
         \"rateLimit\": {{\"requestsPerSecond\": 0.01, \"burst\": 9}}, \
         \"servers\": [\"{}\", \"{}\", \"{dead}\"]}}",
        echo.url(),
        dropping.url()
    ));
    common::wait_until(Duration::from_secs(5), "the dead backend to be marked unhealthy", || {
        lb.metrics()["healthy_backends"] == 2
    });

    let statuses: Vec<u16> = (0..12).map(|index| lb.get(&format!("/n/{index}")).status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 200, 429, 429, 429]);
    common::wait_until(Duration::from_secs(5), "no request in flight", || {
        lb.metrics()["backends"].as_array().unwrap().iter().all(|backend| backend["active_connections"] == 0)
    });

    let exposition = lb.get("/lb-metrics/prometheus");
    assert_eq!(exposition.status, 200);
    assert_eq!(exposition.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let json = lb.metrics();
    let families = parse(&exposition.text());
    let samples = all_samples(&families);
    let number = |field: &str| json[field].as_f64().unwrap_or_else(|| panic!("{field} in {json}"));

    assert_eq!(number("total_requests"), 12.0, "the metrics requests themselves are not counted");
    assert_eq!(number("failed_requests"), 3.0);
    assert!(number("retry_attempts") >= 1.0, "requests sent to the dropping backend were retried: {json}");
    let success = value(&samples, "lb_requests_total", &[("outcome", "success")]);
    let failed = value(&samples, "lb_requests_total", &[("outcome", "failed")]);
    assert_eq!(success, number("success_requests"));
    assert_eq!(failed, number("failed_requests"));
    assert_eq!(success + failed, number("total_requests"), "the outcomes add up to the total");
    let same = [
        ("lb_retries_total", "retry_attempts"),
        ("lb_rate_limited_requests_total", "rate_limited_requests"),
        ("lb_config_reloads_total", "config_reloads"),
        ("lb_config_reload_failures_total", "config_reload_failures"),
        ("lb_healthy_backends", "healthy_backends"),
        ("lb_backends", "total_backends"),
        ("lb_request_duration_seconds_count", "total_requests"),
    ];
    for (metric, field) in same {
        assert_eq!(value(&samples, metric, &[]), number(field), "{metric} = {field}");
    }
    assert_eq!(value(&samples, "lb_requests_in_flight", &[]), 0.0);
    assert!(value(&samples, "lb_open_connections", &[]) >= 1.0, "the connection asking is open");
    assert!((value(&samples, "lb_uptime_seconds", &[]) - number("uptime_seconds")).abs() <= 1.0);

    let backends = json["backends"].as_array().unwrap();
    assert_eq!((number("healthy_backends"), backends.len()), (2.0, 3));
    for backend in backends {
        let url = backend["url"].as_str().unwrap();
        let labels = [("pool", "default"), ("backend", url), ("name", backend["name"].as_str().unwrap())];
        let field = |name: &str| backend[name].as_f64().unwrap();
        assert_eq!(value(&samples, "lb_backend_requests_total", &labels), field("total_requests"), "{url}");
        assert_eq!(value(&samples, "lb_backend_failures_total", &labels), field("total_failures"), "{url}");
        assert_eq!(value(&samples, "lb_backend_in_flight", &labels), field("active_connections"), "{url}");
        assert_eq!(value(&samples, "lb_backend_weight", &labels), field("weight"), "{url}");
        let state = backend["state"].as_str().unwrap();
        let up = if state == "healthy" { 1.0 } else { 0.0 };
        assert_eq!(value(&samples, "lb_backend_up", &labels), up, "{url}");
        for each in ["healthy", "unhealthy", "ejected"] {
            let labels = [labels[0], labels[1], labels[2], ("state", each)];
            let expected = if each == state { 1.0 } else { 0.0 };
            assert_eq!(value(&samples, "lb_backend_state", &labels), expected, "{url} {each}");
        }
    }
    assert_eq!(backends[1]["total_failures"], backends[1]["total_requests"], "every attempt there failed");
    assert!(backends[1]["total_failures"].as_u64().unwrap() >= 1);
    assert_eq!((backends[2]["state"].as_str(), backends[2]["total_requests"].as_u64()), (Some("unhealthy"), Some(0)));

    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|sample| sample.name == "lb_request_duration_seconds_bucket")
        .map(|sample| {
            let le = sample.labels["le"].as_str().unwrap();
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, sample.value)
        })
        .collect();
    assert_eq!(buckets.len(), 14, "13 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1), "{buckets:?}");
    assert_eq!(buckets.last().map(|bucket| bucket.1), Some(number("total_requests")), "+Inf holds every request");
    assert!(value(&samples, "lb_request_duration_seconds_sum", &[]) > 0.0);

    for (name, kind, help, samples) in &families {
        assert!(name.starts_with("lb_"), "{name}");
        assert!(!help.is_empty(), "{name} has HELP");
        assert!(["counter", "gauge", "histogram"].contains(&kind.as_str()), "{name} has a TYPE: {kind}");
        assert!(!samples.is_empty(), "{name} has samples");
        if kind == "counter" {
            assert!(samples.iter().all(|sample| sample.name.ends_with("_total")), "{name}");
        }
    }
    for defence in
        ["head_timeout", "body_timeout", "slow_upload", "slow_reader", "per_client_cap", "waiting_bytes_full"]
    {
        let counted = value(&samples, "lb_slow_clients_total", &[("defence", defence)]);
        assert_eq!(Some(counted), json["slow_clients"][defence].as_f64(), "{defence}");
    }
    for state in ["handshaking", "idle", "reading_head", "reading_body", "closing"] {
        assert!(json["waiting_connections"][state].is_u64(), "{state} in {json}");
        let _ = value(&samples, "lb_waiting_connections", &[("state", state)]);
    }
    for listener in ["http", "https"] {
        let counted = value(&samples, "lb_listener_requests_total", &[("listener", listener)]);
        assert_eq!(Some(counted), json["listener_requests"][listener].as_f64(), "{listener}");
    }
    for reason in ["timeout", "plain_http", "protocol", "closed"] {
        let counted = value(&samples, "lb_tls_handshake_failures_total", &[("reason", reason)]);
        assert_eq!(Some(counted), json["tls"]["handshake_failures"][reason].as_f64(), "{reason}");
    }
    let pool = &json["pools"][0];
    assert_eq!(
        value(&samples, "lb_pool_requests_total", &[("pool", "default")]),
        pool["total_requests"].as_f64().unwrap()
    );
    assert_eq!(
        value(&samples, "lb_pool_failures_total", &[("pool", "default")]),
        pool["total_failures"].as_f64().unwrap()
    );
    for (state, count) in [("healthy", 2.0), ("unhealthy", 1.0), ("ejected", 0.0)] {
        assert_eq!(value(&samples, "lb_pool_backends", &[("pool", "default"), ("state", state)]), count, "{state}");
    }
    let mut names: Vec<&str> = families.iter().map(|family| family.0.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "lb_backend_failures",
            "lb_backend_in_flight",
            "lb_backend_requests",
            "lb_backend_state",
            "lb_backend_up",
            "lb_backend_weight",
            "lb_backends",
            "lb_config_reload_failures",
            "lb_config_reloads",
            "lb_healthy_backends",
            "lb_listener_requests",
            "lb_open_connections",
            "lb_pool_backends",
            "lb_pool_failures",
            "lb_pool_requests",
            "lb_rate_limited_requests",
            "lb_request_duration_seconds",
            "lb_requests",
            "lb_requests_in_flight",
            "lb_retries",
            "lb_slow_clients",
            "lb_tls_handshake_failures",
            "lb_tls_handshakes",
            "lb_uptime_seconds",
            "lb_waiting_bytes",
            "lb_waiting_connections",
        ],
        "prometheus_client names a counter family without its _total"
    );
}

#[test]
fn two_pools_holding_the_same_backend_are_told_apart_by_the_pool_label() {
    let shared = EchoBackend::start(&[]);
    let other = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&format!(
        r#"{{"healthCheckInterval": "200ms", "servers": ["{shared}"],
            "pools": {{"api": {{"algorithm": "least_conn", "servers": ["{shared}", "{other}"]}}}}}}"#,
        shared = shared.url(),
        other = other.url()
    ));
    common::wait_until(Duration::from_secs(10), "every backend healthy", || lb.metrics()["healthy_backends"] == 3);
    for _ in 0..4 {
        assert_eq!(lb.get("/x").status, 200, "requests go to the default pool");
    }
    // The worker counts a request after its response went out, so the count may lag the answer.
    common::wait_until(Duration::from_secs(5), "the four requests counted", || {
        lb.metrics()["pools"][0]["total_requests"] == 4
    });

    let text = lb.get("/lb-metrics/prometheus").text();
    let url = shared.url();
    let metrics = lb.metrics();
    let name = metrics["backends"][0]["name"].as_str().unwrap();
    let expected = [
        format!("lb_backend_requests_total{{pool=\"default\",backend=\"{url}\",name=\"{name}\"}} 4"),
        format!("lb_backend_requests_total{{pool=\"api\",backend=\"{url}\",name=\"{name}\"}} 0"),
        format!("lb_backend_up{{pool=\"api\",backend=\"{url}\",name=\"{name}\"}} 1"),
        "lb_pool_requests_total{pool=\"default\"} 4".to_string(),
        "lb_pool_requests_total{pool=\"api\"} 0".to_string(),
        "lb_pool_failures_total{pool=\"default\"} 0".to_string(),
        "lb_pool_backends{pool=\"default\",state=\"healthy\"} 1".to_string(),
        "lb_pool_backends{pool=\"api\",state=\"healthy\"} 2".to_string(),
        "lb_pool_backends{pool=\"api\",state=\"unhealthy\"} 0".to_string(),
        "lb_backends 3".to_string(),
        "lb_healthy_backends 3".to_string(),
    ];
    for line in &expected {
        assert!(text.lines().any(|each| each == line), "no line {line} in:\n{text}");
    }
    if parser_available() {
        let samples = all_samples(&parse(&text));
        let per_pool = |pool: &str| value(&samples, "lb_backend_requests_total", &[("pool", pool), ("backend", &url)]);
        assert_eq!((per_pool("default"), per_pool("api")), (4.0, 0.0));
    }
}

#[test]
fn head_gets_the_fields_without_the_body() {
    let echo = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&common::config(&[echo.url()], ""));
    let mut client = common::Client::connect(lb.addr());
    client.send(b"HEAD /lb-metrics/prometheus HTTP/1.1\r\nHost: lb\r\n\r\n");
    let head = client.response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    client.send(b"GET /lb-metrics/prometheus HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let full = client.response(false);
    assert_eq!(full.body.len(), length, "HEAD announced the length GET sent");
    assert!(full.text().starts_with("# HELP lb_"), "{}", full.text());
}

#[test]
fn it_follows_metrics_path_onto_the_admin_listener() {
    let echo = EchoBackend::start(&["--name", "app"]);
    let lb = LoadBalancer::start(&common::config(
        &[echo.url()],
        "\"adminListen\": \"127.0.0.1:0\", \"metricsPath\": \"/stats\"",
    ));
    let line = lb.log.wait_for("admin endpoint on 127.0.0.1:", Duration::from_secs(5));
    let port: u16 = line.split("127.0.0.1:").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));

    let public = lb.get("/stats/prometheus");
    assert_eq!(public.json()["path"], "/stats/prometheus", "the public listener proxies the path");
    // The worker counts a request after its response went out, so the count may lag the answer.
    common::wait_until(Duration::from_secs(5), "the proxied request to be counted on the admin listener", || {
        let exposition = common::request(admin, "GET /stats/prometheus HTTP/1.1\r\nHost: admin\r\n\r\n");
        assert_eq!(exposition.status, 200);
        exposition.text().contains("\nlb_requests_total{outcome=\"success\"} 1\n")
    });
    let old_path = common::request(admin, "GET /lb-metrics/prometheus HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(old_path.status, 404);
}
