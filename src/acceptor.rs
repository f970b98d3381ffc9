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

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::connection::{ClientConnection, Refusal};
use crate::http::reply::Reply;
use crate::metrics::Defence;
use crate::shared::Shared;

/// How long the acceptor waits on a client that is not reading its `503`.
const BUSY_REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause after an accept error such as running out of file descriptors, so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

pub fn run(shared: &Shared, listener: &TcpListener, workers: Sender<ClientConnection>) {
    for connection in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        let stream = match connection {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!("accept failed: {error}");
                thread::sleep(ACCEPT_ERROR_PAUSE);
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        let config = shared.config();
        let limits = &config.limits;
        let exempt = config.trusted_proxies.iter().any(|block| block.contains(peer.ip().to_canonical()));
        let per_client_cap = limits.max_connections_per_client.filter(|_| !exempt);
        let permit = match shared.connections.admit(peer.ip(), limits.max_connections, per_client_cap) {
            Ok(permit) => permit,
            Err(Refusal::TooManyConnections) => {
                refuse(&stream, "Service Unavailable: too many connections");
                continue;
            }
            Err(Refusal::TooManyFromClient) => {
                shared.stats.record_slow_client(Defence::PerClientCap);
                refuse(&stream, "Service Unavailable: too many connections from your address");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(config.timeouts.write));
        match workers.try_send(ClientConnection::new(stream, peer, permit)) {
            Ok(()) => {}
            Err(TrySendError::Full(connection)) => {
                refuse(connection.stream.socket(), "Service Unavailable: the load balancer is at capacity");
            }
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
    log::debug!("acceptor stopped");
}

/// Answers `503` at once and closes: cheap, and the client learns why.
fn refuse(mut stream: &TcpStream, why: &str) {
    log::warn!("refusing a connection with 503: {why}");
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
