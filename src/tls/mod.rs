//! HTTPS: the certificates, their choice by SNI, the rustls configurations, and a TLS session as
//! it moves between the threads, towards a client (we serve HTTPS) or towards a backend (an
//! `https://` backend URL).
//!
//! - [`certs`]: reading a `certificates` entry (`certFile`, `keyFile`) into a key ready to serve,
//!   with the names it covers; a bad file is an error naming it.
//! - [`sni`]: [`CertStore`], the set being served and the choice by the name the client asks
//!   for; replaced whole on a reload.
//! - [`config`]: the rustls `ServerConfig` (TLS 1.2 and 1.3, ALPN `http/1.1`, the ring provider,
//!   resumption with a ticket key kept for the life of the process).
//! - [`accept`]: [`TlsServer`], the running server configuration, and a new connection's
//!   handshake driven a step at a time by the workers ([`PendingHandshake`]).
//! - [`selfsigned`]: the `--demo` mode's certificate for `localhost`, made at start-up (never for
//!   production).
//! - [`session`]: the handshake, and [`TlsSession`], read and written by two threads at once;
//!   either side, since it holds a `rustls::Connection`.
//! - [`client`]: towards backends: the rustls `ClientConfig` (the system's roots or a
//!   `backendCaFile`), the name a backend's certificate is verified by, and the blocking client
//!   handshake.
//!
//! # The lifecycle of a TLS connection from a client
//!
//! One owner at a time, as for a plain connection ([`crate::connection`]), except during a
//! request, when two threads share the session and the rules in [`session`] apply.
//!
//! 1. **Accepted** by the `acceptor`, which only counts it and hands the socket on, as for plain
//!    HTTP: it reads nothing and writes nothing (a refusal there is a TCP close, since a `503`
//!    cannot be sent before a handshake).
//! 2. **Handshake**, owned by whoever holds the connection, and worked only by a worker: it feeds
//!    the [`PendingHandshake`] what the socket has without waiting and writes rustls's answer; if
//!    the client's next flight is not there (after a short linger, while other workers are
//!    free), it parks the connection with the `watcher`, which only gathers the client's bytes and
//!    hands it back to a worker when some arrive, and gives up at `tlsHandshakeTimeout` from the
//!    accept. The crypto stays on the workers, every core's worth. The certificate is chosen from
//!    the [`CertStore`] as the ClientHello is read. A client that breaks the handshake gets an
//!    alert (a plain-HTTP client a `400`) and a close, and is counted.
//! 3. **Session**: the finished handshake becomes a [`TlsSession`], holding any plaintext that
//!    came behind the client's `Finished`. The worker, and the watcher while the connection is
//!    idle or sending a head, read through it with `read_now`; the worker writes its own answers
//!    through it. One owner, so no contention.
//! 4. **A request**: the session is shared by `Arc` between `req-N-fwd`, which alone reads it
//!    (the request body), and `req-N-rev`, which writes it (the response). The socket is written
//!    only by whoever holds the session's write lock, in the order rustls sealed the records; the
//!    reader never waits for that lock, and leaves what it has to send (an alert, a `KeyUpdate`
//!    reply) for the holder when it is taken. After the pair, the worker owns it alone again.
//! 5. **Close**: [`TlsSession::shutdown`] sends `close_notify` after everything written before
//!    it, then the socket is shut as for plain HTTP. A session ends on the client's
//!    `close_notify` or TCP close alike (requests are framed, so truncation shows there).
//!
//! A certificate reload replaces the [`CertStore`]'s set: handshakes from then on get the new
//! certificates, sessions already made keep theirs, and the ticket key in [`Resumption`] is
//! unchanged, so clients keep resuming.
//!
//! # The lifecycle of a TLS connection to a backend
//!
//! Shorter than a client's: we speak first, and the thread that needs the backend waits for it,
//! so no `watcher` drives the handshake. One owner at a time again, except during a request.
//!
//! 1. **Configured** when the config is read, by `main` or `config-watcher`:
//!    [`client_config`] reads the roots, [`verified_name`] checks each backend's name; a file
//!    that cannot be used, or a name that is not one, is a config error there.
//! 2. **Connected and handshaken** by the thread that needs the backend, a worker or the
//!    `health` thread: it connects the socket, then [`client::connect`] sends the ClientHello
//!    and blocks until the handshake is done or its deadline passes. A certificate that does not
//!    verify ends it with rustls's reason, for the log.
//! 3. **A request**: the session is shared by `Arc` between `req-N-fwd`, which writes the
//!    request to the backend, and `req-N-rev`, which alone reads the response: the same
//!    [`TlsSession`] and the same rules, the roles of the two threads swapped.
//! 4. **Close**: as for a client, [`TlsSession::shutdown`] then the socket. The backend's
//!    `close_notify` and a bare TCP close both read as the end; a response cut short shows in
//!    its framing.
//!
//! Where it is wired: the config reads `backendCaFile` and `tlsServerName` and builds each pool's
//! client configuration (`config/backend_tls.rs`, `config/servers.rs`); a kept backend takes a
//! reload's new one (`reload.rs`); [`Backend::connect`](crate::backend::Backend::connect) runs
//! step 2 for a worker (`proxy.rs`) and for a health probe (`health.rs`) alike, and the idle pool
//! keeps the sessions between requests as it keeps plain sockets; steps 3 and 4 are the pair's
//! (`pipe.rs`), the same code as for plain HTTP, over [`crate::stream::Stream`].

pub mod accept;
pub mod certs;
pub mod client;
pub mod config;
pub mod selfsigned;
pub mod session;
pub mod sni;

pub use accept::{Advanced, HandshakeFailure, PendingHandshake, TlsServer};
pub use certs::{CertError, LoadedCert};
pub use client::{Roots, client_config, verified_name};
pub use config::{Resumption, server_config};
pub use session::{Handshake, HandshakeState, TlsError, TlsSession, handshake};
pub use sni::CertStore;
