//! The load balancer's own answers: errors (400, 429, 502, 503, 504, ...), small bodies such as
//! the metrics document, and what routes answer themselves (redirects, fixed responses). Each
//! carries `Content-Length` (but a `204`, which has no body), and `Connection: close` when the
//! connection ends after it.

use std::borrow::Cow;
use std::io::Write;

use crate::http::edits::HeaderEdits;

/// The standard reason phrase for the statuses the load balancer produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A complete response of the load balancer's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    pub body: Vec<u8>,
    pub extra_fields: Vec<(Cow<'static, str>, String)>,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    /// A plain-text error whose body is the reason phrase, or `detail` when given.
    pub fn error(status: u16, detail: Option<&str>) -> Reply {
        let text = detail.map_or_else(|| reason_phrase(status).to_string(), str::to_string);
        Reply { status, content_type: Cow::Borrowed(TEXT), body: text.into_bytes(), extra_fields: Vec::new() }
    }

    pub fn json(body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type: Cow::Borrowed("application/json"), body, extra_fields: Vec::new() }
    }

    /// A `200` with any body and content type (an HTML page, a text exposition).
    pub fn content(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type: Cow::Borrowed(content_type), body, extra_fields: Vec::new() }
    }

    /// A redirect to `location`, with an empty body.
    pub fn redirect(status: u16, location: String) -> Reply {
        Reply::error(status, Some("")).with_field("Location", location)
    }

    /// A route's fixed answer: `status`, `body` as plain text unless `fields` give a `Content-Type`,
    /// and `fields` (never framing ones: the config refuses them).
    pub fn respond(status: u16, body: &str, fields: &[(String, String)]) -> Reply {
        let mut reply = Reply::error(status, Some(body));
        for (name, value) in fields {
            reply.add_field(name, value);
        }
        reply
    }

    /// Adds a route's `set` and `add` fields (`responseHeaders`); a `Content-Type` among them
    /// replaces the reply's own.
    pub fn add_fields(&mut self, edits: &HeaderEdits) {
        for (name, value) in edits.additions() {
            self.add_field(name, value);
        }
    }

    /// Adds a field from the config; a `Content-Type` replaces the reply's own, as a reply has one.
    fn add_field(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("content-type") {
            self.content_type = Cow::Owned(value.to_string());
        } else {
            self.extra_fields.push((Cow::Owned(name.to_string()), value.to_string()));
        }
    }

    pub fn with_field(mut self, name: impl Into<Cow<'static, str>>, value: String) -> Reply {
        self.extra_fields.push((name.into(), value));
        self
    }

    /// The whole response as bytes; the body is left out for a `HEAD` request.
    pub fn to_bytes(&self, minor_version: u8, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let _ = write!(out, "HTTP/1.{minor_version} {} {}\r\n", self.status, reason_phrase(self.status));
        // A 204 has no content, and says nothing of its length (RFC 9110 §8.6).
        if self.status != 204 {
            let _ = write!(out, "Content-Type: {}\r\nContent-Length: {}\r\n", self.content_type, self.body.len());
        }
        for (name, value) in &self.extra_fields {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_framed_and_closes() {
        let bytes = Reply::error(503, Some("Service Unavailable: all backends are down")).to_bytes(1, false, false);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 42\r\n\
             Connection: close\r\n\r\nService Unavailable: all backends are down"
        );
    }

    #[test]
    fn extra_fields_and_head_requests() {
        let reply = Reply::error(429, None).with_field("Retry-After", "1".into());
        let text = String::from_utf8(reply.to_bytes(1, true, true)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 17\r\n\
             Retry-After: 1\r\n\r\n"
        );
    }
}
