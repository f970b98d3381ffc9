//! The access log as the real binary writes it: `"accessLog": "json"` gives bare JSON lines with
//! exact values, `"off"` gives none while other lines stay, `"text"` is the historical line.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::{EchoBackend, LoadBalancer, config, signal};
use loadbalancer::timestamp::rfc3339_millis;

const FIELDS: [&str; 13] = [
    "time",
    "client",
    "method",
    "path",
    "status",
    "backend",
    "bytes_in",
    "bytes_out",
    "latency_ms",
    "attempts",
    "route",
    "pool",
    "listener",
];

/// Sends `raw` on a new connection and returns every byte received until the load balancer closes.
fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = common::connect(addr);
    stream.write_all(raw).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    received
}

fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(&response[9..12]).parse().unwrap()
}

/// The JSON access line whose `path` is `path` (`None`: a refusal, whose path is null).
fn json_line_for(lb: &LoadBalancer, path: Option<&str>) -> serde_json::Value {
    let mut found = None;
    common::wait_until(Duration::from_secs(5), &format!("the access line for {path:?}"), || {
        found = lb
            .log
            .all()
            .iter()
            .filter(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|value| value["path"].as_str() == path);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn json_lines_are_bare_objects_with_exact_values() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"accessLog\": \"json\""));
    let before = rfc3339_millis(SystemTime::now());

    let get = exchange_raw(lb.addr(), b"GET /hello?x=1 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let body = "twenty-three body bytes";
    let post = exchange_raw(
        lb.addr(),
        format!(
            "POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    // Sent and echoed back chunked: bytes_in counts the payload, bytes_out the framing as sent too.
    let echoed = exchange_raw(
        lb.addr(),
        format!(
            "POST /echo HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert!(String::from_utf8_lossy(&echoed).ends_with("\r\n\r\n17\r\ntwenty-three body bytes\r\n0\r\n\r\n"));
    // Quotes in the path, a backslash in the query (a path may hold neither a backslash nor a
    // non-ASCII byte: those get 400), all of which JSON must escape.
    let quoted_target = "/say\"hi\"/x?q=\"1\"\\";
    let quoted = exchange_raw(
        lb.addr(),
        format!("GET {quoted_target} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let refused = exchange_raw(lb.addr(), b"BAD\r\n\r\n");
    assert_eq!([status_of(&get), status_of(&post), status_of(&quoted), status_of(&refused)], [200, 200, 200, 400]);

    let cases = [
        (Some("/hello?x=1"), "GET", 0, &get),
        (Some("/upload"), "POST", body.len(), &post),
        (Some("/echo"), "POST", body.len(), &echoed),
        (Some(quoted_target), "GET", 0, &quoted),
    ];
    for (path, method, bytes_in, response) in cases {
        let line = json_line_for(&lb, path);
        let fields: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields.len(), FIELDS.len(), "{line}");
        assert!(FIELDS.iter().all(|field| fields.contains(field)), "{line}");
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["method"], method);
        assert_eq!(line["path"].as_str(), path);
        assert_eq!(line["status"], 200);
        assert_eq!(line["backend"], backend.url());
        assert_eq!(line["bytes_in"], bytes_in, "{line}");
        assert_eq!(line["bytes_out"], response.len(), "every byte the client received: {line}");
        assert_eq!(line["attempts"], 1);
        assert_eq!((line["route"].clone(), line["pool"].clone()), (serde_json::Value::Null, "default".into()));
        assert_eq!(line["listener"], "http");
        let latency = line["latency_ms"].as_f64().expect("latency_ms is a number");
        assert!((0.0..5000.0).contains(&latency), "{line}");
        assert_eq!((latency * 1000.0).round() / 1000.0, latency, "at most 3 decimals: {line}");
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.as_bytes()[19] == b'.' && time.ends_with('Z'), "{time}");
        assert!(before.as_str() <= time && time <= rfc3339_millis(SystemTime::now()).as_str(), "{time}");
    }

    let refusal = json_line_for(&lb, None);
    assert_eq!(refusal["method"], serde_json::Value::Null);
    assert_eq!(refusal["backend"], serde_json::Value::Null);
    assert_eq!(refusal["pool"], serde_json::Value::Null);
    assert_eq!((refusal["status"].clone(), refusal["attempts"].clone()), (400.into(), 0.into()));
    assert_eq!((refusal["bytes_in"].clone(), refusal["bytes_out"].clone()), (0.into(), refused.len().into()));

    // Every line is either a bare JSON object or an ordinary prefixed log line.
    for line in lb.log.all() {
        if line.starts_with('{') {
            assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|value| value.is_object()), "{line}");
        } else {
            assert!(line.starts_with('[') && !line.contains(" access]"), "{line}");
        }
    }
    assert!(lb.log.count_containing("listening on") == 1, "other lines keep their format");
}

#[test]
fn off_writes_no_access_line_and_keeps_the_others() {
    let backend = EchoBackend::start(&[]);
    let mut lb = LoadBalancer::start(&config(&[backend.url()], "\"accessLog\": \"off\""));
    assert_eq!(lb.get("/quiet").status, 200);
    assert_eq!(status_of(&exchange_raw(lb.addr(), b"BAD\r\n\r\n")), 400);
    signal(lb.pid(), "TERM");
    lb.wait_exit(Duration::from_secs(10));
    // "bye" is written after every worker has finished, so no access line can still come.
    lb.log.wait_for("all requests finished", Duration::from_secs(5));
    let lines = lb.log.all();
    assert!(lines.iter().all(|line| !line.contains(" access]") && !line.starts_with('{')), "{lines:?}");
    assert_eq!(lb.log.count_containing("/quiet"), 0, "{lines:?}");
    assert_eq!(lb.log.count_containing("shutting down"), 1, "other lines remain: {lines:?}");
}

#[test]
fn text_is_the_historical_line() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"accessLog\": \"text\""));
    assert_eq!(lb.get("/ping?x=\"y\"").status, 200);
    assert_eq!(status_of(&exchange_raw(lb.addr(), b"BAD\r\n\r\n")), 400);
    let line = lb.log.wait_for("\"GET /ping", Duration::from_secs(5));
    let (prefix, message) = line.split_once("] ").unwrap();
    assert!(prefix.starts_with('[') && prefix.ends_with(" INFO  access"), "{line}");
    let expected_start = format!("127.0.0.1 \"GET /ping?x=\"y\" HTTP/1.1\" 200 {} ", backend.url());
    let latency =
        message.strip_prefix(&expected_start).and_then(|rest| rest.strip_suffix("ms attempts=1 pool=default"));
    assert!(latency.is_some_and(|ms| ms.parse::<u64>().is_ok()), "{line}");
    let refusal = lb.log.wait_for("\"-\"", Duration::from_secs(5));
    assert!(refusal.ends_with(" INFO  access] 127.0.0.1 \"-\" 400 - 0ms"), "{refusal}");
}

#[test]
fn a_config_reload_switches_the_format() {
    let backend = EchoBackend::start(&[]);
    let text =
        |format: &str| config(&[backend.url()], &format!("\"accessLog\": \"{format}\", \"reloadInterval\": \"100ms\""));
    let lb = LoadBalancer::start(&text("text"));
    assert_eq!(lb.get("/before").status, 200);
    lb.log.wait_for("\"GET /before HTTP/1.1\" 200", Duration::from_secs(5));
    lb.rewrite_config(&text("json"));
    common::wait_until(Duration::from_secs(5), "the reload", || lb.metrics()["config_reloads"] == 1);
    assert_eq!(lb.get("/after").status, 200);
    let line = json_line_for(&lb, Some("/after"));
    assert_eq!(line["status"], 200);
}
