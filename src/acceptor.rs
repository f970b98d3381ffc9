//! Thread `acceptor`: Accepts client connections and hands them to the worker pool.
//!
//! The hand-off is a bounded crossbeam channel. When it is full, every worker is busy and the
//! backlog is long: the acceptor still owns the socket, so it answers `503` at once and closes it,
//! rather than letting the client wait unanswered. The same happens to a connection beyond
//! `maxConnections` open at once, so file descriptors and memory stay bounded whatever arrives,
//! and to one beyond `maxConnectionsPerClient` open from the same peer address (peers in
//! `trustedProxies` exempt), so one client cannot take every place. On shutdown it stops
//! accepting and drops the channel's sender; the workers finish what they hold and then see the
//! channel close.
//!
//! With `tlsListen` there are two listeners, plain and HTTPS, and still one acceptor: it waits on
//! both with one `poll`, and takes every connection a ready listener has. (With one listener it
//! blocks in `accept` itself, one system call fewer per connection.) It does no TLS work: an
//! HTTPS connection goes to the workers with a fresh handshake state, and the worker that takes
//! it drives the handshake ([`crate::tls::accept`]).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use rustix::event::{PollFd, PollFlags};

use crate::connection::{ClientConnection, Refusal, Scheme};
use crate::http::reply::Reply;
use crate::metrics::Defence;
use crate::shared::Shared;

/// How long the acceptor waits on a client that is not reading its `503`.
const BUSY_REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause after an accept error such as running out of file descriptors, so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// A bound listener and the scheme its connections speak.
#[derive(Debug)]
pub struct Listening {
    pub listener: TcpListener,
    pub scheme: Scheme,
}

/// The acceptor's loop, until shutdown (or until the workers are gone).
pub fn run(shared: &Shared, listeners: &[Listening], workers: Sender<ClientConnection>) {
    match listeners {
        [only] => accept_from_one(shared, only, &workers),
        several => accept_from_several(shared, several, &workers),
    }
    log::debug!("acceptor stopped");
}

/// One listener: a blocking `accept`, the cheapest wait there is.
fn accept_from_one(shared: &Shared, listening: &Listening, workers: &Sender<ClientConnection>) {
    for connection in listening.listener.incoming() {
        if shared.is_shutting_down() {
            return;
        }
        match connection {
            Ok(stream) => {
                if !admit(shared, stream, listening.scheme, workers) {
                    return;
                }
            }
            Err(error) => {
                log::warn!("accept failed: {error}");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

/// Several listeners (plain HTTP and HTTPS): one `poll` on all of them, then every connection
/// each ready one has, without blocking.
fn accept_from_several(shared: &Shared, listeners: &[Listening], workers: &Sender<ClientConnection>) {
    for listening in listeners {
        if let Err(error) = listening.listener.set_nonblocking(true) {
            log::error!("cannot accept on {:?}: {error}", listening.listener.local_addr());
            return;
        }
    }
    loop {
        let mut ready: Vec<PollFd<'_>> =
            listeners.iter().map(|listening| PollFd::new(&listening.listener, PollFlags::IN)).collect();
        if let Err(error) = rustix::event::poll(&mut ready, None)
            && error != rustix::io::Errno::INTR
        {
            log::warn!("poll failed: {error}");
            thread::sleep(ACCEPT_ERROR_PAUSE);
        }
        let readable: Vec<bool> = ready.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(ready);
        if shared.is_shutting_down() {
            return;
        }
        for (listening, _) in listeners.iter().zip(readable).filter(|(_, readable)| *readable) {
            loop {
                match listening.listener.accept() {
                    Ok((stream, _)) => {
                        // Accepted sockets do not inherit the listener's non-blocking mode on
                        // Linux, but say so rather than rely on it: everything after is blocking.
                        if stream.set_nonblocking(false).is_err() {
                            continue;
                        }
                        if !admit(shared, stream, listening.scheme, workers) {
                            return;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        log::warn!("accept failed: {error}");
                        thread::sleep(ACCEPT_ERROR_PAUSE);
                        break;
                    }
                }
            }
        }
    }
}

/// Counts a new connection and hands it to the workers, or refuses it. Returns false once the
/// workers are gone (shutdown).
fn admit(shared: &Shared, stream: TcpStream, scheme: Scheme, workers: &Sender<ClientConnection>) -> bool {
    let Ok(peer) = stream.peer_addr() else { return true };
    let config = shared.config();
    let limits = &config.limits;
    let exempt = config.trusted_proxies.iter().any(|block| block.contains(peer.ip().to_canonical()));
    let per_client_cap = limits.max_connections_per_client.filter(|_| !exempt);
    let permit = match shared.connections.admit(peer.ip(), limits.max_connections, per_client_cap) {
        Ok(permit) => permit,
        Err(Refusal::TooManyConnections) => {
            refuse(&stream, scheme, "Service Unavailable: too many connections");
            return true;
        }
        Err(Refusal::TooManyFromClient) => {
            shared.stats.record_slow_client(Defence::PerClientCap);
            refuse(&stream, scheme, "Service Unavailable: too many connections from your address");
            return true;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(config.timeouts.write));
    let connection = match (scheme, &shared.tls) {
        (Scheme::Https, Some(tls)) => match tls.start() {
            Ok(handshake) => ClientConnection::tls(stream, peer, permit, handshake),
            Err(error) => {
                log::error!("cannot start a TLS handshake: {error}");
                return true;
            }
        },
        _ => ClientConnection::new(stream, peer, permit),
    };
    match workers.try_send(connection) {
        Ok(()) => true,
        Err(TrySendError::Full(connection)) => {
            refuse(connection.socket(), scheme, "Service Unavailable: the load balancer is at capacity");
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// Answers `503` at once and closes: cheap, and the client learns why. A TLS client cannot be
/// answered before its handshake, which is the costly part to refuse: it gets the close alone.
fn refuse(mut stream: &TcpStream, scheme: Scheme, why: &str) {
    log::warn!("refusing a connection with {}: {why}", if scheme == Scheme::Http { "503" } else { "a close" });
    if scheme == Scheme::Https {
        return;
    }
    let reply = Reply::error(503, Some(why));
    let _ = stream.set_write_timeout(Some(BUSY_REPLY_TIMEOUT));
    let _ = stream.write_all(&reply.to_bytes(1, false, false));
}

/// Unblocks an acceptor waiting in `accept` by connecting to it once. A listener on every
/// interface is reached on loopback: `[::]` (IPv6 and IPv4 both) on `::1`, or on `127.0.0.1`
/// where `::1` is missing.
pub fn wake(listening_on: SocketAddr) {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let port = listening_on.port();
    let targets = match listening_on {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))],
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            vec![SocketAddr::from((Ipv6Addr::LOCALHOST, port)), SocketAddr::from((Ipv4Addr::LOCALHOST, port))]
        }
        _ => vec![listening_on],
    };
    for target in targets {
        if TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok() {
            return;
        }
    }
}
