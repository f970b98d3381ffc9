//! The bundled echo backend: a small, blocking HTTP/1.1 server used as an upstream for demos
//! and tests of the load balancer.
//!
//! This module owns the whole server side of the backend: accepting connections (one thread
//! each), parsing request heads with `httparse`, decoding request bodies (`Content-Length` and
//! `chunked`), keep-alive and pipelining, `Expect: 100-continue`, and the endpoints:
//!
//! * `GET /health` answers `ok` (even with `fail` set, and without the configured latency);
//! * `GET /ping` answers `pong from backend :PORT`;
//! * `POST /echo` streams the request body back as it is read;
//! * `GET /status/N` answers with status `N` (200..=599);
//! * `GET /bytes/N` answers `N` bytes where byte `i` is `i % 251`;
//! * `GET /ws` upgrades to a WebSocket (RFC 6455) that echoes each message;
//! * anything else answers a JSON description of the request.
//!
//! Every response carries `X-Backend: NAME`. With `fail` set, every request except
//! `/health` is read and then the connection is closed without a single response byte.
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

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How one echo backend behaves.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Reported in `X-Backend` and in the JSON echo.
    pub name: String,
    /// Slept before every answer except `/health`.
    pub latency: Duration,
    /// When set, everything except `/health` is answered by closing the connection.
    pub fail: bool,
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
/// Longest chunk-size line (with extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest `/bytes/N` served.
const MAX_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// How long a connection may stay silent before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Room kept in front of a body block for the chunk-size line when re-chunking.
const CHUNK_PREFIX: usize = 18;
/// Byte `i` of a `/bytes/N` body is `i % PATTERN_PERIOD`.
const PATTERN_PERIOD: usize = 251;

/// Serves forever on `listener`: one thread per accepted connection (named
/// `"echo-<port>-conn"`), keep-alive supported.
pub fn serve(listener: TcpListener, options: EchoOptions) {
    let port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
    let backend_header = options.name.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let ctx = Arc::new(Ctx { name: options.name, backend_header, port, latency: options.latency, fail: options.fail });
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
}

// ---------------------------------------------------------------------------------------------
// Connection I/O
// ---------------------------------------------------------------------------------------------

