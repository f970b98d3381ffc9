//! Parsing request and response heads with `httparse`, and deciding how each body is framed.
//!
//! Parsing is pure: it looks at buffered bytes and either finds a complete head (reporting how many
//! bytes it used; the rest already belong to the body), asks for more (`Ok(None)`: incomplete is not
//! invalid), or refuses the message with the status the client should get. A parsed head keeps its
//! raw bytes and offsets into them, so names and values are forwarded exactly as they arrived.
//!
//! The framing rules follow RFC 9112 §6: a request that could be read two ways (both
//! `Content-Length` and `Transfer-Encoding`, differing lengths, a final coding other than
//! `chunked`) is refused rather than guessed at, so the load balancer and the backend always agree
//! where it ends.
//!
//! Two request forms a reverse proxy has no business forwarding are refused here too: `CONNECT`
//! (a tunnel to a host the client names) gets `405` with the methods that are forwarded in
//! `Allow`, and the asterisk-form target `*`, which only `OPTIONS` may use (RFC 9112 §3.2.4), gets
//! `400` with any other method. `OPTIONS *` itself is forwarded like any request.

use std::ops::Range;

use crate::config::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, DEFAULT_MAX_URI_BYTES, Limits, MAX_HEADERS_LIMIT};
use crate::http::buffer::MAX_HEAD_BYTES;
use crate::http::has_token;
use crate::http::reply::{Reply, reason_phrase};
use crate::http::target::{RequestTarget, read_request_target};

/// What the `Allow` field of a `405` lists: the standard methods that are forwarded to backends.
/// Every method but `CONNECT` is, extension methods included.
pub const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// How large a request head may be (`maxHeaderBytes`, `maxUriBytes`, `maxHeaders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_target_bytes: usize,
    pub max_fields: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_target_bytes: DEFAULT_MAX_URI_BYTES,
            max_fields: DEFAULT_MAX_HEADERS,
        }
    }
}

impl From<&Limits> for HeadLimits {
    fn from(limits: &Limits) -> Self {
        HeadLimits {
            max_bytes: limits.max_header_bytes,
            max_target_bytes: limits.max_uri_bytes,
            max_fields: limits.max_headers.min(MAX_HEADERS_LIMIT),
        }
    }
}

/// Room for the method, spaces and version around a request target.
const REQUEST_LINE_OVERHEAD: usize = 64;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a request head was refused, each with its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Malformed syntax or ambiguous framing: 400.
    BadRequest(&'static str),
    /// `CONNECT`, which asks for a tunnel rather than a resource: 405.
    MethodNotAllowed,
    /// Request target too long: 414.
    UriTooLong,
    /// Head too large or too many fields: 431.
    HeaderFieldsTooLarge,
    /// A transfer coding the load balancer cannot forward: 501.
    NotImplemented(&'static str),
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::MethodNotAllowed => 405,
            RequestError::UriTooLong => 414,
            RequestError::HeaderFieldsTooLarge => 431,
            RequestError::NotImplemented(_) => 501,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            RequestError::BadRequest(reason) | RequestError::NotImplemented(reason) => reason,
            RequestError::MethodNotAllowed => "CONNECT is not forwarded: this is a reverse proxy, not a tunnel",
            RequestError::UriTooLong => "request target too long",
            RequestError::HeaderFieldsTooLarge => "request head too large",
        }
    }

    /// The answer to a refused request: its status, the reason in the body, and for a `405`
    /// the methods that are forwarded in `Allow`.
    pub fn reply(self) -> Reply {
        let reply = Reply::error(self.status(), Some(&format!("{}: {}", reason_phrase(self.status()), self.reason())));
        match self {
            RequestError::MethodNotAllowed => reply.with_field("Allow", FORWARDED_METHODS.to_string()),
            _ => reply,
        }
    }
}

/// One header field: offsets of its name and value in the head's raw bytes.
#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// A header field list over raw head bytes, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    raw: Vec<u8>,
    fields: Vec<Field>,
}

