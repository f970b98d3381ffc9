//! One client's TLS session: the handshake, then a session that one thread reads while another
//! writes.
//!
//! [`Handshake`] is a `ServerConnection` still negotiating, owned by one thread at a time and fed
//! bytes read elsewhere: [`feed`](Handshake::feed) takes what was read from the socket and
//! [`write_pending`](Handshake::write_pending) sends what rustls answers, so the `watcher` can
//! drive a handshake with non-blocking reads and no worker waits on a slow client. [`handshake`]
//! is the same loop with blocking reads and a deadline. Either way the handshake ends in a
//! [`TlsSession`], with any plaintext that arrived behind the client's `Finished` kept in it for
//! the first read.
//!
//! [`TlsSession`] is shared by `Arc` between the thread reading the client (the worker reading a
//! head, then `req-N-fwd`) and the thread writing it (the worker's answers, then `req-N-rev`), at
//! the same time. rustls needs `&mut` for both directions, so the connection sits behind a mutex,
//! and the rules that keep the two threads from blocking each other, or the records from going out
//! of order, are:
//!
//! 1. **No lock across a socket read.** The reader reads the socket with the connection unlocked,
//!    then locks it only to feed those bytes in (`read_tls`, `process_new_packets`) and take
//!    plaintext out. A reader blocked on a quiet client never holds up the writer.
//! 2. **Seal under the connection lock, write outside it.** The writer locks the connection to
//!    encrypt a chunk and take the records out into its buffer, unlocks, and writes the buffer to
//!    the socket.
//! 3. **One socket writer at a time, in sealing order.** The socket is written only by whoever
//!    holds the write lock, and records are taken out of the connection only by that holder, in
//!    the order rustls sealed them, and written before the lock is released. So the bytes on the
//!    wire are rustls's output in order, whichever thread made it.
//! 4. **The reader never waits for the writer.** Reading can make output of its own: an alert for
//!    a broken record, a reply to a TLS 1.3 `KeyUpdate`. The reader leaves it in the connection and
//!    only *tries* the write lock. If it is free the reader sends the output itself; if not, the
//!    holder sends it, because whoever releases the write lock looks again for output left in the
//!    connection and sends it if it can take the lock back. A reader is therefore never stuck
//!    behind a writer blocked on a client that is not reading.
//!
//! Lock order, where two are held: read lock, then write lock (only tried), then connection lock;
//! the writer takes the write lock, then the connection lock. The read lock is taken only by the
//! reading thread and is held across its socket read: it serialises readers, it stops no writer.
//!
//! A peer that closes the TCP connection without `close_notify` reads as the end (0), like one that
//! sent it: requests are framed by length or by chunks, so a truncated request is noticed by its
//! framing rather than here.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

/// Most bytes taken from the socket in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Most plaintext sealed in one go before its records are written: one full record.
const WRITE_CHUNK: usize = 16 * 1024;

/// Why a handshake, or a session, failed.
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed.
    Io(io::Error),
    /// The client broke the protocol, or asked for what is not offered; an alert was sent.
    Tls(rustls::Error),
    /// The client closed the connection before the handshake was done.
    Closed,
    /// The handshake was not done by its deadline.
    TimedOut,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(error) => write!(f, "TLS socket error: {error}"),
            TlsError::Tls(error) => write!(f, "TLS handshake failed: {error}"),
            TlsError::Closed => f.write_str("the client closed the connection during the TLS handshake"),
            TlsError::TimedOut => f.write_str("the TLS handshake did not finish in time"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Io(error) => Some(error),
            TlsError::Tls(error) => Some(error),
            TlsError::Closed | TlsError::TimedOut => None,
        }
    }
}

/// Where a handshake stands after [`Handshake::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeState {
    /// It needs more bytes from the client (send [`Handshake::write_pending`] first).
    InProgress,
    /// It is done: send what is pending, then make the session ([`Handshake::into_session`]).
    Done,
}

