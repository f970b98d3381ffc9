//! Pools through the real binaries: the default pool, no default pool, per-pool health checks,
//! readiness and metrics per pool, and a reload that adds a pool.

mod common;

use std::time::Duration;

use common::{EchoBackend, LoadBalancer, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

fn quoted(urls: &[String]) -> String {
    urls.iter().map(|url| format!("\"{url}\"")).collect::<Vec<_>>().join(", ")
}

#[test]
fn default_pool_takes_unrouted_requests_and_without_one_they_get_404() {
    let web = EchoBackend::start(&["--name", "web"]);
    let api = EchoBackend::start(&["--name", "api"]);
    let config = format!(
        r#"{{"healthCheckInterval": "200ms", "defaultPool": "api", "servers": ["{}"],
            "pools": {{"api": {{"servers": ["{}"]}}}}}}"#,
        web.url(),
        api.url()
    );
    let lb = LoadBalancer::start(&config);
    for _ in 0..4 {
        let response = lb.get("/anything");
        assert_eq!((response.status, response.header("x-backend")), (200, Some("api")), "{}", response.text());
    }

    let config = format!(r#"{{"healthCheckInterval": "200ms", "pools": {{"api": {{"servers": ["{}"]}}}}}}"#, api.url());
    let lb = LoadBalancer::start(&config);
    let response = lb.get("/anything");
    assert_eq!((response.status, response.text().as_str()), (404, "Not Found"));
    assert_eq!(response.header("x-backend"), None, "nothing reached a backend");
    assert_eq!(lb.metrics()["pools"][0]["total_requests"], 0);
}

#[test]
fn each_pool_has_its_own_health_checks_readiness_and_metrics() {
    let web = EchoBackend::start(&["--name", "web"]);
    let api = EchoBackend::start(&["--name", "api"]);
    // Pool "broken" probes a path its backend answers with 503, so it is down; "default" is up.
    let config = format!(
        r#"{{"healthCheckInterval": "200ms", "healthyThreshold": 1, "unhealthyThreshold": 1,
            "servers": ["{}"],
            "pools": {{"broken": {{"algorithm": "least_conn", "healthCheckPath": "/status/503",
                                   "servers": ["{}"]}}}}}}"#,
        web.url(),
        api.url()
    );
    let lb = LoadBalancer::start(&config);
    wait_until(DEADLINE, "pool broken's backend marked down", || lb.metrics()["pools"][1]["healthy_backends"] == 0);
    let metrics = lb.metrics();
    let pools = metrics["pools"].as_array().unwrap();
    let names: Vec<&str> = pools.iter().map(|pool| pool["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "broken"]);
    assert_eq!(
        (pools[0]["algorithm"].as_str(), pools[1]["algorithm"].as_str()),
        (Some("round_robin"), Some("least_conn"))
    );
    assert_eq!((pools[0]["healthy_backends"].as_u64(), pools[0]["total_backends"].as_u64()), (Some(1), Some(1)));
    assert_eq!(pools[1]["backends"][0]["state"], "unhealthy");
    let backends = metrics["backends"].as_array().unwrap();
    let pool_of: Vec<(&str, &str)> =
        backends.iter().map(|backend| (backend["pool"].as_str().unwrap(), backend["url"].as_str().unwrap())).collect();
    assert_eq!(pool_of, [("default", web.url().as_str()), ("broken", api.url().as_str())]);

    let health = lb.get("/lb-health");
    assert_eq!(health.status, 200);
    assert_eq!(
        health.text(),
        "1 of 2 backends available\npool default: 1 of 1 backends available\npool broken: 0 of 1 backends available\n"
    );
    let broken = lb.get("/lb-health?pool=broken");
    assert_eq!(
        (broken.status, broken.text().as_str()),
        (503, "Service Unavailable: pool broken: 0 of 1 backends available\n")
    );
    assert_eq!(lb.get("/lb-health?pool=default").status, 200);
    assert_eq!(lb.get("/lb-health?pool=nope").status, 404);

    // Requests go to the default pool, whose backend counts them.
    for _ in 0..3 {
        assert_eq!(lb.get("/x").header("x-backend"), Some("web"));
    }
    let metrics = lb.metrics();
    assert_eq!(
        (metrics["pools"][0]["total_requests"].as_u64(), metrics["pools"][1]["total_requests"].as_u64()),
        (Some(3), Some(0))
    );
}

#[test]
fn a_reload_adds_a_pool_and_keeps_the_backends_that_stay() {
    let web = EchoBackend::start(&["--name", "web"]);
    let api = EchoBackend::start(&["--name", "api"]);
    let lb = LoadBalancer::start(&format!(
        r#"{{"healthCheckInterval": "200ms", "reloadInterval": "100ms", "servers": [{}]}}"#,
        quoted(&[web.url()])
    ));
    assert_eq!(lb.get("/x").header("x-backend"), Some("web"));
    lb.rewrite_config(&format!(
        r#"{{"healthCheckInterval": "200ms", "reloadInterval": "100ms", "defaultPool": "api", "servers": [{}],
            "pools": {{"api": {{"servers": [{}]}}}}}}"#,
        quoted(&[web.url()]),
        quoted(&[api.url()])
    ));
    lb.log.wait_for("config reloaded", DEADLINE);
    assert_eq!(lb.get("/x").header("x-backend"), Some("api"));
    let metrics = lb.metrics();
    assert_eq!(metrics["pools"][0]["name"], "default");
    assert_eq!(metrics["pools"][0]["total_requests"], 1, "the default pool's backend kept its counters");
    assert_eq!(metrics["pools"][1]["backends"][0]["state"], "healthy", "probed before it got traffic");
}
