//! Running it: the metrics document and its exact counts, rate limiting and its bound on tracked
//! clients, graceful shutdown on SIGTERM, and refusing a bad config before anything listens.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{EchoBackend, LoadBalancer, TempDir, config, signal};

#[test]
fn metrics_report_every_field_and_exact_counts() {
    let first = EchoBackend::start(&["--name", "first"]);
    let second = EchoBackend::start(&["--name", "second"]);
    let lb = LoadBalancer::start(&config(&[first.url(), second.url()], ""));
    for index in 0..25 {
        assert_eq!(lb.get(&format!("/n/{index}")).status, 200);
    }
    let metrics = lb.metrics();
    for field in [
        "uptime_seconds",
        "total_requests",
        "success_requests",
        "failed_requests",
        "retry_attempts",
        "rate_limited_requests",
        "avg_latency_ms",
        "healthy_backends",
        "total_backends",
        "backends",
    ] {
        assert!(metrics.get(field).is_some(), "missing {field}: {metrics}");
    }
    assert_eq!(metrics["total_requests"], 25, "the metrics requests themselves are not counted");
    assert_eq!(metrics["success_requests"], 25);
    assert_eq!(metrics["failed_requests"], 0);
    assert_eq!(metrics["retry_attempts"], 0);
    assert_eq!(metrics["rate_limited_requests"], 0);
    assert!(metrics["avg_latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!((metrics["healthy_backends"].clone(), metrics["total_backends"].clone()), (2.into(), 2.into()));
    let backends = metrics["backends"].as_array().unwrap();
    let per_backend: Vec<u64> = backends.iter().map(|backend| backend["total_requests"].as_u64().unwrap()).collect();
    assert_eq!(per_backend, [13, 12], "round robin over 25 requests");
    for backend in backends {
        assert_eq!(backend["weight"], 1);
        assert_eq!(backend["state"], "healthy");
        assert_eq!(backend["active_connections"], 0);
        assert_eq!(backend["total_failures"], 0);
        let checked = backend["last_checked"].as_str().unwrap();
        assert!(
            checked.len() == 20 && checked.ends_with('Z') && checked.as_bytes()[10] == b'T',
            "RFC 3339 UTC: {checked}"
        );
    }
    assert_eq!(backends[0]["url"], first.url());
}

#[test]
fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"rateLimit\": {\"requestsPerSecond\": 1, \"burst\": 3}"));
    let statuses: Vec<u16> = (0..6).map(|_| lb.get("/").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let limited = lb.get("/");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.text(), "Too Many Requests");
    let metrics = lb.metrics();
    assert_eq!(metrics["rate_limited_requests"], 4);
    assert_eq!(metrics["total_requests"], 7);
    assert_eq!(metrics["failed_requests"], 4);
}

#[test]
fn past_max_clients_a_new_client_gets_429_until_a_bucket_refills() {
    let backend = EchoBackend::start(&[]);
    // Each bucket refills two seconds after one request; at most three clients are tracked.
    let lb = LoadBalancer::start(&config(
        &[backend.url()],
        "\"rateLimit\": {\"requestsPerSecond\": 0.5, \"burst\": 2, \"maxClients\": 3}",
    ));
    // Clients told apart by their source address, 127.0.0.N.
    let get_from = |host: u8| {
        let mut client = common::Client::from_stream(common::connect_from([127, 0, 0, host], lb.addr()));
        client.send(b"GET /who HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
        client.response(false)
    };
    for host in 1..=3 {
        assert_eq!(get_from(host).status, 200, "client {host}");
    }
    let refused = get_from(4);
    assert_eq!(refused.status, 429, "a fourth client is past maxClients");
    assert!(matches!(refused.header("retry-after"), Some("1" | "2")), "until a bucket refills: {:?}", refused.headers);
    assert_eq!(get_from(1).status, 200, "a tracked client keeps its bucket");
    assert_eq!(lb.metrics()["rate_limited_requests"], 1);
    common::wait_until(Duration::from_secs(10), "a slot for the fourth client", || get_from(4).status == 200);
    assert_eq!(get_from(4).status, 200, "tracked now");
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let slow = EchoBackend::start(&["--latency", "1s"]);
    let mut lb = LoadBalancer::start(&config(&[slow.url()], ""));
    let addr = lb.addr();
    let in_flight =
        thread::spawn(move || common::request(addr, "GET /slow HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"));
    common::wait_until(Duration::from_secs(5), "the request to reach the backend", || {
        lb.metrics()["backends"][0]["active_connections"] == 1
    });
    signal(lb.pid(), "TERM");
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200, "the request in flight completed");
    assert_eq!(response.json()["path"], "/slow");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(lb.log.count_containing("shutting down") == 1, "{:?}", lb.log.all());
}