/// A server handshake under way, driven by whoever reads the socket. One thread owns it.
pub struct Handshake {
    conn: ServerConnection,
    /// Bytes fed but not yet taken by rustls: only when plaintext behind the handshake filled
    /// rustls's buffer. They go to the session, in order, ahead of the socket.
    unfed: Vec<u8>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake").field("handshaking", &self.conn.is_handshaking()).finish_non_exhaustive()
    }
}

impl Handshake {
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, TlsError> {
        Ok(Handshake { conn: ServerConnection::new(config).map_err(TlsError::Tls)?, unfed: Vec::new() })
    }

    /// Takes `bytes` read from the client. On an error an alert is pending: send it
    /// ([`write_pending`](Self::write_pending)) and close. Bytes fed after `Done` are kept for
    /// the session, so feed none then.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<HandshakeState, TlsError> {
        self.unfed.extend_from_slice(bytes);
        let mut fed = 0;
        while fed < self.unfed.len() {
            let taken = match self.conn.read_tls(&mut &self.unfed[fed..]) {
                Ok(0) => {
                    // `close_notify` came: whatever follows it means nothing.
                    fed = self.unfed.len();
                    break;
                }
                Ok(taken) => taken,
                // The plaintext buffer is full: the rest waits for the session's reads.
                Err(error) if error.kind() == io::ErrorKind::Other && !self.conn.is_handshaking() => break,
                Err(error) => return Err(TlsError::Io(error)),
            };
            fed += taken;
            self.conn.process_new_packets().map_err(TlsError::Tls)?;
        }
        self.unfed.drain(..fed);
        Ok(if self.conn.is_handshaking() { HandshakeState::InProgress } else { HandshakeState::Done })
    }

    /// Whether rustls has bytes for the client.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes what rustls has for the client to `to`. On a non-blocking socket a `WouldBlock` is
    /// returned as is, and what was not written stays pending for the next call.
    pub fn write_pending(&mut self, to: &mut dyn Write) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(to)?;
        }
        Ok(())
    }

    /// The session, once the handshake is done and what it had pending was sent. `stream` is the
    /// socket the handshake ran on.
    pub fn into_session(self, stream: TcpStream) -> TlsSession {
        debug_assert!(!self.conn.is_handshaking(), "a session is made from a finished handshake");
        TlsSession {
            stream,
            conn: Mutex::new(self.conn),
            read_side: Mutex::new(ReadSide { unfed: self.unfed, fed: 0, failed: false }),
            write_side: Mutex::new(Vec::new()),
        }
    }
}

/// Runs a server handshake on `stream`, blocking, until it is done or `deadline` passes. The
/// stream's read timeout is put back as it was.
pub fn handshake(stream: TcpStream, config: Arc<ServerConfig>, deadline: Instant) -> Result<TlsSession, TlsError> {
    let previous_timeout = stream.read_timeout().map_err(TlsError::Io)?;
    let mut state = Handshake::new(config)?;
    let mut buffer = vec![0; READ_CHUNK];
    let result = loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) else {
            break Err(TlsError::TimedOut);
        };
        if let Err(error) = stream.set_read_timeout(Some(left)) {
            break Err(TlsError::Io(error));
        }
        let read = match (&stream).read(&mut buffer) {
            Ok(0) => break Err(TlsError::Closed),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                break Err(TlsError::TimedOut);
            }
            Err(error) => break Err(TlsError::Io(error)),
        };
        let fed = state.feed(&buffer[..read]);
        // The next flight, the session tickets after the last one, or the alert after an error.
        let sent = state.write_pending(&mut &stream);
        match (fed, sent) {
            (Err(error), _) => break Err(error),
            (Ok(_), Err(error)) => break Err(TlsError::Io(error)),
            (Ok(HandshakeState::Done), Ok(())) => break Ok(()),
            (Ok(HandshakeState::InProgress), Ok(())) => {}
        }
    };
    result?;
    stream.set_read_timeout(previous_timeout).map_err(TlsError::Io)?;
    Ok(state.into_session(stream))
}

