//! A connection's bytes as the request path reads and writes them: plain TCP, or a TLS session
//! over TCP.
//!
//! [`Stream`] is what a worker, its forward/reverse pair and the `watcher` hold for a client
//! connection (and the pair for a backend connection): `Read` and `Write` are implemented for
//! `&Stream` as they are for `&TcpStream`, so the copying code is the same for both, and two
//! threads may read and write one stream at once (for TLS under the rules of
//! [`crate::tls::session`]). Timeouts, readiness and shutting a direction down are the socket's
//! business, through [`Stream::socket`]; the TLS-specific duties are here: plaintext a session
//! already holds counts as readable ([`Stream::has_buffered`]), and a TLS stream says
//! `close_notify` before its sending side is shut ([`Stream::finish_sending`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::tls::TlsSession;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A connection's byte stream.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsSession>),
}

impl Stream {
    /// The socket under the stream: for its address, its timeouts, polling and shutting it down.
    /// Bytes go through the stream, never through the socket.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(session) => session.stream(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The scheme spoken over it: `https` for a TLS session.
    pub fn scheme(&self) -> Scheme {
        if self.is_tls() { Scheme::Https } else { Scheme::Http }
    }

    /// Reads what has arrived without waiting: `Ok(0)` is the end, `WouldBlock` means nothing (or,
    /// for TLS, no whole record) is there yet.
    pub fn read_now(&self, into: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => crate::connection::read_now(stream, into),
            Stream::Tls(session) => session.read_now(into),
        }
    }

    /// Whether a read would be answered without the socket: a TLS session holding plaintext, or
    /// bytes not yet decrypted. Whoever polls the socket before reading must look here first.
    pub fn has_buffered(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(session) => session.has_buffered(),
        }
    }

    /// Writes a short answer without waiting for the client to make room: for the `watcher`,
    /// which must never block on one client. Returns the bytes written (those of `data`, for
    /// TLS: all or nothing). A TLS answer is sealed and written with the socket's send timeout
    /// cut to a millisecond, so at worst that is the wait; the connection is closed after it
    /// anyway.
    pub fn send_without_waiting(&self, data: &[u8]) -> usize {
        match self {
            Stream::Plain(stream) => {
                let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
                rustix::net::send(stream, data, flags).unwrap_or(0)
            }
            Stream::Tls(session) => {
                let _ = session.stream().set_write_timeout(Some(std::time::Duration::from_millis(1)));
                if session.write_all(data).is_ok() { data.len() } else { 0 }
            }
        }
    }

    /// Ends the sending side: `close_notify` first for TLS (after anything being written), then
    /// the socket's write direction. The other side may still send.
    pub fn finish_sending(&self) {
        if let Stream::Tls(session) = self {
            let _ = session.shutdown();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}

impl Read for &Stream {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Plain(stream) => (&*stream).read(into),
            Stream::Tls(session) => session.read(into),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Plain(stream) => (&*stream).write(data),
            Stream::Tls(session) => session.write_all(data).map(|()| data.len()),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match *self {
            Stream::Plain(stream) => (&*stream).write_all(data),
            Stream::Tls(session) => session.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket's descriptor, for epoll and poll: readiness is the socket's (look at
/// [`Stream::has_buffered`] too).
impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

/// A reader over a stream that never blocks (`WouldBlock` when nothing is there).
pub struct ReadNow<'a>(pub &'a Stream);

impl Read for ReadNow<'_> {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        self.0.read_now(into)
    }
}
