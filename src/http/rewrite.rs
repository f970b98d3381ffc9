//! Rewriting heads for the next hop: what changes between the client and the backend.
//!
//! Everything is kept byte for byte (method, target, version, field names in their case, values,
//! order) except what RFC 9110 §7.6.1 says an intermediary must not forward: the hop-by-hop fields
//! `Connection`, every field `Connection` names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`
//! and `Upgrade`. Requests also gain the client's address in `X-Forwarded-For` (appended to what
//! was there), `X-Real-IP` and `X-Forwarded-Proto` (`http`, or `https` for a request that came
//! over TLS; both replacing what the client sent).
//!
//! `Connection` can name fields to drop, but never `Host`, `Content-Length` or `Transfer-Encoding`:
//! dropping those would change where the message ends.
//!
//! An upgrade request (see [`RequestHead::wants_upgrade`]) keeps its `Upgrade` field and gets
//! `Connection: upgrade`, and a `101` answer keeps `Upgrade` and gets `Connection: Upgrade`: the
//! switch of protocols is the one hop-by-hop exchange a proxy must carry through.
//!
//! A route ([`RouteRewrite`]) may change what the backend receives: the target (a stripped
//! prefix, then told in `X-Forwarded-Prefix`) and the client's fields (its `requestHeaders`:
//! `remove`, then `set`, then `add`). Its edits apply to the fields the client sent; the fields the
//! load balancer writes itself (`X-Forwarded-*`, `X-Real-IP`) come after them and cannot be
//! edited. On responses, a route's `responseHeaders` act on the backend's fields the same way.
//!
//! A request's framing is restated unambiguously: one `Content-Length` with the agreed length where
//! the client may have sent several equal ones (`5, 5`, or the field twice), or one
//! `Transfer-Encoding: chunked` for a chunked body, which forward re-encodes.

use std::io::Write;
use std::net::IpAddr;

use crate::http::edits::{HeaderEdits, NO_EDITS};
use crate::http::head::{BodyFraming, Fields, RequestHead, ResponseHead};

const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];
const NEVER_NOMINATED: [&str; 3] = ["host", "content-length", "transfer-encoding"];
/// Fields the load balancer sets itself on requests, so a client's own copies are dropped.
const SET_BY_PROXY: [&str; 3] = ["x-real-ip", "x-forwarded-proto", "x-forwarded-prefix"];

/// Whether `name` must not cross this hop, given the message's fields.
fn is_hop_by_hop(name: &[u8], fields: &Fields) -> bool {
    if HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_bytes())) {
        return true;
    }
    if NEVER_NOMINATED.iter().any(|kept| name.eq_ignore_ascii_case(kept.as_bytes())) {
        return false;
    }
    fields
        .values("connection")
        .any(|value| value.split(|&byte| byte == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(name)))
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The addresses a forwarded request names: the hop it came from (appended to
/// `X-Forwarded-For`) and the client it is for (`X-Real-IP`); the same unless the hop is a
/// trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub peer: IpAddr,
    pub client: IpAddr,
    /// Whether the request came over TLS: `X-Forwarded-Proto: https`.
    pub tls: bool,
}

impl From<IpAddr> for Forwarded {
    fn from(address: IpAddr) -> Self {
        Forwarded { peer: address, client: address, tls: false }
    }
}

/// What the route a request took changes in the head its backend receives.
#[derive(Debug, Clone, Copy)]
pub struct RouteRewrite<'a> {
    /// The target to send instead of the head's (the path with a prefix stripped).
    pub target: Option<&'a str>,
    /// The prefix that was stripped, sent as `X-Forwarded-Prefix`.
    pub forwarded_prefix: Option<&'a str>,
    /// Edits to the client's fields.
    pub fields: &'a HeaderEdits,
}

impl RouteRewrite<'_> {
    /// No change: the request as the client sent it (hop-by-hop fields aside).
    pub const NONE: RouteRewrite<'static> = RouteRewrite { target: None, forwarded_prefix: None, fields: &NO_EDITS };
}

