//! Whether the bytes read from a client hold a request a worker can act on at once: a complete
//! head and, for a body the load balancer keeps before the first attempt, all of that body.
//!
//! Pure functions on a byte buffer, used by the `worker-N` threads (on the bytes a fast read
//! found) and by the `watcher` thread (on the bytes it gathered while the client was slow). The
//! rule is the same for both, so a request is handed to a worker when, and only when, the worker
//! will not have to wait for the client:
//!
//! - no body, or `Expect: 100-continue` (the client sends the body only once a backend agrees):
//!   the head is enough;
//! - `Content-Length` up to [`MAX_KEPT_BODY`]: the head and every byte of the body;
//! - a larger `Content-Length`: the head; the forward thread streams the body, under the minimum
//!   transfer rate;
//! - chunked: the head and either the whole body (last chunk and trailers) or the chunks up to the
//!   first that would take it past [`MAX_KEPT_BODY`] (that chunk's size line buffered, so the
//!   worker can see it crosses the budget); the forward thread streams the rest;
//! - a request that will be refused (a malformed head or body, a body over `maxBodyBytes`): at
//!   once, so the refusal is not delayed either.
//!
//! Chunk framing costs bytes that are not payload; so that a client sending tiny chunks cannot make
//! a kept body take unbounded memory, the wait also ends once the chunks seen take more than
//! [`MAX_KEPT_WIRE_BYTES`] on the wire: what came so far is kept, and the rest is streamed.

use crate::http::framing::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES, parse_chunk_size};
use crate::http::head::{BodyFraming, HeadLimits, RequestHead, parse_request};

/// Request bodies up to this size are read before the first attempt, so they can be replayed.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;
/// The most wire bytes a kept chunked body is waited for, framing included.
pub const MAX_KEPT_WIRE_BYTES: usize = 2 * MAX_KEPT_BODY as usize;
/// The most bytes behind a head that waiting for a kept body can ever need buffered: the kept wire
/// bytes, then one more chunk size line, or the trailers.
pub const MAX_KEPT_BODY_BUFFER: usize = MAX_KEPT_WIRE_BYTES + MAX_CHUNK_LINE + 2 + MAX_TRAILER_BYTES + 2;

/// What the bytes buffered from a client amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Nothing yet, or a request head that is not complete.
    Head,
    /// A complete head whose kept body is still arriving.
    Body,
    /// Enough to act on without waiting for the client.
    Ready,
}

/// How much of a request body a worker keeps before the first attempt, once it may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBody {
    /// The body is not all here yet: wait for more bytes.
    Incomplete,
    /// Act now, keeping at most this many payload bytes of a chunked body (whole chunks, all of
    /// them buffered); the rest, if any, is streamed.
    Ready { chunked_budget: u64 },
}

/// Assesses the bytes buffered from a client, `bytes` starting at a request's first byte.
pub fn assess(bytes: &[u8], limits: &HeadLimits, max_body: u64) -> Completeness {
    match parse_request(bytes, limits) {
        Ok(None) => Completeness::Head,
        Err(_) => Completeness::Ready,
        Ok(Some((head, used))) => match kept_body(&head, &bytes[used..], max_body) {
            KeptBody::Incomplete => Completeness::Body,
            KeptBody::Ready { .. } => Completeness::Ready,
        },
    }
}

/// Whether the body bytes buffered behind `head` (`body`, which may run on into a pipelined
/// request) are all a worker will keep of it.
pub fn kept_body(head: &RequestHead, body: &[u8], max_body: u64) -> KeptBody {
    let ready = KeptBody::Ready { chunked_budget: MAX_KEPT_BODY };
    if head.expects_continue() {
        return ready;
    }
    match head.framing {
        BodyFraming::Length(length) if length <= MAX_KEPT_BODY && length <= max_body => {
            if body.len() as u64 >= length {
                ready
            } else {
                KeptBody::Incomplete
            }
        }
        BodyFraming::Chunked => chunked_prefix(body, max_body),
        BodyFraming::Empty | BodyFraming::Length(_) | BodyFraming::UntilClose => ready,
    }
}

/// Scans chunked framing in `bytes`: ready once the body ends, a chunk would cross the kept
/// budget or `max_body`, the framing is malformed, or the wire bytes pass [`MAX_KEPT_WIRE_BYTES`].
fn chunked_prefix(bytes: &[u8], max_body: u64) -> KeptBody {
    let mut position = 0;
    let mut payload: u64 = 0;
    let ready = |budget| KeptBody::Ready { chunked_budget: budget };
    loop {
        let Some(line) = line_at(bytes, position, MAX_CHUNK_LINE) else { return KeptBody::Incomplete };
        let Ok(line) = line else { return ready(MAX_KEPT_BODY) };
        let Ok(size) = parse_chunk_size(&bytes[position..position + line]) else { return ready(MAX_KEPT_BODY) };
        let total = payload.saturating_add(size);
        if total > max_body || total > MAX_KEPT_BODY {
            return ready(MAX_KEPT_BODY);
        }
        if size > 0 && position + line + 2 + size as usize + 2 > MAX_KEPT_WIRE_BYTES {
            // Enough framing waited for: keep the chunks before this one, stream the rest.
            return ready(payload);
        }
        position += line + 2;
        if size == 0 {
            return trailers_end(bytes, position);
        }
        let data_end = position + size as usize;
        if bytes.len() < data_end + 2 {
            return KeptBody::Incomplete;
        }
        if &bytes[data_end..data_end + 2] != b"\r\n" {
            return ready(MAX_KEPT_BODY);
        }
        position = data_end + 2;
        payload = total;
    }
}