/// What the handshake settled, for the logs and the request's `X-Forwarded-*` fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDetails {
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    pub server_name: Option<String>,
    pub kind: Option<HandshakeKind>,
}

/// An established TLS session over a client socket, read by one thread and written by another
/// (see the module doc for the rules). `Read` and `Write` are implemented for `&TlsSession`, as
/// they are for `&TcpStream`.
pub struct TlsSession {
    stream: TcpStream,
    conn: Mutex<ServerConnection>,
    /// The reading thread's state; held by it across its socket reads.
    read_side: Mutex<ReadSide>,
    /// The right to write the socket, and the writer's buffer of sealed records.
    write_side: Mutex<Vec<u8>>,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession").field("stream", &self.stream).finish_non_exhaustive()
    }
}

/// Bytes read from the socket that rustls has not taken yet, `unfed[fed..]`.
struct ReadSide {
    unfed: Vec<u8>,
    fed: usize,
    /// rustls refused what the client sent; every later read fails.
    failed: bool,
}

/// What one turn of the reader, under the connection lock, came to.
enum Turn {
    /// This much plaintext was copied out (0: the client ended the session).
    Plaintext(usize),
    /// rustls took more bytes; look for plaintext again.
    Fed,
    /// More bytes are needed from the socket.
    Starved,
    /// The client broke the protocol.
    Failed(rustls::Error),
}

