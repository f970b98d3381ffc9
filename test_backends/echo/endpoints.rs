//! Answering one request: `handle_request` works out the body framing and the route, applies
//! `fail` and the latency, sends `100 Continue` when asked, starts a WebSocket after a valid
//! handshake, and answers the plain endpoints: `/health`, `/ping`, `/status/N`
//! (`send_status`), `/bytes/N` (`send_bytes`), `POST /echo` (`echo`), the `400` for a bad
//! request or upgrade, and the JSON description of anything else.
//!
//! Runs on the connection's own `echo-<port>-conn` thread, called by the connection loop once
//! per request; the latency is slept there, before the answer (with `fail`, before hanging up).

use std::io;
use std::thread;

use super::conn::Conn;
use super::request::{Body, Framing, Request, framing};
use super::response::{Exchange, response_head, send};
use super::websocket::{websocket, websocket_accept, websocket_key};
use super::{BLOCK, CHUNK_PREFIX, Ctx, Outcome, Route, route};

/// Byte `i` of a `/bytes/N` body is `i % PATTERN_PERIOD`.
const PATTERN_PERIOD: usize = 251;

pub(super) fn handle_request(conn: &mut Conn, ctx: &Ctx, request: &Request, scratch: &mut [u8]) -> io::Result<Outcome> {
    let (framing, must_close) = match framing(request) {
        Ok(found) => found,
        Err(message) => return Ok(Outcome::Reject(message)),
    };
    let mut body = Body::new(framing);
    let route = route(&request.method, request.path());
    let expects_continue = request.minor >= 1 && !body.finished && request.has_token("expect", "100-continue");

    if ctx.fail && route != Route::Health {
        // Read what is cheap to read, then hang up without a word.
        if matches!(framing, Framing::Length(n) if n <= BLOCK as u64) && !expects_continue {
            let _ = body.drain(conn, &mut scratch[..BLOCK]);
        }
        thread::sleep(ctx.latency);
        return Ok(Outcome::Close);
    }

    let exchange = Exchange {
        keep_alive: request.wants_keep_alive() && !must_close,
        minor: request.minor,
        head_only: request.method == "HEAD",
    };

    if route == Route::Echo {
        thread::sleep(ctx.latency);
        if expects_continue {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        return echo(conn, ctx, request, exchange, body, scratch);
    }

    let route = match route {
        Route::WebSocket => match websocket_key(request, framing) {
            Ok(key) => {
                thread::sleep(ctx.latency);
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\nX-Backend: {}\r\n\r\n",
                    websocket_accept(&key),
                    ctx.backend_header
                );
                conn.write_all(head.as_bytes())?;
                return websocket(conn, scratch).map(|()| Outcome::Close);
            }
            Err(message) => Route::BadUpgrade(message),
        },
        other => other,
    };

    if expects_continue {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body_bytes = match body.drain(conn, &mut scratch[..BLOCK]) {
        Ok(count) => count,
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            return Ok(Outcome::Reject("malformed chunked body"));
        }
        Err(error) => return Err(error),
    };
    if route != Route::Health {
        thread::sleep(ctx.latency);
    }

    match route {
        Route::Health => send(conn, ctx, &exchange, 200, "text/plain", b"ok")?,
        Route::Ping => {
            let text = format!("pong from backend :{}", ctx.port);
            send(conn, ctx, &exchange, 200, "text/plain", text.as_bytes())?;
        }
        Route::Status(status) => send_status(conn, ctx, &exchange, status)?,
        Route::Bytes(count) => send_bytes(conn, ctx, &exchange, count, &mut scratch[..BLOCK])?,
        Route::Invalid(message) => {
            let text = format!("bad request: {message}\n");
            send(conn, ctx, &exchange, 400, "text/plain", text.as_bytes())?;
        }
        Route::BadUpgrade(message) => {
            // RFC 6455 §4.4: a refused handshake names the versions the server speaks.
            let text = format!("bad request: {message}\n");
            let length = text.len().to_string();
            let fields = [("Content-Type", "text/plain"), ("Content-Length", &length), ("Sec-WebSocket-Version", "13")];
            let mut response = response_head(ctx, &exchange, 400, &fields);
            if !exchange.head_only {
                response.extend_from_slice(text.as_bytes());
            }
            conn.write_all(&response)?;
        }
        // `/echo` and valid WebSocket upgrades are answered above.
        Route::Json | Route::Echo | Route::WebSocket => {
            let headers: Vec<serde_json::Value> = request
                .headers
                .iter()
                .map(|(name, value)| serde_json::json!([name, String::from_utf8_lossy(value)]))
                .collect();
            let description = serde_json::json!({
                "server": ctx.name,
                "port": ctx.port,
                "method": request.method,
                "path": request.target,
                "headers": headers,
                "body_bytes": body_bytes,
                "connection_requests": conn.requests,
            });
            let text = description.to_string();
            send(conn, ctx, &exchange, 200, "application/json", text.as_bytes())?;
        }
    }
    Ok(if exchange.keep_alive { Outcome::KeepAlive } else { Outcome::Close })
}

