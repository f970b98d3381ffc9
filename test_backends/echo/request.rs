//! Reading one request: the head (`read_head`, parsed with `httparse` into an owned `Request`),
//! how its body is delimited (`framing`) and the body itself (`Body`, which decodes
//! `Content-Length` and `chunked` bodies, trailers included, through the connection buffer).
//!
//! All of it runs on the connection's own `echo-<port>-conn` thread, blocking on the socket.

use std::io;

use super::conn::{Conn, invalid};
use super::{MAX_HEAD, MAX_HEADERS};

/// Longest chunk-size line (with extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// An owned, parsed request head.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    /// HTTP minor version: 0 or 1.
    pub(super) minor: u8,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    pub(super) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
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

    pub(super) fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).iter().any(|t| t == token)
    }

    /// Whether the client wants the connection kept after this exchange.
    pub(super) fn wants_keep_alive(&self) -> bool {
        if self.minor >= 1 {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive") && !self.has_token("connection", "close")
        }
    }

    /// The path of the request target, without query string (absolute form is reduced).
    pub(super) fn path(&self) -> &str {
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

pub(super) enum HeadError {
    /// The connection failed or ended in the middle of a head: just close it.
    Io,
    /// The head is malformed or too large: answer 400 and close.
    Bad(&'static str),
}

/// Reads the next request head; `Ok(None)` when the client closed between requests.
pub(super) fn read_head(conn: &mut Conn) -> Result<Option<Request>, HeadError> {
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

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// Works out the body framing; the flag says the connection must close afterwards (a request
/// with both `Transfer-Encoding` and `Content-Length`).
pub(super) fn framing(request: &Request) -> Result<(Framing, bool), &'static str> {
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
pub(super) struct Body {
    pub(super) framing: Framing,
    /// Bytes left in the body (`Length`) or in the current chunk (`Chunked`).
    remaining: u64,
    /// A chunk's data has been read and its CRLF has not.
    chunk_crlf_pending: bool,
    pub(super) finished: bool,
}

impl Body {
    pub(super) fn new(framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(length) => length,
            Framing::Chunked => 0,
        };
        Body { framing, remaining, chunk_crlf_pending: false, finished: framing == Framing::Length(0) }
    }

    /// Reads the next piece of the body into `out`; `Ok(0)` once it is complete. An error of
    /// kind `InvalidData` means the body is malformed; any other error is an I/O failure.
    pub(super) fn read(&mut self, conn: &mut Conn, out: &mut [u8]) -> io::Result<usize> {
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
    pub(super) fn drain(&mut self, conn: &mut Conn, scratch: &mut [u8]) -> io::Result<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_parse() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"FF;name=value"), Some(255));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"+5"), None);
        assert_eq!(parse_chunk_size(b"12345678901234567"), None);
    }
}
