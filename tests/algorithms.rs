//! The newer algorithms through real processes: least_time and least_conn avoiding a slow
//! backend, random and p2c sharing by weight, hashes that agree across two load balancer
//! instances, keys that move only off a backend that leaves (and come back with it), and the
//! sticky cookie.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use common::{Client, EchoBackend, LoadBalancer, Response, connect_from, wait_until};

fn backends(count: usize) -> Vec<EchoBackend> {
    (0..count).map(|index| EchoBackend::start(&["--name", &format!("web-{index}")])).collect()
}

/// A config naming each backend after its echo name, so answers and cookies can be compared.
fn named_config(backends: &[EchoBackend], extra: &str) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|backend| format!("{{\"url\": \"{}\", \"name\": \"{}\"}}", backend.url(), backend.name))
        .collect();
    format!(
        "{{{extra}, \"healthCheckInterval\": \"200ms\", \"healthCheckTimeout\": \"500ms\", \
         \"healthyThreshold\": 1, \"unhealthyThreshold\": 1, \"servers\": [{}]}}",
        servers.join(", ")
    )
}

fn served_by(response: &Response) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["server"].as_str().unwrap().to_string()
}

/// Which backend answers `target`, asked from the client address 127.0.0.`host`.
fn answer_for(lb: &LoadBalancer, host: u8, target: &str, cookie: Option<&str>) -> Response {
    let mut client = Client::from_stream(connect_from([127, 0, 0, host], lb.addr()));
    let cookie = cookie.map(|value| format!("Cookie: {value}\r\n")).unwrap_or_default();
    client.send(format!("GET {target} HTTP/1.1\r\nHost: lb\r\n{cookie}Connection: close\r\n\r\n").as_bytes());
    client.response(false)
}

/// The backend of each of 40 keys: `/item/N` from client 127.0.0.(N + 2).
fn key_map(lb: &LoadBalancer) -> Vec<String> {
    (0..40u8).map(|key| served_by(&answer_for(lb, key + 2, &format!("/item/{key}"), None))).collect()
}

fn healthy_count(lb: &LoadBalancer) -> u64 {
    lb.metrics()["healthy_backends"].as_u64().unwrap()
}

