//! Balancing through real processes: the exact round-robin cycle, exact weights, and ip_hash
//! stickiness per client address. (least_conn and least_time avoiding a slow backend: see
//! `algorithms.rs`.)

mod common;

use common::{Client, EchoBackend, LoadBalancer, config, connect_from};

fn backends(count: usize) -> Vec<EchoBackend> {
    (0..count).map(|index| EchoBackend::start(&["--name", &format!("b{index}")])).collect()
}

fn urls(backends: &[EchoBackend]) -> Vec<String> {
    backends.iter().map(EchoBackend::url).collect()
}

/// The name of the backend that answered a GET of `/`.
fn answered_by(lb: &LoadBalancer) -> String {
    let response = lb.get("/");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["server"].as_str().unwrap().to_string()
}

#[test]
fn round_robin_visits_each_backend_in_turn() {
    let backends = backends(3);
    let lb = LoadBalancer::start(&config(&urls(&backends), "\"algorithm\": \"round_robin\""));
    let order: Vec<String> = (0..9).map(|_| answered_by(&lb)).collect();
    let first_cycle = &order[..3];
    let mut distinct = first_cycle.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct, ["b0", "b1", "b2"], "one cycle visits each backend once: {order:?}");
    assert_eq!(order[3..6], order[..3], "{order:?}");
    assert_eq!(order[6..9], order[..3], "{order:?}");
}

#[test]
fn weighted_round_robin_gives_exact_shares_interleaved() {
    let backends = backends(3);
    let servers = format!(
        "[{{\"url\": \"{}\", \"weight\": 1}}, {{\"url\": \"{}\", \"weight\": 3}}, {{\"url\": \"{}\", \"weight\": 2}}]",
        backends[0].url(),
        backends[1].url(),
        backends[2].url()
    );
    let text =
        format!("{{\"algorithm\": \"weighted_round_robin\", \"healthCheckInterval\": \"1m\", \"servers\": {servers}}}");
    let lb = LoadBalancer::start(&text);
    let order: Vec<String> = (0..60).map(|_| answered_by(&lb)).collect();
    let count = |name: &str| order.iter().filter(|answered| *answered == name).count();
    assert_eq!((count("b0"), count("b1"), count("b2")), (10, 30, 20), "{order:?}");
    for window in order.chunks(6) {
        let in_window = |name: &str| window.iter().filter(|answered| *answered == name).count();
        assert_eq!((in_window("b0"), in_window("b1"), in_window("b2")), (1, 3, 2), "every 6 requests: {window:?}");
    }
    let longest_run = order.windows(3).filter(|run| run[0] == run[1] && run[1] == run[2]).count();
    assert_eq!(longest_run, 0, "smooth: never three in a row for weights 1:3:2: {order:?}");
}

#[test]
fn ip_hash_keeps_each_client_on_one_backend() {
    let backends = backends(3);
    let lb = LoadBalancer::start(&config(&urls(&backends), "\"algorithm\": \"ip_hash\""));
    let mut used = Vec::new();
    for host in 2..22u8 {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut client = Client::from_stream(connect_from([127, 0, 0, host], lb.addr()));
            client.send(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
            let response = client.response(false);
            assert_eq!(response.status, 200);
            let headers = response.json()["headers"].clone();
            let forwarded =
                headers.as_array().unwrap().iter().find(|pair| pair[0] == "X-Forwarded-For").unwrap()[1].clone();
            assert_eq!(forwarded, format!("127.0.0.{host}"), "the backend sees the client's address");
            seen.push(response.json()["server"].as_str().unwrap().to_string());
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "client 127.0.0.{host} moved between backends: {seen:?}");
        used.push(seen[0].clone());
    }
    used.sort();
    used.dedup();
    assert!(used.len() >= 2, "20 clients all hashed to {used:?}");
}

#[test]
fn algorithm_flag_beats_environment_beats_file() {
    let backends = backends(2);
    let text = config(&urls(&backends), "\"algorithm\": \"round_robin\"");
    let from_env = LoadBalancer::start_with(&text, &[], &[("LB_ALGORITHM", "least_conn")]);
    assert_eq!(from_env.metrics()["algorithm"], "least_conn");
    let from_flag = LoadBalancer::start_with(&text, &["--algorithm", "ip_hash"], &[("LB_ALGORITHM", "least_conn")]);
    assert_eq!(from_flag.metrics()["algorithm"], "ip_hash");
    let from_file = LoadBalancer::start(&text);
    assert_eq!(from_file.metrics()["algorithm"], "round_robin");
}
