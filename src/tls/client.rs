//! TLS towards `https://` backends: the rustls client configuration, the name a backend's
//! certificate is verified by, and the client handshake.
//!
//! Which threads run what:
//!
//! - [`client_config`] runs where the config is read: `main` at start-up, `config-watcher` on a
//!   reload. It reads the CA file, or the system's root bundle, there and then, so that a file
//!   that cannot be used is a config error naming it rather than every request failing later.
//!   The `Arc<ClientConfig>` it returns is then only read, by every thread that connects.
//! - [`verified_name`] runs with it, once per backend, for the same reason.
//! - [`connect`] runs on the thread that connects to a backend: a worker, for a request, or the
//!   `health` thread, for a check. It blocks that thread until the handshake is done or its
//!   deadline passes, as connecting does. The [`TlsSession`] it returns is shared like a
//!   client's, the other way round: `req-N-fwd` writes the request, `req-N-rev` reads the
//!   response (see [`session`] for the rules).
//!
//! The configuration: TLS 1.2 and 1.3; ALPN offering `http/1.1` alone (a backend that answers
//! without ALPN is spoken HTTP/1.1 to all the same); the ring provider from [`provider`]; no
//! client certificate; no early data. Resumption is rustls's default: an in-memory cache of 256
//! server names per `ClientConfig`, holding TLS 1.3 tickets and TLS 1.2 session IDs or tickets,
//! so connections to the same backend after the first resume. A reload that builds a new configuration starts with an empty cache: the next
//! connection to each backend is a full handshake. The certificate is verified by rustls's
//! webpki verifier: a chain to one of the roots, the validity dates, and the name given to
//! [`connect`]; revocation is not checked (no CRLs are configured).
//!
//! System roots are read without a crate of their own, as OpenSSL and Go find them on Linux:
//! `SSL_CERT_FILE` (a PEM bundle) and `SSL_CERT_DIR` (directories of PEM files, separated by
//! `:`) when set; otherwise the first bundle of [`SYSTEM_BUNDLES`] that exists. A certificate in
//! them that rustls cannot use is skipped, and counted in one warning.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv6Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::config::{ALPN_HTTP_1_1, provider};
use super::session::{self, Handshake, TlsError, TlsSession};

/// The system's root bundles, in the order they are looked for: the list Go's `crypto/x509` uses
/// on Linux (`certFiles` in `src/crypto/x509/root_linux.go`), in its order.
///
/// Go also reads the directories `/etc/ssl/certs` and `/etc/pki/tls/certs` when `SSL_CERT_DIR`
/// is unset; they hold the roots of the bundle beside them again, so here a directory is read only
/// when `SSL_CERT_DIR` names it.
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",                            // openSUSE
    "/etc/pki/tls/cacert.pem",                           // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
    "/etc/ssl/cert.pem",                                 // Alpine
];

/// Where backend certificates are verified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots<'a> {
    /// The system's roots (see the module doc for where they are looked for).
    System,
    /// The certificates in this PEM file (`backendCaFile`), and only those.
    CaFile(&'a Path),
}