#[test]
fn sigint_on_an_idle_server_exits_zero_promptly() {
    let backend = EchoBackend::start(&[]);
    let mut lb = LoadBalancer::start(&config(&[backend.url()], ""));
    let _idle_keep_alive = {
        let mut client = common::Client::connect(lb.addr());
        client.send(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n");
        assert_eq!(client.response(false).status, 200);
        client
    };
    signal(lb.pid(), "INT");
    let status = lb.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary to completion with `config` and extra flags; returns (exit code, stderr).
fn run_with(config: &str, args: &[&str]) -> (Option<i32>, String) {
    common::run_to_exit(&TempDir::new(), config, args)
}

#[test]
fn a_bad_config_exits_2_with_one_line_naming_the_key_and_nothing_listens() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let cases = [
        (
            format!(
                "{{\"listenPort\": \"127.0.0.1:{port}\", \"servers\": [\"http://127.0.0.1:1\", {{\"url\": \"http://127.0.0.1:2\", \"weight\": 0}}]}}"
            ),
            "config.json: servers[1].weight: must be at least 1\n".to_string(),
        ),
        (
            format!("{{\"listenPort\": \"127.0.0.1:{port}\", \"algorithm\": \"fastest\", \"servers\": [\"http://127.0.0.1:1\"]}}"),
            "config.json: algorithm: unknown algorithm \"fastest\" (valid: round_robin, weighted_round_robin, least_conn, ip_hash, least_time, url_hash, sticky, maglev, p2c, random)\n"
                .to_string(),
        ),
        (format!("{{\"listenPort\": \"127.0.0.1:{port}\", \"servers\": []}}"), "config.json: servers: must list at least one backend\n".to_string()),
        ("{\"servers\": [".to_string(), "config.json: invalid JSON: EOF while parsing a list at line 1 column 13\n".to_string()),
        (
            format!("{{\"listenPort\": \"127.0.0.1:{port}\", \"requestTimeout\": \"ten\", \"servers\": [\"http://127.0.0.1:1\"]}}"),
            "config.json: requestTimeout: must be a duration like \"50ms\", \"3s\" or \"1m\", got \"ten\"\n".to_string(),
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = run_with(&text, &[]);
        assert_eq!(code, Some(2), "{text}");
        assert_eq!(stderr, expected, "{text}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens");
    }
    let (code, stderr) = run_with("{\"servers\": [\"http://127.0.0.1:1\"]}", &["--algorithm", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.starts_with("--algorithm: unknown algorithm \"nope\" (valid: "), "{stderr}");

    let missing =
        Command::new(env!("CARGO_BIN_EXE_loadbalancer")).args(["--config", "/nonexistent/lb.json"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("/nonexistent/lb.json: cannot read file:"));
}

#[test]
fn idle_keep_alive_connections_hold_no_worker() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"workers\": 1"));
    // Many idle keep-alive clients, each having had one answer, and one worker.
    let mut idle: Vec<common::Client> = (0..20)
        .map(|index| {
            let mut client = common::Client::connect(lb.addr());
            client.send(format!("GET /first/{index} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
            let response = client.response(false);
            assert_eq!((response.status, response.header("connection")), (200, None), "kept alive");
            client
        })
        .collect();
    // The only worker is free: a new client is served at once, and every idle one still is.
    assert_eq!(lb.get("/new").status, 200);
    for (index, client) in idle.iter_mut().enumerate().rev() {
        client.send(format!("GET /again/{index} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
        assert_eq!(client.response(false).json()["path"], format!("/again/{index}"));
    }
    assert_eq!(lb.metrics()["open_connections"], 21, "20 idle clients and the one asking");
}

#[test]
fn lb_debug_turns_on_debug_logging_and_rust_log_can_quiet_it() {
    let backend = EchoBackend::start(&[]);
    let text = config(&[backend.url()], "");
    let verbose = LoadBalancer::start_with(&text, &[], &[("LB_DEBUG", "1")]);
    assert_eq!(verbose.get("/lb-metrics").status, 200);
    let line = verbose.log.wait_for("metrics", Duration::from_secs(5));
    assert!(line.contains("DEBUG"), "{line}");

    let quiet = LoadBalancer::start_with(&text, &[], &[("RUST_LOG", "info,access=off")]);
    assert_eq!(quiet.get("/ping").status, 200);
    let normal = LoadBalancer::start(&text);
    assert_eq!(normal.get("/ping").status, 200);
    normal.log.wait_for("\"GET /ping HTTP/1.1\" 200", Duration::from_secs(5));
    assert_eq!(quiet.log.count_containing("GET /ping"), 0, "{:?}", quiet.log.all());
}

/// A load balancer started with `--listen :0` (and its config's `adminListen`), which the harness
/// cannot start: its log line names no 127.0.0.1 address. Killed on drop.
struct EveryInterface {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: TempDir,
}

impl EveryInterface {
    fn start(config: &str) -> EveryInterface {
        let dir = TempDir::new();
        let path = dir.write("config.json", config);
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
            .arg("--config")
            .arg(&path)
            .args(["--listen", ":0"])
            .env_remove("LB_ALGORITHM")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        EveryInterface { child, lines, seen: Vec::new(), _dir: dir }
    }

    /// The port in the first log line containing `before`, right after it.
    fn port_after(&mut self, before: &str) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.seen.iter().find(|line| line.contains(before)) {
                let rest = line.split(before).nth(1).unwrap();
                return rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line containing {before:?} in time: {:?}", self.seen),
            }
        }
    }
}

impl Drop for EveryInterface {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listen_on_every_interface_serves_ipv6_and_ipv4_on_one_port_and_so_does_the_admin_listener() {
    let backend = EchoBackend::start(&[]);
    let mut lb = EveryInterface::start(&config(&[backend.url()], "\"adminListen\": \":0\""));
    let port = lb.port_after("listening on [::]:");
    let admin = lb.port_after("admin endpoint on [::]:");
    assert!(lb.seen.iter().any(|line| line.contains(&format!("listening on [::]:{port} (IPv6 and IPv4),"))));
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    for (addr, client) in [(v4, "127.0.0.1"), (v6, "::1")] {
        let response = common::request(addr, "GET /who HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
        assert_eq!(response.status, 200, "via {addr}");
        let headers = response.json()["headers"].clone();
        let forwarded_for = headers.as_array().unwrap().iter().find(|pair| pair[0] == "X-Forwarded-For").unwrap();
        assert_eq!(forwarded_for[1], client, "via {addr}: the client's address in its own family");
    }
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, admin)),
    ] {
        let response = common::request(addr, "GET /lb-metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
        assert_eq!(response.status, 200, "admin via {addr}");
        assert_eq!(response.json()["total_requests"], 2);
    }
    signal(lb.child.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = lb.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGTERM: the acceptor on [::] was not woken");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