/// After the last chunk: ready once the empty line that ends the trailers is buffered (or the
/// trailers are malformed or too large, which the worker refuses).
fn trailers_end(bytes: &[u8], mut position: usize) -> KeptBody {
    let start = position;
    loop {
        let Some(line) = line_at(bytes, position, MAX_TRAILER_BYTES) else {
            return KeptBody::Incomplete;
        };
        match line {
            Ok(0) | Err(()) => return KeptBody::Ready { chunked_budget: MAX_KEPT_BODY },
            Ok(length) => position += length + 2,
        }
        if position - start > MAX_TRAILER_BYTES {
            return KeptBody::Ready { chunked_budget: MAX_KEPT_BODY };
        }
    }
}

/// The length of the CRLF-terminated line at `position`: `None` if it is not all buffered yet,
/// `Err` if it is malformed (a bare CR or LF) or longer than `limit`.
fn line_at(bytes: &[u8], position: usize, limit: usize) -> Option<Result<usize, ()>> {
    let rest = bytes.get(position..).unwrap_or_default();
    for (index, &byte) in rest.iter().enumerate() {
        if index > limit {
            return Some(Err(()));
        }
        match byte {
            b'\n' => return Some(Err(())),
            b'\r' => {
                return match rest.get(index + 1) {
                    None => None,
                    Some(b'\n') => Some(Ok(index)),
                    Some(_) => Some(Err(())),
                };
            }
            _ => {}
        }
    }
    if rest.len() > limit { Some(Err(())) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Completeness {
        assess(bytes, &HeadLimits::default(), u64::MAX)
    }

    #[test]
    fn a_head_without_a_body_is_ready_once_complete() {
        assert_eq!(check(b""), Completeness::Head);
        assert_eq!(check(b"GET / HTTP/1.1\r\nHost: a\r\nX-a: "), Completeness::Head);
        assert_eq!(check(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Completeness::Ready);
        assert_eq!(check(b"GET\x01 / HTTP/1.1\r\n"), Completeness::Ready, "a refusal is not delayed");
    }

    #[test]
    fn a_small_body_is_waited_for_and_a_large_one_is_not() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(check(head), Completeness::Body);
        assert_eq!(check(&[&head[..], b"abcd"].concat()), Completeness::Body);
        assert_eq!(check(&[&head[..], b"abcde"].concat()), Completeness::Ready);
        let large = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", MAX_KEPT_BODY + 1);
        assert_eq!(check(large.as_bytes()), Completeness::Ready, "streamed by the forward thread");
        let kept = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX_KEPT_BODY}\r\n\r\n");
        assert_eq!(check(kept.as_bytes()), Completeness::Body);
        let over_limit = assess(head, &HeadLimits::default(), 4);
        assert_eq!(over_limit, Completeness::Ready, "413 at once");
        let continues = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(check(continues), Completeness::Ready, "the body comes only after 100 Continue");
    }

    #[test]
    fn a_chunked_body_is_ready_at_its_end_or_at_the_kept_budget() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for partial in [&b"5\r\nhel"[..], b"5\r\nhello\r\n", b"5\r\nhello\r\n0\r\n", b"5\r\nhello\r\n0\r\nX-t: 1\r\n"] {
            assert_eq!(check(&[head, partial].concat()), Completeness::Body, "{partial:?}");
        }
        assert_eq!(check(&[head, b"5\r\nhello\r\n0\r\n\r\n"].concat()), Completeness::Ready);
        assert_eq!(check(&[head, b"5\r\nhello\r\n0\r\nX-t: 1\r\n\r\n"].concat()), Completeness::Ready);
        let crossing = format!("{:x}\r\n", MAX_KEPT_BODY + 1);
        assert_eq!(check(&[head, crossing.as_bytes()].concat()), Completeness::Ready, "streamed from here");
        assert_eq!(check(&[head, b"zz\r\n"].concat()), Completeness::Ready, "400 at once");
        assert_eq!(check(&[head, b"5\r\nhelloXX"].concat()), Completeness::Ready, "400 at once");
    }

    #[test]
    fn tiny_chunks_stop_the_wait_at_the_wire_limit_keeping_only_whole_buffered_chunks() {
        let head =
            parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &HeadLimits::default())
                .unwrap()
                .unwrap()
                .0;
        let mut body = Vec::new();
        let mut chunks = 0u64;
        let chunk = b"1;ext=aaaaaaaa\r\nx\r\n";
        while body.len() + chunk.len() <= MAX_KEPT_WIRE_BYTES {
            body.extend_from_slice(chunk);
            chunks += 1;
            assert!(chunks < 1_000_000);
        }
        assert_eq!(kept_body(&head, &body, u64::MAX), KeptBody::Incomplete, "the next size line is not here");
        body.extend_from_slice(b"1;ext=aaaaaaaa\r\n");
        assert_eq!(kept_body(&head, &body, u64::MAX), KeptBody::Ready { chunked_budget: chunks });
    }
}
