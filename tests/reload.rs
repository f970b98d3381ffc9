//! Hot reload through the real process: config rewrites under load lose no request (POSTs with
//! bodies among them, which cannot be retried, and none was), a bad file
//! changes nothing and says why in one line, new backends are checked before they get traffic,
//! and `POST /lb-reload` works on the admin listener only.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, EchoBackend, LoadBalancer, request, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

/// A config listing `servers` as `(url, weight)`, with fast health checks and reloads.
fn config_with(algorithm: &str, servers: &[(String, u32)], extra: &str) -> String {
    let list: Vec<String> =
        servers.iter().map(|(url, weight)| format!("{{\"url\": \"{url}\", \"weight\": {weight}}}")).collect();
    format!(
        "{{\"algorithm\": \"{algorithm}\", \"reloadInterval\": \"100ms\", \"healthCheckInterval\": \"200ms\", \
         \"healthCheckTimeout\": \"500ms\", {extra}\"servers\": [{}]}}",
        list.join(", ")
    )
}

fn counter(lb: &LoadBalancer, name: &str) -> u64 {
    lb.metrics()[name].as_u64().unwrap()
}

/// Rewrites the config and waits until the load balancer has applied it (or refused it).
fn rewrite_and_wait(lb: &LoadBalancer, text: &str, valid: bool) {
    let field = if valid { "config_reloads" } else { "config_reload_failures" };
    let before = counter(lb, field);
    lb.rewrite_config(text);
    wait_until(DEADLINE, "the rewritten config to be read", || counter(lb, field) == before + 1);
}

fn served_by(addr: SocketAddr, client: &mut Option<Client>) -> Result<String, String> {
    let connection = client.get_or_insert_with(|| Client::connect(addr));
    connection.send(b"GET /work HTTP/1.1\r\nHost: lb\r\n\r\n");
    let response = connection.response(false);
    if response.header("connection") == Some("close") {
        *client = None;
    }
    match response.status {
        200 => Ok(response.json()["server"].as_str().unwrap_or("?").to_string()),
        status => Err(format!("{status}: {}", response.text())),
    }
}

/// Sends a POST with a body of `length` bytes on `client`'s connection; the backend that echoed it.
/// POST is not idempotent: the load balancer may never retry it, so a request lost to a reload
/// would show here as a failure instead of being hidden by a second attempt.
fn posted_to(addr: SocketAddr, client: &mut Option<Client>, target: &str, length: usize) -> Result<String, String> {
    let connection = client.get_or_insert_with(|| Client::connect(addr));
    let mut raw = format!("POST {target} HTTP/1.1\r\nHost: lb\r\nContent-Length: {length}\r\n\r\n").into_bytes();
    raw.resize(raw.len() + length, b'p');
    connection.send(&raw);
    let response = connection.response(false);
    if response.header("connection") == Some("close") {
        *client = None;
    }
    if response.status != 200 {
        return Err(format!("POST {target}: {}: {}", response.status, response.text()));
    }
    let echoed = response.json();
    if echoed["method"] != "POST" || echoed["path"] != target || echoed["body_bytes"] != length {
        return Err(format!("POST {target} of {length} bytes echoed as {echoed}"));
    }
    Ok(echoed["server"].as_str().unwrap_or("?").to_string())
}

