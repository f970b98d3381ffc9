//! TLS for the tests: certificates made at test time (a test CA and the leaves it signs, written
//! as PEM files for the load balancer to load; no key is ever committed), and a rustls client
//! whose [`Client`](super::Client) speaks HTTP over TLS exactly as the plain one does.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Client, TempDir, Transport};

/// A TLS session over a socket, as the tests' client holds it.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Transport for TlsStream {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` signed by this CA, written into `dir` as `STEM.pem` (the leaf, then
    /// the CA: a chain) and `STEM.key`. Returns the two paths.
    pub fn issue(&self, dir: &TempDir, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
        let chain = format!("{}{}", cert.pem(), self.issuer.pem());
        (dir.write(&format!("{stem}.pem"), &chain), dir.write(&format!("{stem}.key"), &key.serialize_pem()))
    }

    /// A client configuration trusting this CA alone, offering ALPN `http/1.1`.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.issuer.der().to_vec())).unwrap();
        let mut config = ClientConfig::builder_with_provider(loadbalancer::tls::config::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A TLS connection to `addr`, asking for `server_name` (SNI, and the name verified), its
/// handshake done. Panics if the handshake fails.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, server_name: &str) -> Client<TlsStream> {
    try_connect(addr, config, server_name).unwrap_or_else(|error| panic!("TLS handshake with {addr}: {error}"))
}

/// As [`connect`], returning the handshake's failure instead of panicking.
pub fn try_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    server_name: &str,
) -> Result<Client<TlsStream>, std::io::Error> {
    let socket = super::connect(addr);
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut stream = StreamOwned::new(ClientConnection::new(Arc::clone(config), name).unwrap(), socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(Client::over(stream))
}

/// The leaf certificate the server sent, DER.
pub fn peer_certificate(client: &Client<TlsStream>) -> Vec<u8> {
    client.stream.conn.peer_certificates().unwrap()[0].to_vec()
}
