//! The access log: one line per request, in the format `accessLog` names (`"text"`, `"json"` or
//! `"off"`). Called by the worker, on its own thread, once a request is answered.
//!
//! Every line is a `log` record with target [`TARGET`] (`access`), so `RUST_LOG=info,access=off`
//! silences it whatever the format. [`write_line`] is the one place a line is made: for proxied
//! requests, for the load balancer's own answers to them (429, 502, 503...), and for requests
//! refused before their head could be read (400, 408, 414, 431), which have no method or target.
//! The load balancer's own endpoints (`metricsPath` and its neighbours) are not logged here: a
//! probe every few seconds would drown the requests that matter; `LB_DEBUG=1` shows them.
//!
//! `text` is the historical line, with the pool (and the route, when one matched) at the end, and
//! `listener=https` after them for a request that came through the HTTPS listener:
//!
//! ```text
//! 127.0.0.1 "GET /a?b=1 HTTP/1.1" 200 http://127.0.0.1:3001 3ms attempts=1 pool=default
//! 127.0.0.1 "GET /v1/users HTTP/1.1" 200 http://127.0.0.1:4001 2ms attempts=1 route=api pool=api
//! 127.0.0.1 "GET / HTTP/1.1" 200 http://127.0.0.1:3001 1ms attempts=1 pool=default listener=https
//! 127.0.0.1 "-" 400 - 0ms
//! ```
//!
//! `json` is one object per line, built with `serde_json` so any byte a request target may carry
//! (quotes, backslashes, control bytes) is escaped and the line stays one valid JSON value:
//!
//! ```text
//! {"time":"2026-11-22T06:30:00.123Z","client":"127.0.0.1","method":"GET","path":"/a?b=1","status":200,"backend":"http://127.0.0.1:3001","bytes_in":0,"bytes_out":215,"latency_ms":2.517,"attempts":1,"route":null,"pool":"default","listener":"http"}
//! ```
//!
//! A JSON line is only useful bare: a log prefix such as `[time INFO access]` in front of it would
//! make every line unparseable. The record's message is therefore the whole JSON object, logged
//! with its own target, [`JSON_TARGET`] (`access::json`), and the logger installed by `main`
//! writes records of that target as their message alone (see [`is_bare`]), while every other
//! record keeps its usual prefix. That keeps one writer for all of stderr (lines from different
//! threads never interleave mid-line, as they could with a second writer), keeps `RUST_LOG`
//! filtering working (`access=off` silences both targets), and lets a config reload switch the
//! format: each line carries its own.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::connection::Scheme;
use crate::timestamp::rfc3339_millis;

/// The `log` target of every access line.
pub const TARGET: &str = "access";
/// The `log` target of JSON access lines, written without a prefix.
pub const JSON_TARGET: &str = "access::json";

/// How access lines are written (`accessLog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// The historical one-line text format.
    #[default]
    Text,
    /// One JSON object per line, without any log prefix.
    Json,
    /// No access lines at all.
    Off,
}

impl AccessLogFormat {
    pub const ALL: [AccessLogFormat; 3] = [AccessLogFormat::Text, AccessLogFormat::Json, AccessLogFormat::Off];

    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::Text => "text",
            AccessLogFormat::Json => "json",
            AccessLogFormat::Off => "off",
        }
    }

    pub fn from_name(name: &str) -> Result<AccessLogFormat, String> {
        AccessLogFormat::ALL
            .into_iter()
            .find(|format| format.name() == name)
            .ok_or_else(|| format!("must be \"text\", \"json\" or \"off\", got {name:?}"))
    }
}

/// The request line of a logged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The request target as received: path and query (or the absolute form, if that was sent).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

/// Everything one access line says about a request.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessEntry<'a> {
    /// When the request was finished with.
    pub time: SystemTime,
    /// Who the request is for: the peer, or the address a trusted proxy forwarded it for.
    pub client: IpAddr,
    /// `None` when the request was refused before its head could be read.
    pub request: Option<RequestLine<'a>>,
    pub status: u16,
    /// The URL of the backend of the last attempt, if any was made.
    pub backend: Option<&'a str>,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response bytes sent to the client: head and body, as on the wire.
    pub bytes_out: u64,
    pub latency: Duration,
    /// Backends tried (0 when none was).
    pub attempts: u32,
    /// The route the request took, if one matched.
    pub route: Option<&'a str>,
    /// The pool the request was routed to, if any.
    pub pool: Option<&'a str>,
    /// The listener the request came through.
    pub scheme: Scheme,
}