impl Fields {
    fn from_httparse(raw: &[u8], headers: &[httparse::Header<'_>]) -> Fields {
        let base = raw.as_ptr() as usize;
        let offset = |slice: &[u8]| {
            let start = slice.as_ptr() as usize - base;
            start..start + slice.len()
        };
        let fields = headers
            .iter()
            .map(|header| Field { name: offset(header.name.as_bytes()), value: offset(header.value) })
            .collect();
        Fields { raw: raw.to_vec(), fields }
    }

    /// Every field as `(name, value)`, in order, names as sent.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().map(|field| (&self.raw[field.name.clone()], &self.raw[field.value.clone()]))
    }

    /// Values of every field called `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes())).map(|(_, value)| value)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes())).map(|(_, value)| value)
    }

    /// Whether any `name` field lists `token` (for `Connection: close` and the like).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|value| has_token(value, token))
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The target as it is forwarded: origin-form with the path normalised, the query as received
    /// (or `*`); see [`crate::http::target`]. The router, the hashes, the access log and the
    /// backend all read this one.
    pub target: String,
    /// The host the request names, normalised (empty for an HTTP/1.0 request that names none).
    pub host: String,
    /// An absolute-form target's authority as received, sent to the backend as its `Host`.
    pub authority: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub fields: Fields,
    pub framing: BodyFraming,
}

