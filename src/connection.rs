//! A client connection as it moves between threads, and the counts that admit it.
//!
//! [`ClientConnection`] is what the `acceptor` hands to a `worker-N`, what a worker parks with the
//! `watcher`, and what the watcher hands back: the socket, the canonical peer address, the bytes
//! already read from it and not yet used (a partial head, or a head and its body), and a
//! [`ConnectionPermit`]. One thread owns it at a time, so none of it needs a lock.
//!
//! The permit is its place in the connection counts: `maxConnections` in all, and
//! `maxConnectionsPerClient` per peer address. Dropping the connection, on whatever thread and for
//! whatever reason, drops the permit and gives the place back, so the counts cannot drift.
//!
//! Reading goes through [`ClientConnection::read_now`], which never blocks. A connection from the
//! HTTPS listener carries its TLS state: while its [`handshake`](ClientConnection::handshake) is
//! under way, `stream` is the bare socket, `carried` holds the client's TLS bytes not yet fed to
//! the handshake, and whoever holds the connection (a worker, or the watcher while the client is
//! slow) reads only that; once it is done, `stream` is the TLS session and `read_now` yields
//! plaintext, exactly as for plain HTTP. So a stalled handshake costs no worker either.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

pub use crate::stream::Scheme;
use crate::stream::Stream;
use crate::tls::PendingHandshake;

/// An accepted client connection and what was read from it so far.
#[derive(Debug)]
pub struct ClientConnection {
    pub stream: Stream,
    /// The TLS handshake, while it is under way (then `stream` is the bare socket).
    pub handshake: Option<Box<PendingHandshake>>,
    /// When the connection was accepted: the TLS handshake's deadline runs from here.
    pub accepted: Instant,
    /// The peer address, IPv4-mapped IPv6 addresses turned back into IPv4.
    pub peer: SocketAddr,
    /// Bytes read and not yet used; empty while the connection is idle.
    pub carried: Vec<u8>,
    /// When the request now being read began to arrive (its first byte), if one has.
    pub request_started: Option<Instant>,
    /// Requests served on this connection so far.
    pub requests: u64,
    pub permit: ConnectionPermit,
}

impl ClientConnection {
    pub fn new(stream: TcpStream, peer: SocketAddr, permit: ConnectionPermit) -> ClientConnection {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let stream = Stream::Plain(stream);
        ClientConnection {
            stream,
            handshake: None,
            accepted: Instant::now(),
            peer,
            carried: Vec::new(),
            request_started: None,
            requests: 0,
            permit,
        }
    }

    /// A connection from the HTTPS listener, its handshake to be driven by `handshake`.
    pub fn tls(
        stream: TcpStream,
        peer: SocketAddr,
        permit: ConnectionPermit,
        handshake: PendingHandshake,
    ) -> ClientConnection {
        let mut connection = ClientConnection::new(stream, peer, permit);
        connection.handshake = Some(Box::new(handshake));
        connection
    }

    /// Reads what the client has sent, without waiting: `Ok(0)` is the end of the connection,
    /// `WouldBlock` means nothing is there yet.
    pub fn read_now(&self, into: &mut [u8]) -> io::Result<usize> {
        self.stream.read_now(into)
    }

    /// The listener it came through: HTTPS once it has a TLS session, or a handshake under way.
    pub fn scheme(&self) -> Scheme {
        if self.handshake.is_some() { Scheme::Https } else { self.stream.scheme() }
    }

    /// The socket, for polling it and shutting it down.
    pub fn socket(&self) -> &TcpStream {
        self.stream.socket()
    }
}

/// Reads from `stream` without blocking, whatever its mode.
pub fn read_now(stream: &TcpStream, into: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(stream, &mut *into, rustix::net::RecvFlags::DONTWAIT) {
            Ok((count, _)) => return Ok(count),
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(io::Error::from(error)),
        }
    }
}

/// What a non-blocking look at a connection finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Bytes are waiting.
    Readable,
    /// Nothing yet: the connection is idle.
    Idle,
    /// The peer closed the connection, or it failed.
    Closed,
}