impl AccessEntry<'static> {
    /// A connection answered before a request head could be read (refused, or cut as too slow):
    /// no request line, no backend, `bytes_out` sent.
    pub fn unread(client: IpAddr, scheme: Scheme, status: u16, bytes_out: u64) -> AccessEntry<'static> {
        AccessEntry {
            time: SystemTime::now(),
            client,
            request: None,
            status,
            backend: None,
            bytes_in: 0,
            bytes_out,
            latency: Duration::ZERO,
            attempts: 0,
            route: None,
            pool: None,
            scheme,
        }
    }
}

/// Writes `entry` to the access log in `format` (nothing for [`AccessLogFormat::Off`]).
pub fn write_line(format: AccessLogFormat, entry: &AccessEntry<'_>) {
    match format {
        AccessLogFormat::Text => log::info!(target: TARGET, "{}", text_line(entry)),
        AccessLogFormat::Json => log::info!(target: JSON_TARGET, "{}", json_line(entry)),
        AccessLogFormat::Off => {}
    }
}

/// Whether a log record of `target` is written as its message alone, without the logger's prefix.
pub fn is_bare(target: &str) -> bool {
    target == JSON_TARGET
}

/// The historical text line (latency in whole milliseconds).
pub fn text_line(entry: &AccessEntry<'_>) -> String {
    let Some(request) = entry.request else {
        return format!("{} \"-\" {} - {}ms", entry.client, entry.status, entry.latency.as_millis());
    };
    let mut line = format!(
        "{} \"{} {} HTTP/1.{}\" {} {} {}ms attempts={}",
        entry.client,
        request.method,
        request.target,
        request.minor_version,
        entry.status,
        entry.backend.unwrap_or("-"),
        entry.latency.as_millis(),
        entry.attempts
    );
    if let Some(route) = entry.route {
        line.push_str(" route=");
        line.push_str(route);
    }
    if let Some(pool) = entry.pool {
        line.push_str(" pool=");
        line.push_str(pool);
    }
    if entry.scheme == Scheme::Https {
        line.push_str(" listener=https");
    }
    line
}

/// The fields of a JSON line, in the order they are written.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: String,
    method: Option<&'a str>,
    path: Option<&'a str>,
    status: u16,
    backend: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    latency_ms: f64,
    attempts: u32,
    route: Option<&'a str>,
    pool: Option<&'a str>,
    listener: &'static str,
}