impl RequestHead {
    /// Whether the client wants the connection kept open after this exchange.
    pub fn wants_keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.fields.has_token("connection", "keep-alive") && !self.fields.has_token("connection", "close")
        } else {
            !self.fields.has_token("connection", "close")
        }
    }

    /// Whether the client asks to switch protocols (a WebSocket, say): an HTTP/1.1 request with
    /// `Upgrade` and `Connection: upgrade`, and no body.
    pub fn wants_upgrade(&self) -> bool {
        self.minor_version == 1
            && self.framing == BodyFraming::Empty
            && self.fields.get("upgrade").is_some()
            && self.fields.has_token("connection", "upgrade")
    }

    pub fn expects_continue(&self) -> bool {
        self.fields.get("expect").is_some_and(|value| value.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Parses a request head at the start of `bytes`.
///
/// Returns `Ok(Some((head, used)))` when a complete, acceptable head was found in the first `used`
/// bytes; `Ok(None)` if more bytes are needed; or the refusal. A request line that cannot fit
/// `limits.max_target_bytes` is refused with 414 as soon as that is clear, without waiting for the
/// rest of the head.
pub fn parse_request(bytes: &[u8], limits: &HeadLimits) -> Result<Option<(RequestHead, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
    let mut request = httparse::Request::new(&mut headers[..limits.max_fields.min(MAX_HEADERS_LIMIT)]);
    let used = match request.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => {
            if request_line_too_long(bytes, limits) {
                return Err(RequestError::UriTooLong);
            }
            if bytes.len() >= limits.max_bytes {
                return Err(RequestError::HeaderFieldsTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeaderFieldsTooLarge),
        Err(error) => return Err(RequestError::BadRequest(parse_error_reason(error))),
    };
    // The same rules in the same order as for an incomplete head, so that the answer never
    // depends on how the bytes were split between reads.
    if request_line_too_long(bytes, limits) {
        return Err(RequestError::UriTooLong);
    }
    if used > limits.max_bytes {
        return Err(RequestError::HeaderFieldsTooLarge);
    }
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default().to_string();
    if method == "CONNECT" {
        return Err(RequestError::MethodNotAllowed);
    }
    if target == "*" && method != "OPTIONS" {
        return Err(RequestError::BadRequest("the asterisk-form target \"*\" is only for OPTIONS"));
    }
    let minor_version = request.version.unwrap_or(1);
    let fields = Fields::from_httparse(&bytes[..used], request.headers);

    let hosts = fields.values("host").count();
    if hosts > 1 {
        return Err(RequestError::BadRequest("more than one Host header"));
    }
    if hosts == 0 && minor_version == 1 {
        return Err(RequestError::BadRequest("missing Host header"));
    }
    let framing = request_framing(&fields, minor_version)?;
    let RequestTarget { host, forwarded: target, authority } =
        read_request_target(target.as_bytes(), fields.get("host"))
            .map_err(|error| RequestError::BadRequest(error.reason()))?;
    Ok(Some((RequestHead { method, target, host, authority, minor_version, fields, framing }, used)))
}

/// Whether the request line at the start of `bytes`, complete or not, is already too long: longer
/// than the target limit plus room for method and version, or, once complete, with a target over
/// the limit.
fn request_line_too_long(bytes: &[u8], limits: &HeadLimits) -> bool {
    let line_end = bytes.iter().position(|&byte| byte == b'\n');
    let line = &bytes[..line_end.unwrap_or(bytes.len())];
    if line.len() > limits.max_target_bytes + REQUEST_LINE_OVERHEAD {
        return true;
    }
    let target_length = line.split(|&byte| byte == b' ').nth(1).map_or(0, <[u8]>::len);
    line_end.is_some() && target_length > limits.max_target_bytes
}

fn parse_error_reason(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or token",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// RFC 9112 §6.3 for requests: chunked, a single agreed length, or no body.
fn request_framing(fields: &Fields, minor_version: u8) -> Result<BodyFraming, RequestError> {
    let length = content_length(fields).ok_or(RequestError::BadRequest("invalid or conflicting Content-Length"))?;
    let codings = transfer_codings(fields);
    if codings.is_empty() {
        return Ok(length.map_or(BodyFraming::Empty, BodyFraming::Length));
    }
    if length.is_some() {
        return Err(RequestError::BadRequest("both Content-Length and Transfer-Encoding"));
    }
    if minor_version == 0 {
        return Err(RequestError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if !codings.last().is_some_and(|coding| coding.eq_ignore_ascii_case("chunked")) {
        return Err(RequestError::BadRequest("Transfer-Encoding does not end in chunked"));
    }
    if codings.len() > 1 {
        return Err(RequestError::NotImplemented("transfer codings other than chunked"));
    }
    Ok(BodyFraming::Chunked)
}

/// The Content-Length, if any: `Some(None)` when absent, `None` when invalid or conflicting.
/// Several equal values (`5, 5`, or the field twice) are one length (RFC 9110 §8.6).
fn content_length(fields: &Fields) -> Option<Option<u64>> {
    let mut length = None;
    for value in fields.values("content-length") {
        for item in value.split(|&byte| byte == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let parsed: u64 = std::str::from_utf8(item).ok()?.parse().ok()?;
            if length.is_some_and(|seen| seen != parsed) {
                return None;
            }
            length = Some(parsed);
        }
    }
    Some(length)
}

/// Every transfer coding named, in order, lower-cased and without parameters.
fn transfer_codings(fields: &Fields) -> Vec<String> {
    fields
        .values("transfer-encoding")
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(|item| {
            let name = item.split(|&byte| byte == b';').next().unwrap_or_default();
            String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The status line exactly as received, without its line ending.
    pub status_line: Vec<u8>,
    pub fields: Fields,
    pub framing: BodyFraming,
}

impl ResponseHead {
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// Whether the backend lets this connection carry another request.
    pub fn backend_keeps_alive(&self) -> bool {
        let kept = if self.minor_version == 0 {
            self.fields.has_token("connection", "keep-alive")
        } else {
            !self.fields.has_token("connection", "close")
        };
        kept && self.framing != BodyFraming::UntilClose
    }
}

/// Why a backend's response head could not be used: the client gets 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// Parses a response head at the start of `bytes`; `request_is_head` says whether the request
/// was `HEAD`, which makes any response bodiless.
pub fn parse_response(bytes: &[u8], request_is_head: bool) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD_BYTES => {
            return Err(BadResponse("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(BadResponse(parse_error_reason(error))),
    };
    let status = response.code.unwrap_or_default();
    let minor_version = response.version.unwrap_or(1);
    let line_end = bytes.iter().position(|&byte| byte == b'\r' || byte == b'\n').unwrap_or(0);
    let status_line = bytes[..line_end].to_vec();
    let fields = Fields::from_httparse(&bytes[..used], response.headers);
    let framing = if request_is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::Empty
    } else {
        let codings = transfer_codings(&fields);
        if !codings.is_empty() {
            if codings.last().is_some_and(|coding| coding == "chunked") {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            }
        } else {
            match content_length(&fields) {
                None => return Err(BadResponse("invalid or conflicting Content-Length")),
                Some(Some(length)) => BodyFraming::Length(length),
                Some(None) => BodyFraming::UntilClose,
            }
        }
    };
    Ok(Some((ResponseHead { status, minor_version, status_line, fields, framing }, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<(RequestHead, usize)>, RequestError> {
        parse_request(text.as_bytes(), &HeadLimits::default())
    }

    fn framing_of(text: &str) -> Result<BodyFraming, RequestError> {
        request(text).map(|parsed| parsed.expect("complete head").0.framing)
    }

    #[test]
    fn complete_head_keeps_names_values_and_order() {
        let text =
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Case: Mixed Value\r\nx-case: second\r\nContent-Length: 3\r\n\r\nabc";
        let (head, used) = request(text).unwrap().unwrap();
        assert_eq!(used, text.len() - 3, "body bytes are not part of the head");
        assert_eq!((head.method.as_str(), head.target.as_str(), head.minor_version), ("POST", "/a?b=1", 1));
        assert_eq!(head.path(), "/a");
        let fields: Vec<(&[u8], &[u8])> = head.fields.iter().collect();
        assert_eq!(
            fields,
            [(&b"Host"[..], &b"x"[..]), (b"X-Case", b"Mixed Value"), (b"x-case", b"second"), (b"Content-Length", b"3")]
        );
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert!(head.wants_keep_alive());
    }

    #[test]
    fn incomplete_is_not_invalid() {
        assert!(request("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(request("GE").unwrap().is_none());
    }

    #[test]
    fn framing_cases() {
        let cases: [(&str, Result<BodyFraming, RequestError>); 13] = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(BodyFraming::Empty)),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", Ok(BodyFraming::Length(10))),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                Ok(BodyFraming::Length(7)),
            ),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7, 7\r\n\r\n", Ok(BodyFraming::Length(7))),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyFraming::Chunked)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", Ok(BodyFraming::Chunked)),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
                Err(RequestError::BadRequest("invalid or conflicting Content-Length")),
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +7\r\n\r\n",
                Err(RequestError::BadRequest("invalid or conflicting Content-Length")),
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(RequestError::BadRequest("both Content-Length and Transfer-Encoding")),
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(RequestError::BadRequest("Transfer-Encoding does not end in chunked")),
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(RequestError::NotImplemented("transfer codings other than chunked")),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(RequestError::BadRequest("Transfer-Encoding in an HTTP/1.0 request")),
            ),
            ("GET / HTTP/1.0\r\n\r\n", Ok(BodyFraming::Empty)),
        ];
        for (text, expected) in cases {
            assert_eq!(framing_of(text), expected, "{text:?}");
        }
    }

    #[test]
    fn host_rules_and_syntax_errors() {
        let cases: [(&str, RequestError); 6] = [
            ("GET / HTTP/1.1\r\n\r\n", RequestError::BadRequest("missing Host header")),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RequestError::BadRequest("more than one Host header")),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", RequestError::BadRequest("invalid header name")),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", RequestError::BadRequest("unsupported HTTP version")),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", RequestError::BadRequest("invalid header value")),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", RequestError::BadRequest("invalid method or token")),
        ];
        for (text, expected) in cases {
            assert_eq!(request(text).unwrap_err(), expected, "{text:?}");
        }
    }

    #[test]
    fn connect_is_refused_and_the_asterisk_is_only_for_options() {
        for text in [
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            "CONNECT 127.0.0.1:22 HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(request(text).unwrap_err(), RequestError::MethodNotAllowed, "{text:?}");
        }
        let reply = RequestError::MethodNotAllowed.reply();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.extra_fields, [("Allow".into(), FORWARDED_METHODS.to_string())]);
        assert!(!FORWARDED_METHODS.contains("CONNECT"));
        assert!(RequestError::BadRequest("x").reply().extra_fields.is_empty());

        let (options, _) = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!((options.method.as_str(), options.target.as_str(), options.path()), ("OPTIONS", "*", "*"));
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            let text = format!("{method} * HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                request(&text).unwrap_err(),
                RequestError::BadRequest("the asterisk-form target \"*\" is only for OPTIONS"),
                "{text:?}"
            );
        }
        assert!(request("OPTIONS /a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().is_some(), "OPTIONS with a path too");
    }

    #[test]
    fn limits_map_to_their_status_codes() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(DEFAULT_MAX_URI_BYTES));
        assert_eq!(request(&long_target).unwrap_err().status(), 414);
        let endless_target = format!("GET /{}", "a".repeat(DEFAULT_MAX_URI_BYTES + REQUEST_LINE_OVERHEAD));
        assert_eq!(request(&endless_target).unwrap_err().status(), 414, "refused before the line ends");
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-A: b\r\n".repeat(DEFAULT_MAX_HEADERS));
        assert_eq!(request(&many).unwrap_err().status(), 431);
        let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "b".repeat(DEFAULT_MAX_HEADER_BYTES));
        assert_eq!(request(&huge).unwrap_err().status(), 431);

        let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(9000));
        assert_eq!(request(&long_method).unwrap_err().status(), 414, "the same answer whole or in pieces");
        assert_eq!(request(&long_method[..8300]).unwrap_err().status(), 414);
        let huge_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(67_000));
        assert_eq!(request(&huge_target).unwrap_err().status(), 414, "414 even when the head is over 64 KiB");
        assert_eq!(request(&huge_target[..30_000]).unwrap_err().status(), 414);
        let target_then_partial = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "a".repeat(8200));
        assert_eq!(request(&target_then_partial).unwrap_err().status(), 414, "known before the head ends");

        let tight = HeadLimits { max_bytes: 100, max_target_bytes: 10, max_fields: 2 };
        let parse = |text: &str| parse_request(text.as_bytes(), &tight);
        assert_eq!(parse("GET /0123456789a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err().status(), 414);
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n").unwrap_err().status(), 431);
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n").unwrap().is_some());
        let long_head = format!("GET / HTTP/1.1\r\nHost: a\r\nA: {}\r\n\r\n", "x".repeat(100));
        assert_eq!(parse(&long_head).unwrap_err().status(), 431);
    }

    #[test]
    fn keep_alive_defaults_by_version() {
        let keep = |text: &str| request(text).unwrap().unwrap().0.wants_keep_alive();
        assert!(keep("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn response_framing_follows_rfc_9112_section_6_3() {
        let framing = |text: &str, head: bool| parse_response(text.as_bytes(), head).map(|r| r.unwrap().0.framing);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Ok(BodyFraming::Length(5)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 100 Continue\r\n\r\n", false), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), Ok(BodyFraming::Chunked));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Ok(BodyFraming::UntilClose));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false),
            Err(BadResponse("invalid or conflicting Content-Length"))
        );
        let (head, _) =
            parse_response(b"HTTP/1.0 200 Fine\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap()
                .unwrap();
        assert_eq!(head.status_line, b"HTTP/1.0 200 Fine");
        assert!(head.backend_keeps_alive());
    }
}
