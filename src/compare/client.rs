//! One `compare` client's keep-alive connection: sends a `GET`, reads the answer, reconnects when
//! the connection is closed or broken.
//!
//! The answer is read as far as `compare` needs and no further than HTTP/1.1 allows: the head,
//! parsed and framed as the proxy itself does it, then a `Content-Length` body, or a body running
//! to the end of the connection when neither length nor chunking is given. A chunked answer is not
//! expected from the echo backends and counts as an error. Every read and write is bounded by
//! [`IO_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::workload::PlannedRequest;
use crate::http::head::{BadResponse, BodyFraming, parse_response};

/// The longest any connect, read or write may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The `X-Backend` field: which echo backend answered (none on the load balancer's own replies).
    pub backend: Option<String>,
}

/// A connection to the load balancer, opened on first use and again after it closes.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    pub fn new(addr: SocketAddr) -> Connection {
        Connection { addr, stream: None, buffer: Vec::with_capacity(4096) }
    }

    /// Sends `request` and reads its answer. After an error, or an answer that ends the
    /// connection, the next call connects afresh.
    pub fn get(&mut self, request: &PlannedRequest) -> io::Result<Answer> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => self.stream.insert(connect(self.addr)?),
        };
        let result = exchange(stream, &mut self.buffer, request);
        match result {
            Ok((answer, keep_open)) => {
                if !keep_open {
                    self.stream = None;
                }
                Ok(answer)
            }
            Err(error) => {
                self.stream = None;
                Err(error)
            }
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes the request and reads the answer: (the answer, whether the connection stays open).
fn exchange(stream: &mut TcpStream, buffer: &mut Vec<u8>, request: &PlannedRequest) -> io::Result<(Answer, bool)> {
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: loadbalancer-compare\r\nX-Forwarded-For: {}\r\n\r\n",
        request.path, request.forwarded_for
    );
    stream.write_all(head.as_bytes())?;
    read_answer(stream, buffer)
}

/// Reads one answer from `stream`, using `buffer` for the head. Generic so tests can feed bytes.
/// The head is parsed and framed by the load balancer's own [`parse_response`].
pub fn read_answer(stream: &mut impl Read, buffer: &mut Vec<u8>) -> io::Result<(Answer, bool)> {
    buffer.clear();
    let mut block = [0u8; 4096];
    let (head, head_len) = loop {
        match parse_response(buffer, false) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buffer.len() >= MAX_HEAD_BYTES => {
                return Err(invalid(format!("response head longer than {MAX_HEAD_BYTES} bytes")));
            }
            Ok(None) => {}
            Err(BadResponse(reason)) => return Err(invalid(format!("malformed response head: {reason}"))),
        }
        let read = stream.read(&mut block)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a complete answer"));
        }
        buffer.extend_from_slice(&block[..read]);
    };
    let backend = head.fields.get("x-backend").map(|value| String::from_utf8_lossy(value).trim().to_string());
    let answer = Answer { status: head.status, backend };
    let already = (buffer.len() - head_len) as u64;
    let length = match head.framing {
        BodyFraming::Empty => 0,
        BodyFraming::Length(length) => length,
        BodyFraming::Chunked => return Err(invalid("a chunked answer (compare expects Content-Length)")),
        BodyFraming::UntilClose => {
            io::copy(stream, &mut io::sink())?;
            return Ok((answer, false));
        }
    };
    if already > length {
        return Err(invalid("bytes beyond the answer's Content-Length"));
    }
    let copied = io::copy(&mut stream.take(length - already), &mut io::sink())?;
    if copied < length - already {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed within the body"));
    }
    Ok((answer, head.backend_keeps_alive()))
}

fn invalid(problem: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, problem.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> io::Result<(Answer, bool)> {
        read_answer(&mut &bytes[..], &mut Vec::new())
    }

    fn answer(status: u16, backend: Option<&str>) -> Answer {
        Answer { status, backend: backend.map(str::to_string) }
    }

    #[test]
    fn reads_status_backend_and_a_content_length_body() {
        let bytes = b"HTTP/1.1 200 OK\r\nX-Backend: fast-1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(read(bytes).unwrap(), (answer(200, Some("fast-1")), true));
        let closing = b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad";
        assert_eq!(read(closing).unwrap(), (answer(502, None), false));
        let to_close = b"HTTP/1.1 200 OK\r\nX-Backend: slow\r\n\r\nuntil the end";
        assert_eq!(read(to_close).unwrap(), (answer(200, Some("slow")), false));
    }

    #[test]
    fn reads_an_answer_arriving_in_small_pieces_and_stops_at_its_end() {
        /// Hands out at most one byte per read.
        struct OneByte<'a>(&'a mut io::Cursor<Vec<u8>>);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let one = buf.len().min(1);
                self.0.read(&mut buf[..one])
            }
        }
        let bytes = b"HTTP/1.1 200 OK\r\nX-Backend: b\r\nContent-Length: 2\r\n\r\nok";
        let mut trickle = io::Cursor::new(bytes.to_vec());
        assert_eq!(read_answer(&mut OneByte(&mut trickle), &mut Vec::new()).unwrap(), (answer(200, Some("b")), true));
        assert_eq!(trickle.position() as usize, bytes.len());
    }

    #[test]
    fn broken_or_unexpected_answers_are_errors() {
        let cases: [(&[u8], io::ErrorKind); 6] = [
            (b"", io::ErrorKind::UnexpectedEof),
            (b"HTTP/1.1 200 OK\r\nContent-Le", io::ErrorKind::UnexpectedEof),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", io::ErrorKind::UnexpectedEof),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ntoo long", io::ErrorKind::InvalidData),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", io::ErrorKind::InvalidData),
            (b"garbage\r\n\r\n", io::ErrorKind::InvalidData),
        ];
        for (bytes, kind) in cases {
            assert_eq!(read(bytes).unwrap_err().kind(), kind, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