/// The rustls client configuration for backends (see the module doc), trusting `roots`. An error
/// names the file and the problem.
pub fn client_config(roots: Roots) -> Result<Arc<ClientConfig>, String> {
    let roots = match roots {
        Roots::System => {
            let sources = system_root_sources(
                std::env::var_os("SSL_CERT_FILE").as_deref(),
                std::env::var_os("SSL_CERT_DIR").as_deref(),
                |path| path.exists(),
            )?;
            system_roots(&sources)?
        }
        Roots::CaFile(file) => ca_file_roots(file)?,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("the TLS client configuration: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    // `resumption`, `enable_sni` and `enable_early_data` keep their defaults: an in-memory
    // session cache, SNI for DNS names, no 0-RTT.
    Ok(Arc::new(config))
}

/// Runs a client handshake on `stream`, blocking, until it is done or `deadline` passes; the
/// stream's read timeout is put back as it was. `server_name` is sent as SNI when it is a DNS
/// name (rustls sends none for an IP address) and the backend's certificate must cover it.
/// A certificate that does not verify is a [`TlsError::Tls`] holding rustls's reason (its
/// `Display` reads "TLS handshake failed: invalid peer certificate: UnknownIssuer" and the like),
/// and the backend has been sent an alert saying so if its socket took it.
///
/// The session's [`details`](TlsSession::details) have no `server_name` on this side: the
/// caller chose the name and has it.
pub fn connect(
    stream: TcpStream,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    deadline: Instant,
) -> Result<TlsSession, TlsError> {
    let conn = ClientConnection::new(config, server_name).map_err(TlsError::Tls)?;
    session::run_blocking(stream, Handshake::client(conn), deadline)
}

/// The name to verify a backend by: `tls_server_name` when given, else the host of its URL, a DNS
/// name or an IP address (an IPv6 address in its URL brackets or without). An error quotes the
/// text that is not a valid name.
pub fn verified_name(url_host: &str, tls_server_name: Option<&str>) -> Result<ServerName<'static>, String> {
    let invalid = |text: &str, what: &str| format!("{text:?} ({what}) is neither a valid DNS name nor an IP address");
    if let Some(name) = tls_server_name {
        return ServerName::try_from(name.to_owned()).map_err(|_| invalid(name, "the TLS server name"));
    }
    match url_host.strip_prefix('[').and_then(|host| host.strip_suffix(']')) {
        // A URL writes an IPv6 address in brackets, and nothing else.
        Some(inside) => match inside.parse::<Ipv6Addr>() {
            Ok(address) => Ok(ServerName::IpAddress(IpAddr::V6(address).into())),
            Err(_) => Err(format!("{url_host:?} (the host) is not an IPv6 address in brackets")),
        },
        None => ServerName::try_from(url_host.to_owned()).map_err(|_| invalid(url_host, "the host")),
    }
}

/// The roots in a `backendCaFile`: every `CERTIFICATE` block in it, each of which must be usable
/// (unlike a system bundle, this file was written for us, so a bad block is a mistake to report).
fn ca_file_roots(file: &Path) -> Result<RootCertStore, String> {
    let problem = |problem: String| format!("backendCaFile {}: {problem}", file.display());
    let pem = std::fs::read(file).map_err(|error| problem(error.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(format!("not valid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(problem("no CERTIFICATE block".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|error| problem(format!("certificate {} cannot be used as a root: {error}", index + 1)))?;
    }
    Ok(roots)
}

/// One place the system's roots are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootSource {
    /// A PEM bundle named by `SSL_CERT_FILE`.
    EnvFile(PathBuf),
    /// A PEM bundle from [`SYSTEM_BUNDLES`].
    Bundle(PathBuf),
    /// A directory named in `SSL_CERT_DIR`: every file in it is read as PEM.
    EnvDir(PathBuf),
}

impl RootSource {
    /// The source as an error names it.
    fn describe(&self) -> String {
        match self {
            RootSource::EnvFile(path) => format!("SSL_CERT_FILE {}", path.display()),
            RootSource::Bundle(path) => path.display().to_string(),
            RootSource::EnvDir(path) => format!("SSL_CERT_DIR {}", path.display()),
        }
    }
}

/// Where the system's roots are read from, given the values of `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// (empty counts as unset) and a test of whether a path exists. As with OpenSSL and Go, the two
/// variables are independent: `SSL_CERT_FILE` replaces the search of [`SYSTEM_BUNDLES`], and
/// `SSL_CERT_DIR` adds directories to whichever bundle is used. A bundle named by
/// `SSL_CERT_FILE` is used whether it exists or not, so that a wrong one is an error naming it
/// rather than a silent fallback. An error when there is nothing to read, saying where it looked.
fn system_root_sources(
    cert_file: Option<&OsStr>,
    cert_dir: Option<&OsStr>,
    exists: impl Fn(&Path) -> bool,
) -> Result<Vec<RootSource>, String> {
    let cert_file = cert_file.filter(|value| !value.is_empty());
    let cert_dir = cert_dir.filter(|value| !value.is_empty());
    let mut sources = Vec::new();
    match cert_file {
        Some(file) => sources.push(RootSource::EnvFile(PathBuf::from(file))),
        None => {
            let first = SYSTEM_BUNDLES.iter().map(Path::new).find(|bundle| exists(bundle));
            sources.extend(first.map(|bundle| RootSource::Bundle(bundle.to_owned())));
        }
    }
    if let Some(dirs) = cert_dir {
        let dirs = std::env::split_paths(dirs).filter(|dir| !dir.as_os_str().is_empty());
        sources.extend(dirs.map(RootSource::EnvDir));
    }
    if sources.is_empty() {
        return Err(format!(
            "no system root bundle was found: SSL_CERT_FILE and SSL_CERT_DIR are not set, and none of {} exists",
            SYSTEM_BUNDLES.join(", ")
        ));
    }
    Ok(sources)
}

/// The roots read from `sources`. A source that cannot be read is an error naming it; a block
/// that is not valid PEM, or a certificate rustls cannot use, is skipped, since system bundles
/// are written for every TLS library and hold the odd certificate one of them refuses.
fn system_roots(sources: &[RootSource]) -> Result<RootCertStore, String> {
    let mut pems = Vec::new();
    for source in sources {
        match source {
            RootSource::EnvFile(file) | RootSource::Bundle(file) => {
                pems.push(std::fs::read(file).map_err(|error| format!("{}: {error}", source.describe()))?);
            }
            RootSource::EnvDir(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", source.describe()))?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    // Following links: such directories are mostly links named by hash.
                    .filter(|path| path.metadata().is_ok_and(|metadata| metadata.is_file()))
                    .collect();
                files.sort();
                for file in files {
                    // One file of a directory: the others may do without it.
                    match std::fs::read(&file) {
                        Ok(pem) => pems.push(pem),
                        Err(error) => log::debug!("system roots: {} skipped: {error}", file.display()),
                    }
                }
            }
        }
    }

    let described: Vec<String> = sources.iter().map(RootSource::describe).collect();
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    let mut unparsed = 0;
    for pem in &pems {
        for cert in CertificateDer::pem_slice_iter(pem) {
            match cert {
                // A directory of links by hash and the bundle beside it hold each root twice or
                // more: one copy is enough.
                Ok(cert) if seen.insert(cert.as_ref().to_vec()) => unique.push(cert),
                Ok(_) => {}
                Err(_) => unparsed += 1,
            }
        }
    }
    let mut roots = RootCertStore::empty();
    let (_, refused) = roots.add_parsable_certificates(unique);
    let skipped = unparsed + refused;
    if skipped > 0 {
        log::warn!("system roots: {skipped} certificates skipped that rustls cannot use, in {}", described.join(", "));
    }
    if roots.is_empty() {
        return Err(format!("no usable root certificate in {}", described.join(", ")));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::ResolvesServerCert;
    use rustls::sign::CertifiedKey;
    use rustls::{AlertDescription, CertificateError, HandshakeKind, ProtocolVersion, ServerConfig};

    use super::*;
    use crate::tests_support::TempDir;
    use crate::tls::certs::LoadedCert;
    use crate::tls::config::{Resumption, server_config};
    use crate::tls::session::SessionDetails;
    use crate::tls::sni::CertStore;

    const LONG: Duration = Duration::from_secs(10);
    const MIB: usize = 1024 * 1024;

    /// A certificate authority made for the test, and the leaves it issues.
    struct TestCa {
        issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        fn new() -> TestCa {
            TestCa { issuer: crate::tests_support::test_ca() }
        }

        /// A leaf for `names` (rcgen makes "127.0.0.1" an IP address entry), with the CA after it.
        fn issue(&self, names: &[&str]) -> LoadedCert {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            let cert = rcgen::CertificateParams::new(names.clone()).unwrap().signed_by(&key, &self.issuer).unwrap();
            loaded(names, vec![cert.der().clone(), self.issuer.der().clone()], &key)
        }

        /// The CA certificate as a `backendCaFile` would hold it.
        fn pem(&self) -> String {
            self.issuer.pem()
        }
    }

    /// A certificate ready to serve, made directly rather than by `certs::from_pem`, which
    /// refuses a certificate without a DNS name (ours for 127.0.0.1 has none).
    fn loaded(names: Vec<String>, chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> LoadedCert {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = provider().key_provider.load_private_key(der).unwrap();
        LoadedCert { names, key: Arc::new(CertifiedKey::new(chain, signing_key)), cert_file: "test.pem".into() }
    }

    /// A self-signed certificate for `localhost`, from no CA the client knows.
    fn untrusted_localhost() -> LoadedCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        loaded(vec!["localhost".into()], vec![made.cert.der().clone()], &made.signing_key)
    }

    /// Our server configuration, serving `cert`.
    fn ours(cert: LoadedCert) -> Arc<ServerConfig> {
        server_config(Arc::new(CertStore::new(vec![cert])), &Resumption::new().unwrap()).unwrap()
    }

    /// A server offering TLS 1.2 alone (ours offers both, and 1.3 always wins), for the other
    /// protocol's code paths on the client side.
    fn tls12_only(cert: LoadedCert) -> Arc<ServerConfig> {
        let store: Arc<dyn ResolvesServerCert> = Arc::new(CertStore::new(vec![cert]));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(store);
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Arc::new(config)
    }

    fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    /// On a new thread: accepts one connection, runs our server handshake on it, and hands the
    /// session to `then`.
    fn serve_one<T: Send + 'static>(
        listener: &TcpListener,
        config: &Arc<ServerConfig>,
        then: impl FnOnce(TlsSession) -> T + Send + 'static,
    ) -> thread::JoinHandle<Result<T, TlsError>> {
        let (listener, config) = (listener.try_clone().unwrap(), Arc::clone(config));
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(LONG)).unwrap();
            stream.set_write_timeout(Some(LONG)).unwrap();
            let session = session::handshake(stream, config, Instant::now() + LONG)?;
            Ok(then(session))
        })
    }

    /// A TCP connection to `address` with generous timeouts, ready for [`connect`].
    fn tcp(address: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        stream.set_write_timeout(Some(LONG)).unwrap();
        stream
    }

    /// Bytes that show a misplaced or repeated chunk: no period shorter than the body.
    fn payload(size: usize) -> Vec<u8> {
        (0..size as u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
    }

    /// Reads exactly `size` bytes through `session`, `read` by `read` (each must bring some).
    fn read_body(session: &TlsSession, size: usize) -> Vec<u8> {
        let mut received = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            // 7 KiB: not a record's size, so reads straddle records.
            let end = size.min(filled + 7 * 1024);
            let count = session.read(&mut received[filled..end]).unwrap();
            assert!(count > 0, "the session ended after {filled} of {size} bytes");
            filled += count;
        }
        received
    }

    /// The server's half of the echo: one thread reads `size` bytes and passes them on as they
    /// come, this one writes them back, then ends the session with `close_notify`.
    fn echo(session: TlsSession, size: usize) -> SessionDetails {
        let session = Arc::new(session);
        let (chunks, received) = mpsc::channel::<Vec<u8>>();
        let reader = {
            let session = Arc::clone(&session);
            thread::spawn(move || {
                let mut buffer = vec![0u8; 7 * 1024];
                let mut total = 0;
                while total < size {
                    let count = session.read(&mut buffer).unwrap();
                    assert!(count > 0, "the client ended after {total} of {size} bytes");
                    total += count;
                    chunks.send(buffer[..count].to_vec()).unwrap();
                }
            })
        };
        let mut echoed = 0;
        while echoed < size {
            let chunk = received.recv_timeout(LONG).expect("the reader passes the body on");
            session.write_all(&chunk).unwrap();
            echoed += chunk.len();
        }
        reader.join().unwrap();
        session.shutdown().unwrap();
        session.details()
    }

    /// The client's half: one thread writes `body` while this one reads it back, then the end.
    fn send_and_read_back(session: TlsSession, body: Arc<Vec<u8>>) -> SessionDetails {
        let session = Arc::new(session);
        let writer = {
            let (session, body) = (Arc::clone(&session), Arc::clone(&body));
            thread::spawn(move || {
                for piece in body.chunks(10_000) {
                    session.write_all(piece).unwrap();
                }
            })
        };
        let echoed = read_body(&session, body.len());
        writer.join().unwrap();
        assert!(echoed == *body, "the echo is the body, byte for byte");
        assert_eq!(session.read(&mut [0u8; 16]).unwrap(), 0, "then the backend's close_notify");
        session.details()
    }

    #[test]
    fn a_backend_is_verified_by_name_or_by_ip_and_carries_a_mebibyte_each_way() {
        let ca = TestCa::new();
        let dir = TempDir::new("echo");
        let ca_file = dir.write("ca.pem", ca.pem());
        let client = client_config(Roots::CaFile(&ca_file)).unwrap();
        let (localhost, ip) = (ca.issue(&["localhost"]), ca.issue(&["127.0.0.1"]));
        let body = Arc::new(payload(MIB));

        let (tls13, tls12) = (ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2);
        let cases = [
            ("by name", ours(localhost.clone()), tls13, verified_name("localhost", None), Some("localhost")),
            (
                "by name, TLS 1.2",
                tls12_only(localhost.clone()),
                tls12,
                verified_name("localhost", None),
                Some("localhost"),
            ),
            ("by IP", ours(ip), tls13, verified_name("127.0.0.1", None), None),
            ("by IP, named", ours(localhost), tls13, verified_name("127.0.0.1", Some("localhost")), Some("localhost")),
        ];
        for (case, server, version, name, sni) in cases {
            let name = name.unwrap();
            let (listener, address) = listen();
            let size = body.len();
            let served = serve_one(&listener, &server, move |session| echo(session, size));
            let session = connect(tcp(address), Arc::clone(&client), name.clone(), Instant::now() + LONG).unwrap();
            assert_eq!(session.stream().read_timeout().unwrap(), Some(LONG), "{case}: the read timeout is put back");
            let seen = send_and_read_back(session, Arc::clone(&body));
            let served = served.join().unwrap().unwrap();

            assert_eq!((seen.version, served.version), (Some(version), Some(version)), "{case}");
            assert_eq!(seen.alpn.as_deref(), Some(ALPN_HTTP_1_1), "{case}");
            assert_eq!(seen.kind, Some(HandshakeKind::Full), "{case}");
            assert_eq!(seen.server_name, None, "{case}: the client side names no SNI");
            assert_eq!(served.server_name.as_deref(), sni, "{case}: the SNI sent, none for an IP address");

            // The same configuration, the same name: the session resumes (for TLS 1.3, with the
            // ticket the first session's reader took in before the echo).
            let served = serve_one(&listener, &server, |session| session.details());
            let again = connect(tcp(address), Arc::clone(&client), name, Instant::now() + LONG).unwrap();
            assert_eq!(again.details().kind, Some(HandshakeKind::Resumed), "{case}");
            assert_eq!(served.join().unwrap().unwrap().kind, Some(HandshakeKind::Resumed), "{case}");
        }
    }

    /// Connects to a server with `cert`, trusting only `ca`, as `name`; returns both ends' results.
    fn refused(ca: &TestCa, cert: LoadedCert, name: ServerName<'static>) -> (TlsError, TlsError) {
        let dir = TempDir::new("refused");
        let client = client_config(Roots::CaFile(&dir.write("ca.pem", ca.pem()))).unwrap();
        let (listener, address) = listen();
        let served = serve_one(&listener, &ours(cert), |_| ());
        let error = connect(tcp(address), client, name, Instant::now() + LONG).unwrap_err();
        (error, served.join().unwrap().unwrap_err())
    }

    #[test]
    fn a_certificate_from_an_unknown_issuer_is_refused_with_rustls_reason() {
        let ca = TestCa::new();
        let (error, server_saw) = refused(&ca, untrusted_localhost(), verified_name("localhost", None).unwrap());
        assert!(
            matches!(error, TlsError::Tls(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "TLS handshake failed: invalid peer certificate: UnknownIssuer");
        // The backend was told why.
        assert!(
            matches!(server_saw, TlsError::Tls(rustls::Error::AlertReceived(AlertDescription::UnknownCA))),
            "{server_saw:?}"
        );
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let ca = TestCa::new();
        for name in ["other.test", "127.0.0.1"] {
            let expected = format!(
                "TLS handshake failed: invalid peer certificate: certificate not valid for name {name:?}; \
                 certificate is only valid for DnsName(\"localhost\")"
            );
            let name = verified_name(name, None).unwrap();
            let (error, server_saw) = refused(&ca, ca.issue(&["localhost"]), name.clone());
            // rustls 0.23 reports the name it expected and the ones it found, not the bare
            // `NotValidForName`.
            match &error {
                TlsError::Tls(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                })) => {
                    assert_eq!((expected, presented.as_slice()), (&name, &["DnsName(\"localhost\")".to_string()][..]));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(error.to_string(), expected);
            assert!(
                matches!(server_saw, TlsError::Tls(rustls::Error::AlertReceived(AlertDescription::BadCertificate))),
                "{server_saw:?}"
            );
        }
    }

    #[test]
    fn a_backend_that_never_answers_times_out_at_the_deadline() {
        let ca = TestCa::new();
        let dir = TempDir::new("silent");
        let client = client_config(Roots::CaFile(&dir.write("ca.pem", ca.pem()))).unwrap();
        let (listener, address) = listen();
        let stream = tcp(address);
        let (mut silent, _) = listener.accept().unwrap();
        let wait = Duration::from_millis(300);
        let started = Instant::now();
        let result = connect(stream, client, verified_name("localhost", None).unwrap(), started + wait);
        let took = started.elapsed();
        assert!(matches!(result, Err(TlsError::TimedOut)), "{result:?}");
        // A socket timeout is rounded up to the kernel's tick, never down; the slack is for
        // clocks that disagree by a hair.
        assert!(took >= wait - Duration::from_millis(5), "gave up after {took:?}, before the deadline");
        assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        // What the backend got: a ClientHello, in a handshake record.
        silent.set_read_timeout(Some(LONG)).unwrap();
        let mut first = [0u8; 1];
        silent.read_exact(&mut first).unwrap();
        assert_eq!(first, [0x16]);
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_an_error_naming_it() {
        let dir = TempDir::new("bad-ca");
        let key = rcgen::KeyPair::generate().unwrap();
        let cases = [
            ("garbage.pem", b"\x00\xffnot a certificate at all\n\x01\x02".to_vec(), "no CERTIFICATE block"),
            ("key.pem", key.serialize_pem().into_bytes(), "no CERTIFICATE block"),
            (
                "broken.pem",
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
                "not valid PEM: ",
            ),
            (
                "not-der.pem",
                b"-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n".to_vec(),
                "certificate 1 cannot be used as a root: ",
            ),
        ];
        for (name, contents, problem) in cases {
            let file = dir.write(name, contents);
            let error = client_config(Roots::CaFile(&file)).unwrap_err();
            let expected = format!("backendCaFile {}: {problem}", file.display());
            assert!(error.starts_with(&expected), "{error:?} should start with {expected:?}");
        }
        let missing = dir.0.join("missing.pem");
        let error = client_config(Roots::CaFile(&missing)).unwrap_err();
        assert_eq!(error, format!("backendCaFile {}: No such file or directory (os error 2)", missing.display()));
    }

    #[test]
    fn the_system_roots_load_on_this_machine() {
        let result = client_config(Roots::System);
        let unset = |name| std::env::var_os(name).is_none_or(|value| value.is_empty());
        let nothing_to_read = unset("SSL_CERT_FILE")
            && unset("SSL_CERT_DIR")
            && SYSTEM_BUNDLES.iter().all(|bundle| !Path::new(bundle).exists());
        match result {
            Ok(config) => assert_eq!(config.alpn_protocols, [ALPN_HTTP_1_1.to_vec()]),
            Err(error) if nothing_to_read => {
                assert!(error.starts_with("no system root bundle was found: "), "{error}");
            }
            Err(error) => panic!("the system's roots are there, yet: {error}"),
        }
    }

    #[test]
    fn the_system_roots_are_looked_for_as_openssl_and_go_do() {
        use RootSource::{Bundle, EnvDir, EnvFile};
        let path = PathBuf::from;
        let only = |present: &'static [&'static str]| {
            move |candidate: &Path| present.iter().any(|p| candidate == Path::new(p))
        };
        let os = |text: &'static str| Some(OsStr::new(text));

        // Unset: the first bundle of the list that exists.
        let fedora_and_alpine = only(&["/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]);
        assert_eq!(
            system_root_sources(None, None, fedora_and_alpine),
            Ok(vec![Bundle(path("/etc/pki/tls/certs/ca-bundle.crt"))])
        );
        assert_eq!(
            system_root_sources(None, None, only(&["/etc/ssl/cert.pem"])),
            Ok(vec![Bundle(path("/etc/ssl/cert.pem"))])
        );
        // Empty is unset.
        assert_eq!(
            system_root_sources(os(""), os(""), only(&["/etc/ssl/cert.pem"])),
            Ok(vec![Bundle(path("/etc/ssl/cert.pem"))])
        );

        // SSL_CERT_FILE replaces the list, existing or not; SSL_CERT_DIR adds to either.
        assert_eq!(
            system_root_sources(os("/x/roots.pem"), None, fedora_and_alpine),
            Ok(vec![EnvFile(path("/x/roots.pem"))])
        );
        assert_eq!(
            system_root_sources(None, os("/a:/b/c:"), fedora_and_alpine),
            Ok(vec![Bundle(path("/etc/pki/tls/certs/ca-bundle.crt")), EnvDir(path("/a")), EnvDir(path("/b/c"))])
        );
        assert_eq!(
            system_root_sources(os("/x/roots.pem"), os("/a"), only(&[])),
            Ok(vec![EnvFile(path("/x/roots.pem")), EnvDir(path("/a"))])
        );
        assert_eq!(system_root_sources(None, os("/a"), only(&[])), Ok(vec![EnvDir(path("/a"))]));

        // Nothing: the error says where it looked.
        let error = system_root_sources(None, None, only(&[])).unwrap_err();
        assert!(
            error.starts_with("no system root bundle was found: SSL_CERT_FILE and SSL_CERT_DIR are not set"),
            "{error}"
        );
        for bundle in SYSTEM_BUNDLES {
            assert!(error.contains(bundle), "{error} names {bundle}");
        }
    }

    #[test]
    fn system_roots_are_read_from_a_bundle_and_a_directory_skipping_what_rustls_refuses() {
        let (first, second) = (TestCa::new(), TestCa::new());
        let dir = TempDir::new("system");
        let refused = "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n";
        let bundle = dir.write("bundle.pem", format!("{}{refused}", first.pem()));
        let hashed = dir.0.join("hashed");
        std::fs::create_dir(&hashed).unwrap();
        std::fs::write(hashed.join("1.0"), second.pem()).unwrap();
        std::fs::write(hashed.join("2.0"), first.pem()).unwrap(); // the bundle's, again
        std::fs::write(hashed.join("README"), "not PEM at all").unwrap();
        std::fs::create_dir(hashed.join("subdirectory")).unwrap();

        let roots = system_roots(&[RootSource::EnvFile(bundle.clone()), RootSource::EnvDir(hashed.clone())]).unwrap();
        assert_eq!(roots.len(), 2, "each CA once, the refused block skipped");

        let only_refused = dir.write("refused.pem", refused);
        let error = system_roots(&[RootSource::Bundle(only_refused.clone())]).unwrap_err();
        assert_eq!(error, format!("no usable root certificate in {}", only_refused.display()));
        let missing = dir.0.join("missing.pem");
        let error = system_roots(&[RootSource::EnvFile(missing.clone())]).unwrap_err();
        assert_eq!(error, format!("SSL_CERT_FILE {}: No such file or directory (os error 2)", missing.display()));
        let error = system_roots(&[RootSource::EnvDir(missing.clone())]).unwrap_err();
        assert_eq!(error, format!("SSL_CERT_DIR {}: No such file or directory (os error 2)", missing.display()));
    }

    #[test]
    fn the_name_is_the_tls_server_name_else_the_host() {
        let dns = |name: &str| ServerName::try_from(name.to_string()).unwrap();
        assert_eq!(verified_name("api.example.com", None), Ok(dns("api.example.com")));
        assert_eq!(verified_name("127.0.0.1", None), Ok(ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())));
        assert_eq!(
            verified_name("[::1]", None),
            Ok(ServerName::IpAddress(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]).into()))
        );
        assert_eq!(verified_name("::1", None), verified_name("[::1]", None));
        assert_eq!(verified_name("10.0.0.7", Some("internal.example.com")), Ok(dns("internal.example.com")));
        assert_eq!(verified_name("backend.local", Some("10.0.0.7")), verified_name("10.0.0.7", None));

        for (host, tls_server_name, expected) in [
            ("bad host!", None, "\"bad host!\" (the host) is neither a valid DNS name nor an IP address"),
            ("", None, "\"\" (the host) is neither a valid DNS name nor an IP address"),
            ("[not-an-ip]", None, "\"[not-an-ip]\" (the host) is not an IPv6 address in brackets"),
            ("[127.0.0.1]", None, "\"[127.0.0.1]\" (the host) is not an IPv6 address in brackets"),
            (
                "localhost",
                Some("under_score?"),
                "\"under_score?\" (the TLS server name) is neither a valid DNS name nor an IP address",
            ),
            ("localhost", Some(""), "\"\" (the TLS server name) is neither a valid DNS name nor an IP address"),
        ] {
            assert_eq!(verified_name(host, tls_server_name), Err(expected.to_string()), "{host:?} {tls_server_name:?}");
        }
    }

    #[test]
    fn a_stream_whose_peer_is_gone_is_a_clean_error() {
        let ca = TestCa::new();
        let dir = TempDir::new("gone");
        let client = client_config(Roots::CaFile(&dir.write("ca.pem", ca.pem()))).unwrap();
        let (listener, address) = listen();
        let stream = tcp(address);
        drop(listener.accept().unwrap());
        let error =
            connect(stream, client, verified_name("localhost", None).unwrap(), Instant::now() + LONG).unwrap_err();
        // Closed when the FIN is read first; a reset when the ClientHello met the closed socket.
        assert!(
            matches!(&error, TlsError::Closed)
                || matches!(&error, TlsError::Io(error) if error.kind() == io::ErrorKind::ConnectionReset),
            "{error:?}"
        );
    }
}
