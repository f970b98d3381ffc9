//! Thread `admin`: The administrative listener (`adminListen`): the load balancer's own endpoints
//! ([`crate::endpoints`]), away from the public port.
//!
//! When `adminListen` is set, those endpoints are served there and nowhere else, and their paths
//! on the public listener are ordinary paths proxied to the backends. Keeping operational endpoints
//! on an address of their own (a loopback or management interface) lets a firewall keep them
//! private. Admin requests are few and small, so this one thread serves them one at a time, each
//! bounded by `headerReadTimeout` and `writeTimeout`, and closes each connection after answering.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use crate::endpoints::{self, Listener};
use crate::http::buffer::Inbound;
use crate::http::framing::is_timeout;
use crate::http::head::{HeadLimits, parse_request};
use crate::http::reply::Reply;
use crate::shared::Shared;

pub fn run(shared: &Shared, listener: &TcpListener) {
    for connection in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        if let Ok(stream) = connection {
            serve(shared, stream);
        }
    }
    log::debug!("admin listener stopped");
}

fn serve(shared: &Shared, mut stream: TcpStream) {
    let timeouts = shared.config().timeouts;
    let _ = stream.set_write_timeout(Some(timeouts.write));
    let deadline = Instant::now() + timeouts.header_read;
    let mut inbound = Inbound::new();
    let head = loop {
        match parse_request(inbound.buffered(), &HeadLimits::default()) {
            Ok(Some((head, _))) => break head,
            Ok(None) => {}
            Err(error) => {
                let _ = stream.write_all(&error.reply().to_bytes(1, false, false));
                return;
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match inbound.fill(&stream) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if is_timeout(&error) => {}
            Err(_) => return,
        }
    };
    let reply =
        endpoints::answer(shared, &shared.config(), &head, Listener::Admin).unwrap_or_else(|| Reply::error(404, None));
    let _ = stream.write_all(&reply.to_bytes(head.minor_version, false, head.method == "HEAD"));
    log::debug!("admin: \"{} {}\" {}", head.method, head.target, reply.status);
}
