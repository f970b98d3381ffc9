//! Routes through the real binaries: hosts and path prefixes to pools, stripping a prefix (the
//! exact bytes a backend receives), absolute-form targets and unusual spellings of a host,
//! redirects and fixed answers, header edits both ways, 404 without a default pool, and a reload
//! that adds a pool and a route while requests run.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Client, EchoBackend, LoadBalancer, Received, Response, recording_backend, request};

const DEADLINE: Duration = Duration::from_secs(10);

/// One request on a fresh connection.
fn send(lb: &LoadBalancer, raw: &str) -> Response {
    request(lb.addr(), raw)
}

fn get_host(lb: &LoadBalancer, host: &str, target: &str) -> Response {
    send(lb, &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
}

/// Every request head the recording backend received, as text.
fn heads(received: &Received) -> Vec<String> {
    let text = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    text.split("\r\n\r\n").filter(|head| !head.is_empty()).map(str::to_string).collect()
}

fn field<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn hosts_and_prefixes_choose_pools_first_match_wins() {
    let web = EchoBackend::start(&["--name", "web"]);
    let api = EchoBackend::start(&["--name", "api"]);
    let assets = EchoBackend::start(&["--name", "assets"]);
    let config = format!(
        r#"{{"healthCheckInterval": "200ms", "servers": ["{}"],
            "pools": {{"api": {{"servers": ["{}"]}}, "static": {{"servers": ["{}"]}}}},
            "routes": [
              {{"name": "api", "match": {{"host": "api.example.com", "pathPrefix": "/v1"}}, "pool": "api"}},
              {{"name": "assets", "match": {{"host": "*.example.com", "pathPrefix": "/static/"}}, "pool": "static"}},
              {{"name": "posts", "match": {{"methods": ["POST"], "headers": {{"X-Api": true}}}}, "pool": "api"}}
            ]}}"#,
        web.url(),
        api.url(),
        assets.url()
    );
    let lb = LoadBalancer::start(&config);
    let cases = [
        ("api.example.com", "/v1", "api"),
        ("api.example.com", "/v1/users?id=3", "api"),
        ("api.example.com", "/v1?q", "api"),
        ("api.example.com", "/v1beta", "web"),
        ("api.example.com", "/v2/users", "web"),
        ("API.Example.COM.:8080", "/v1/x", "api"),
        ("api.example.com", "/v2/../v1/x", "api"),
        ("api.example.com", "/%76%31/x", "api"),
        ("www.example.com", "/static/app.js", "assets"),
        ("api.example.com", "/static/app.js", "assets"),
        ("example.com", "/static/app.js", "web"),
        ("a.b.example.com", "/static/app.js", "web"),
        ("www.example.com", "/static", "web"),
        ("other.test", "/v1/x", "web"),
    ];
    for (host, target, backend) in cases {
        let response = get_host(&lb, host, target);
        assert_eq!(response.status, 200, "{host} {target}: {}", response.text());
        assert_eq!(response.header("x-backend"), Some(backend), "{host} {target}");
    }
    // Absolute form: the host comes from the target.
    let response = send(&lb, "GET http://api.example.com/v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    assert_eq!(response.header("x-backend"), Some("api"));
    let response = send(&lb, "GET http://api.example.com/v1/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
    assert_eq!(response.status, 400, "a Host that disagrees with the target's authority");
    // Methods and headers: both must hold.
    let post = |extra: &str| {
        send(&lb, &format!("POST /x HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: 2\r\n\r\nhi"))
            .header("x-backend")
            .map(str::to_string)
    };
    assert_eq!(post("x-api: 1\r\n").as_deref(), Some("api"));
    assert_eq!(post("").as_deref(), Some("web"));
    assert_eq!(get_host(&lb, "a", "/x").header("x-backend"), Some("web"));
}

#[test]
fn strip_prefix_sends_the_rest_and_says_what_was_removed() {
    let (backend, received) = recording_backend();
    let config = format!(
        r#"{{"healthCheckInterval": "1m",
            "pools": {{"api": {{"servers": ["{}"]}}}},
            "routes": [
              {{"match": {{"pathPrefix": "/v1"}}, "pool": "api", "stripPrefix": true}},
              {{"match": {{"pathPrefix": "/static/"}}, "pool": "api", "stripPrefix": true}},
              {{"match": {{"pathPrefix": "/keep"}}, "pool": "api"}}
            ]}}"#,
        backend.url()
    );
    let lb = LoadBalancer::start(&config);
    let cases = [
        ("/v1/users?id=3", "/users?id=3", Some("/v1")),
        ("/v1", "/", Some("/v1")),
        ("/v1/", "/", Some("/v1")),
        ("/v1?q=1", "/?q=1", Some("/v1")),
        ("/static/css/a.css", "/css/a.css", Some("/static")),
        ("/keep/x", "/keep/x", None),
    ];
    for (target, forwarded, prefix) in cases {
        received.lock().unwrap().clear();
        let response = send(&lb, &format!("GET {target} HTTP/1.1\r\nHost: a\r\nX-Forwarded-Prefix: /evil\r\n\r\n"));
        assert_eq!(response.status, 200, "{target}");
        let heads = heads(&received);
        assert_eq!(heads.len(), 1, "{target}: {heads:?}");
        assert_eq!(heads[0].lines().next(), Some(format!("GET {forwarded} HTTP/1.1").as_str()), "{target}");
        let expected: Vec<&str> = prefix.into_iter().collect();
        assert_eq!(field(&heads[0], "x-forwarded-prefix"), expected, "{target}: the client's own is dropped");
    }
    // No route matches and there is no default pool: 404, and nothing reaches the backend.
    received.lock().unwrap().clear();
    let response = send(&lb, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((response.status, response.text().as_str()), (404, "Not Found"));
    assert!(heads(&received).is_empty());
    let metrics = lb.metrics();
    assert_eq!(metrics["failed_requests"], 1);
}

