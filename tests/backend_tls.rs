//! `https://` backends, end to end: the real `loadbalancer` in front of `echo-backend`s serving
//! HTTPS with certificates made here, for this run, by a test CA (no key is committed).
//!
//! Round robin and reuse of idle TLS connections; a 1 MiB body both ways; an IP-address URL
//! verified by `tlsServerName`; a certificate that does not verify (502, logged with rustls's
//! reason) and the health checks taking it down; a reload giving a kept backend a new
//! `backendCaFile`; config mistakes (exit 2, one line naming the key); `loadbalancer check`.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Client, EchoBackend, LoadBalancer, TempDir, wait_until};

/// Certificates for one test, as PEM files in a directory of their own.
struct Certs {
    dir: TempDir,
    /// The test CA's certificate: what `backendCaFile` names.
    ca: PathBuf,
    /// Another CA, which signed nothing the backends serve.
    other_ca: PathBuf,
    /// A leaf signed by the CA for `localhost` and the IP address 127.0.0.1.
    leaf: (PathBuf, PathBuf),
    /// A leaf signed by the CA for `localhost` alone.
    localhost_only: (PathBuf, PathBuf),
    /// Self-signed for `localhost` and 127.0.0.1: from no CA the load balancer trusts.
    untrusted: (PathBuf, PathBuf),
}

/// A CA with a name of its own: with rcgen's default name, which its self-signed certificates
/// have too, the untrusted certificate would name this CA as its issuer and fail as a bad
/// signature rather than an unknown issuer.
fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

impl Certs {
    fn new() -> Certs {
        let dir = TempDir::new();
        let ca = test_ca("loadbalancer backend test CA");
        let leaf = |file: &str, names: &[&str]| {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            // rcgen makes "127.0.0.1" an IP address entry.
            let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
            (dir.write(&format!("{file}.pem"), &cert.pem()), dir.write(&format!("{file}.key"), &key.serialize_pem()))
        };
        let (leaf, localhost_only) = (leaf("leaf", &["localhost", "127.0.0.1"]), leaf("localhost", &["localhost"]));
        let untrusted = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let untrusted = (
            dir.write("untrusted.pem", &untrusted.cert.pem()),
            dir.write("untrusted.key", &untrusted.signing_key.serialize_pem()),
        );
        let ca_file = dir.write("ca.pem", &ca.pem());
        let other_ca = dir.write("other-ca.pem", &test_ca("another test CA").pem());
        Certs { dir, ca: ca_file, other_ca, leaf, localhost_only, untrusted }
    }
}

/// An `echo-backend` serving HTTPS with `(certificate, key)`.
fn https_backend(cert: &(PathBuf, PathBuf)) -> EchoBackend {
    let (cert_file, key_file) = (cert.0.display().to_string(), cert.1.display().to_string());
    EchoBackend::start(&["--tls-cert", &cert_file, "--tls-key", &key_file])
}

