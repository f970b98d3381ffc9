//! The HTTPS listener, through a real TLS client (rustls, trusting a CA made for the test): the
//! round-robin cycle, keep-alive, 1 MiB each way, a chunked upload, a WebSocket through TLS, the
//! choice of certificate by SNI, a certificate reload under load, the `308` to HTTPS, every kind
//! of broken handshake, and a stalled handshake that holds no worker.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::tls::{TestCa, TlsStream, connect, peer_certificate};
use common::{Client, EchoBackend, LoadBalancer, Response, TempDir, config, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

/// The `tlsListen` and `certificates` keys for certificate files `(cert, key)`.
fn tls_keys(certs: &[(std::path::PathBuf, std::path::PathBuf)], extra: &str) -> String {
    let entries: Vec<String> = certs
        .iter()
        .map(|(cert, key)| format!("{{\"certFile\": {:?}, \"keyFile\": {:?}}}", cert.display(), key.display()))
        .collect();
    let extra = if extra.is_empty() { String::new() } else { format!(", {extra}") };
    format!("\"tlsListen\": \"127.0.0.1:0\", \"certificates\": [{}]{extra}", entries.join(", "))
}

/// A load balancer serving HTTPS for `localhost` (and 127.0.0.1) with a certificate from `ca`.
fn https_lb(ca: &TestCa, dir: &TempDir, servers: &[String], extra: &str) -> LoadBalancer {
    let files = ca.issue(dir, "localhost", &["localhost", "127.0.0.1"]);
    LoadBalancer::start(&config(servers, &tls_keys(&[files], extra)))
}

fn get(client: &mut Client<TlsStream>, target: &str) -> Response {
    client.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    client.response(false)
}

#[test]
fn requests_over_https_cycle_through_the_backends_on_one_kept_alive_connection() {
    let (first, second) = (EchoBackend::start(&["--name", "one"]), EchoBackend::start(&["--name", "two"]));
    let (ca, dir) = (TestCa::new("round robin CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[first.url(), second.url()], "");
    let mut client = connect(lb.https_addr(), &ca.client_config(), "localhost");
    assert_eq!(client.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let servers: Vec<String> = (0..4)
        .map(|_| {
            let response = get(&mut client, "/who");
            assert_eq!(response.status, 200);
            assert_eq!(response.header("connection"), None, "kept alive");
            let echoed = response.json();
            let proto = echoed["headers"].as_array().unwrap().iter().find(|field| field[0] == "X-Forwarded-Proto");
            assert_eq!(proto.map(|field| field[1].clone()), Some("https".into()), "{echoed}");
            echoed["server"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(servers, ["one", "two", "one", "two"]);
    let plain = common::request(lb.addr(), "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let proto = plain.json()["headers"].as_array().unwrap().iter().find(|f| f[0] == "X-Forwarded-Proto").cloned();
    assert_eq!(proto.map(|field| field[1].clone()), Some("http".into()), "the plain listener still serves HTTP");

    let metrics = lb.metrics();
    assert_eq!(metrics["listener_requests"]["https"], 4, "{metrics}");
    assert_eq!(metrics["listener_requests"]["http"], 1);
    assert_eq!(metrics["tls"]["full_handshakes"], 1, "one connection, one handshake");
    let line = lb.log.wait_for("\"GET /who HTTP/1.1\" 200", DEADLINE);
    assert!(line.ends_with("listener=https"), "{line}");
}

#[test]
fn a_mebibyte_goes_each_way_and_a_chunked_upload_arrives_whole() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("bodies CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[backend.url()], "");
    let mut client = connect(lb.https_addr(), &ca.client_config(), "localhost");

    // Download: echo-backend's /bytes/N pattern, byte i being i % 251.
    let response = get(&mut client, "/bytes/1048576");
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 1 << 20);
    assert!(response.body.iter().enumerate().all(|(index, &byte)| byte == (index % 251) as u8));

    // Upload and echo at once, in lockstep: each 64 KiB sent comes back before the next goes.
    let body: Vec<u8> = (0..1u32 << 20).map(|index| (index * 7 % 256) as u8).collect();
    client.send(format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    let mut echoed = Vec::with_capacity(body.len());
    let pieces: Vec<&[u8]> = body.chunks(64 * 1024).collect();
    client.send(pieces[0]);
    let head = client.response(true);
    assert_eq!(head.status, 200, "{}", head.head);
    for (index, piece) in pieces.iter().enumerate() {
        echoed.extend_from_slice(&client.exactly(piece.len()));
        if let Some(next) = pieces.get(index + 1) {
            client.send(next);
        }
    }
    assert!(echoed == body, "the echo came back byte for byte");

    // A chunked upload on the same connection.
    client.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_bytes"], 11, "{}", response.text());
}

#[test]
fn a_websocket_session_passes_through_tls() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("websocket CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[backend.url()], "");
    let mut client = connect(lb.https_addr(), &ca.client_config(), "localhost");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    client.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let switched = client.response(true);
    assert_eq!(switched.status, 101, "{}", switched.head);
    assert_eq!(switched.header("sec-websocket-accept"), Some(loadbalancer::echo::websocket_accept(key).as_str()));
    for (opcode, payload) in [(0x1u8, b"over TLS".to_vec()), (0x2, vec![7u8; 70_000])] {
        client.send(&loadbalancer::echo::websocket_frame(opcode, &payload, Some([1, 2, 3, 4])));
        let header = client.exactly(2);
        assert_eq!(header[0] & 0x0f, opcode);
        let length = match header[1] & 0x7f {
            126 => u16::from_be_bytes(client.exactly(2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(client.exactly(8).try_into().unwrap()) as usize,
            short => short as usize,
        };
        assert_eq!(client.exactly(length), payload);
    }
}

/// A client that takes any certificate and records which one it was shown: for checking the
/// choice among several, whatever names they carry.
mod any_certificate {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    pub struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    pub fn config() -> Arc<rustls::ClientConfig> {
        let provider = loadbalancer::tls::config::provider();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, signature, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, signature, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[test]
fn sni_chooses_the_certificate_by_exact_name_then_wildcard_and_else_the_first() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("sni CA"), TempDir::new());
    let default = ca.issue(&dir, "default", &["default.test", "127.0.0.1"]);
    let exact = ca.issue(&dir, "exact", &["app.example.test"]);
    let wildcard = ca.issue(&dir, "wildcard", &["*.example.test"]);
    let certificates = [default.clone(), wildcard.clone(), exact.clone()];
    let lb = LoadBalancer::start(&config(&[backend.url()], &tls_keys(&certificates, "")));
    let der_of = |files: &(std::path::PathBuf, std::path::PathBuf)| -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let chain = std::fs::read(&files.0).unwrap();
        rustls::pki_types::CertificateDer::from_pem_slice(&chain).unwrap().to_vec()
    };
    let verified = ca.client_config();
    let addr = lb.https_addr();
    // Verified by name: each name is served a certificate valid for it.
    for name in ["app.example.test", "api.example.test", "APP.Example.Test", "default.test", "127.0.0.1"] {
        let mut client = connect(addr, &verified, name);
        assert_eq!(get(&mut client, "/ping").status, 200, "{name}");
    }
    // Which one exactly: the exact name wins over the wildcard listed before it; an unknown name
    // and no name at all get the first.
    let any = any_certificate::config();
    let shown = |name: &str| peer_certificate(&connect(addr, &any, name));
    let default_der = der_of(&default);
    assert_eq!(shown("app.example.test"), der_of(&exact), "the exact name, though the wildcard is listed first");
    assert_eq!(shown("api.example.test"), der_of(&wildcard));
    assert_eq!(shown("nobody.test"), default_der);
    assert_eq!(shown("127.0.0.1"), default_der, "an IP address sends no SNI");
    assert_eq!(shown("a.b.example.test"), default_der, "a wildcard stands for one label only");
}

#[test]
fn a_certificate_renewed_on_disk_is_served_to_new_connections_with_no_request_failing() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("renewal CA"), TempDir::new());
    let (cert, key) = ca.issue(&dir, "site", &["localhost"]);
    let lb = LoadBalancer::start(&config(
        &[backend.url()],
        &tls_keys(&[(cert.clone(), key.clone())], "\"reloadInterval\": \"100ms\""),
    ));
    let addr = lb.https_addr();
    let client_config = ca.client_config();
    let before = peer_certificate(&connect(addr, &client_config, "localhost"));
    let kept = connect(addr, &client_config, "localhost");

    // Load: new connections one after another (resuming their session when they can), until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, served, failed, config) = (stop.clone(), served.clone(), failed.clone(), client_config.clone());
        thread::spawn(move || {
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = common::tls::try_connect(addr, &config, "localhost")
                    .is_ok_and(|mut client| get(&mut client, "/ping").status == 200);
                let counter = if ok { &served } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_until(DEADLINE, "some requests before the renewal", || served.load(Ordering::Relaxed) >= 20);
    // The renewal: a new key and certificate, written over the old files.
    let renewed_dir = TempDir::new();
    let (new_cert, new_key) = ca.issue(&renewed_dir, "site", &["localhost"]);
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    lb.log.wait_for("certificates reloaded from disk", DEADLINE);
    // A client that does not resume: a resumed session shows the certificate it was made with.
    let after = peer_certificate(&connect(addr, &ca.client_config(), "localhost"));
    assert_ne!(after, before, "new connections get the renewed certificate");
    let at_renewal = served.load(Ordering::Relaxed);
    wait_until(DEADLINE, "more requests after the renewal", || served.load(Ordering::Relaxed) >= at_renewal + 20);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed across the renewal");

    let mut kept = kept;
    assert_eq!(get(&mut kept, "/ping").status, 200, "a connection made before keeps its session");
    assert_eq!(peer_certificate(&kept), before);
    let metrics = lb.metrics();
    assert!(metrics["tls"]["resumed_handshakes"].as_u64().unwrap() > 0, "tickets outlive the renewal: {metrics}");
    assert_eq!(metrics["tls"]["handshake_failures"]["protocol"], 0);
}

#[test]
fn the_plain_listener_redirects_to_https_except_its_own_endpoints() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("redirect CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[backend.url()], "\"redirectToHttps\": true");
    let port = lb.https_addr().port();
    let redirect = common::request(lb.addr(), "GET /a/b?c=1 HTTP/1.1\r\nHost: Example.TEST:8080\r\n\r\n");
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some(format!("https://example.test:{port}/a/b?c=1").as_str()));
    let post = common::request(lb.addr(), "POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        (post.status, post.header("connection")),
        (308, Some("close")),
        "a body is not read, so the connection closes"
    );
    assert_eq!(lb.get("/lb-metrics").status, 200, "the load balancer's own endpoints still answer over HTTP");
    let mut client = connect(lb.https_addr(), &ca.client_config(), "localhost");
    assert_eq!(get(&mut client, "/a").status, 200, "HTTPS is served, not redirected");
}

/// Bytes sent to the TLS port on a fresh socket, and every byte answered until the close.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = common::connect(addr);
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// A TLS 1.0 ClientHello with one cipher suite and no extensions: a version rustls does not speak.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x42; 32]);
    body.extend_from_slice(&[0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

/// The first flight a real client sends.
fn real_client_hello(ca: &TestCa) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn broken_handshakes_get_a_clean_failure_each_counted_and_nothing_held() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("broken CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[backend.url()], "\"tlsHandshakeTimeout\": \"1s\"");
    let addr = lb.https_addr();

    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.ends_with("Bad Request: this port speaks HTTPS; use an https:// URL"), "{text}");

    // rustls answers a hello that offers neither TLS 1.2 nor 1.3 with a fatal handshake_failure.
    let answer = raw_exchange(addr, &tls10_client_hello());
    assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40], "one fatal alert, then the close");

    // A ClientHello whose body is garbage: a decode_error alert.
    let answer = raw_exchange(addr, &[0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50], "one fatal alert, then the close");
    // Bytes that are not TLS records at all: closed (rustls has no record to put an alert in).
    let answer = raw_exchange(addr, &[0x00; 64]);
    assert!(answer.is_empty() || answer[0] == 0x15, "nothing, or an alert: {answer:?}");

    // A ClientHello cut short, then the client leaves: the close is the end of it.
    let hello = real_client_hello(&ca);
    {
        let mut truncated = common::connect(addr);
        truncated.write_all(&hello[..hello.len() / 2]).unwrap();
    }
    // And one cut short that stays: it waits in the watcher until tlsHandshakeTimeout.
    let mut stalled = common::connect(addr);
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a word: {rest:?}");

    let failures = |metrics: &serde_json::Value| metrics["tls"]["handshake_failures"].clone();
    wait_until(DEADLINE, "every failure counted", || {
        let counted = failures(&lb.metrics());
        counted["plain_http"] == 1 && counted["protocol"] == 3 && counted["closed"] == 1 && counted["timeout"] == 1
    });
    let metrics = lb.metrics();
    assert_eq!(metrics["tls"]["full_handshakes"], 0, "{metrics}");
    assert_eq!(metrics["open_connections"], 1, "nothing is held but the connection asking");
    let mut client = connect(addr, &ca.client_config(), "localhost");
    assert_eq!(get(&mut client, "/ping").status, 200, "and the listener still serves");
}

#[test]
fn stalled_handshakes_wait_in_the_watcher_and_hold_no_worker() {
    let backend = EchoBackend::start(&[]);
    let (ca, dir) = (TestCa::new("stall CA"), TempDir::new());
    let lb = https_lb(&ca, &dir, &[backend.url()], "\"workers\": 1, \"tlsHandshakeTimeout\": \"1m\"");
    let addr = lb.https_addr();
    let hello = real_client_hello(&ca);
    // Half a ClientHello each, on more connections than there are workers; and some that
    // send nothing at all.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|index| {
            let mut stream = common::connect(addr);
            if index % 2 == 0 {
                stream.write_all(&hello[..hello.len() / 2]).unwrap();
            }
            stream
        })
        .collect();
    wait_until(DEADLINE, "the stalled handshakes to wait in the watcher", || {
        lb.metrics()["waiting_connections"]["handshaking"] == 8
    });
    // The one worker is free: a whole handshake and request go through.
    let mut client = connect(addr, &ca.client_config(), "localhost");
    assert_eq!(get(&mut client, "/ping").status, 200);
    assert_eq!(lb.metrics()["waiting_connections"]["handshaking"], 8, "the stalled ones are still waiting");
    drop(stalled);
    wait_until(DEADLINE, "the abandoned handshakes to be let go", || {
        let metrics = lb.metrics();
        metrics["waiting_connections"]["handshaking"] == 0 && metrics["tls"]["handshake_failures"]["closed"] == 8
    });
}

#[test]
fn a_bad_certificate_file_is_a_config_error_naming_the_entry_and_the_file() {
    let dir = TempDir::new();
    let key = dir.write("key.pem", &rcgen::KeyPair::generate().unwrap().serialize_pem());
    let not_pem = dir.write("cert.pem", "this is not a certificate\n");
    let config_text = config(&["http://127.0.0.1:1".to_string()], &tls_keys(&[(not_pem.clone(), key)], ""));
    let config_file = dir.write("config.json", &config_text);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("certificates[0]") && lines[0].contains(&not_pem.display().to_string()), "{stderr}");
    assert!(Path::new(&config_file).exists());
}
