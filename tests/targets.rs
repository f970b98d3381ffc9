//! One reading of host and path, through the real binaries: the backend receives the normalised
//! path the load balancer read (never a different reading of the same bytes), an absolute-form
//! target is forwarded in origin form with its authority as `Host`, and every target or host that
//! could be read two ways is refused with 400 before one byte reaches a backend.

mod common;

use common::{Client, LoadBalancer, Received, ScriptedBackend, recording_backend};

fn balancer(backend: &ScriptedBackend) -> LoadBalancer {
    LoadBalancer::start(&format!("{{\"healthCheckInterval\": \"1m\", \"servers\": [\"{}\"]}}", backend.url()))
}

/// Sends one request on a fresh connection; returns the status and whether the connection closed.
fn status_of(lb: &LoadBalancer, raw: &str) -> (u16, bool) {
    let mut client = Client::connect(lb.addr());
    client.send(raw.as_bytes());
    let response = client.response(false);
    (response.status, client.is_closed())
}

/// The request line and the `Host` field of every request the backend received, in order.
fn lines_received(received: &Received) -> Vec<(String, Option<String>)> {
    let text = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    text.split("\r\n\r\n")
        .filter(|head| !head.is_empty())
        .map(|head| {
            let mut lines = head.lines();
            let request_line = lines.next().unwrap_or_default().to_string();
            let host = lines.find_map(|line| line.strip_prefix("Host: ").map(str::to_string));
            (request_line, host)
        })
        .collect()
}

#[test]
fn the_backend_receives_the_normalised_path_and_the_query_as_sent() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let cases = [
        ("/a/./b/../c//d?x=%2F%2e&y=..", "/a/c/d?x=%2F%2e&y=.."),
        ("/%7Euser/%41%3a", "/~user/A%3A"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/..;jsessionid=1/b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a%20b/", "/a%20b/"),
        ("/UPPER/case", "/UPPER/case"),
    ];
    for (sent, _) in cases {
        let (status, _) = status_of(&lb, &format!("GET {sent} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 200, "{sent}");
    }
    let expected: Vec<(String, Option<String>)> =
        cases.iter().map(|(_, forwarded)| (format!("GET {forwarded} HTTP/1.1"), Some("app".to_string()))).collect();
    assert_eq!(lines_received(&received), expected);
}

#[test]
fn an_absolute_form_target_is_forwarded_in_origin_form_with_its_authority_as_host() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let requests = [
        "GET http://Api.Example.com:8080/v1/../v2?q=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        "GET HTTP://h.example/ HTTP/1.1\r\nHost: H.example.\r\nConnection: close\r\n\r\n",
        "GET http://old.example HTTP/1.0\r\n\r\n",
    ];
    for raw in requests {
        assert_eq!(status_of(&lb, raw).0, 200, "{raw:?}");
    }
    assert_eq!(
        lines_received(&received),
        [
            ("GET /v2?q=1 HTTP/1.1".to_string(), Some("Api.Example.com:8080".to_string())),
            ("GET / HTTP/1.1".to_string(), Some("h.example".to_string())),
            ("GET / HTTP/1.0".to_string(), Some("old.example".to_string())),
        ]
    );
}

#[test]
fn a_host_with_a_port_upper_case_or_a_trailing_dot_is_accepted_and_passed_on_as_sent() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    for host in ["App.Example.COM", "app.example.com.", "app.example.com:8080", "[::1]:80", "127.0.0.1"] {
        let raw = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(&lb, &raw).0, 200, "{host}");
    }
    let hosts: Vec<Option<String>> = lines_received(&received).into_iter().map(|(_, host)| host).collect();
    let expected = ["App.Example.COM", "app.example.com.", "app.example.com:8080", "[::1]:80", "127.0.0.1"];
    assert_eq!(hosts, expected.map(|host| Some(host.to_string())));
}

#[test]
fn targets_and_hosts_that_could_be_read_two_ways_get_400_and_reach_no_backend() {
    let (backend, received) = recording_backend();
    let lb = balancer(&backend);
    let targets = [
        "/..",
        "/a/../../etc/passwd",
        "/a/%2e%2e/%2E%2E/x",
        "/..;/x",
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "/a%00b",
        "/a%zz",
        "/a%4",
        "/a#fragment",
        "/a?b#c",
        "ftp://h/x",
        "h:443",
        "x/relative",
    ];
    for target in targets {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: app\r\n\r\n");
        assert_eq!(status_of(&lb, &raw), (400, true), "{target}");
    }
    let hosts = ["user@app", "a..b", "a b", "a,b", "app:99999", "[::1", "%61pp", ":80"];
    for host in hosts {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(status_of(&lb, &raw), (400, true), "Host: {host}");
    }
    let mismatch = "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n";
    assert_eq!(status_of(&lb, mismatch), (400, true), "absolute form and Host disagree");

    assert!(received.lock().unwrap().is_empty(), "{:?}", String::from_utf8_lossy(&received.lock().unwrap()));
    assert_eq!(lb.get("/still/serving").status, 200);
}
