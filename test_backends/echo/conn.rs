//! The buffered client connection, `Conn`: a socket with a read buffer that keeps the bytes of
//! pipelined requests (and of WebSocket frames sent right behind a handshake), line reading for
//! chunked bodies, and the lingering close after an error answer.
//!
//! A `Conn` is made and used only by the connection's own `echo-<port>-conn` thread. Its bytes
//! go over a [`Stream`]: plain TCP, or a TLS session already handshaken when the backend serves
//! HTTPS; the HTTP above is the same either way.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::{BLOCK, MAX_HEAD};
use crate::stream::Stream;

/// A client connection with a read buffer that keeps bytes of pipelined requests.
pub(super) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Requests read on this connection so far, reported by the JSON answer so that a client
    /// can tell a reused connection from a new one.
    pub(super) requests: u64,
}

impl Conn {
    pub(super) fn new(stream: Stream) -> Self {
        Conn { stream, buf: vec![0; BLOCK], start: 0, end: 0, requests: 0 }
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads until at least `n` bytes are buffered; `Ok(false)` when the stream ends first.
    pub(super) fn buffer_at_least(&mut self, n: usize) -> io::Result<bool> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` means end of stream.
    pub(super) fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        loop {
            match (&self.stream).read(&mut self.buf[self.end..]) {
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
    pub(super) fn make_room_for_head(&mut self) {
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
    pub(super) fn read_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
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
            match (&self.stream).read(out) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads one CRLF-terminated line of at most `limit` bytes and returns it without the CRLF.
    pub(super) fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
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

    pub(super) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(bytes)
    }

    /// Ends a TLS connection with `close_notify`, so the client reads a clean end; a plain one
    /// just closes when it drops.
    pub(super) fn close(self) {
        if let Stream::Tls(session) = &self.stream {
            let _ = session.shutdown();
        }
    }

    /// Closes after an error response: stop writing, then discard what the client still sends
    /// for a short while so that the response is not destroyed by a reset.
    pub(super) fn linger_close(&mut self) {
        // For TLS, `close_notify` before the socket's write side is shut.
        self.stream.finish_sending();
        let _ = self.stream.socket().set_read_timeout(Some(Duration::from_millis(200)));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut discarded = 0usize;
        while Instant::now() < deadline && discarded < 1024 * 1024 {
            match (&self.stream).read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    }
}

/// An `InvalidData` error: the client sent something malformed.
pub(super) fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