/// One JSON object on one line (no newline): `method` and `path` are `null` when the head could
/// not be read, `backend` when no backend was tried, `route` when no route matched, `pool` when no pool
/// took the request; `latency_ms` has microsecond resolution.
pub fn json_line(entry: &AccessEntry<'_>) -> String {
    let line = JsonLine {
        time: rfc3339_millis(entry.time),
        client: entry.client.to_string(),
        method: entry.request.map(|request| request.method),
        path: entry.request.map(|request| request.target),
        status: entry.status,
        backend: entry.backend,
        bytes_in: entry.bytes_in,
        bytes_out: entry.bytes_out,
        latency_ms: entry.latency.as_micros() as f64 / 1000.0,
        attempts: entry.attempts,
        route: entry.route,
        pool: entry.pool,
        listener: entry.scheme.name(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn proxied() -> AccessEntry<'static> {
        AccessEntry {
            time: UNIX_EPOCH + Duration::from_millis(1_795_329_000_123),
            client: IpAddr::from([192, 0, 2, 7]),
            request: Some(RequestLine { method: "POST", target: "/upload?id=3", minor_version: 1 }),
            status: 201,
            backend: Some("http://10.0.0.5:8080"),
            bytes_in: 11,
            bytes_out: 215,
            latency: Duration::from_micros(2517),
            attempts: 2,
            route: Some("api"),
            pool: Some("api"),
            scheme: Scheme::Http,
        }
    }

    fn refused() -> AccessEntry<'static> {
        AccessEntry {
            request: None,
            status: 400,
            backend: None,
            bytes_in: 0,
            latency: Duration::ZERO,
            attempts: 0,
            route: None,
            pool: None,
            ..proxied()
        }
    }

    #[test]
    fn text_lines_are_the_historical_ones() {
        assert_eq!(
            text_line(&proxied()),
            "192.0.2.7 \"POST /upload?id=3 HTTP/1.1\" 201 http://10.0.0.5:8080 2ms attempts=2 route=api pool=api"
        );
        let own_answer = AccessEntry { backend: None, status: 503, attempts: 0, route: None, pool: None, ..proxied() };
        assert_eq!(text_line(&own_answer), "192.0.2.7 \"POST /upload?id=3 HTTP/1.1\" 503 - 2ms attempts=0");
        assert_eq!(text_line(&refused()), "192.0.2.7 \"-\" 400 - 0ms");
        let over_tls = AccessEntry { scheme: Scheme::Https, ..proxied() };
        assert!(text_line(&over_tls).ends_with(" route=api pool=api listener=https"), "{}", text_line(&over_tls));
    }

    #[test]
    fn a_json_line_has_every_field_in_order() {
        assert_eq!(
            json_line(&proxied()),
            concat!(
                r#"{"time":"2026-11-22T06:30:00.123Z","client":"192.0.2.7","method":"POST","path":"/upload?id=3","#,
                r#""status":201,"backend":"http://10.0.0.5:8080","bytes_in":11,"bytes_out":215,"#,
                r#""latency_ms":2.517,"attempts":2,"route":"api","pool":"api","listener":"http"}"#
            )
        );
    }

    #[test]
    fn a_refusal_has_null_method_path_and_backend() {
        let value: serde_json::Value = serde_json::from_str(&json_line(&refused())).unwrap();
        assert_eq!(value["method"], serde_json::Value::Null);
        assert_eq!(value["path"], serde_json::Value::Null);
        assert_eq!(value["backend"], serde_json::Value::Null);
        assert_eq!(value["pool"], serde_json::Value::Null);
        assert_eq!(value["route"], serde_json::Value::Null);
        assert_eq!((value["status"].as_u64(), value["attempts"].as_u64()), (Some(400), Some(0)));
        assert_eq!(value["latency_ms"].as_f64(), Some(0.0));
    }

    #[test]
    fn any_target_stays_one_valid_json_line() {
        let nasty = "/q?a=\"b\"&c=\\d\u{1}\te\r\nf\u{7f}é";
        let entry = AccessEntry {
            request: Some(RequestLine { method: "GET", target: nasty, minor_version: 0 }),
            client: "2001:db8::1".parse().unwrap(),
            ..proxied()
        };
        let line = json_line(&entry);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["path"], nasty, "the target comes back exactly");
        assert_eq!(value["client"], "2001:db8::1");
        assert_eq!(value.as_object().unwrap().len(), 13);
    }

    #[test]
    fn latency_is_milliseconds_with_three_decimals() {
        let at = |latency: Duration| {
            let value: serde_json::Value =
                serde_json::from_str(&json_line(&AccessEntry { latency, ..proxied() })).unwrap();
            value["latency_ms"].to_string()
        };
        assert_eq!(at(Duration::from_micros(1)), "0.001");
        assert_eq!(at(Duration::from_nanos(12_345_678)), "12.345");
        assert_eq!(at(Duration::from_secs(3)), "3000.0");
    }

    #[test]
    fn only_json_access_records_are_bare() {
        assert!(is_bare("access::json"));
        assert!(!is_bare("loadbalancer::server"));
        assert!(!is_bare("access"), "text lines keep their prefix");
    }

    #[test]
    fn format_names_round_trip() {
        for format in AccessLogFormat::ALL {
            assert_eq!(AccessLogFormat::from_name(format.name()), Ok(format));
        }
        assert_eq!(
            AccessLogFormat::from_name("xml").unwrap_err(),
            "must be \"text\", \"json\" or \"off\", got \"xml\""
        );
        assert_eq!(AccessLogFormat::default(), AccessLogFormat::Text);
    }
}
