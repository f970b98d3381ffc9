//! The bundled echo backend: a small, blocking HTTP/1.1 server used as an upstream for demos
//! and tests of the load balancer.
//!
//! This module owns the whole server side of the backend: accepting connections (one thread
//! each), parsing request heads with `httparse`, decoding request bodies (`Content-Length` and
//! `chunked`), keep-alive and pipelining, `Expect: 100-continue`, and the endpoints (routed by
//! `route` here; after each, the file that answers it):
//!
//! * `GET /health` answers `ok` (even with `fail` set, and without the configured latency):
//!   `endpoints.rs`;
//! * `GET /ping` answers `pong from backend :PORT`: `endpoints.rs`;
//! * `POST /echo` streams the request body back as it is read: `endpoints.rs`;
//! * `GET /status/N` answers with status `N` (200..=599): `endpoints.rs`;
//! * `GET /bytes/N` answers `N` bytes where byte `i` is `i % 251`: `endpoints.rs`;
//! * `GET /ws` upgrades to a WebSocket (RFC 6455) that echoes each message: `websocket.rs`
//!   checks the handshake and serves the frames, `endpoints.rs` writes the `101` or the `400`;
//! * anything else answers a JSON description of the request: `endpoints.rs`.
//!
//! Every response carries `X-Backend: NAME`. With `fail` set, every request except
//! `/health` is read and then the connection is closed without a single response byte.
//!
//! With `tls` set the backend serves HTTPS only, for trying out and testing `https://`
//! backends: each connection's TLS handshake runs first, blocking, on the connection's own
//! thread (at most `TLS_HANDSHAKE_TIMEOUT`), and HTTP follows over the session exactly as over
//! TCP. A client that fails the handshake is closed without an answer. A connection the
//! backend ends is ended with `close_notify`.
//!
//! A `/ws` request that is not a valid opening handshake (`GET`, HTTP/1.1, no body,
//! `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13` and one
//! `Sec-WebSocket-Key`) is answered `400`. After the `101` the connection carries frames:
//! text, binary and continuation frames are echoed one by one with the same opcode and FIN bit,
//! a ping is answered with a pong, a pong is ignored, and a close is answered with a close
//! carrying the same status code before the connection is closed. Client frames must be
//! masked (else close `1002`) and at most 16 MiB (else close `1009`). The latency applies to
//! the `101` only, never to frames; a silent WebSocket is closed after the usual idle timeout.
//! [`websocket_accept`] and [`websocket_frame`] help tests speak the protocol.
//!
//! # Threads
//!
//! [`serve`] runs the accept loop on the thread that calls it (the `echo-backend` program's
//! main thread); [`spawn`] runs it on a new thread named `echo-<port>`. The accept loop
//! spawns one thread named `echo-<port>-conn` per accepted connection, with no limit on how
//! many. That thread runs `handle_connection` and everything it calls until the connection
//! closes, a WebSocket included after its upgrade, with blocking reads and writes that time
//! out after 60 s (`IDLE_TIMEOUT`); the latency is slept on it too, and so is the TLS
//! handshake.
//!
//! # Files
//!
//! * `mod.rs` (this file): the public API ([`serve`], [`spawn`], [`EchoOptions`], [`MAX_HEAD`],
//!   [`MAX_HEADERS`] and the re-exported WebSocket helpers), the limits shared by the other
//!   files, the accept loop, the connection loop (`handle_connection`) and the route table
//!   (`route`);
//! * `conn.rs`: the buffered client connection, `Conn`;
//! * `request.rs`: request heads (`Request`, `read_head`) and bodies (`framing`, `Body`);
//! * `response.rs`: status reasons, response heads, `send` and `reject`;
//! * `endpoints.rs`: `handle_request`, which answers one request, and the plain endpoints;
//! * `websocket.rs`: the `/ws` handshake check, frames, masking, the close handshake, and
//!   the SHA-1 and base64 behind `Sec-WebSocket-Accept`;
//! * `test_client.rs` (tests only): the raw HTTP and WebSocket client the unit tests share.

mod conn;
mod endpoints;
mod request;
mod response;
#[cfg(test)]
mod test_client;
mod websocket;

pub use websocket::{websocket_accept, websocket_frame};

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::stream::Stream;
use conn::Conn;
use endpoints::handle_request;
use request::{HeadError, read_head};
use response::reject;

/// How one echo backend behaves.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Reported in `X-Backend` and in the JSON echo.
    pub name: String,
    /// Slept before every answer except `/health`.
    pub latency: Duration,
    /// When set, everything except `/health` is answered by closing the connection.
    pub fail: bool,
    /// When set, HTTPS only, with this server configuration (see the module doc).
    pub tls: Option<Arc<ServerConfig>>,
}

