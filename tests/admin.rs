//! The admin listener: with `adminListen` set, the metrics are served there and nowhere else,
//! and the public listener proxies `metricsPath` like any other path.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, config};

#[test]
fn metrics_move_to_the_admin_listener() {
    let backend = EchoBackend::start(&["--name", "app"]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"adminListen\": \"127.0.0.1:0\""));
    let line = lb.log.wait_for("admin endpoint on 127.0.0.1:", Duration::from_secs(5));
    let port: u16 = line.split("127.0.0.1:").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    assert_ne!(admin, lb.addr());

    let public = lb.get("/lb-metrics");
    assert_eq!(public.status, 200);
    assert_eq!(public.json()["server"], "app", "the public listener proxies the path to a backend");
    assert_eq!(public.json()["path"], "/lb-metrics");

    let metrics = common::request(admin, "GET /lb-metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("connection"), Some("close"));
    let document = metrics.json();
    assert_eq!(document["total_requests"], 1, "the public request was counted");
    assert_eq!(document["backends"][0]["url"], backend.url());

    let other = common::request(admin, "GET /anything HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(other.status, 404);
    let bad = common::request(admin, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(bad.status, 400);
}

#[test]
fn without_admin_listen_the_metrics_stay_on_the_main_listener() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], ""));
    assert!(lb.metrics()["backends"].is_array());
    assert_eq!(lb.log.count_containing("admin endpoint"), 0);
}