/// A client connection with a read buffer that keeps bytes of pipelined requests.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Requests read on this connection so far, reported by the JSON answer so that a client
    /// can tell a reused connection from a new one.
    requests: u64,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn { stream, buf: vec![0; BLOCK], start: 0, end: 0, requests: 0 }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads until at least `n` bytes are buffered; `Ok(false)` when the stream ends first.
    fn buffer_at_least(&mut self, n: usize) -> io::Result<bool> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` means end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Makes room to read more of a request head: moves the buffered bytes to the front and, if
    /// the buffer is full, doubles it, up to [`MAX_HEAD`].
    fn make_room_for_head(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < MAX_HEAD {
            self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
        }
    }

    /// Reads up to `out.len()` bytes, buffered ones first; `Ok(0)` means end of stream.
    fn read_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.buffered();
        if !available.is_empty() {
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            self.consume(n);
            return Ok(n);
        }
        loop {
            match self.stream.read(out) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads one CRLF-terminated line of at most `limit` bytes and returns it without the CRLF.
    fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        loop {
            let available = self.buffered();
            if let Some(pos) = available.iter().position(|&b| b == b'\n') {
                if pos == 0 || available[pos - 1] != b'\r' || pos - 1 > limit {
                    return Err(invalid("malformed line in chunked body"));
                }
                let line = available[..pos - 1].to_vec();
                self.consume(pos + 1);
                return Ok(line);
            }
            if available.len() > limit + 1 {
                return Err(invalid("line too long in chunked body"));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes after an error response: stop writing, then discard what the client still sends
    /// for a short while so that the response is not destroyed by a reset.
    fn linger_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(200)));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut discarded = 0usize;
        while Instant::now() < deadline && discarded < 1024 * 1024 {
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    }
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

// ---------------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------------

/// An owned, parsed request head.
struct Request {
    method: String,
    target: String,
    /// HTTP minor version: 0 or 1.
    minor: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The comma-separated, trimmed, lower-cased tokens of every `name` field.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|value| value.split(|&b| b == b','))
            .map(|token| String::from_utf8_lossy(token).trim().to_ascii_lowercase())
            .filter(|token| !token.is_empty())
            .collect()
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).iter().any(|t| t == token)
    }

    /// Whether the client wants the connection kept after this exchange.
    fn wants_keep_alive(&self) -> bool {
        if self.minor >= 1 {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive") && !self.has_token("connection", "close")
        }
    }

    /// The path of the request target, without query string (absolute form is reduced).
    fn path(&self) -> &str {
        let mut target = self.target.as_str();
        for scheme in ["http://", "https://"] {
            if target.len() >= scheme.len() && target.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
            {
                let rest = &target[scheme.len()..];
                target = rest.find('/').map_or("/", |slash| &rest[slash..]);
            }
        }
        target.split(['?', '#']).next().unwrap_or("")
    }
}

enum HeadError {
    /// The connection failed or ended in the middle of a head: just close it.
    Io,
    /// The head is malformed or too large: answer 400 and close.
    Bad(&'static str),
}

/// Reads the next request head; `Ok(None)` when the client closed between requests.
fn read_head(conn: &mut Conn) -> Result<Option<Request>, HeadError> {
    loop {
        if !conn.buffered().is_empty() {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut fields);
            let outcome = match parsed.parse(conn.buffered()) {
                Ok(httparse::Status::Complete(len)) => Some((
                    len,
                    Request {
                        method: parsed.method.unwrap_or("").to_string(),
                        target: parsed.path.unwrap_or("").to_string(),
                        minor: parsed.version.unwrap_or(1),
                        headers: parsed.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect(),
                    },
                )),
                Ok(httparse::Status::Partial) => None,
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Bad("too many header fields"));
                }
                Err(_) => return Err(HeadError::Bad("malformed request head")),
            };
            if let Some((len, request)) = outcome {
                conn.consume(len);
                return Ok(Some(request));
            }
            if conn.buffered().len() >= MAX_HEAD {
                return Err(HeadError::Bad("request head too large"));
            }
        }
        conn.make_room_for_head();
        match conn.fill() {
            Ok(0) if conn.buffered().is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(HeadError::Io),
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Works out the body framing; the flag says the connection must close afterwards (a request
/// with both `Transfer-Encoding` and `Content-Length`).
fn framing(request: &Request) -> Result<(Framing, bool), &'static str> {
    let codings = request.tokens("transfer-encoding");
    let has_length = request.values("content-length").next().is_some();
    if request.values("transfer-encoding").next().is_some() {
        return match codings.last() {
            Some(last) if last == "chunked" => Ok((Framing::Chunked, has_length)),
            _ => Err("unsupported transfer-encoding"),
        };
    }
    let mut length = None;
    for value in request.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err("invalid content-length");
            }
            let parsed: u64 =
                std::str::from_utf8(part).ok().and_then(|text| text.parse().ok()).ok_or("invalid content-length")?;
            if length.is_some_and(|previous| previous != parsed) {
                return Err("conflicting content-length values");
            }
            length = Some(parsed);
        }
    }
    Ok((Framing::Length(length.unwrap_or(0)), false))
}

/// A decoder for one request body that reads through the connection buffer.
struct Body {
    framing: Framing,
    /// Bytes left in the body (`Length`) or in the current chunk (`Chunked`).
    remaining: u64,
    /// A chunk's data has been read and its CRLF has not.
    chunk_crlf_pending: bool,
    finished: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(length) => length,
            Framing::Chunked => 0,
        };
        Body { framing, remaining, chunk_crlf_pending: false, finished: framing == Framing::Length(0) }
    }

    /// Reads the next piece of the body into `out`; `Ok(0)` once it is complete. An error of
    /// kind `InvalidData` means the body is malformed; any other error is an I/O failure.
    fn read(&mut self, conn: &mut Conn, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.finished || out.is_empty() {
                return Ok(0);
            }
            if self.remaining > 0 {
                let want = out.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let n = conn.read_into(&mut out[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    match self.framing {
                        Framing::Length(_) => self.finished = true,
                        Framing::Chunked => self.chunk_crlf_pending = true,
                    }
                }
                return Ok(n);
            }
            // Only chunked bodies get here: read the next chunk-size line.
            if self.chunk_crlf_pending {
                if !conn.read_line(0)?.is_empty() {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                self.chunk_crlf_pending = false;
            }
            let line = conn.read_line(MAX_CHUNK_LINE)?;
            let size = parse_chunk_size(&line).ok_or_else(|| invalid("invalid chunk size"))?;
            if size == 0 {
                let mut trailer_bytes = 0;
                loop {
                    let trailer = conn.read_line(MAX_HEAD)?;
                    if trailer.is_empty() {
                        break;
                    }
                    trailer_bytes += trailer.len() + 2;
                    if trailer_bytes > MAX_HEAD {
                        return Err(invalid("trailer section too large"));
                    }
                }
                self.finished = true;
                return Ok(0);
            }
            self.remaining = size;
        }
    }

    /// Reads and discards the rest of the body, returning how many bytes that was.
    fn drain(&mut self, conn: &mut Conn, scratch: &mut [u8]) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let n = self.read(conn, scratch)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }
}

/// Parses a chunk-size line: hex digits, optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// How the exchange in progress ends and is answered.
struct Exchange {
    keep_alive: bool,
    minor: u8,
    head_only: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => match status / 100 {
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Renders a response head with `X-Backend` and the right `Connection` field.
fn response_head(ctx: &Ctx, exchange: &Exchange, status: u16, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\nX-Backend: {}\r\n", reason(status), ctx.backend_header);
    for (name, value) in fields {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if !exchange.keep_alive {
        head.push_str("Connection: close\r\n");
    } else if exchange.minor == 0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes a complete response with a `Content-Length` body (omitted for `HEAD`).
fn send(
    conn: &mut Conn,
    ctx: &Ctx,
    exchange: &Exchange,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let length = body.len().to_string();
    let mut response =
        response_head(ctx, exchange, status, &[("Content-Type", content_type), ("Content-Length", &length)]);
    if !exchange.head_only {
        response.extend_from_slice(body);
    }
    conn.write_all(&response)
}

/// Answers 400 to a request that cannot be handled, then closes the connection.
fn reject(mut conn: Conn, ctx: &Ctx, minor: u8, message: &str) {
    let exchange = Exchange { keep_alive: false, minor, head_only: false };
    let body = format!("bad request: {message}\n");
    if send(&mut conn, ctx, &exchange, 400, "text/plain", body.as_bytes()).is_ok() {
        conn.linger_close();
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and endpoints
// ---------------------------------------------------------------------------------------------

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

fn handle_connection(stream: TcpStream, ctx: &Ctx) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err() {
        return;
    }
    let mut conn = Conn::new(stream);
    let mut scratch = vec![0u8; CHUNK_PREFIX + BLOCK + 2];
    loop {
        let request = match read_head(&mut conn) {
            Ok(Some(request)) => request,
            Ok(None) | Err(HeadError::Io) => return,
            Err(HeadError::Bad(message)) => {
                log::debug!("echo-{}: {message}", ctx.port);
                reject(conn, ctx, 1, message);
                return;
            }
        };
        conn.requests += 1;
        match handle_request(&mut conn, ctx, &request, &mut scratch) {
            Ok(Outcome::KeepAlive) => {}
            Ok(Outcome::Close) | Err(_) => return,
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

fn handle_request(conn: &mut Conn, ctx: &Ctx, request: &Request, scratch: &mut [u8]) -> io::Result<Outcome> {
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

// ---------------------------------------------------------------------------------------------
// WebSocket (RFC 6455)
// ---------------------------------------------------------------------------------------------

/// Appended to a `Sec-WebSocket-Key` before hashing it into `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload accepted from a client.
const MAX_FRAME_PAYLOAD: u64 = 16 * 1024 * 1024;
/// Largest payload of a control frame (close, ping, pong).
const MAX_CONTROL_PAYLOAD: u64 = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close status: the peer broke the protocol.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close status: a message too big to process.
const CLOSE_TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` value answering `key`: base64 of the SHA-1 of the key followed
/// by the RFC 6455 GUID. The key is used exactly as given (no trimming).
pub fn websocket_accept(key: &str) -> String {
    base64_encode(&sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes()))
}

/// One complete WebSocket frame with the FIN bit set: the low 4 bits of `opcode`, the payload
/// length in its shortest form and the payload. With `mask` the mask bit is set, the key is
/// included and the payload is masked with it (as a client must send); without, the frame is
/// unmasked (as a server sends).
pub fn websocket_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = frame_header(true, opcode, payload.len() as u64, mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut frame[start..], mask, 0);
    }
    frame
}

/// Renders a frame header: FIN and opcode, the payload length (7, 16 or 64 bits) and the mask.
fn frame_header(fin: bool, opcode: u8, length: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut header = Vec::with_capacity(14);
    header.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match length {
        0..=125 => header.push(mask_bit | length as u8),
        126..=0xFFFF => {
            header.push(mask_bit | 126);
            header.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            header.push(mask_bit | 127);
            header.extend_from_slice(&length.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        header.extend_from_slice(&mask);
    }
    header
}

/// XORs `data` with `mask`; `offset` is the position of `data[0]` within the frame payload.
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(phase + i) % 4];
    }
}

/// Checks that `request` is a WebSocket opening handshake (RFC 6455 §4.2.1) and returns its
/// `Sec-WebSocket-Key`, or says what is wrong with it.
fn websocket_key(request: &Request, framing: Framing) -> Result<String, &'static str> {
    if request.method != "GET" {
        return Err("a WebSocket upgrade must be a GET");
    }
    if request.minor < 1 {
        return Err("a WebSocket upgrade needs HTTP/1.1");
    }
    if framing != Framing::Length(0) {
        return Err("a WebSocket upgrade must not have a body");
    }
    if !request.has_token("upgrade", "websocket") {
        return Err("Upgrade must name websocket");
    }
    if !request.has_token("connection", "upgrade") {
        return Err("Connection must contain upgrade");
    }
    let mut versions = request.values("sec-websocket-version");
    if !matches!((versions.next(), versions.next()), (Some(version), None) if version.trim_ascii() == b"13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let mut keys = request.values("sec-websocket-key");
    match (keys.next(), keys.next()) {
        (Some(key), None) if !key.trim_ascii().is_empty() && key.trim_ascii().iter().all(u8::is_ascii_graphic) => {
            Ok(String::from_utf8_lossy(key.trim_ascii()).into_owned())
        }
        _ => Err("exactly one Sec-WebSocket-Key is needed"),
    }
}

/// A frame header as read from the client.
struct FrameHead {
    fin: bool,
    /// The three RSV bits; no extension is negotiated, so they must be zero.
    rsv: u8,
    opcode: u8,
    masked: bool,
    /// All zeros when the frame is not masked.
    mask: [u8; 4],
    length: u64,
}

/// Reads the next frame header; `Ok(None)` when the client closed between frames.
fn read_frame_head(conn: &mut Conn) -> io::Result<Option<FrameHead>> {
    if !conn.buffer_at_least(2)? {
        return if conn.buffered().is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
    }
    let (first, second) = (conn.buffered()[0], conn.buffered()[1]);
    let masked = second & 0x80 != 0;
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let size = 2 + extended + if masked { 4 } else { 0 };
    if !conn.buffer_at_least(size)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let bytes = &conn.buffered()[..size];
    let length = match extended {
        0 => u64::from(second & 0x7F),
        _ => bytes[2..2 + extended].iter().fold(0, |length, &byte| (length << 8) | u64::from(byte)),
    };
    let mut mask = [0; 4];
    if masked {
        mask.copy_from_slice(&bytes[size - 4..]);
    }
    conn.consume(size);
    Ok(Some(FrameHead { fin: first & 0x80 != 0, rsv: first & 0x70, opcode: first & 0x0F, masked, mask, length }))
}

/// The close status a frame calls for, if it is not acceptable; `in_message` says a
/// fragmented message is in progress.
fn frame_problem(frame: &FrameHead, in_message: bool) -> Option<u16> {
    let broken = frame.rsv != 0
        || !frame.masked
        || frame.length >> 63 != 0
        || match frame.opcode {
            OP_CONTINUATION => !in_message,
            OP_TEXT | OP_BINARY => in_message,
            OP_CLOSE | OP_PING | OP_PONG => !frame.fin || frame.length > MAX_CONTROL_PAYLOAD,
            _ => true,
        };
    if broken {
        Some(CLOSE_PROTOCOL_ERROR)
    } else if frame.length > MAX_FRAME_PAYLOAD {
        Some(CLOSE_TOO_BIG)
    } else {
        None
    }
}

/// Serves an upgraded connection: echoes frames until a close, an error or the idle timeout.
/// Bytes already buffered behind the handshake are the start of the frame stream.
fn websocket(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<()> {
    // A fragmented data message has started and not yet finished.
    let mut in_message = false;
    loop {
        let Some(frame) = read_frame_head(conn)? else {
            return Ok(());
        };
        if let Some(code) = frame_problem(&frame, in_message) {
            return close_websocket(conn, &code.to_be_bytes());
        }
        match frame.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                in_message = !frame.fin;
                echo_frame(conn, &frame, scratch)?;
            }
            OP_PING => {
                let payload = read_control_payload(conn, &frame)?;
                conn.write_all(&websocket_frame(OP_PONG, &payload, None))?;
            }
            OP_CLOSE => {
                let payload = read_control_payload(conn, &frame)?;
                let reply = match payload.len() {
                    0 => Vec::new(),
                    // A status code is two bytes: one alone is malformed.
                    1 => CLOSE_PROTOCOL_ERROR.to_be_bytes().to_vec(),
                    _ => payload[..2].to_vec(),
                };
                return close_websocket(conn, &reply);
            }
            _ => {
                // A pong: nothing to do.
                read_control_payload(conn, &frame)?;
            }
        }
    }
}

/// Sends a close frame with `payload`, then closes the connection.
fn close_websocket(conn: &mut Conn, payload: &[u8]) -> io::Result<()> {
    conn.write_all(&websocket_frame(OP_CLOSE, payload, None))?;
    conn.linger_close();
    Ok(())
}

/// Reads and unmasks the payload of a control frame (at most 125 bytes).
fn read_control_payload(conn: &mut Conn, frame: &FrameHead) -> io::Result<Vec<u8>> {
    let length = frame.length.min(MAX_CONTROL_PAYLOAD) as usize;
    if !conn.buffer_at_least(length)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut payload = conn.buffered()[..length].to_vec();
    conn.consume(length);
    apply_mask(&mut payload, frame.mask, 0);
    Ok(payload)
}

/// Echoes one data frame unmasked, streaming its payload through `scratch` block by block.
fn echo_frame(conn: &mut Conn, frame: &FrameHead, scratch: &mut [u8]) -> io::Result<()> {
    let header = frame_header(frame.fin, frame.opcode, frame.length, None);
    // The header goes out with the first block of payload.
    scratch[..header.len()].copy_from_slice(&header);
    let mut filled = header.len();
    let mut done = 0u64;
    loop {
        let remaining = frame.length - done;
        let want = (scratch.len() - filled).min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want > 0 {
            let n = conn.read_into(&mut scratch[filled..filled + want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            apply_mask(&mut scratch[filled..filled + n], frame.mask, done);
            filled += n;
            done += n as u64;
        }
        conn.write_all(&scratch[..filled])?;
        filled = 0;
        if done == frame.length {
            return Ok(());
        }
    }
}

/// SHA-1 (RFC 3174) of `data`; only needed for `Sec-WebSocket-Accept`.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    // Padding: a 1 bit, zeros up to 56 bytes modulo 64, then the length in bits (big-endian).
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut words = [0u32; 80];
        for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for t in 16..80 {
            words[t] = (words[t - 3] ^ words[t - 8] ^ words[t - 14] ^ words[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = state;
        for (t, &word) in words.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (value, add) in state.iter_mut().zip([a, b, c, d, e]) {
            *value = value.wrapping_add(add);
        }
    }
    let mut digest = [0u8; 20];
    for (bytes, value) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
    digest
}

/// Standard base64 (RFC 4648 §4) with `=` padding; encoding only.
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n + 1 characters; `=` fills the group up to four.
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((bits >> (18 - 6 * i)) & 0x3F) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn start(fail: bool, latency: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let options = EchoOptions { name: "test-echo".to_string(), latency, fail };
        spawn(listener, options).unwrap();
        addr
    }

    fn backend() -> SocketAddr {
        start(false, Duration::ZERO)
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// A raw test client that keeps unread bytes between responses.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Self {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            Client { stream, buf: Vec::new() }
        }

        fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).unwrap();
        }

        fn more(&mut self) -> usize {
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
            n
        }

        fn take(&mut self, n: usize) -> Vec<u8> {
            while self.buf.len() < n {
                assert!(self.more() > 0, "unexpected end of stream");
            }
            self.buf.drain(..n).collect()
        }

        fn line(&mut self) -> Vec<u8> {
            loop {
                if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line = self.buf[..pos].to_vec();
                    self.buf.drain(..pos + 2);
                    return line;
                }
                assert!(self.more() > 0, "unexpected end of stream");
            }
        }

        fn response(&mut self, head_only: bool) -> Response {
            let (status, headers, len) = loop {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Response::new(&mut fields);
                if let httparse::Status::Complete(len) = parsed.parse(&self.buf).unwrap() {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).unwrap()))
                        .collect();
                    break (parsed.code.unwrap(), headers, len);
                }
                assert!(self.more() > 0, "unexpected end of stream");
            };
            self.buf.drain(..len);
            let mut response = Response { status, headers, body: Vec::new() };
            if head_only {
                return response;
            }
            if response.header("transfer-encoding") == Some("chunked") {
                loop {
                    let size_line = self.line();
                    let size = usize::from_str_radix(std::str::from_utf8(&size_line).unwrap(), 16).unwrap();
                    if size == 0 {
                        assert_eq!(self.line(), b"");
                        break;
                    }
                    let data = self.take(size);
                    response.body.extend_from_slice(&data);
                    assert_eq!(self.line(), b"");
                }
            } else if let Some(length) = response.header("content-length") {
                let length = length.parse().unwrap();
                response.body = self.take(length);
            }
            response
        }

        /// Reads one server frame as (FIN, opcode, payload), checking that it is not masked.
        fn frame(&mut self) -> (bool, u8, Vec<u8>) {
            let head = self.take(2);
            assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
            assert_eq!(head[0] & 0x70, 0, "no RSV bits");
            let length = match head[1] & 0x7F {
                126 => self.take(2).iter().fold(0, |length, &byte| (length << 8) | usize::from(byte)),
                127 => self.take(8).iter().fold(0, |length, &byte| (length << 8) | usize::from(byte)),
                length => usize::from(length),
            };
            (head[0] & 0x80 != 0, head[0] & 0x0F, self.take(length))
        }

        /// Asserts that the server closes the connection with nothing more to say.
        fn expect_eof(&mut self) {
            assert!(self.buf.is_empty(), "unexpected bytes: {:?}", self.buf);
            let mut chunk = [0u8; 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {}
                Ok(n) => panic!("unexpected bytes: {:?}", &chunk[..n]),
                Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
            }
        }
    }

    fn get(addr: SocketAddr, target: &str) -> Response {
        let mut client = Client::connect(addr);
        client.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        let response = client.response(false);
        client.expect_eof();
        response
    }

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

    #[test]
    fn chunk_sizes_parse() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"FF;name=value"), Some(255));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"+5"), None);
        assert_eq!(parse_chunk_size(b"12345678901234567"), None);
    }

    // -----------------------------------------------------------------------------------------
    // WebSocket
    // -----------------------------------------------------------------------------------------

    /// The RFC 6455 §1.3 example key and its accept value.
    const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const MASK: Option<[u8; 4]> = Some([0x37, 0xFA, 0x21, 0x3D]);

    fn ws_request() -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    fn ws_answer() -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {WS_ACCEPT}\r\nX-Backend: test-echo\r\n\r\n"
        )
    }

    /// Connects and completes the opening handshake, checking the exact `101` head.
    fn ws_connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        client.send(ws_request().as_bytes());
        let answer = ws_answer();
        assert_eq!(String::from_utf8_lossy(&client.take(answer.len())), answer);
        client
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn sha1_matches_rfc_3174() {
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(hex(&sha1(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        assert_eq!(
            hex(&sha1(&b"01234567012345670123456701234567".repeat(20))),
            "dea356a2cddd90c7a7ecedc5ebb563934f460452"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), output, "{input:?}");
        }
        assert_eq!(base64_encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
    }

    #[test]
    fn accept_matches_rfc_6455() {
        assert_eq!(websocket_accept(WS_KEY), WS_ACCEPT);
    }

    #[test]
    fn frames_use_the_shortest_length() {
        assert_eq!(websocket_frame(OP_TEXT, b"hi", None), b"\x81\x02hi");
        assert_eq!(websocket_frame(OP_PING, b"", None), b"\x89\x00");
        // RFC 6455 §5.7: a masked "Hello".
        assert_eq!(
            websocket_frame(OP_TEXT, b"Hello", Some([0x37, 0xFA, 0x21, 0x3D])),
            [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        );
        assert_eq!(websocket_frame(OP_BINARY, &[0; 125], None)[..2], [0x82, 125]);
        assert_eq!(websocket_frame(OP_BINARY, &[0; 126], None)[..4], [0x82, 126, 0, 126]);
        assert_eq!(websocket_frame(OP_BINARY, &[0; 65535], None)[..4], [0x82, 126, 0xFF, 0xFF]);
        let frame = websocket_frame(OP_BINARY, &[0; 65536], MASK);
        assert_eq!(frame[..10], [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(frame.len(), 10 + 4 + 65536);
    }

    #[test]
    fn websocket_handshake_and_text_echo() {
        let mut client = ws_connect(backend());
        client.send(&websocket_frame(OP_TEXT, b"hello", MASK));
        // Exactly one unmasked frame comes back.
        assert_eq!(client.take(7), b"\x81\x05hello");
        client.send(&websocket_frame(OP_TEXT, "grüße".as_bytes(), MASK));
        assert_eq!(client.frame(), (true, OP_TEXT, "grüße".as_bytes().to_vec()));
        assert!(client.buf.is_empty());
    }

    #[test]
    fn websocket_echoes_a_large_binary_frame() {
        let mut client = ws_connect(backend());
        // More than 65535 bytes: the 64-bit length form.
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        client.send(&websocket_frame(OP_BINARY, &payload, MASK));
        let head = client.take(10);
        assert_eq!(head, [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(client.take(payload.len()), payload);
        // Then a 16-bit length and an empty frame.
        client.send(&websocket_frame(OP_BINARY, &payload[..300], MASK));
        assert_eq!(client.frame(), (true, OP_BINARY, payload[..300].to_vec()));
        client.send(&websocket_frame(OP_BINARY, b"", MASK));
        assert_eq!(client.frame(), (true, OP_BINARY, Vec::new()));
    }

    #[test]
    fn websocket_fragments_are_echoed_frame_by_frame() {
        let mut client = ws_connect(backend());
        let mut first = websocket_frame(OP_TEXT, b"hel", MASK);
        first[0] &= 0x7F; // not FIN
        let mut middle = websocket_frame(OP_CONTINUATION, b"l", MASK);
        middle[0] &= 0x7F;
        client.send(&first);
        client.send(&middle);
        // A control frame may come between fragments.
        client.send(&websocket_frame(OP_PING, b"p", MASK));
        client.send(&websocket_frame(OP_CONTINUATION, b"o", MASK));
        assert_eq!(client.frame(), (false, OP_TEXT, b"hel".to_vec()));
        assert_eq!(client.frame(), (false, OP_CONTINUATION, b"l".to_vec()));
        assert_eq!(client.frame(), (true, OP_PONG, b"p".to_vec()));
        assert_eq!(client.frame(), (true, OP_CONTINUATION, b"o".to_vec()));
    }

    #[test]
    fn websocket_ping_gets_pong_and_pong_is_ignored() {
        let mut client = ws_connect(backend());
        client.send(&websocket_frame(OP_PONG, b"unsolicited", MASK));
        client.send(&websocket_frame(OP_PING, b"are you there", MASK));
        assert_eq!(client.frame(), (true, OP_PONG, b"are you there".to_vec()));
        client.send(&websocket_frame(OP_PING, b"", MASK));
        assert_eq!(client.frame(), (true, OP_PONG, Vec::new()));
        assert!(client.buf.is_empty());
    }

    #[test]
    fn websocket_close_is_echoed_then_the_connection_ends() {
        let addr = backend();
        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_CLOSE, b"\x03\xE8bye", MASK));
        assert_eq!(client.frame(), (true, OP_CLOSE, vec![0x03, 0xE8]));
        client.expect_eof();

        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_CLOSE, b"", MASK));
        assert_eq!(client.frame(), (true, OP_CLOSE, Vec::new()));
        client.expect_eof();
    }

    #[test]
    fn websocket_frame_right_behind_the_handshake() {
        let mut client = Client::connect(backend());
        let mut bytes = ws_request().into_bytes();
        bytes.extend_from_slice(&websocket_frame(OP_TEXT, b"early", MASK));
        bytes.extend_from_slice(&websocket_frame(OP_PING, b"too", MASK));
        client.send(&bytes);
        let answer = ws_answer();
        assert_eq!(String::from_utf8_lossy(&client.take(answer.len())), answer);
        assert_eq!(client.frame(), (true, OP_TEXT, b"early".to_vec()));
        assert_eq!(client.frame(), (true, OP_PONG, b"too".to_vec()));
    }

    #[test]
    fn websocket_protocol_errors_close_with_a_status() {
        let addr = backend();
        // Unmasked client frame: 1002.
        let mut client = ws_connect(addr);
        client.send(&websocket_frame(OP_TEXT, b"naked", None));
        assert_eq!(client.frame(), (true, OP_CLOSE, 1002u16.to_be_bytes().to_vec()));
        client.expect_eof();
        // Continuation without a message, unknown opcode, fragmented ping, RSV bit: 1002.
        let mut unfinished_ping = websocket_frame(OP_PING, b"", MASK);
        unfinished_ping[0] &= 0x7F;
        let mut rsv = websocket_frame(OP_TEXT, b"x", MASK);
        rsv[0] |= 0x40;
        for frame in
            [websocket_frame(OP_CONTINUATION, b"x", MASK), websocket_frame(0x3, b"", MASK), unfinished_ping, rsv]
        {
            let mut client = ws_connect(addr);
            client.send(&frame);
            assert_eq!(client.frame(), (true, OP_CLOSE, 1002u16.to_be_bytes().to_vec()), "{frame:02x?}");
            client.expect_eof();
        }
        // Over 16 MiB announced: 1009 before any payload is read.
        let mut client = ws_connect(addr);
        let mut head = frame_header(true, OP_BINARY, MAX_FRAME_PAYLOAD + 1, MASK);
        assert_eq!(head.len(), 14);
        head.extend_from_slice(b"abc");
        client.send(&head);
        assert_eq!(client.frame(), (true, OP_CLOSE, 1009u16.to_be_bytes().to_vec()));
        client.expect_eof();
    }

    #[test]
    fn bad_websocket_requests_get_400() {
        let addr = backend();
        let valid = ws_request();
        for (raw, why) in [
            ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "Upgrade"),
            (valid.replace("Upgrade: WebSocket\r\n", "Upgrade: h2c\r\n"), "Upgrade"),
            (valid.replace("keep-alive, Upgrade", "keep-alive"), "Connection"),
            (valid.replace("Version: 13", "Version: 8"), "Version"),
            (valid.replace(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n"), ""), "Key"),
            (valid.replace("GET", "POST").replace("Host: x", "Host: x\r\nContent-Length: 2"), "GET"),
            (valid.replace("Host: x", "Host: x\r\nContent-Length: 2"), "body"),
        ] {
            let mut client = Client::connect(addr);
            let body = if raw.contains("Content-Length: 2") { "ab" } else { "" };
            client.send(format!("{raw}{body}").as_bytes());
            let response = client.response(false);
            assert_eq!(response.status, 400, "{raw}");
            assert_eq!(response.header("content-type"), Some("text/plain"));
            assert_eq!(response.header("content-length"), Some(response.body.len().to_string().as_str()));
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
            assert_eq!(response.header("connection"), None);
            let text = String::from_utf8(response.body).unwrap();
            assert!(text.starts_with("bad request: ") && text.contains(why), "{raw}: {text}");
            // Keep-alive rules apply: the connection serves the next request.
            client.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            assert_eq!(client.response(false).body, b"ok");
            client.expect_eof();
        }
        let mut client = Client::connect(addr);
        client.send(valid.replace("HTTP/1.1", "HTTP/1.0").replace("keep-alive, ", "").as_bytes());
        let response = client.response(false);
        assert_eq!(response.status, 400);
        assert_eq!(response.header("connection"), Some("close"));
        client.expect_eof();
    }

    #[test]
    fn websocket_latency_applies_to_the_handshake_only() {
        let addr = start(false, Duration::from_millis(300));
        let started = Instant::now();
        let mut client = ws_connect(addr);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = Instant::now();
        client.send(&websocket_frame(OP_TEXT, b"quick", MASK));
        assert_eq!(client.frame(), (true, OP_TEXT, b"quick".to_vec()));
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn websocket_fail_mode_closes_without_answering() {
        let mut client = Client::connect(start(true, Duration::ZERO));
        client.send(ws_request().as_bytes());
        client.expect_eof();
    }
}
