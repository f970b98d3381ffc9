//! The rustls server configuration: protocol versions, ALPN, the crypto provider, resumption.
//!
//! Built on whichever thread starts the listener (`main`), and then only read, by every thread
//! that drives a handshake. It does not change on a certificate reload: the certificates live in
//! the [`CertStore`] it points at, which is replaced in place, so the session cache and the
//! session-ticket key stay the same and a client resumes across a reload. Were the configuration
//! ever rebuilt, passing it the same [`Resumption`] keeps that true.
//!
//! - TLS 1.2 and 1.3 only (rustls has nothing older).
//! - ALPN offers `http/1.1` alone; a client that offers ALPN without it is refused by rustls
//!   with a `no_application_protocol` alert, and one that offers no ALPN is served HTTP/1.1.
//! - The ring provider, named explicitly ([`provider`]), with its default cipher suites and key
//!   exchange groups in its order of preference; the crate enables no other provider, so two can
//!   never both be compiled in.
//! - Resumption both ways: stateless tickets (TLS 1.2 tickets and TLS 1.3 PSKs, sealed with a key
//!   that rustls's `Ticketer` rotates every 6 hours, a ticket living 12) and a bounded in-memory
//!   cache for TLS 1.2 clients resuming by session ID.
//! - No 0-RTT early data (it can be replayed), no client certificates.
//! - No renegotiation: rustls implements none, in either direction, and refuses a client's
//!   attempt.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

use super::sni::CertStore;

/// The one ALPN protocol offered.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// TLS 1.2 sessions kept for resumption by session ID.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The crypto provider for everything TLS: ring, with its defaults.
///
/// rustls 0.23.48 marks this deprecated because ring has no post-quantum key exchange
/// (`X25519MLKEM768` comes with aws-lc-rs): with ring, key exchange is X25519 or a NIST curve.
/// This is the one place that names the provider, so a change of provider is a change here and
/// in `Cargo.toml`.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What lets a client resume its session: made once at start-up and kept for the life of the
/// process, so a reload does not end every client's chance to resume.
#[derive(Debug, Clone)]
pub struct Resumption {
    pub ticketer: Arc<dyn ProducesTickets>,
    pub sessions: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// A fresh ticket key (from the system's random source) and an empty session cache.
    pub fn new() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        })
    }
}

/// The server configuration for certificates from `store` (see the module doc).
pub fn server_config(store: Arc<CertStore>, resumption: &Resumption) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    config.ticketer = Arc::clone(&resumption.ticketer);
    config.session_storage = Arc::clone(&resumption.sessions);
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}
