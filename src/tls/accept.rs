//! The server side of a new HTTPS connection: the running TLS configuration ([`TlsServer`]), and
//! one connection's handshake as it is driven forward a step at a time ([`PendingHandshake`]).
//!
//! [`TlsServer`] is built by `main` at start-up and shared by every thread; `config-watcher`
//! replaces its certificates. A [`PendingHandshake`] travels inside a
//! [`ClientConnection`](crate::connection::ClientConnection) and is advanced only by a worker: the
//! `watcher` never does a handshake's work, it only gathers the client's bytes while the client is
//! slow and hands the connection back when some arrive. The handshake's cost is crypto (a key
//! exchange and a signature per new session), so it belongs on the pool of workers, spread over
//! every core, not on the one event thread that waits for everybody.
//!
//! Each step, [`PendingHandshake::advance`]:
//! 1. feeds rustls the bytes the watcher gathered, then whatever the socket has now (never
//!    waiting for more);
//! 2. writes what rustls answers (the server's flight, or an alert), blocking at most
//!    `writeTimeout`: a flight is a few KiB and the socket's send buffer is empty at this point;
//! 3. ends in a session, in a failure, or with the handshake still pending, for the worker to
//!    linger on briefly or park with the watcher until `tlsHandshakeTimeout`.
//!
//! A client that speaks plain HTTP to the TLS port is told so in plain HTTP (`400`, as nginx
//! does), since it cannot read an alert; any other broken or unsupported hello gets rustls's alert.
//! Either way the connection closes, holding nothing, and the failure is counted by kind.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::ServerConfig;

use super::certs::LoadedCert;
use super::config::{Resumption, server_config};
use super::session::{Handshake, HandshakeState, TlsError, TlsSession};
use super::sni::CertStore;
use crate::http::reply::Reply;

/// Most bytes read from the socket in one go while handshaking.
const READ_CHUNK: usize = 16 * 1024;

/// The TLS configuration every HTTPS connection is served with.
pub struct TlsServer {
    store: Arc<CertStore>,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("store", &self.store).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Serves `certs` (the first is the default), with a fresh session-ticket key that lasts as
    /// long as this does.
    pub fn new(certs: Vec<LoadedCert>) -> Result<TlsServer, rustls::Error> {
        let store = Arc::new(CertStore::new(certs));
        let config = server_config(Arc::clone(&store), &Resumption::new()?)?;
        Ok(TlsServer { store, config })
    }

    /// New handshakes get `certs` from now on; sessions already made, and the ticket key, stay.
    pub fn replace_certificates(&self, certs: Vec<LoadedCert>) {
        self.store.replace(certs);
    }

    /// The rustls configuration handshakes are made with, for a server that drives its own
    /// blocking handshakes with [`handshake`](super::handshake) (the echo backend's HTTPS).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The certificates served now.
    pub fn certificates(&self) -> Arc<Vec<LoadedCert>> {
        self.store.current()
    }

    /// A handshake for a connection just accepted.
    pub fn start(&self) -> Result<PendingHandshake, TlsError> {
        Ok(PendingHandshake { handshake: Handshake::new(Arc::clone(&self.config))?, fed: 0, done: false })
    }
}

/// Why a handshake failed, as counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not done within `tlsHandshakeTimeout`.
    Timeout,
    /// The client sent a plain HTTP request to the TLS port.
    PlainHttp,
    /// A broken, garbage or unsupported hello (a TLS version or cipher suites not offered).
    Protocol,
    /// The client closed (or reset) the connection first.
    Closed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] =
        [HandshakeFailure::Timeout, HandshakeFailure::PlainHttp, HandshakeFailure::Protocol, HandshakeFailure::Closed];

    pub fn name(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Closed => "closed",
        }
    }
}

/// A handshake under way, and how far the client's bytes have gone into it.
pub struct PendingHandshake {
    handshake: Handshake,
    /// Bytes fed so far: the first ones are where a plain-HTTP client shows itself.
    fed: u64,
    /// rustls has finished its part.
    done: bool,
}

impl std::fmt::Debug for PendingHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingHandshake").field("fed", &self.fed).finish_non_exhaustive()
    }
}

/// Where a handshake stands after [`PendingHandshake::advance`].
pub enum Advanced {
    /// Done: the session, holding any plaintext that came behind the client's `Finished`.
    Established(Box<TlsSession>),
    /// The client's next bytes are not here yet.
    Pending(Box<PendingHandshake>, TcpStream),
    /// Answered (with an alert, or a plain-HTTP `400`) as far as the client can be; close it.
    Failed(HandshakeFailure),
}

impl PendingHandshake {
    /// One step (see the module doc): `gathered` is what the watcher read and is emptied.
    pub fn advance(mut self: Box<Self>, socket: TcpStream, gathered: &mut Vec<u8>) -> Advanced {
        if !gathered.is_empty() {
            let bytes = std::mem::take(gathered);
            if let Some(ended) = self.take(&socket, &bytes) {
                return ended;
            }
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match crate::connection::read_now(&socket, &mut chunk) {
                Ok(0) => return Advanced::Failed(HandshakeFailure::Closed),
                Ok(count) => {
                    if let Some(ended) = self.take(&socket, &chunk[..count]) {
                        return ended;
                    }
                    if self.is_done() {
                        return self.finish(socket);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Advanced::Failed(HandshakeFailure::Closed),
            }
        }
        if self.is_done() {
            return self.finish(socket);
        }
        Advanced::Pending(self, socket)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(mut self: Box<Self>, socket: TcpStream) -> Advanced {
        if self.handshake.write_pending(&mut &socket).is_err() {
            return Advanced::Failed(HandshakeFailure::Closed);
        }
        Advanced::Established(Box::new(self.handshake.into_session(socket)))
    }

    /// Feeds `bytes` and sends rustls's answer; `Some` if that ended the handshake badly.
    fn take(&mut self, socket: &TcpStream, bytes: &[u8]) -> Option<Advanced> {
        if self.fed == 0 && looks_like_http(bytes) {
            let reply = Reply::error(400, Some("Bad Request: this port speaks HTTPS; use an https:// URL"));
            let _ = (&*socket).write_all(&reply.to_bytes(1, false, false));
            return Some(Advanced::Failed(HandshakeFailure::PlainHttp));
        }
        self.fed += bytes.len() as u64;
        let fed = self.handshake.feed(bytes);
        // The next flight, the session tickets, or the alert for what went wrong.
        let sent = self.handshake.write_pending(&mut &*socket);
        match (fed, sent) {
            (Err(TlsError::Io(_)), _) | (Err(TlsError::Closed), _) => Some(Advanced::Failed(HandshakeFailure::Closed)),
            (Err(_), _) => Some(Advanced::Failed(HandshakeFailure::Protocol)),
            (Ok(_), Err(_)) => Some(Advanced::Failed(HandshakeFailure::Closed)),
            (Ok(state), Ok(())) => {
                self.done = state == HandshakeState::Done;
                None
            }
        }
    }
}

/// Whether a connection's first bytes are an HTTP request line rather than a TLS record (which
/// starts with a content type byte, 0x16 for a handshake): a method is upper-case letters.
fn looks_like_http(first_bytes: &[u8]) -> bool {
    first_bytes.first().is_some_and(u8::is_ascii_uppercase)
}