/// Largest request head (request line and header fields) accepted: more than the load balancer
/// can ever forward (the largest head its `maxHeaderBytes` allows, plus the fields it adds), with
/// room to spare for fields it may add in future, so that whatever it lets through is served here.
pub const MAX_HEAD: usize = crate::config::MAX_HEADER_BYTES_LIMIT + 64 * 1024;
/// Most header fields accepted in one request head: the most `maxHeaders` allows, plus as many
/// again as a quarter of that for the fields the load balancer adds (and may add later).
pub const MAX_HEADERS: usize = crate::config::MAX_HEADERS_LIMIT + crate::config::MAX_HEADERS_LIMIT / 4;
/// Size of the I/O blocks used for bodies; also the connection's read buffer size, which grows
/// (up to [`MAX_HEAD`]) only for a head that does not fit.
const BLOCK: usize = 64 * 1024;
/// Largest `/bytes/N` served.
const MAX_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// How long a connection may stay silent before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Room kept in front of a body block for the chunk-size line when re-chunking.
const CHUNK_PREFIX: usize = 18;
/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves forever on `listener`: one thread per accepted connection (named
/// `"echo-<port>-conn"`), keep-alive supported.
pub fn serve(listener: TcpListener, options: EchoOptions) {
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let backend_header = options.name.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let ctx = Arc::new(Ctx {
        name: options.name,
        backend_header,
        port,
        latency: options.latency,
        fail: options.fail,
        tls: options.tls,
    });
    for accepted in listener.incoming() {
        match accepted {
            Ok(stream) => {
                let ctx = Arc::clone(&ctx);
                let spawned = thread::Builder::new()
                    .name(format!("echo-{port}-conn"))
                    .spawn(move || handle_connection(stream, &ctx));
                if let Err(error) = spawned {
                    log::warn!("echo-{port}: cannot spawn a connection thread: {error}");
                }
            }
            Err(error) => {
                log::warn!("echo-{port}: accept failed: {error}");
                // Typically out of file descriptors: do not spin.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Spawns [`serve`] on a thread named `"echo-<port>"` and returns at once.
pub fn spawn(listener: TcpListener, options: EchoOptions) -> io::Result<thread::JoinHandle<()>> {
    let port = listener.local_addr()?.port();
    thread::Builder::new().name(format!("echo-{port}")).spawn(move || serve(listener, options))
}

/// What every connection thread needs to know about its backend.
struct Ctx {
    name: String,
    /// `name` with control characters replaced, safe for a header value.
    backend_header: String,
    port: u16,
    latency: Duration,
    fail: bool,
    tls: Option<Arc<ServerConfig>>,
}

fn handle_connection(stream: TcpStream, ctx: &Ctx) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err() {
        return;
    }
    let stream = match &ctx.tls {
        None => Stream::Plain(stream),
        Some(config) => {
            match crate::tls::handshake(stream, Arc::clone(config), Instant::now() + TLS_HANDSHAKE_TIMEOUT) {
                Ok(session) => Stream::Tls(Box::new(session)),
                Err(error) => {
                    log::debug!("echo-{}: {error}", ctx.port);
                    return;
                }
            }
        }
    };
    let mut conn = Conn::new(stream);
    let mut scratch = vec![0u8; CHUNK_PREFIX + BLOCK + 2];
    loop {
        let request = match read_head(&mut conn) {
            Ok(Some(request)) => request,
            Ok(None) | Err(HeadError::Io) => return conn.close(),
            Err(HeadError::Bad(message)) => {
                log::debug!("echo-{}: {message}", ctx.port);
                reject(conn, ctx, 1, message);
                return;
            }
        };
        conn.requests += 1;
        match handle_request(&mut conn, ctx, &request, &mut scratch) {
            Ok(Outcome::KeepAlive) => {}
            Ok(Outcome::Close) | Err(_) => return conn.close(),
            Ok(Outcome::Reject(message)) => {
                reject(conn, ctx, request.minor, message);
                return;
            }
        }
    }
}

enum Outcome {
    KeepAlive,
    Close,
    /// Nothing has been written yet: answer 400 and close.
    Reject(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Ping,
    Echo,
    Status(u16),
    Bytes(u64),
    WebSocket,
    /// A `/ws` request that is not a valid WebSocket opening handshake.
    BadUpgrade(&'static str),
    Invalid(&'static str),
    Json,
}

fn route(method: &str, path: &str) -> Route {
    let get = method == "GET" || method == "HEAD";
    if get && path == "/health" {
        return Route::Health;
    }
    if get && path == "/ping" {
        return Route::Ping;
    }
    if method == "POST" && path == "/echo" {
        return Route::Echo;
    }
    if path == "/ws" {
        // Whether the request really is an opening handshake is checked with its fields.
        return Route::WebSocket;
    }
    if let (true, Some(code)) = (get, path.strip_prefix("/status/")) {
        return match parse_decimal(code) {
            Some(100..=199) => Route::Invalid("1xx statuses are not supported"),
            Some(code @ 200..=599) => Route::Status(code as u16),
            _ => Route::Invalid("status must be a number in 100..=599"),
        };
    }
    if let (true, Some(count)) = (get, path.strip_prefix("/bytes/")) {
        return match parse_decimal(count) {
            Some(count) if count <= MAX_BYTES => Route::Bytes(count),
            Some(_) => Route::Invalid("at most 16 GiB may be requested"),
            None => Route::Invalid("byte count must be a number"),
        };
    }
    Route::Json
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::test_client::{Client, backend};

    #[test]
    fn keep_alive_serves_several_requests() {
        let addr = backend();
        let mut client = Client::connect(addr);
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let first = client.response(false);
        assert_eq!(first.body, b"ok");
        assert_eq!(first.header("connection"), None);
        client.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(client.response(false).body.starts_with(b"pong"));

        // HTTP/1.0 closes by default and keeps the connection when asked to.
        let mut client = Client::connect(addr);
        client.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        client.send(b"GET /health HTTP/1.0\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.header("connection"), Some("close"));
        client.expect_eof();
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut client = Client::connect(backend());
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
              POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
              GET /health HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(client.response(false).body, b"abc");
        assert_eq!(client.response(false).body, b"de");
        assert_eq!(client.response(false).body, b"ok");
        assert!(client.response(false).body.starts_with(b"pong"));
        client.expect_eof();
    }

    #[test]
    fn malformed_requests_get_400_and_close() {
        let addr = backend();
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut client = Client::connect(addr);
            client.send(raw);
            let response = client.response(false);
            assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(raw));
            assert_eq!(response.header("connection"), Some("close"));
            client.expect_eof();
        }
    }
}