/// Looks at `stream` without blocking and without consuming anything.
pub fn readiness(stream: &TcpStream) -> Readiness {
    let mut probe = [0u8; 1];
    match rustix::net::recv(stream, &mut probe, rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT) {
        Ok((_, 0)) => Readiness::Closed,
        Ok(_) => Readiness::Readable,
        Err(error) if error == rustix::io::Errno::AGAIN || error == rustix::io::Errno::INTR => Readiness::Idle,
        Err(_) => Readiness::Closed,
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `maxConnections` are open.
    TooManyConnections,
    /// This peer address has `maxConnectionsPerClient` open.
    TooManyFromClient,
}

/// How many client connections are open, in all and per peer address.
#[derive(Debug)]
pub struct ConnectionCounts {
    open: AtomicUsize,
    /// The most client connections the open-file limit leaves room for, whatever
    /// `maxConnections` says (see [`client_connection_ceiling`]).
    descriptor_ceiling: AtomicUsize,
    /// Open connections per peer address, for the addresses that are capped.
    per_client: Mutex<HashMap<IpAddr, u32>>,
}

impl Default for ConnectionCounts {
    fn default() -> ConnectionCounts {
        ConnectionCounts {
            open: AtomicUsize::new(0),
            descriptor_ceiling: AtomicUsize::new(usize::MAX),
            per_client: Mutex::default(),
        }
    }
}

/// Descriptors kept back from client connections for everything else: the listeners, the epoll
/// instance, the log, health checks, config reads.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The most client connections that fit in `open_file_limit` descriptors alongside `workers`
/// workers, each of which may hold a backend connection and open a second one to retry.
pub fn client_connection_ceiling(open_file_limit: u64, workers: usize) -> usize {
    let for_backends = 2 * workers as u64 + RESERVED_DESCRIPTORS;
    usize::try_from(open_file_limit.saturating_sub(for_backends)).unwrap_or(usize::MAX).max(1)
}

impl ConnectionCounts {
    /// Caps the open connections at `ceiling` whatever `max_open` [`admit`](Self::admit) is given.
    pub fn set_descriptor_ceiling(&self, ceiling: usize) {
        self.descriptor_ceiling.store(ceiling, Ordering::Release);
    }

    /// The most connections admitted at once with `max_connections` configured.
    pub fn effective_limit(&self, max_connections: usize) -> usize {
        max_connections.min(self.descriptor_ceiling.load(Ordering::Acquire))
    }

    /// Counts a new connection from `peer`, unless `max_open` are open already (or as many as the
    /// descriptor ceiling allows) or, with `per_client_cap`, that many are open from `peer`.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        max_open: usize,
        per_client_cap: Option<u32>,
    ) -> Result<ConnectionPermit, Refusal> {
        let max_open = self.effective_limit(max_open);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max_open).then_some(open + 1))
            .map_err(|_| Refusal::TooManyConnections)?;
        let mut permit = ConnectionPermit { counts: Arc::clone(self), capped_peer: None };
        if let Some(cap) = per_client_cap {
            let peer = peer.to_canonical();
            let mut per_client = self.per_client.lock();
            let open = per_client.entry(peer).or_insert(0);
            if *open >= cap {
                // Dropping the permit gives back the place in the total.
                return Err(Refusal::TooManyFromClient);
            }
            *open += 1;
            permit.capped_peer = Some(peer);
        }
        Ok(permit)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections open from `peer` that count against its cap.
    pub fn open_from(&self, peer: IpAddr) -> u32 {
        self.per_client.lock().get(&peer.to_canonical()).copied().unwrap_or(0)
    }

    /// Peer addresses with a capped connection open now.
    pub fn clients(&self) -> usize {
        self.per_client.lock().len()
    }
}

/// One connection's place in the [`ConnectionCounts`]; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    counts: Arc<ConnectionCounts>,
    capped_peer: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(peer) = self.capped_peer {
            let mut per_client = self.counts.per_client.lock();
            if let Some(open) = per_client.get_mut(&peer) {
                *open -= 1;
                if *open == 0 {
                    per_client.remove(&peer);
                }
            }
        }
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_total_and_the_per_client_cap_are_both_kept_and_given_back() {
        let counts = Arc::new(ConnectionCounts::default());
        let first = counts.admit(ip(1), 3, Some(2)).unwrap();
        let second = counts.admit(ip(1), 3, Some(2)).unwrap();
        assert_eq!(counts.admit(ip(1), 3, Some(2)).unwrap_err(), Refusal::TooManyFromClient);
        assert_eq!(counts.open(), 2, "a refused connection takes no place");
        let other = counts.admit(ip(2), 3, Some(2)).unwrap();
        assert_eq!(counts.admit(ip(3), 3, Some(2)).unwrap_err(), Refusal::TooManyConnections);
        drop(first);
        assert_eq!(counts.open_from(ip(1)), 1);
        let again = counts.admit(ip(1), 3, Some(2)).unwrap();
        drop((second, other, again));
        assert_eq!((counts.open(), counts.clients()), (0, 0), "nothing is left behind");
    }

    #[test]
    fn the_open_file_limit_caps_the_total_below_max_connections() {
        assert_eq!(client_connection_ceiling(20_000, 64), 20_000 - 128 - RESERVED_DESCRIPTORS as usize);
        assert_eq!(client_connection_ceiling(100, 64), 1, "a tiny limit still admits one connection");
        let counts = Arc::new(ConnectionCounts::default());
        assert_eq!(counts.effective_limit(10_000), 10_000, "no ceiling until one is set");
        counts.set_descriptor_ceiling(2);
        assert_eq!(counts.effective_limit(10_000), 2);
        assert_eq!(counts.effective_limit(1), 1, "maxConnections below the ceiling holds");
        let held: Vec<_> = (0..2).map(|_| counts.admit(ip(1), 10_000, None).unwrap()).collect();
        assert_eq!(counts.admit(ip(2), 10_000, None).unwrap_err(), Refusal::TooManyConnections);
        drop(held);
    }

    #[test]
    fn an_uncapped_client_is_counted_in_the_total_only() {
        let counts = Arc::new(ConnectionCounts::default());
        let permits: Vec<_> = (0..5).map(|_| counts.admit(ip(1), 10, None).unwrap()).collect();
        assert_eq!((counts.open(), counts.open_from(ip(1))), (5, 0));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let capped = counts.admit(mapped, 10, Some(1)).unwrap();
        assert_eq!(counts.open_from(ip(1)), 1, "an IPv4-mapped address is its IPv4 address");
        drop((permits, capped));
        assert_eq!(counts.open(), 0);
    }
}