impl TlsSession {
    /// The client socket: for its address, its timeouts and shutting it down. Read and write
    /// through the session, never through the socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn details(&self) -> SessionDetails {
        let conn = self.conn.lock();
        SessionDetails {
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: conn.server_name().map(str::to_owned),
            kind: conn.handshake_kind(),
        }
    }

    /// Whether a read would be answered without the socket: plaintext already decrypted, bytes
    /// read and not yet decrypted, or the client's `close_notify`. Whoever waits for the socket to
    /// become readable must look here first. For the thread that reads: it waits for a read
    /// under way.
    pub fn has_buffered(&self) -> bool {
        let side = self.read_side.lock();
        side.fed < side.unfed.len() || !self.conn.lock().wants_read()
    }

    /// Reads plaintext, waiting for the client as the socket's read timeout allows. `Ok(0)` is
    /// the end of the session.
    pub fn read(&self, into: &mut [u8]) -> io::Result<usize> {
        self.read_with(into, |mut stream, buffer| stream.read(buffer))
    }

    /// Reads plaintext without waiting: `WouldBlock` when the client has sent nothing more.
    pub fn read_now(&self, into: &mut [u8]) -> io::Result<usize> {
        self.read_with(into, |stream, buffer| crate::connection::read_now(stream, buffer))
    }

    fn read_with(
        &self,
        into: &mut [u8],
        read_socket: impl Fn(&TcpStream, &mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if into.is_empty() {
            return Ok(0);
        }
        let mut side = self.read_side.lock();
        loop {
            if side.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the TLS session failed"));
            }
            let turn = self.take_plaintext_or_feed(&mut side, into);
            // Output the turn made (an alert, a reply) goes out now if no one else is writing. A
            // socket that cannot be written is for the writer to report: the reader goes on
            // with what it has.
            let _ = self.send_pending_if_free();
            match turn {
                Turn::Plaintext(count) => return Ok(count),
                Turn::Fed => {}
                Turn::Failed(error) => {
                    side.failed = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
                Turn::Starved => {
                    side.unfed.resize(READ_CHUNK, 0);
                    side.fed = 0;
                    let read = read_socket(&self.stream, &mut side.unfed);
                    side.unfed.truncate(*read.as_ref().unwrap_or(&0));
                    if read? == 0 {
                        // Tell rustls the socket ended; its reader then reports the end.
                        self.conn.lock().read_tls(&mut io::empty())?;
                    }
                }
            }
        }
    }

    fn take_plaintext_or_feed(&self, side: &mut ReadSide, into: &mut [u8]) -> Turn {
        let mut conn = self.conn.lock();
        match conn.reader().read(into) {
            Ok(count) => return Turn::Plaintext(count),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Turn::Plaintext(0),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Turn::Failed(rustls::Error::General(error.to_string())),
        }
        if side.fed == side.unfed.len() {
            return Turn::Starved;
        }
        match conn.read_tls(&mut &side.unfed[side.fed..]) {
            Ok(0) => side.fed = side.unfed.len(), // after close_notify: nothing more counts
            Ok(taken) => side.fed += taken,
            // Not reached: plaintext would have been returned above.
            Err(error) => return Turn::Failed(rustls::Error::General(error.to_string())),
        }
        if side.fed == side.unfed.len() {
            side.unfed.clear();
            side.fed = 0;
        }
        match conn.process_new_packets() {
            Ok(_) => Turn::Fed,
            Err(error) => Turn::Failed(error),
        }
    }

    /// Encrypts `data` and writes it to the client, blocking as the socket's write timeout allows.
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut sealed = self.write_side.lock();
        let mut result = Ok(());
        for chunk in data.chunks(WRITE_CHUNK) {
            result = self.seal_and_send(&mut sealed, chunk);
            if result.is_err() {
                break;
            }
        }
        sealed.clear();
        drop(sealed);
        let left_behind = self.send_pending_if_free();
        result.and(left_behind)
    }

    /// With the write lock held: seals `chunk` (all of it: the connection's output is empty, or
    /// nearly, when this is called) and writes the records.
    fn seal_and_send(&self, sealed: &mut Vec<u8>, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            {
                let mut conn = self.conn.lock();
                let taken = conn.writer().write(chunk)?;
                chunk = &chunk[taken..];
                take_output(&mut conn, sealed);
            }
            if sealed.is_empty() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "the TLS session takes no more data"));
            }
            let written = (&self.stream).write_all(sealed);
            sealed.clear();
            written?;
        }
        Ok(())
    }

    /// Sends `close_notify`, after any [`write_all`](Self::write_all) under way on another thread
    /// has finished. The socket itself stays open.
    pub fn shutdown(&self) -> io::Result<()> {
        let mut sealed = self.write_side.lock();
        self.conn.lock().send_close_notify();
        let sent = self.send_pending(&mut sealed);
        drop(sealed);
        let left_behind = self.send_pending_if_free();
        sent.and(left_behind)
    }

    /// With the write lock held: writes every record left in the connection.
    fn send_pending(&self, sealed: &mut Vec<u8>) -> io::Result<()> {
        loop {
            take_output(&mut self.conn.lock(), sealed);
            if sealed.is_empty() {
                return Ok(());
            }
            let written = (&self.stream).write_all(sealed);
            sealed.clear();
            written?;
        }
    }

    /// Sends the records left in the connection if the write lock is free. If it is not, its
    /// holder sends them: every holder calls this after releasing it, which is what makes
    /// "leave it for the writer" safe.
    fn send_pending_if_free(&self) -> io::Result<()> {
        while self.conn.lock().wants_write() {
            let Some(mut sealed) = self.write_side.try_lock() else {
                return Ok(());
            };
            self.send_pending(&mut sealed)?;
        }
        Ok(())
    }
}

/// Moves the connection's sealed records into `sealed`, in order.
fn take_output(conn: &mut ServerConnection, sealed: &mut Vec<u8>) {
    while conn.wants_write() {
        // Writing to a Vec cannot fail.
        let _ = conn.write_tls(sealed);
    }
}

impl Read for &TlsSession {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        TlsSession::read(self, into)
    }
}

impl Write for &TlsSession {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        TlsSession::write_all(self, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
