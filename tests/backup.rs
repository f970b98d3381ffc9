//! Backup servers through real processes: two primaries take every request; with both killed,
//! the first backup takes them all (or, with `allBackups`, the backups share them); a primary
//! restarted on its port takes the traffic back.

mod common;

use std::time::Duration;

use common::{EchoBackend, LoadBalancer};

const DEADLINE: Duration = Duration::from_secs(10);

/// Two primaries and two backups, with fast health checks that flip on one probe.
fn backup_config(primaries: &[&EchoBackend], backups: &[&EchoBackend], extra: &str) -> String {
    let mut servers: Vec<String> = primaries.iter().map(|backend| format!("\"{}\"", backend.url())).collect();
    servers.extend(backups.iter().map(|backend| format!("{{\"url\": \"{}\", \"backup\": true}}", backend.url())));
    format!(
        "{{{extra} \"healthCheckInterval\": \"100ms\", \"healthCheckTimeout\": \"500ms\", \"unhealthyThreshold\": 1, \
         \"healthyThreshold\": 1, \"servers\": [{}]}}",
        servers.join(", ")
    )
}

/// The names of the echo backends that answered `count` requests, in order.
fn answers(lb: &LoadBalancer, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let response = lb.get(&format!("/item/{index}"));
            assert_eq!(response.status, 200, "{}", response.text());
            response.json()["server"].as_str().unwrap().to_string()
        })
        .collect()
}

fn state_of(lb: &LoadBalancer, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}");
    let metrics = lb.metrics();
    let backend = metrics["backends"].as_array().unwrap().iter().find(|backend| backend["url"] == url).cloned();
    backend.unwrap()["state"].as_str().unwrap().to_string()
}

fn distinct(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_first_backup_takes_over_from_dead_primaries_and_hands_back_to_a_restarted_one() {
    let mut primary_a = EchoBackend::start(&["--name", "primary-a"]);
    let mut primary_b = EchoBackend::start(&["--name", "primary-b"]);
    let backup_a = EchoBackend::start(&["--name", "backup-a"]);
    let backup_b = EchoBackend::start(&["--name", "backup-b"]);
    let (port_a, port_b) = (primary_a.port, primary_b.port);
    let lb = LoadBalancer::start(&backup_config(&[&primary_a, &primary_b], &[&backup_a, &backup_b], ""));

    let flags: Vec<bool> =
        lb.metrics()["backends"].as_array().unwrap().iter().map(|backend| backend["backup"] == true).collect();
    assert_eq!(flags, [false, false, true, true], "the metrics say which servers are backups");
    assert_eq!(distinct(answers(&lb, 20)), ["primary-a", "primary-b"], "the backups get nothing");

    primary_a.kill();
    primary_b.kill();
    common::wait_until(DEADLINE, "both primaries unhealthy", || {
        state_of(&lb, port_a) == "unhealthy" && state_of(&lb, port_b) == "unhealthy"
    });
    assert_eq!(distinct(answers(&lb, 20)), ["backup-a"], "the first backup takes everything");

    let restarted = EchoBackend::start_on(port_b, &["--name", "primary-b"]);
    common::wait_until(DEADLINE, "primary-b healthy again", || state_of(&lb, restarted.port) == "healthy");
    assert_eq!(distinct(answers(&lb, 20)), ["primary-b"], "the primary takes the traffic back");
}

#[test]
fn with_all_backups_the_backups_share_the_traffic() {
    let mut primary_a = EchoBackend::start(&["--name", "primary-a"]);
    let mut primary_b = EchoBackend::start(&["--name", "primary-b"]);
    let backup_a = EchoBackend::start(&["--name", "backup-a"]);
    let backup_b = EchoBackend::start(&["--name", "backup-b"]);
    let (port_a, port_b) = (primary_a.port, primary_b.port);
    let config = backup_config(&[&primary_a, &primary_b], &[&backup_a, &backup_b], "\"allBackups\": true,");
    let lb = LoadBalancer::start(&config);
    assert_eq!(distinct(answers(&lb, 20)), ["primary-a", "primary-b"]);

    primary_a.kill();
    primary_b.kill();
    common::wait_until(DEADLINE, "both primaries unhealthy", || {
        state_of(&lb, port_a) == "unhealthy" && state_of(&lb, port_b) == "unhealthy"
    });
    assert_eq!(distinct(answers(&lb, 20)), ["backup-a", "backup-b"], "round robin over the backups");
}