#[test]
fn twenty_rewrites_under_load_lose_no_request_and_the_last_one_rules() {
    let backends: Vec<EchoBackend> =
        (0..4).map(|index| EchoBackend::start(&["--name", &format!("b{index}")])).collect();
    let url = |index: usize| backends[index].url();
    let dead = format!("http://127.0.0.1:{}", common::unused_port());
    let lb = LoadBalancer::start(&config_with("round_robin", &[(url(0), 1), (url(1), 1)], ""));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|index| {
            let (addr, stop) = (lb.addr(), Arc::clone(&stop));
            let (answered, posted) = (Arc::clone(&answered), Arc::clone(&posted));
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut client = None;
                let started = Instant::now();
                // Bounded in time and count, whatever happens. Every other request is a POST
                // with a body, which no retry may hide.
                for round in 0..100_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let outcome = if round % 2 == 0 {
                        served_by(addr, &mut client)
                    } else {
                        let outcome = posted_to(addr, &mut client, &format!("/post/{index}/{round}"), 1 + round % 3000);
                        if outcome.is_ok() {
                            posted.fetch_add(1, Ordering::Relaxed);
                        }
                        outcome
                    };
                    match outcome {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(failure) => failures.push(failure),
                    }
                }
                failures
            })
        })
        .collect();

    // 20 rewrites: adding, removing and re-weighting backends, switching algorithm, adding one
    // that is down, and three invalid files in between.
    let steps: Vec<(String, bool)> = vec![
        (config_with("round_robin", &[(url(0), 1), (url(1), 1), (url(2), 1)], ""), true),
        (config_with("least_conn", &[(url(0), 1), (url(1), 1), (url(2), 1)], ""), true),
        (config_with("least_conn", &[(url(1), 1), (url(2), 1)], ""), true),
        ("{\"servers\": [".to_string(), false),
        (config_with("weighted_round_robin", &[(url(1), 3), (url(2), 1), (url(3), 1)], ""), true),
        (config_with("weighted_round_robin", &[(url(1), 3), (url(2), 1), (url(3), 1), (dead.clone(), 5)], ""), true),
        (config_with("p2c", &[(url(0), 1), (url(3), 2), (dead.clone(), 5)], ""), true),
        (config_with("p2c", &[(url(0), 1), (url(3), 2)], "\"maxRetries\": 1, "), true),
        (config_with("fastest", &[(url(0), 1)], ""), false),
        (config_with("maglev", &[(url(0), 1), (url(1), 1), (url(2), 1), (url(3), 1)], ""), true),
        (config_with("url_hash", &[(url(0), 1), (url(1), 1), (url(2), 1), (url(3), 1)], ""), true),
        (config_with("sticky", &[(url(0), 1), (url(2), 1)], ""), true),
        (config_with("random", &[(url(0), 2), (url(1), 1), (url(2), 1), (url(3), 1)], ""), true),
        (config_with("least_time", &[(url(0), 1), (url(1), 1)], "\"requestTimeout\": \"5s\", "), true),
        (config_with("least_time", &[(url(0), 1), (url(1), 1)], "\"maxHeaderBytes\": 100, "), false),
        (config_with("round_robin", &[(url(3), 1), (url(2), 1)], "\"maxHeaderBytes\": \"32KiB\", "), true),
        (config_with("ip_hash", &[(url(3), 1), (url(2), 1), (url(1), 1)], ""), true),
        (config_with("round_robin", &[(url(0), 1)], ""), true),
        (config_with("round_robin", &[(url(0), 1), (url(1), 1), (url(2), 1), (url(3), 1)], ""), true),
        (config_with("weighted_round_robin", &[(url(0), 1), (url(2), 3)], ""), true),
    ];
    assert_eq!(steps.len(), 20);
    for (index, (text, valid)) in steps.iter().enumerate() {
        rewrite_and_wait(&lb, text, *valid);
        if text.contains(&dead) {
            let metrics = lb.metrics();
            let record = metrics["backends"].as_array().unwrap().iter().find(|b| b["url"] == dead.as_str()).cloned();
            let record = record.unwrap_or_else(|| panic!("step {index}: {metrics}"));
            assert_eq!(record["state"], "unhealthy", "step {index}: probed before it got traffic");
            assert_eq!(record["total_requests"], 0, "step {index}: a new backend that is down gets nothing");
        }
        // Let the load run on each config for a moment.
        let before = answered.load(Ordering::Relaxed);
        wait_until(DEADLINE, "requests answered on this config", || answered.load(Ordering::Relaxed) > before + 20);
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|client| client.join().unwrap()).collect();
    assert!(failures.is_empty(), "{} failed requests, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(answered.load(Ordering::Relaxed) > 400);
    // Not one POST was retried: each has its access line with `attempts=1`.
    let posts = posted.load(Ordering::Relaxed);
    assert!(posts > 200, "{posts} POSTs");
    let post_lines =
        || -> Vec<String> { lb.log.all().into_iter().filter(|line| line.contains("\"POST /post/")).collect() };
    wait_until(DEADLINE, "an access line for every POST", || post_lines().len() == posts);
    let retried: Vec<String> = post_lines()
        .into_iter()
        .filter(|line| !line.contains(" 200 ") || !line.ends_with(" attempts=1 pool=default"))
        .collect();
    assert!(retried.is_empty(), "{} of {posts} POSTs not answered at the first attempt: {:?}", retried.len(), retried);
    assert_eq!(counter(&lb, "config_reloads"), 17);
    assert_eq!(counter(&lb, "config_reload_failures"), 3);
    assert_eq!(counter(&lb, "failed_requests"), 0);

    // The final config rules: weights 1:3 over b0 and b2, exactly, and nothing else.
    let metrics = lb.metrics();
    assert_eq!(metrics["algorithm"], "weighted_round_robin");
    let urls: Vec<&str> = metrics["backends"].as_array().unwrap().iter().map(|b| b["url"].as_str().unwrap()).collect();
    assert_eq!(urls, [url(0), url(2)]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut client = None;
    for _ in 0..80 {
        *counts.entry(served_by(lb.addr(), &mut client).unwrap()).or_default() += 1;
    }
    assert_eq!((counts.get("b0"), counts.get("b2"), counts.len()), (Some(&20), Some(&60), 2), "{counts:?}");
}

#[test]
fn a_bad_file_changes_nothing_and_one_error_line_says_why() {
    let backend = EchoBackend::start(&["--name", "only"]);
    let lb = LoadBalancer::start(&config_with("round_robin", &[(backend.url(), 1)], ""));
    rewrite_and_wait(&lb, &config_with("round_robin", &[(backend.url(), 0)], ""), false);
    let line = lb.log.wait_for("config not reloaded", DEADLINE);
    let file = lb.config_path().display().to_string();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!(
            "{file}: servers[0].weight: must be at least 1 (config not reloaded; the running config stays)"
        )),
        "{line}"
    );
    assert_eq!(lb.log.count_containing("config not reloaded"), 1, "one line, not one per check");
    assert_eq!(lb.get("/").status, 200, "still serving with the old config");
    assert_eq!(lb.metrics()["backends"][0]["weight"], 1);
}

