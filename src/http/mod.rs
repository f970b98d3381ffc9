//! HTTP/1.1 message handling for the proxy: reading heads, framing bodies, rewriting headers for
//! the next hop, and the load balancer's own replies. Nothing here touches backend state or
//! threads; every function works on byte buffers and `Read`/`Write` streams, so each can be tested
//! on in-memory data.

pub mod buffer;
pub mod complete;
pub mod cookie;
pub mod edits;
pub mod framing;
pub mod head;
pub mod reply;
pub mod rewrite;
pub mod target;

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2), so a request
/// that a backend dropped before answering may be sent to another.
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// Whether a comma-separated header value lists `token`, compared case-insensitively.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&byte| byte == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
