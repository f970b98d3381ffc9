//! The raw client the unit tests of every file share: it starts backends, reads responses
//! (`Content-Length`, chunked or head only) and WebSocket frames, and checks for a clean close.
//!
//! Runs on the test thread; each backend it starts serves on its own `echo-<port>` thread.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::{EchoOptions, spawn};

pub(super) fn start(fail: bool, latency: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let options = EchoOptions { name: "test-echo".to_string(), latency, fail, tls: None };
    spawn(listener, options).unwrap();
    addr
}

pub(super) fn backend() -> SocketAddr {
    start(false, Duration::ZERO)
}

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A raw test client that keeps unread bytes between responses.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
}

impl Client {
    pub(super) fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub(super) fn more(&mut self) -> usize {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    pub(super) fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.more() > 0, "unexpected end of stream");
        }
        self.buf.drain(..n).collect()
    }

    pub(super) fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return line;
            }
            assert!(self.more() > 0, "unexpected end of stream");
        }
    }

    pub(super) fn response(&mut self, head_only: bool) -> Response {
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
    pub(super) fn frame(&mut self) -> (bool, u8, Vec<u8>) {
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
    pub(super) fn expect_eof(&mut self) {
        assert!(self.buf.is_empty(), "unexpected bytes: {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected bytes: {:?}", &chunk[..n]),
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
        }
    }
}

pub(super) fn get(addr: SocketAddr, target: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let response = client.response(false);
    client.expect_eof();
    response
}
