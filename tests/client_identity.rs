//! Client identity: `X-Forwarded-For` from an untrusted peer changes nothing (it cannot dodge the
//! rate limit or pick an ip_hash backend); from a peer in `trustedProxies` the right-most
//! untrusted address is the client, for the rate limiter, `ip_hash`, `X-Real-IP` and the log.

mod common;

use std::time::Duration;

use common::{Client, EchoBackend, LoadBalancer, config, connect_from};

fn get_as(lb: &LoadBalancer, forwarded_for: &str) -> common::Response {
    common::request(
        lb.addr(),
        &format!("GET /who HTTP/1.1\r\nHost: lb\r\nX-Forwarded-For: {forwarded_for}\r\nConnection: close\r\n\r\n"),
    )
}

fn header_seen(response: &common::Response, name: &str) -> String {
    let headers = response.json()["headers"].as_array().unwrap().clone();
    headers.iter().find(|pair| pair[0] == name).map(|pair| pair[1].as_str().unwrap().to_string()).unwrap_or_default()
}

#[test]
fn a_forged_forwarded_for_does_not_dodge_the_rate_limit() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"rateLimit\": {\"requestsPerSecond\": 1, \"burst\": 2}"));
    let statuses: Vec<u16> = (0..5).map(|index| get_as(&lb, &format!("203.0.113.{index}")).status).collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429], "every request came from 127.0.0.1");
    let first = get_as(&lb, "198.51.100.1");
    assert_eq!(first.status, 429);
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_claims() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"trustedProxies\": [\"10.0.0.0/8\"]"));
    let response = get_as(&lb, "203.0.113.9");
    assert_eq!(response.status, 200);
    assert_eq!(header_seen(&response, "X-Real-IP"), "127.0.0.1");
    assert_eq!(
        header_seen(&response, "X-Forwarded-For"),
        "203.0.113.9, 127.0.0.1",
        "the chain is kept, the peer appended"
    );
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let first = EchoBackend::start(&["--name", "first"]);
    let second = EchoBackend::start(&["--name", "second"]);
    let third = EchoBackend::start(&["--name", "third"]);
    let lb = LoadBalancer::start(&config(
        &[first.url(), second.url(), third.url()],
        "\"algorithm\": \"ip_hash\", \"trustedProxies\": [\"127.0.0.1\", \"10.0.0.0/8\"], \
         \"rateLimit\": {\"requestsPerSecond\": 1, \"burst\": 2}",
    ));

    // Each forwarded client has a bucket of its own.
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let statuses: Vec<u16> = (0..3).map(|_| get_as(&lb, client).status).collect();
        assert_eq!(statuses, [200, 200, 429], "{client}");
    }
    // The right-most untrusted address is the client: a forged left part changes nothing.
    assert_eq!(get_as(&lb, "6.6.6.6, 203.0.113.1, 10.0.0.7").status, 429, "still 203.0.113.1's bucket");

    let response = get_as(&lb, "198.51.100.20, 10.0.0.7");
    assert_eq!(header_seen(&response, "X-Real-IP"), "198.51.100.20");
    assert_eq!(header_seen(&response, "X-Forwarded-For"), "198.51.100.20, 10.0.0.7, 127.0.0.1");
    lb.log.wait_for("198.51.100.20 \"GET /who HTTP/1.1\" 200", Duration::from_secs(5));
}

#[test]
fn ip_hash_follows_the_forwarded_client_behind_a_trusted_proxy() {
    let first = EchoBackend::start(&["--name", "first"]);
    let second = EchoBackend::start(&["--name", "second"]);
    let third = EchoBackend::start(&["--name", "third"]);
    let lb = LoadBalancer::start(&config(
        &[first.url(), second.url(), third.url()],
        "\"algorithm\": \"ip_hash\", \"trustedProxies\": [\"127.0.0.0/8\"]",
    ));
    let mut backends_used = Vec::new();
    for host in 1..=30u8 {
        let client = format!("198.51.100.{host}");
        let names: Vec<String> = (2..5u8)
            .map(|proxy| {
                // The same client through different proxies of the trusted block.
                let mut connection = Client::from_stream(connect_from([127, 0, 0, proxy], lb.addr()));
                connection.send(
                    format!("GET / HTTP/1.1\r\nHost: lb\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
                connection.response(false).json()["server"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(names.iter().all(|name| *name == names[0]), "{client} moved: {names:?}");
        backends_used.push(names[0].clone());
    }
    backends_used.sort();
    backends_used.dedup();
    assert_eq!(backends_used.len(), 3, "30 forwarded clients spread over all backends");
}
