//! One TLS session, either side: the handshake, then a session that one thread reads while
//! another writes.
//!
//! [`Handshake`] is a rustls connection still negotiating, owned by one thread at a time and fed
//! bytes read elsewhere: [`feed`](Handshake::feed) takes what was read from the socket and
//! [`write_pending`](Handshake::write_pending) sends what rustls answers, so the `watcher` can
//! drive a client's handshake with non-blocking reads and no worker waits on a slow client.
//! [`handshake`] is the same loop with blocking reads and a deadline. Publicly a `Handshake` is
//! the server side; [`client::connect`](super::client::connect) runs the same blocking loop on a
//! client-side one, towards a backend. Either way the handshake ends in a [`TlsSession`], with
//! any plaintext that arrived behind the peer's last handshake message kept in it for the first
//! read.
//!
//! [`TlsSession`] holds a `rustls::Connection`, so it is either side, with the same methods and
//! the same rules. It is shared by `Arc` between the thread reading the peer and the thread
//! writing it, at the same time:
//!
//! - towards a client (we are the server): the worker reading a head, then `req-N-fwd`, reads the
//!   request; the worker's answers, then `req-N-rev`, write the response;
//! - towards a backend (we are the client), the mirror image: `req-N-fwd` writes the request to
//!   the backend, `req-N-rev` reads its response.
//!
//! rustls needs `&mut` for both directions, so the connection sits behind a mutex, and the rules
//! that keep the two threads from blocking each other, or the records from going out of order,
//! are:
//!
//! 1. **No lock across a socket read.** The reader reads the socket with the connection unlocked,
//!    then locks it only to feed those bytes in (`read_tls`, `process_new_packets`) and take
//!    plaintext out. A reader blocked on a quiet peer never holds up the writer.
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
//!    behind a writer blocked on a peer that is not reading.
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
use rustls::{ClientConnection, Connection, HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

/// Most bytes taken from the socket in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Most plaintext sealed in one go before its records are written: one full record.
const WRITE_CHUNK: usize = 16 * 1024;

/// Why a handshake, or a session, failed.
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the protocol, or asked for what is not offered, or (the peer being a
    /// backend) its certificate did not verify: `InvalidCertificate(UnknownIssuer)`,
    /// `InvalidCertificate(NotValidForNameContext { .. })` and the like, which the `Display`
    /// shows. rustls has sent, or tried to send, an alert for most of these (not for a record it
    /// cannot even frame).
    Tls(rustls::Error),
    /// The peer closed the connection before the handshake was done.
    Closed,
    /// The handshake was not done by its deadline.
    TimedOut,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(error) => write!(f, "TLS socket error: {error}"),
            TlsError::Tls(error) => write!(f, "TLS handshake failed: {error}"),
            TlsError::Closed => f.write_str("the connection was closed during the TLS handshake"),
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
    /// It needs more bytes from the peer (send [`Handshake::write_pending`] first).
    InProgress,
    /// It is done: send what is pending, then make the session ([`Handshake::into_session`]).
    Done,
}

/// A handshake under way, driven by whoever reads the socket. One thread owns it. Made public
/// only for the server side ([`new`](Self::new)); the client side is [`client::connect`](super::client::connect)'s.
pub struct Handshake {
    conn: Connection,
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
    /// A server handshake: it waits for the client's `ClientHello`.
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, TlsError> {
        let conn = ServerConnection::new(config).map_err(TlsError::Tls)?;
        Ok(Handshake { conn: Connection::Server(conn), unfed: Vec::new() })
    }

    /// A client handshake, towards a backend: its `ClientHello` is pending for the first
    /// [`write_pending`](Self::write_pending). Only [`client::connect`](super::client::connect)
    /// makes one, and drives it with [`run_blocking`]; the `watcher` never sees one.
    pub(super) fn client(conn: ClientConnection) -> Handshake {
        Handshake { conn: Connection::Client(conn), unfed: Vec::new() }
    }

    /// Takes `bytes` read from the peer. On an error an alert is pending: send it
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

    /// Whether rustls has bytes for the peer.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes what rustls has for the peer to `to`. On a non-blocking socket a `WouldBlock` is
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
    run_blocking(stream, Handshake::new(config)?, deadline)
}

/// Runs `state` on `stream` with blocking reads until it is done or `deadline` passes, either
/// side: it writes first, so a client's `ClientHello` goes out before anything is read, and a
/// server has nothing to write until it has read one. The stream's read timeout is put back as it
/// was; its write timeout is left alone, since a handshake's flights fit in the socket's buffer.
pub(super) fn run_blocking(stream: TcpStream, mut state: Handshake, deadline: Instant) -> Result<TlsSession, TlsError> {
    let previous_timeout = stream.read_timeout().map_err(TlsError::Io)?;
    let mut buffer = vec![0; READ_CHUNK];
    let result = loop {
        // The ClientHello, the next flight, or the session tickets after the last one.
        if let Err(error) = state.write_pending(&mut &stream) {
            break Err(TlsError::Io(error));
        }
        if !state.conn.is_handshaking() {
            break Ok(());
        }
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
        if let Err(error) = state.feed(&buffer[..read]) {
            // The alert rustls queued, if the socket takes it: the error is what is reported.
            let _ = state.write_pending(&mut &stream);
            break Err(error);
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
    /// The name the client asked for (SNI), on the server side; `None` on the client side, where
    /// the caller chose the name (see [`client::connect`](super::client::connect)).
    pub server_name: Option<String>,
    pub kind: Option<HandshakeKind>,
}

/// An established TLS session, towards a client or a backend, read by one thread and written by
/// another (see the module doc for the rules). `Read` and `Write` are implemented for `&TlsSession`, as
/// they are for `&TcpStream`.
pub struct TlsSession {
    stream: TcpStream,
    conn: Mutex<Connection>,
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
    /// rustls refused what the peer sent; every later read fails.
    failed: bool,
}

/// What one turn of the reader, under the connection lock, came to.
enum Turn {
    /// This much plaintext was copied out (0: the peer ended the session).
    Plaintext(usize),
    /// rustls took more bytes; look for plaintext again.
    Fed,
    /// More bytes are needed from the socket.
    Starved,
    /// The peer broke the protocol.
    Failed(rustls::Error),
}

impl TlsSession {
    /// The socket: for its address, its timeouts and shutting it down. Read and write
    /// through the session, never through the socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn details(&self) -> SessionDetails {
        let conn = self.conn.lock();
        SessionDetails {
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: match &*conn {
                Connection::Server(server) => server.server_name().map(str::to_owned),
                Connection::Client(_) => None,
            },
            kind: conn.handshake_kind(),
        }
    }

    /// Whether a read would be answered without the socket: plaintext already decrypted, bytes
    /// read and not yet decrypted, or the peer's `close_notify`. Whoever waits for the socket to
    /// become readable must look here first. For the thread that reads: it waits for a read
    /// under way.
    pub fn has_buffered(&self) -> bool {
        let side = self.read_side.lock();
        side.fed < side.unfed.len() || !self.conn.lock().wants_read()
    }

    /// Reads plaintext, waiting for the peer as the socket's read timeout allows. `Ok(0)` is
    /// the end of the session.
    pub fn read(&self, into: &mut [u8]) -> io::Result<usize> {
        self.read_with(into, |mut stream, buffer| stream.read(buffer))
    }

    /// Reads plaintext without waiting: `WouldBlock` when the peer has sent nothing more.
    pub fn read_now(&self, into: &mut [u8]) -> io::Result<usize> {
        self.read_with(into, crate::connection::read_now)
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

    /// Encrypts `data` and writes it to the peer, blocking as the socket's write timeout allows.
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
fn take_output(conn: &mut Connection, sealed: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::path::Path;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

    use super::*;
    use crate::tls::certs::{self, LoadedCert};
    use crate::tls::config::{self, ALPN_HTTP_1_1, Resumption};
    use crate::tls::sni::CertStore;

    const LONG: Duration = Duration::from_secs(10);

    /// A certificate authority made for the test, and certificates it issues.
    struct TestCa {
        issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        fn new() -> TestCa {
            TestCa { issuer: crate::tests_support::test_ca() }
        }

        fn issue(&self, names: &[&str]) -> LoadedCert {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
            let chain = format!("{}{}", cert.pem(), self.issuer.pem());
            let file = Path::new("test.pem");
            certs::from_pem(file, chain.as_bytes(), file, key.serialize_pem().as_bytes(), &config::provider()).unwrap()
        }

        fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots.add(self.issuer.der().clone()).unwrap();
            let mut client = ClientConfig::builder_with_provider(config::provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
            Arc::new(client)
        }
    }

    const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

    fn server(certs: Vec<LoadedCert>) -> (Arc<CertStore>, Arc<ServerConfig>) {
        let store = Arc::new(CertStore::new(certs));
        let config = config::server_config(Arc::clone(&store), &Resumption::new().unwrap()).unwrap();
        (store, config)
    }

    fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    fn accept(listener: &TcpListener, config: &Arc<ServerConfig>) -> Result<TlsSession, TlsError> {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        stream.set_write_timeout(Some(LONG)).unwrap();
        handshake(stream, Arc::clone(config), Instant::now() + LONG)
    }

    /// Serves one client that says `ping`: answers `pong` and ends the session.
    fn serve_ping(listener: &TcpListener, config: &Arc<ServerConfig>) -> SessionDetails {
        let session = accept(listener, config).unwrap();
        let mut ping = [0u8; 4];
        (&session).read_exact(&mut ping).unwrap();
        assert_eq!(&ping, b"ping");
        session.write_all(b"pong").unwrap();
        session.shutdown().unwrap();
        session.details()
    }

    struct ClientView {
        kind: Option<HandshakeKind>,
        version: Option<ProtocolVersion>,
        certificate: CertificateDer<'static>,
    }

    /// Connects as `name`, says `ping`, expects `pong` and then `close_notify`.
    fn ping(address: SocketAddr, config: Arc<ClientConfig>, name: &str) -> thread::JoinHandle<ClientView> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        thread::spawn(move || {
            let tcp = TcpStream::connect(address).unwrap();
            tcp.set_read_timeout(Some(LONG)).unwrap();
            let mut tls = rustls::StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp);
            tls.write_all(b"ping").unwrap();
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).unwrap();
            assert_eq!(answer, b"pong", "the answer, then a clean end");
            ClientView {
                kind: tls.conn.handshake_kind(),
                version: tls.conn.protocol_version(),
                certificate: tls.conn.peer_certificates().unwrap()[0].clone().into_owned(),
            }
        })
    }

    #[test]
    fn tls_1_2_and_1_3_negotiate_http_1_1_and_resume_across_a_certificate_reload() {
        let ca = TestCa::new();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let first = ca.issue(&["localhost"]);
            let (store, config) = server(vec![first.clone()]);
            let (listener, address) = listen();
            let client = ca.client(&[version]);

            let seen = ping(address, Arc::clone(&client), "localhost");
            let details = serve_ping(&listener, &config);
            let seen = seen.join().unwrap();
            assert_eq!(details.version, Some(version.version));
            assert_eq!(seen.version, Some(version.version));
            assert_eq!(details.alpn.as_deref(), Some(ALPN_HTTP_1_1));
            assert_eq!(details.server_name.as_deref(), Some("localhost"));
            assert_eq!((details.kind, seen.kind), (Some(HandshakeKind::Full), Some(HandshakeKind::Full)));
            assert_eq!(seen.certificate, first.key.cert[0]);

            let seen = ping(address, Arc::clone(&client), "localhost");
            let details = serve_ping(&listener, &config);
            assert_eq!(seen.join().unwrap().kind, Some(HandshakeKind::Resumed), "{version:?}");
            assert_eq!(details.kind, Some(HandshakeKind::Resumed));

            // A renewed certificate: a returning client still resumes, a new one gets it.
            let renewed = ca.issue(&["localhost"]);
            store.replace(vec![renewed.clone()]);
            let seen = ping(address, Arc::clone(&client), "localhost");
            serve_ping(&listener, &config);
            assert_eq!(seen.join().unwrap().kind, Some(HandshakeKind::Resumed), "{version:?} after the reload");
            let seen = ping(address, ca.client(&[version]), "localhost");
            serve_ping(&listener, &config);
            let seen = seen.join().unwrap();
            assert_eq!((seen.kind, seen.certificate), (Some(HandshakeKind::Full), renewed.key.cert[0].clone()));
        }
    }

    #[test]
    fn the_certificate_is_chosen_by_the_name_the_client_asks_for() {
        let ca = TestCa::new();
        let (default, wildcard) = (ca.issue(&["localhost"]), ca.issue(&["*.example.test"]));
        let (_store, config) = server(vec![default.clone(), wildcard.clone()]);
        let (listener, address) = listen();
        for (name, expected) in [("api.example.test", &wildcard), ("localhost", &default)] {
            let seen = ping(address, ca.client(BOTH), name);
            let details = serve_ping(&listener, &config);
            assert_eq!(seen.join().unwrap().certificate, expected.key.cert[0], "{name}");
            assert_eq!(details.server_name.as_deref(), Some(name));
        }
    }

    #[test]
    fn a_client_without_alpn_http_1_1_is_refused() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        let mut client = (*ca.client(BOTH)).clone();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let client = Arc::new(client);
        let refused = thread::spawn(move || {
            let tcp = TcpStream::connect(address).unwrap();
            tcp.set_read_timeout(Some(LONG)).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = rustls::StreamOwned::new(ClientConnection::new(client, name).unwrap(), tcp);
            tls.write_all(b"ping").unwrap_err()
        });
        assert!(matches!(accept(&listener, &config), Err(TlsError::Tls(rustls::Error::NoApplicationProtocol))));
        let error = refused.join().unwrap().to_string();
        assert!(error.contains("NoApplicationProtocol"), "{error}");
    }

    #[test]
    fn plain_http_or_garbage_is_a_clean_error_with_an_alert() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        let inputs: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            // A handshake record holding a ClientHello cut short.
            &[0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00, 0x00],
            &[0xff; 64],
        ];
        for input in inputs {
            let client = thread::spawn(move || {
                let mut tcp = TcpStream::connect(address).unwrap();
                tcp.set_read_timeout(Some(LONG)).unwrap();
                tcp.write_all(input).unwrap();
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
                answer
            });
            let error = accept(&listener, &config).unwrap_err();
            assert!(matches!(error, TlsError::Tls(_)), "{error}");
            let answer = client.join().unwrap();
            assert_eq!(answer.first(), Some(&0x15), "an alert record for {input:02x?}, not {answer:02x?}");
        }
    }

    #[test]
    fn a_client_that_closes_or_stalls_ends_the_handshake() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        drop(TcpStream::connect(address).unwrap());
        assert!(matches!(accept(&listener, &config), Err(TlsError::Closed)));
        let _quiet = TcpStream::connect(address).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let started = Instant::now();
        let result = handshake(stream, config, started + Duration::from_millis(200));
        assert!(matches!(result, Err(TlsError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Drives a handshake in memory: the client's bytes go to [`Handshake::feed`] and the
    /// server's come from [`Handshake::write_pending`]. Once the client is done it sends
    /// `behind` straight after its `Finished`, in the same flight.
    fn handshake_in_memory(client: &mut ClientConnection, server: &mut Handshake, behind: &[u8]) {
        let mut sent_behind = false;
        for _ in 0..10 {
            let mut wire = Vec::new();
            if !client.is_handshaking() && !sent_behind {
                client.writer().write_all(behind).unwrap();
                sent_behind = true;
            }
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if server.feed(&wire).unwrap() == HandshakeState::Done {
                assert!(sent_behind);
                return;
            }
            let mut wire = Vec::new();
            server.write_pending(&mut wire).unwrap();
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn plaintext_right_behind_the_clients_finished_is_kept_for_the_first_reads() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        for size in [40, 100 * 1024] {
            let behind: Vec<u8> = (0..size).map(|index| (index % 251) as u8).collect();
            let mut client = ClientConnection::new(
                ca.client(&[&rustls::version::TLS13]),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            client.set_buffer_limit(None);
            let mut server = Handshake::new(Arc::clone(&config)).unwrap();
            handshake_in_memory(&mut client, &mut server, &behind);

            let (_outside, inside) = crate::tests_support::socket_pair();
            // Nothing will come on the socket: a read that reached it would fail, not hang.
            inside.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let session = server.into_session(inside);
            assert!(session.has_buffered());
            let mut received = vec![0u8; size];
            (&session).read_exact(&mut received).unwrap();
            assert!(received == behind, "{size} bytes behind the Finished arrive whole and in order");
        }
    }

    /// A client on a non-blocking socket, in one thread: sends `send` bytes and receives
    /// `expect` bytes at the same time, asking for a key update halfway; returns what it got.
    fn duplex_client(address: SocketAddr, config: Arc<ClientConfig>, send: usize, expect: usize) -> Vec<u8> {
        let tcp = TcpStream::connect(address).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let mut conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let payload: Vec<u8> = (0..send).map(|index| (index % 251) as u8).collect();
        let (mut sent, mut received, mut buffer) = (0, Vec::new(), vec![0u8; 64 * 1024]);
        let mut key_updated = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "the client stalled: sent {sent}, received {}", received.len());
            let mut progress = false;
            if !conn.is_handshaking() && sent < send {
                let end = send.min(sent + 16 * 1024);
                let taken = conn.writer().write(&payload[sent..end]).unwrap();
                sent += taken;
                progress |= taken > 0;
                if sent >= send / 2 && !key_updated && conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
                    conn.refresh_traffic_keys().unwrap();
                    key_updated = true;
                }
            }
            while conn.wants_write() {
                match conn.write_tls(&mut &tcp) {
                    Ok(written) => progress |= written > 0,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => panic!("client write: {error}"),
                }
            }
            match conn.read_tls(&mut &tcp) {
                Ok(0) => panic!("the server closed early"),
                Ok(_) => {
                    conn.process_new_packets().unwrap();
                    progress = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == io::ErrorKind::Other => {} // plaintext buffer full
                Err(error) => panic!("client read: {error}"),
            }
            loop {
                match conn.reader().read(&mut buffer) {
                    Ok(0) => break,
                    Ok(count) => {
                        received.extend_from_slice(&buffer[..count]);
                        progress = true;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => panic!("client plaintext: {error}"),
                }
            }
            if sent == send && received.len() >= expect && !conn.wants_write() {
                return received;
            }
            if !progress {
                thread::sleep(Duration::from_micros(200));
            }
        }
    }

    #[test]
    fn one_thread_reads_while_another_writes_without_deadlock() {
        const SIZE: usize = 1024 * 1024;
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = ca.client(&[version]);
            let client = thread::spawn(move || duplex_client(address, client, SIZE, SIZE));
            let session = Arc::new(accept(&listener, &config).unwrap());

            let (done, finished) = mpsc::channel();
            let reader = {
                let (session, done) = (Arc::clone(&session), done.clone());
                thread::spawn(move || {
                    let mut received = vec![0u8; SIZE];
                    let mut buffer = vec![0u8; 7 * 1024]; // not a record's size, on purpose
                    let mut filled = 0;
                    while filled < SIZE {
                        let count = session.read(&mut buffer).unwrap();
                        assert!(count > 0, "the client ended early");
                        received[filled..filled + count].copy_from_slice(&buffer[..count]);
                        filled += count;
                    }
                    let _ = done.send("reader");
                    received
                })
            };
            let writer = {
                let session = Arc::clone(&session);
                thread::spawn(move || {
                    let payload: Vec<u8> = (0..SIZE).map(|index| (index % 251) as u8).collect();
                    for piece in payload.chunks(10_000) {
                        session.write_all(piece).unwrap();
                    }
                    let _ = done.send("writer");
                })
            };
            for _ in 0..2 {
                finished.recv_timeout(Duration::from_secs(30)).expect("the reader and the writer finish");
            }
            let received = reader.join().unwrap();
            writer.join().unwrap();
            assert!(received.iter().enumerate().all(|(index, &byte)| byte == (index % 251) as u8), "{version:?}");
            let got = client.join().unwrap();
            assert_eq!(got.len(), SIZE);
            assert!(got.iter().enumerate().all(|(index, &byte)| byte == (index % 251) as u8), "{version:?}");
        }
    }

    #[test]
    fn a_broken_record_in_the_session_is_an_error_and_an_alert() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        let client = ca.client(BOTH);
        let client = thread::spawn(move || {
            let mut tcp = TcpStream::connect(address).unwrap();
            tcp.set_read_timeout(Some(LONG)).unwrap();
            let mut conn = ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).unwrap();
            }
            // An application-data record whose contents are not sealed with the session's key.
            tcp.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20]).unwrap();
            tcp.write_all(&[0xab; 0x20]).unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer);
            // The session tickets may come first; then the alert, sealed with the session's keys.
            let mut answer = &answer[..];
            while !answer.is_empty() {
                conn.read_tls(&mut answer).unwrap();
                conn.process_new_packets()?;
            }
            Ok(())
        });
        let session = accept(&listener, &config).unwrap();
        let error = session.read(&mut [0u8; 100]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(session.read(&mut [0u8; 100]).unwrap_err().kind(), io::ErrorKind::InvalidData, "and stays failed");
        session.stream().shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(client.join().unwrap(), Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)));
    }

    #[test]
    fn the_session_ends_on_close_notify_and_on_a_bare_tcp_close_alike() {
        let ca = TestCa::new();
        let (_store, config) = server(vec![ca.issue(&["localhost"])]);
        let (listener, address) = listen();
        for close_notify in [true, false] {
            let client = ca.client(BOTH);
            let client = thread::spawn(move || {
                let mut tcp = TcpStream::connect(address).unwrap();
                let mut conn = ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).unwrap();
                }
                conn.writer().write_all(b"last words").unwrap();
                if close_notify {
                    conn.send_close_notify();
                }
                while conn.wants_write() {
                    conn.write_tls(&mut tcp).unwrap();
                }
                tcp.shutdown(std::net::Shutdown::Write).unwrap();
                tcp
            });
            let session = accept(&listener, &config).unwrap();
            let mut received = Vec::new();
            (&session).read_to_end(&mut received).unwrap();
            assert_eq!(received, b"last words", "close_notify: {close_notify}");
            assert_eq!(session.read(&mut [0u8; 16]).unwrap(), 0, "and the end stays the end");
            drop(client.join().unwrap());
        }
    }
}