#[test]
fn least_time_and_least_conn_send_most_traffic_away_from_a_slow_backend() {
    for algorithm in ["least_time", "least_conn"] {
        let backends = [
            EchoBackend::start(&["--name", "fast-a"]),
            EchoBackend::start(&["--name", "fast-b"]),
            EchoBackend::start(&["--name", "slow", "--latency", "200ms"]),
        ];
        let lb = LoadBalancer::start(&named_config(&backends, &format!("\"algorithm\": \"{algorithm}\"")));
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let addr = lb.addr();
                thread::spawn(move || {
                    (0..20)
                        .map(|_| {
                            let raw = "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
                            served_by(&common::request(addr, raw))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for client in clients {
            for name in client.join().unwrap() {
                *counts.entry(name).or_default() += 1;
            }
        }
        let total: usize = counts.values().sum();
        assert_eq!(total, 120);
        let slow_share = counts.get("slow").copied().unwrap_or(0);
        assert!(slow_share > 0, "{algorithm}: the slow backend was never tried: {counts:?}");
        assert!(slow_share * 100 / total < 15, "{algorithm}: the slow backend got {slow_share} of {total}: {counts:?}");
    }
}

#[test]
fn two_instances_with_one_config_send_each_key_to_the_same_backend() {
    let backends = backends(4);
    for (algorithm, extra) in [("url_hash", ""), ("sticky", ""), ("maglev", ""), ("maglev", ", \"hashKey\": \"url\"")] {
        let text = named_config(&backends, &format!("\"algorithm\": \"{algorithm}\"{extra}"));
        let (first, second) = (LoadBalancer::start(&text), LoadBalancer::start(&text));
        let (on_first, on_second) = (key_map(&first), key_map(&second));
        assert_eq!(on_first, on_second, "{algorithm}{extra}: the instances disagree");
        let mut used = on_first.clone();
        used.sort();
        used.dedup();
        assert!(used.len() >= 3, "{algorithm}{extra}: 40 keys all went to {used:?}");
        assert_eq!(key_map(&first), on_first, "{algorithm}{extra}: a key changed backend between two rounds");
    }
}

#[test]
fn keys_move_only_off_a_backend_that_leaves_and_come_back_when_it_returns() {
    let mut backends = backends(4);
    for algorithm in ["url_hash", "sticky"] {
        let lb = LoadBalancer::start(&named_config(&backends, &format!("\"algorithm\": \"{algorithm}\"")));
        let before = key_map(&lb);
        let leaving = before[0].clone();
        let index = backends.iter().position(|backend| backend.name == leaving).unwrap();
        let port = backends[index].port;
        backends[index].kill();
        wait_until(Duration::from_secs(10), "the killed backend marked unhealthy", || healthy_count(&lb) == 3);
        let during = key_map(&lb);
        for (key, (was, now)) in before.iter().zip(&during).enumerate() {
            if *was == leaving {
                assert_ne!(*now, leaving, "{algorithm}: key {key}");
            } else {
                assert_eq!(now, was, "{algorithm}: key {key} moved though its backend stayed");
            }
        }
        backends[index] = EchoBackend::start_on(port, &["--name", &leaving]);
        wait_until(Duration::from_secs(10), "the backend healthy again", || healthy_count(&lb) == 4);
        assert_eq!(key_map(&lb), before, "{algorithm}: the keys came back");
    }
}

#[test]
fn the_sticky_cookie_names_the_backend_and_is_honoured_while_it_is_healthy() {
    let mut backends = backends(3);
    let lb = LoadBalancer::start(&named_config(&backends, "\"algorithm\": \"sticky\", \"stickyCookie\": \"lb\""));

    let first = answer_for(&lb, 2, "/", None);
    let by_address = served_by(&first);
    assert_eq!(
        first.header("set-cookie"),
        Some(format!("lb={by_address}; Path=/; HttpOnly; SameSite=Lax").as_str()),
        "a new client is told its backend, by name, not address"
    );
    assert!(!first.header("set-cookie").unwrap().contains("127.0.0.1"));

    // A cookie naming another backend wins over the address, and is not set again.
    let pinned = backends.iter().map(|backend| backend.name.clone()).find(|name| *name != by_address).unwrap();
    for _ in 0..5 {
        let response = answer_for(&lb, 2, "/", Some(&format!("theme=dark; lb={pinned}")));
        assert_eq!(served_by(&response), pinned);
        assert_eq!(response.header("set-cookie"), None);
    }

    // When that backend fails, the client moves and is told where.
    let index = backends.iter().position(|backend| backend.name == pinned).unwrap();
    backends[index].kill();
    wait_until(Duration::from_secs(10), "the pinned backend marked unhealthy", || healthy_count(&lb) == 2);
    let moved = answer_for(&lb, 2, "/", Some(&format!("lb={pinned}")));
    let now_on = served_by(&moved);
    assert_ne!(now_on, pinned);
    assert_eq!(moved.header("set-cookie"), Some(format!("lb={now_on}; Path=/; HttpOnly; SameSite=Lax").as_str()));
}

#[test]
fn every_algorithm_answers_through_a_real_process() {
    let backends = backends(3);
    for algorithm in ["least_time", "url_hash", "sticky", "maglev", "p2c", "random"] {
        let lb = LoadBalancer::start(&named_config(&backends, &format!("\"algorithm\": \"{algorithm}\"")));
        assert_eq!(lb.metrics()["algorithm"], algorithm);
        let answered: Vec<String> = (0..12u8).map(|key| served_by(&answer_for(&lb, key + 2, "/", None))).collect();
        assert!(answered.iter().all(|name| name.starts_with("web-")), "{algorithm}: {answered:?}");
    }
}

#[test]
fn random_and_p2c_share_requests_by_weight() {
    // Sequential requests on one connection: each finds both backends idle, so each is an
    // independent draw. `random` draws by weight; `p2c` draws two different backends by weight
    // and, with equal loads, keeps the first: either way heavy's chance is 3/4 per request.
    // Hoeffding: P(|share - 3/4| >= 0.125) <= 2 exp(-2 * 800 * 0.125^2) = 2 e^-25 < 3e-11 for
    // each algorithm: the tolerance never fails by chance, while equal shares (1/2) or weights
    // read the wrong way round (1/4) are far outside it.
    const REQUESTS: usize = 800;
    const TOLERANCE: f64 = 0.125;
    let backends = [EchoBackend::start(&["--name", "light"]), EchoBackend::start(&["--name", "heavy"])];
    let servers = format!(
        "[{{\"url\": \"{}\", \"name\": \"light\", \"weight\": 1}}, {{\"url\": \"{}\", \"name\": \"heavy\", \"weight\": 3}}]",
        backends[0].url(),
        backends[1].url()
    );
    for algorithm in ["random", "p2c"] {
        let lb = LoadBalancer::start(&format!(
            "{{\"algorithm\": \"{algorithm}\", \"healthCheckInterval\": \"1m\", \"servers\": {servers}}}"
        ));
        let mut client = Client::connect(lb.addr());
        let mut heavy = 0;
        for index in 0..REQUESTS {
            client.send(format!("GET /draw/{index} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
            match served_by(&client.response(false)).as_str() {
                "heavy" => heavy += 1,
                "light" => {}
                other => panic!("{algorithm}: answered by {other}"),
            }
        }
        let share = heavy as f64 / REQUESTS as f64;
        assert!((share - 0.75).abs() < TOLERANCE, "{algorithm}: heavy (weight 3 of 4) got {heavy} of {REQUESTS}");
        assert_eq!(lb.metrics()["total_requests"], REQUESTS);
    }
}