/// A server entry as JSON: a URL string, or an object with a `tlsServerName`.
fn server(url: &str, tls_server_name: Option<&str>) -> String {
    match tls_server_name {
        Some(name) => format!(r#"{{"url": "{url}", "tlsServerName": "{name}"}}"#),
        None => format!("\"{url}\""),
    }
}

/// A config with `servers`, verified against `ca` (the system's roots when `None`), health
/// checks every `interval` with a timeout generous for a loaded machine.
fn https_config(servers: &[String], ca: Option<&PathBuf>, interval: &str) -> String {
    let ca = ca.map_or_else(String::new, |ca| format!(r#""backendCaFile": {:?}, "#, ca.display().to_string()));
    format!(
        r#"{{{ca}"healthCheckInterval": "{interval}", "healthCheckTimeout": "2s", "servers": [{}]}}"#,
        servers.join(", ")
    )
}

/// The backend with `url` in the metrics.
fn backend_metrics(lb: &LoadBalancer, url: &str) -> serde_json::Value {
    let metrics = lb.metrics();
    let backends = metrics["backends"].as_array().unwrap();
    backends.iter().find(|backend| backend["url"] == url).unwrap_or_else(|| panic!("no {url} in {metrics}")).clone()
}

/// Sends `GET path` on `client` and reads the answer: status and JSON body.
fn get_json(client: &mut Client, path: &str) -> (u16, serde_json::Value) {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes());
    let response = client.response(false);
    let json = if response.status == 200 { response.json() } else { serde_json::Value::Null };
    (response.status, json)
}

#[test]
fn requests_take_turns_over_https_backends_and_reuse_their_idle_tls_connections() {
    let certs = Certs::new();
    let (first, second) = (https_backend(&certs.leaf), https_backend(&certs.leaf));
    // One verified by its DNS name, one by its IP address.
    let (first_url, second_url) =
        (format!("https://localhost:{}", first.port), format!("https://127.0.0.1:{}", second.port));
    let servers = [server(&first_url, None), server(&second_url, None)];
    let lb = LoadBalancer::start(&https_config(&servers, Some(&certs.ca), "10s"));

    let mut client = Client::connect(lb.addr());
    let mut seen = Vec::new();
    for index in 0..6 {
        let (status, json) = get_json(&mut client, &format!("/turn/{index}"));
        assert_eq!(status, 200);
        assert_eq!(json["path"], format!("/turn/{index}"));
        let headers = json["headers"].as_array().unwrap();
        let proto: Vec<&serde_json::Value> = headers.iter().filter(|field| field[0] == "X-Forwarded-Proto").collect();
        assert_eq!(proto, [&serde_json::json!(["X-Forwarded-Proto", "http"])], "the client spoke plain HTTP");
        seen.push((json["server"].as_str().unwrap().to_string(), json["connection_requests"].as_u64().unwrap()));
    }
    // Whichever comes first, they take turns, each backend's three requests on one connection.
    let (a, b) = match seen[0].0 == first.name {
        true => (first.name.clone(), second.name.clone()),
        false => (second.name.clone(), first.name.clone()),
    };
    let expected = [(&a, 1), (&b, 1), (&a, 2), (&b, 2), (&a, 3), (&b, 3)];
    let expected: Vec<(String, u64)> = expected.iter().map(|(name, count)| (name.to_string(), *count)).collect();
    assert_eq!(seen, expected, "in turn, and the idle TLS connections reused");

    for url in [&first_url, &second_url] {
        let backend = backend_metrics(&lb, url);
        assert_eq!((backend["state"].as_str(), backend["total_requests"].as_u64()), (Some("healthy"), Some(3)));
        assert_eq!(backend["total_failures"], 0);
    }
}

#[test]
fn a_mebibyte_goes_to_an_https_backend_and_comes_back_byte_for_byte() {
    let certs = Certs::new();
    let backend = https_backend(&certs.leaf);
    let url = format!("https://127.0.0.1:{}", backend.port);
    let lb = LoadBalancer::start(&https_config(&[server(&url, None)], Some(&certs.ca), "10s"));

    // No period shorter than the body, so a chunk misplaced or sent twice shows.
    let body: Vec<u8> = (0..1u32 << 20).map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut client = Client::connect(lb.addr());
    let head = format!("POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\n\r\n", body.len());
    let response = common::exchange_concurrently(&mut client, head, &body);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-backend"), Some(backend.name.as_str()));
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the echo differs from what was sent");
}

#[test]
fn an_ip_address_url_is_verified_by_its_tls_server_name() {
    let certs = Certs::new();
    let backend = https_backend(&certs.localhost_only);
    let url = format!("https://127.0.0.1:{}", backend.port);

    let named = LoadBalancer::start(&https_config(&[server(&url, Some("localhost"))], Some(&certs.ca), "10s"));
    let (status, json) = get_json(&mut Client::connect(named.addr()), "/named");
    assert_eq!((status, json["server"].as_str()), (200, Some(backend.name.as_str())));

    // The same backend by its address alone: the certificate does not cover it.
    let unnamed = LoadBalancer::start(&https_config(&[server(&url, None)], Some(&certs.ca), "1m"));
    let response = unnamed.get("/unnamed");
    assert_eq!((response.status, response.text().as_str()), (502, "Bad Gateway: no backend could answer"));
    let reason = "TLS handshake failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
                  certificate is only valid for DnsName(\"localhost\")";
    unnamed.log.wait_for(&format!("cannot connect to {url}: {reason}"), Duration::from_secs(5));
}

#[test]
fn a_certificate_that_does_not_verify_gets_the_client_a_502_and_is_logged_with_the_reason() {
    let certs = Certs::new();
    let backend = https_backend(&certs.untrusted);
    let url = format!("https://127.0.0.1:{}", backend.port);
    // Checked once at start-up and then not for a minute: the one failed check leaves it up.
    let lb = LoadBalancer::start(&https_config(&[server(&url, None)], Some(&certs.ca), "1m"));

    let response = lb.get("/anything");
    assert_eq!((response.status, response.text().as_str()), (502, "Bad Gateway: no backend could answer"));
    let warning = format!("cannot connect to {url}: TLS handshake failed: invalid peer certificate: UnknownIssuer");
    lb.log.wait_for(&warning, Duration::from_secs(5));
    assert_eq!(lb.log.count_containing(&warning), 1, "one attempt, one warning: {:?}", lb.log.all());
    let metrics = backend_metrics(&lb, &url);
    assert_eq!((metrics["total_requests"].as_u64(), metrics["total_failures"].as_u64()), (Some(1), Some(1)));
}

#[test]
fn health_checks_go_over_tls_and_take_down_a_backend_whose_certificate_does_not_verify() {
    let certs = Certs::new();
    let (good, bad) = (https_backend(&certs.leaf), https_backend(&certs.untrusted));
    let (good_url, bad_url) = (format!("https://localhost:{}", good.port), format!("https://127.0.0.1:{}", bad.port));
    let servers = [server(&good_url, None), server(&bad_url, None)];
    let lb = LoadBalancer::start(&https_config(&servers, Some(&certs.ca), "1s"));

    // The check at start-up and the one a second later: unhealthyThreshold is 2.
    let down = format!(
        "backend {bad_url} is now unhealthy after 2 failed health checks \
         (connect: TLS handshake failed: invalid peer certificate: UnknownIssuer)"
    );
    lb.log.wait_for(&down, Duration::from_secs(10));
    assert_eq!(backend_metrics(&lb, &bad_url)["state"], "unhealthy");

    // Two more rounds later, the good one has been checked over TLS each time and is still up.
    let checked = backend_metrics(&lb, &good_url)["last_checked"].clone();
    wait_until(Duration::from_secs(10), "a later health round", || {
        backend_metrics(&lb, &good_url)["last_checked"] != checked
    });
    let good_metrics = backend_metrics(&lb, &good_url);
    assert_eq!(good_metrics["state"], "healthy");
    assert_eq!(backend_metrics(&lb, &bad_url)["state"], "unhealthy");
    assert_eq!(lb.log.count_containing(&format!("backend {good_url} is now unhealthy")), 0);

    // Every request goes to the good one, with no attempt on the bad one.
    let mut client = Client::connect(lb.addr());
    for index in 0..4 {
        let (status, json) = get_json(&mut client, &format!("/only/{index}"));
        assert_eq!((status, json["server"].as_str()), (200, Some(good.name.as_str())));
    }
    assert_eq!(backend_metrics(&lb, &bad_url)["total_requests"], 0);
}

#[test]
fn a_reload_gives_a_kept_https_backend_its_new_ca_file() {
    let certs = Certs::new();
    let backend = https_backend(&certs.leaf);
    let url = format!("https://127.0.0.1:{}", backend.port);
    let lb = LoadBalancer::start(&https_config(&[server(&url, None)], Some(&certs.other_ca), "1m"));
    assert_eq!(lb.get("/before").status, 502, "the wrong CA");
    lb.log.wait_for(&format!("cannot connect to {url}: TLS handshake failed"), Duration::from_secs(5));

    lb.rewrite_config(&https_config(&[server(&url, None)], Some(&certs.ca), "1m"));
    lb.log.wait_for("config reloaded", Duration::from_secs(10));
    assert_eq!(lb.log.count_containing("1 backends (0 added, 0 removed)"), 1, "kept: {:?}", lb.log.all());
    let response = lb.get("/after");
    assert_eq!((response.status, response.header("x-backend")), (200, Some(backend.name.as_str())));
    let metrics = backend_metrics(&lb, &url);
    assert_eq!((metrics["total_requests"].as_u64(), metrics["total_failures"].as_u64()), (Some(2), Some(1)));
}

#[test]
fn tls_mistakes_in_the_config_exit_2_with_one_line_naming_the_key() {
    let dir = TempDir::new();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!(r#""listenPort": "127.0.0.1:{port}""#);
    let missing = dir.0.join("missing-ca.pem").display().to_string();
    let cases = [
        (
            format!(r#"{{{listen}, "servers": [{{"url": "http://127.0.0.1:1", "tlsServerName": "localhost"}}]}}"#),
            "config.json: servers[0].tlsServerName: is only for https:// backends, \
             and \"http://127.0.0.1:1\" is spoken to in plain HTTP\n"
                .to_string(),
        ),
        (
            format!(r#"{{{listen}, "backendCaFile": "missing-ca.pem", "servers": ["https://127.0.0.1:1"]}}"#),
            format!("config.json: backendCaFile: {missing}: No such file or directory (os error 2)\n"),
        ),
        (
            format!(
                r#"{{{listen}, "servers": ["http://127.0.0.1:1"],
                    "pools": {{"api": {{"backendCaFile": "missing-ca.pem", "servers": ["https://127.0.0.1:2"]}}}}}}"#
            ),
            format!("config.json: pools.api.backendCaFile: {missing}: No such file or directory (os error 2)\n"),
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = common::run_to_exit(&dir, &text, &[]);
        assert_eq!((code, stderr.as_str()), (Some(2), expected.as_str()), "{text}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens");
    }
}

#[test]
fn check_says_what_https_servers_are_verified_by() {
    let certs = Certs::new();
    let ca = certs.ca.display().to_string();
    let config = format!(
        r#"{{"backendCaFile": {ca:?}, "servers": ["https://localhost:8443",
            {{"url": "https://127.0.0.1:9443", "tlsServerName": "app.internal"}}]}}"#
    );
    let path = certs.dir.write("config.json", &config);
    let output = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("LB_ALGORITHM")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("  https servers verified against backendCaFile {ca}\n")), "{stdout}");
    assert!(stdout.contains("    https://localhost:8443 (name b-"), "{stdout}");
    assert!(stdout.contains(", TLS name localhost) → "), "{stdout}");
    assert!(stdout.contains(", TLS name app.internal) → 127.0.0.1:9443\n"), "{stdout}");
}
