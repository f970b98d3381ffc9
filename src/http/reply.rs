//! The load balancer's own answers: errors (400, 429, 502, 503, 504, ...) and small bodies such as
//! the metrics document. Each carries `Content-Length`, and `Connection: close` when the
//! connection ends after it.

use std::io::Write;

/// The standard reason phrase for the statuses the load balancer produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
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
        _ => "Unknown",
    }
}

/// A complete response of the load balancer's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra_fields: Vec<(&'static str, String)>,
}

impl Reply {
    /// A plain-text error whose body is the reason phrase, or `detail` when given.
    pub fn error(status: u16, detail: Option<&str>) -> Reply {
        let text = detail.map_or_else(|| reason_phrase(status).to_string(), str::to_string);
        Reply { status, content_type: "text/plain; charset=utf-8", body: text.into_bytes(), extra_fields: Vec::new() }
    }

    pub fn json(body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type: "application/json", body, extra_fields: Vec::new() }
    }

    /// A `200` with any body and content type (an HTML page, a text exposition).
    pub fn content(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type, body, extra_fields: Vec::new() }
    }

    pub fn with_field(mut self, name: &'static str, value: String) -> Reply {
        self.extra_fields.push((name, value));
        self
    }

    /// The whole response as bytes; the body is left out for a `HEAD` request.
    pub fn to_bytes(&self, minor_version: u8, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let _ = write!(
            out,
            "HTTP/1.{minor_version} {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.extra_fields {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
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