fn send_status(conn: &mut Conn, ctx: &Ctx, exchange: &Exchange, status: u16) -> io::Result<()> {
    if status == 204 || status == 304 {
        let head = response_head(ctx, exchange, status, &[]);
        return conn.write_all(&head);
    }
    let text = format!("status {status}");
    send(conn, ctx, exchange, status, "text/plain", text.as_bytes())
}

/// Writes `count` pattern bytes in blocks, never holding more than one block.
fn send_bytes(conn: &mut Conn, ctx: &Ctx, exchange: &Exchange, count: u64, block: &mut [u8]) -> io::Result<()> {
    let length = count.to_string();
    let head =
        response_head(ctx, exchange, 200, &[("Content-Type", "application/octet-stream"), ("Content-Length", &length)]);
    conn.write_all(&head)?;
    if exchange.head_only {
        return Ok(());
    }
    let mut offset = 0u64;
    while offset < count {
        let n = block.len().min(usize::try_from(count - offset).unwrap_or(usize::MAX));
        let phase = (offset % PATTERN_PERIOD as u64) as usize;
        for (i, byte) in block[..n].iter_mut().enumerate() {
            *byte = ((phase + i) % PATTERN_PERIOD) as u8;
        }
        conn.write_all(&block[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// `POST /echo`: streams the body back as it is read.
fn echo(
    conn: &mut Conn,
    ctx: &Ctx,
    request: &Request,
    mut exchange: Exchange,
    mut body: Body,
    scratch: &mut [u8],
) -> io::Result<Outcome> {
    let content_type = request
        .values("content-type")
        .next()
        .map(|value| {
            String::from_utf8_lossy(value).chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>()
        })
        .unwrap_or_else(|| "application/octet-stream".to_string());
    match body.framing {
        Framing::Length(length) => {
            let length = length.to_string();
            let head =
                response_head(ctx, &exchange, 200, &[("Content-Type", &content_type), ("Content-Length", &length)]);
            conn.write_all(&head)?;
            loop {
                let n = body.read(conn, &mut scratch[..BLOCK])?;
                if n == 0 {
                    break;
                }
                conn.write_all(&scratch[..n])?;
            }
        }
        Framing::Chunked if exchange.minor == 0 => {
            // An HTTP/1.0 client cannot read a chunked answer: delimit it by closing.
            exchange.keep_alive = false;
            let head = response_head(ctx, &exchange, 200, &[("Content-Type", &content_type)]);
            conn.write_all(&head)?;
            loop {
                let n = body.read(conn, &mut scratch[..BLOCK])?;
                if n == 0 {
                    break;
                }
                conn.write_all(&scratch[..n])?;
            }
        }
        Framing::Chunked => {
            let head = response_head(
                ctx,
                &exchange,
                200,
                &[("Content-Type", &content_type), ("Transfer-Encoding", "chunked")],
            );
            conn.write_all(&head)?;
            loop {
                let n = body.read(conn, &mut scratch[CHUNK_PREFIX..CHUNK_PREFIX + BLOCK])?;
                if n == 0 {
                    break;
                }
                // Put the size line right before the data and CRLF after it: one write.
                let size_line = format!("{n:x}\r\n");
                let start = CHUNK_PREFIX - size_line.len();
                scratch[start..CHUNK_PREFIX].copy_from_slice(size_line.as_bytes());
                let end = CHUNK_PREFIX + n;
                scratch[end..end + 2].copy_from_slice(b"\r\n");
                conn.write_all(&scratch[start..end + 2])?;
            }
            conn.write_all(b"0\r\n\r\n")?;
        }
    }
    Ok(if exchange.keep_alive { Outcome::KeepAlive } else { Outcome::Close })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::test_client::{Client, backend, get, start};
    use std::io::Write;
    use std::time::{Duration, Instant};

    #[test]
    fn health_answers_ok() {
        let response = get(backend(), "/health");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"ok");
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert_eq!(response.header("content-length"), Some("2"));
        assert_eq!(response.header("x-backend"), Some("test-echo"));
        assert_eq!(response.header("connection"), Some("close"));
    }

    #[test]
    fn ping_names_the_port() {
        let addr = backend();
        let response = get(addr, "/ping");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, format!("pong from backend :{}", addr.port()).into_bytes());
    }

    #[test]
    fn json_echo_keeps_header_case_and_order() {
        let addr = backend();
        let mut client = Client::connect(addr);
        client.send(
            b"PUT /some/where?x=1&y=2 HTTP/1.1\r\nHost: example\r\nX-Zeta: last\r\n\
              x-alpha: first\r\nX-Zeta: again\r\nContent-Length: 5\r\n\r\nhello",
        );
        let response = client.response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["server"], "test-echo");
        assert_eq!(json["port"], addr.port());
        assert_eq!(json["method"], "PUT");
        assert_eq!(json["path"], "/some/where?x=1&y=2");
        assert_eq!(json["body_bytes"], 5);
        assert_eq!(
            json["headers"],
            serde_json::json!([
                ["Host", "example"],
                ["X-Zeta", "last"],
                ["x-alpha", "first"],
                ["X-Zeta", "again"],
                ["Content-Length", "5"],
            ])
        );
    }

    #[test]
    fn echo_with_content_length() {
        let mut client = Client::connect(backend());
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-test\r\n\
              Content-Length: 11\r\n\r\nhello world",
        );
        let response = client.response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello world");
        assert_eq!(response.header("content-length"), Some("11"));
        assert_eq!(response.header("content-type"), Some("text/x-test"));
        // Without Content-Type the echo is octet-stream; the connection is still usable.
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.body, b"");
        assert_eq!(response.header("content-type"), Some("application/octet-stream"));
    }

    #[test]
    fn echo_with_chunked_body_rechunks() {
        let mut client = Client::connect(backend());
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n",
        );
        let response = client.response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.body, b"hello world");
        // The trailer was consumed: the next request is read correctly.
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response(false).body, b"ok");
    }

    #[test]
    fn echo_streams_a_large_body() {
        let addr = backend();
        let mut client = Client::connect(addr);
        let size = 8 * 1024 * 1024;
        let mut writer = client.stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let head = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
            writer.write_all(head.as_bytes()).unwrap();
            let block: Vec<u8> = (0..BLOCK).map(|i| (i % 253) as u8).collect();
            for _ in 0..size / BLOCK {
                writer.write_all(&block).unwrap();
            }
        });
        let response = client.response(false);
        sender.join().unwrap();
        assert_eq!(response.body.len(), size);
        assert!(response.body.iter().enumerate().all(|(i, &b)| b == ((i % BLOCK) % 253) as u8));
    }

    #[test]
    fn expect_continue_gets_an_interim_response() {
        let mut client = Client::connect(backend());
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(client.take(25), b"HTTP/1.1 100 Continue\r\n\r\n");
        client.send(b"abc");
        assert_eq!(client.response(false).body, b"abc");
    }

    #[test]
    fn bytes_follow_the_pattern() {
        let addr = backend();
        let count = 200_000;
        let response = get(addr, &format!("/bytes/{count}"));
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/octet-stream"));
        assert_eq!(response.body.len(), count);
        assert!(response.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(get(addr, "/bytes/0").body, b"");
        assert_eq!(get(addr, "/bytes/17179869185").status, 400);
        assert_eq!(get(addr, "/bytes/abc").status, 400);
    }

    #[test]
    fn status_endpoint() {
        let addr = backend();
        let mut client = Client::connect(addr);
        client.send(b"GET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"status 404");
        client.send(b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.status, 204);
        assert_eq!(response.header("content-length"), None);
        client.send(b"GET /status/599?q HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response(false).status, 599);
        assert_eq!(get(addr, "/status/150").status, 400);
        assert_eq!(get(addr, "/status/600").status, 400);
        assert_eq!(get(addr, "/status/x").status, 400);
    }

    #[test]
    fn head_has_headers_but_no_body() {
        let mut client = Client::connect(backend());
        client.send(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response(true);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-length"), Some("1000"));
        client.send(b"HEAD /anything HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response(true);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(response.header("content-length").is_some());
        // Had a body been sent, this response would be misread.
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(client.response(false).body, b"ok");
        client.expect_eof();
    }

    #[test]
    fn fail_mode_closes_without_answering() {
        let addr = start(true, Duration::ZERO);
        let mut client = Client::connect(addr);
        client.send(b"POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
        client.expect_eof();
        let response = get(addr, "/health");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"ok");
    }

    #[test]
    fn latency_delays_all_but_health() {
        let addr = start(false, Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(get(addr, "/health").body, b"ok");
        assert!(started.elapsed() < Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(get(addr, "/ping").status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