#[test]
fn redirects_and_fixed_answers_reach_no_backend() {
    let (backend, received) = recording_backend();
    let config = format!(
        r#"{{"healthCheckInterval": "1m", "servers": ["{}"],
            "routes": [
              {{"name": "old", "match": {{"host": "old.example.com"}},
               "redirect": {{"location": "https://www.example.com{{path}}{{query}}", "status": 301}}}},
              {{"name": "moved", "match": {{"path": "/moved"}}, "redirect": {{"location": "https://{{host}}/new"}}}},
              {{"name": "ping", "match": {{"path": "/lb-ping", "methods": ["GET", "HEAD"]}},
               "respond": {{"status": 200, "body": "ok\n", "headers": {{"Cache-Control": "no-store"}}}}}},
              {{"name": "gone", "match": {{"pathPrefix": "/old-api"}},
               "respond": {{"status": 410, "body": "{{\"error\": \"gone\"}}", "headers": {{"Content-Type": "application/json"}}}}}}
            ]}}"#,
        backend.url()
    );
    let lb = LoadBalancer::start(&config);
    let response = get_host(&lb, "old.example.com", "/a/./b?x=1");
    assert_eq!((response.status, response.header("location")), (301, Some("https://www.example.com/a/b?x=1")));
    assert_eq!(response.header("content-length"), Some("0"));
    let response = get_host(&lb, "old.example.com", "/");
    assert_eq!(response.header("location"), Some("https://www.example.com/"), "no query, no `?`");
    let response = get_host(&lb, "Shop.Example.com", "/moved");
    assert_eq!((response.status, response.header("location")), (308, Some("https://shop.example.com/new")));

    let mut client = Client::connect(lb.addr());
    client.send(b"GET /lb-ping HTTP/1.1\r\nHost: a\r\n\r\n");
    let response = client.response(false);
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    client.send(b"HEAD /lb-ping HTTP/1.1\r\nHost: a\r\n\r\n");
    let response = client.response(true);
    assert_eq!((response.status, response.header("content-length")), (200, Some("3")), "kept alive");
    let response = send(&lb, "POST /lb-ping HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(response.status, 200, "a POST is not the ping route's: it goes to the default pool");
    assert_eq!(heads(&received).len(), 1);

    let response = get_host(&lb, "a", "/old-api/v1");
    assert_eq!((response.status, response.text().as_str()), (410, "{\"error\": \"gone\"}"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(heads(&received).len(), 1, "only the POST reached the backend");
    let lines = lb.log.wait_for("\"GET /old-api/v1 HTTP/1.1\" 410", DEADLINE);
    assert!(lines.ends_with(" attempts=0 route=gone"), "{lines}");
}

#[test]
fn header_edits_apply_both_ways_and_to_the_load_balancers_own_answers() {
    let (backend, received) = recording_backend();
    let echo = EchoBackend::start(&["--name", "echo"]);
    let down = common::unused_port();
    let config = format!(
        r#"{{"healthCheckInterval": "1m", "maxRetries": 0,
            "pools": {{"api": {{"servers": ["{}"]}}, "down": {{"servers": ["http://127.0.0.1:{down}"]}},
                       "echo": {{"servers": ["{}"]}}}},
            "routes": [
              {{"match": {{"pathPrefix": "/echo"}}, "pool": "echo", "responseHeaders": {{"remove": ["x-BACKEND"]}}}},
              {{"name": "api", "match": {{"pathPrefix": "/v1"}}, "pool": "api",
               "requestHeaders": {{"remove": ["X-Debug"], "set": {{"X-Env": "prod"}}, "add": {{"X-Tag": "b"}}}},
               "responseHeaders": {{"remove": ["Server"], "set": {{"Cache-Control": "no-store"}}}}}},
              {{"name": "down", "match": {{"pathPrefix": "/down"}}, "pool": "down",
               "responseHeaders": {{"set": {{"Cache-Control": "no-store"}}, "add": {{"X-Route": "down"}}}}}}
            ]}}"#,
        backend.url(),
        echo.url()
    );
    let lb = LoadBalancer::start(&config);
    let response = get_host(&lb, "a", "/echo/x");
    assert_eq!((response.status, response.header("x-backend")), (200, None), "removed, any case");
    assert_eq!(get_host(&lb, "a", "/echo/x").json()["server"], "echo", "from the echo backend all the same");
    let response = send(
        &lb,
        "GET /v1/x HTTP/1.1\r\nHost: a\r\nx-debug: 1\r\nX-DEBUG: 2\r\nx-env: dev\r\nX-Tag: a\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!((response.status, response.header("cache-control")), (200, Some("no-store")));
    let heads = heads(&received);
    let head = &heads[0];
    assert!(field(head, "x-debug").is_empty(), "{head}");
    assert_eq!(field(head, "x-env"), ["prod"], "set replaces every field of the name: {head}");
    assert_eq!(field(head, "x-tag"), ["a", "b"], "add appends: {head}");
    assert_eq!(field(head, "accept"), ["*/*"]);

    // The pool's only backend refuses connections: the load balancer's own 502 gets the fields too.
    let response = send(&lb, "GET /down HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!((response.header("cache-control"), response.header("x-route")), (Some("no-store"), Some("down")));
}

#[test]
fn a_reload_adds_a_pool_and_a_route_with_no_failed_request() {
    let web = EchoBackend::start(&["--name", "web"]);
    let api = EchoBackend::start(&["--name", "api"]);
    let first =
        format!(r#"{{"healthCheckInterval": "200ms", "reloadInterval": "100ms", "servers": ["{}"]}}"#, web.url());
    let lb = LoadBalancer::start(&first);
    let addr = lb.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures, served) = (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&served));
            thread::spawn(move || {
                for _ in 0..5000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let response = request(addr, "GET /v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
                    if response.status != 200 {
                        failures.lock().unwrap().push(response.status);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    common::wait_until(DEADLINE, "requests flowing", || served.load(Ordering::Relaxed) > 20);
    lb.rewrite_config(&format!(
        r#"{{"healthCheckInterval": "200ms", "reloadInterval": "100ms", "servers": ["{}"],
            "pools": {{"api": {{"servers": ["{}"]}}}},
            "routes": [{{"name": "api", "match": {{"host": "api.example.com"}}, "pool": "api"}}]}}"#,
        web.url(),
        api.url()
    ));
    lb.log.wait_for("config reloaded", DEADLINE);
    common::wait_until(DEADLINE, "the new route taking requests", || {
        get_host(&lb, "api.example.com", "/v1/x").header("x-backend") == Some("api")
    });
    let after = served.load(Ordering::Relaxed);
    common::wait_until(DEADLINE, "more requests after the reload", || served.load(Ordering::Relaxed) > after + 20);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(*failures.lock().unwrap(), Vec::<u16>::new());
    assert_eq!(get_host(&lb, "www.example.com", "/v1/x").header("x-backend"), Some("web"));
}
