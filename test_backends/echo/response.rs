//! Writing answers: the reason phrase of each status, response heads (with `X-Backend` and the
//! right `Connection` field), complete `Content-Length` responses (`send`) and the `400` that
//! ends a connection (`reject`).
//!
//! Called only on the connection's own `echo-<port>-conn` thread; each blocking write waits
//! at most the 60 s idle timeout.

use std::io;

use super::Ctx;
use super::conn::Conn;

/// How the exchange in progress ends and is answered.
pub(super) struct Exchange {
    pub(super) keep_alive: bool,
    pub(super) minor: u8,
    pub(super) head_only: bool,
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
pub(super) fn response_head(ctx: &Ctx, exchange: &Exchange, status: u16, fields: &[(&str, &str)]) -> Vec<u8> {
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
pub(super) fn send(
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
pub(super) fn reject(mut conn: Conn, ctx: &Ctx, minor: u8, message: &str) {
    let exchange = Exchange { keep_alive: false, minor, head_only: false };
    let body = format!("bad request: {message}\n");
    if send(&mut conn, ctx, &exchange, 400, "text/plain", body.as_bytes()).is_ok() {
        conn.linger_close();
    }
}