#[test]
fn post_lb_reload_rereads_the_file_on_the_admin_listener_only() {
    let first = EchoBackend::start(&["--name", "first"]);
    let second = EchoBackend::start(&["--name", "second"]);
    let text = |algorithm: &str, workers: u32| {
        format!(
            "{{\"algorithm\": \"{algorithm}\", \"reloadInterval\": \"0s\", \"adminListen\": \"127.0.0.1:0\", \
             \"workers\": {workers}, \"servers\": [\"{}\", \"{}\"]}}",
            first.url(),
            second.url()
        )
    };
    let lb = LoadBalancer::start(&text("round_robin", 8));
    let admin_line = lb.log.wait_for("admin endpoint on ", DEADLINE);
    let admin: SocketAddr = admin_line
        .split("admin endpoint on ")
        .nth(1)
        .unwrap()
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
        .parse()
        .unwrap();
    let admin_metrics = || request(admin, "GET /lb-metrics HTTP/1.1\r\nHost: a\r\n\r\n").json();

    lb.rewrite_config(&text("least_conn", 16));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(admin_metrics()["algorithm"], "round_robin", "reloadInterval 0s: the file is not watched");

    // On the public listener the path is an ordinary one, proxied to a backend.
    let public = request(lb.addr(), "POST /lb-reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(public.status, 200);
    assert!(public.json()["server"].is_string(), "answered by a backend: {}", public.text());
    assert_eq!(admin_metrics()["config_reloads"], 0);

    let get = request(admin, "GET /lb-reload HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));

    let reloaded = request(admin, "POST /lb-reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(reloaded.text(), "config reloaded: 2 backends (0 added, 0 removed), algorithm least_conn\n");
    let metrics = admin_metrics();
    assert_eq!((metrics["algorithm"].as_str(), metrics["config_reloads"].as_u64()), (Some("least_conn"), Some(1)));
    lb.log.wait_for("workers changed from 8 to 16: that needs a restart; keeping 8 until then", DEADLINE);

    lb.rewrite_config("{\"servers\": []}");
    let refused = request(admin, "POST /lb-reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(refused.status, 500);
    assert!(refused.text().contains("servers: must list at least one backend"), "{}", refused.text());
    assert_eq!(admin_metrics()["config_reload_failures"], 1);
}

#[test]
fn one_backend_under_two_names_is_refused_at_start_up_and_on_reload() {
    let backend = EchoBackend::start(&[]);
    let twice =
        |first: &str, second: &str| config_with("round_robin", &[(first.to_string(), 1), (second.to_string(), 1)], "");
    let by_name = format!("http://localhost:{}", backend.port);
    let problem = format!("servers[1]: {} is the same backend as servers[0] ({by_name})", backend.url());

    let dir = common::TempDir::new();
    let path = dir.write("config.json", &twice(&by_name, &backend.url()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() && Instant::now() < exited {
        thread::sleep(Duration::from_millis(20));
    }
    // Still running after the deadline means it started: killed here, it fails the check below.
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "a bad config refused, not started: {stderr}");
    assert_eq!(stderr, format!("{}: {problem}\n", path.display()));

    let lb = LoadBalancer::start(&config_with("round_robin", &[(backend.url(), 1)], ""));
    rewrite_and_wait(&lb, &twice(&by_name, &backend.url()), false);
    let refused = lb.log.wait_for("config not reloaded", DEADLINE);
    assert!(refused.contains("ERROR") && refused.contains(&problem), "{refused}");
    assert_eq!(lb.metrics()["total_backends"], 1, "the running config stays");
}