/// Appends to `out` the head to send to a backend for `head`, as `route` rewrites it.
pub fn request_for_backend(
    head: &RequestHead,
    forwarded: impl Into<Forwarded>,
    route: &RouteRewrite<'_>,
    out: &mut Vec<u8>,
) {
    let Forwarded { peer, client, tls } = forwarded.into();
    let version = if head.minor_version == 0 { "1.0" } else { "1.1" };
    let target = route.target.unwrap_or(&head.target);
    let _ = write!(out, "{} {target} HTTP/{version}\r\n", head.method);
    // Only the fields that will be forwarded: `Connection` may name X-Forwarded-For itself.
    let forwarded_for_count = head
        .fields
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"x-forwarded-for") && !is_hop_by_hop(name, &head.fields))
        .count();
    let mut forwarded_for_seen = 0;
    let mut framing_stated = false;
    let upgrade = head.wants_upgrade();
    for (name, value) in head.fields.iter() {
        if upgrade && name.eq_ignore_ascii_case(b"upgrade") {
            write_field(out, name, value);
            continue;
        }
        if is_hop_by_hop(name, &head.fields)
            || SET_BY_PROXY.iter().any(|own| name.eq_ignore_ascii_case(own.as_bytes()))
            || route.fields.drops(name)
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !framing_stated {
                framing_stated = true;
                match head.framing {
                    BodyFraming::Length(length) => write_field(out, name, length.to_string().as_bytes()),
                    BodyFraming::Chunked => write_field(out, name, b"chunked"),
                    BodyFraming::Empty | BodyFraming::UntilClose => {}
                }
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"host")
            && let Some(authority) = &head.authority
        {
            // Absolute form: the target's authority is the host (RFC 9112 §3.2.2).
            write_field(out, name, authority.as_bytes());
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for_seen += 1;
            if forwarded_for_seen == forwarded_for_count {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                let _ = write!(out, ", {peer}\r\n");
                continue;
            }
        }
        write_field(out, name, value);
    }
    if let Some(authority) = &head.authority
        && head.fields.get("host").is_none()
    {
        let _ = write!(out, "Host: {authority}\r\n");
    }
    for (name, value) in route.fields.additions() {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if forwarded_for_count == 0 {
        let _ = write!(out, "X-Forwarded-For: {peer}\r\n");
    }
    let proto = if tls { "https" } else { "http" };
    let _ = write!(out, "X-Real-IP: {client}\r\nX-Forwarded-Proto: {proto}\r\n");
    if let Some(prefix) = route.forwarded_prefix {
        let _ = write!(out, "X-Forwarded-Prefix: {prefix}\r\n");
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if head.minor_version == 0 {
        // Ask an HTTP/1.0 backend to keep the connection for reuse; it may still decline.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends to `out` the head to send to the client for a backend's `head`.
///
/// `client_minor_version` is the client's HTTP version; `keep_alive` whether the client
/// connection stays open after this response; `added_fields`, complete field lines the load
/// balancer adds to a final response (its sticky `Set-Cookie`), usually none; `edits`, the
/// route's `responseHeaders`, applied to a final response (not to a `1xx`).
pub fn response_for_client(
    head: &ResponseHead,
    client_minor_version: u8,
    keep_alive: bool,
    added_fields: &[u8],
    edits: &HeaderEdits,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&head.status_line);
    out.extend_from_slice(b"\r\n");
    let chunked = head.fields.get("transfer-encoding").is_some();
    if head.status == 101 {
        for (name, value) in head.fields.iter() {
            if name.eq_ignore_ascii_case(b"upgrade") || !is_hop_by_hop(name, &head.fields) {
                write_field(out, name, value);
            }
        }
        out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
        return;
    }
    let final_response = !head.is_informational();
    for (name, value) in head.fields.iter() {
        // A length beside Transfer-Encoding is wrong (RFC 9112 §6.1); the client must not see both.
        let stray_length = chunked && name.eq_ignore_ascii_case(b"content-length");
        let edited_out = final_response && edits.drops(name);
        if !stray_length && !edited_out && !is_hop_by_hop(name, &head.fields) {
            write_field(out, name, value);
        }
    }
    // 1xx answers say nothing about the connection, and get no added fields.
    if final_response {
        for (name, value) in edits.additions() {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(added_fields);
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{HeadLimits, parse_request, parse_response};

    fn rewrite_request(text: &str) -> String {
        let (head, _) = parse_request(text.as_bytes(), &HeadLimits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        request_for_backend(&head, IpAddr::from([10, 1, 2, 3]), &RouteRewrite::NONE, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn rewrite_response(text: &str, client_minor_version: u8, keep_alive: bool) -> String {
        let (head, _) = parse_response(text.as_bytes(), false).unwrap().unwrap();
        let mut out = Vec::new();
        response_for_client(&head, client_minor_version, keep_alive, b"", &NO_EDITS, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_keeps_everything_but_hop_by_hop_fields() {
        let sent = rewrite_request(
            "PUT /x?y=%20 HTTP/1.1\r\nHost: site\r\nX-Mixed-Case: A  b\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: timeout=5\r\nX-Secret: s\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: x\r\n\
             Trailer: X-Sum\r\nAccept: */*\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            sent,
            "PUT /x?y=%20 HTTP/1.1\r\nHost: site\r\nX-Mixed-Case: A  b\r\nAccept: */*\r\nContent-Length: 2\r\n\
             X-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_for_is_appended_and_own_fields_replaced() {
        let sent = rewrite_request(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nx-forwarded-for: 2.2.2.2\r\n\
             X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n",
        );
        assert_eq!(
            sent,
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nx-forwarded-for: 2.2.2.2, 10.1.2.3\r\n\
             X-Real-IP: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn a_request_over_tls_is_forwarded_as_https_whatever_the_client_claims() {
        let (head, _) =
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\n\r\n", &HeadLimits::default())
                .unwrap()
                .unwrap();
        let mut out = Vec::new();
        let address = IpAddr::from([10, 1, 2, 3]);
        let forwarded = Forwarded { peer: address, client: address, tls: true };
        request_for_backend(&head, forwarded, &RouteRewrite::NONE, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn connection_cannot_strip_framing_fields() {
        let sent = rewrite_request(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(sent.contains("Host: a\r\n") && sent.contains("Content-Length: 1\r\n"), "{sent}");
    }

    #[test]
    fn an_upgrade_is_carried_through_both_ways() {
        let sent = rewrite_request(
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: k\r\n\r\n",
        );
        assert_eq!(
            sent,
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
             X-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-Proto: http\r\nConnection: upgrade\r\n\r\n"
        );
        let not_asked = rewrite_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!not_asked.contains("Upgrade"), "Upgrade without Connection: upgrade is dropped: {not_asked}");
        assert_eq!(
            rewrite_response(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nX: 1\r\n\r\n",
                1,
                false
            ),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX: 1\r\nConnection: Upgrade\r\n\r\n"
        );
    }

    #[test]
    fn framing_is_restated_once() {
        let sent =
            rewrite_request("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 5\r\nX: y\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            sent,
            "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX: y\r\n\
             X-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        let sent = rewrite_request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n");
        assert!(sent.contains("\r\nTransfer-Encoding: chunked\r\n"), "{sent}");
    }

    #[test]
    fn http_1_0_requests_ask_the_backend_to_keep_alive() {
        let sent = rewrite_request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(sent.starts_with("GET / HTTP/1.0\r\n") && sent.ends_with("Connection: keep-alive\r\n\r\n"), "{sent}");
    }

    #[test]
    fn response_fields_pass_and_connection_is_ours() {
        let text = "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nkeep-alive: t\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(rewrite_response(text, 1, true), "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            rewrite_response(text, 1, false),
            "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            rewrite_response(text, 0, true),
            "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(rewrite_response("HTTP/1.1 100 Continue\r\n\r\n", 1, false), "HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(
            rewrite_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", 1, true),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }
}
