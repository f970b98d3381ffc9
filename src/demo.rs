//! `--demo`: echo backends started inside the load balancer's own process, one for each
//! configured server on this machine (of every pool), so that a newcomer sees balancing with a
//! single command; and, unless the config serves HTTPS itself, HTTPS beside the plain listener
//! (port 8443) with a self-signed certificate for `localhost` made at start-up
//! ([`crate::tls::selfsigned`]), for the demo only. Runs on `main` before the server starts; each
//! echo backend has its own threads.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::routes::{RouteAction, RouteConfig};
use crate::config::tls::{DEFAULT_TLS_HANDSHAKE_TIMEOUT, load_certificates};
use crate::config::{CertificateFiles, Config, TlsListenConfig};
use crate::echo::{self, EchoOptions};
use crate::status_page;

/// The config used by `--demo` when `./config.json` does not exist: the repository's own.
pub const BUILT_IN_CONFIG: &str = include_str!("../config.json");

/// Starts one echo backend per configured server address, in every pool. Every server must be on
/// a loopback address. Backends are named `backend-N` in a single pool, `POOL-N` with several
/// pools; a server listed in two pools is started once.
pub fn start_backends(config: &Config) -> io::Result<()> {
    let mut started = Vec::new();
    for pool in &config.pools {
        for (index, server) in pool.servers.iter().enumerate() {
            if started.contains(&server.url) {
                continue;
            }
            started.push(server.url.clone());
            let name = match config.pools.len() {
                1 => format!("backend-{}", index + 1),
                _ => format!("{}-{}", pool.name, index + 1),
            };
            start_backend(server, name)?;
        }
    }
    Ok(())
}

fn start_backend(server: &crate::config::ServerConfig, name: String) -> io::Result<()> {
    {
        if server.tls.is_some() {
            // Its certificate would have to verify against real roots: not a demo's business.
            return Err(io::Error::other(format!(
                "--demo starts plain HTTP backends, and {} is an https backend",
                server.url
            )));
        }
        let Some(addr) = server.addrs.iter().find(|addr| addr.ip().is_loopback()) else {
            return Err(io::Error::other(format!(
                "--demo starts backends on this machine only, and {} is not a loopback address",
                server.url
            )));
        };
        let listener = TcpListener::bind(addr).map_err(|error| {
            io::Error::new(error.kind(), format!("--demo cannot start a backend on {addr}: {error}"))
        })?;
        echo::spawn(listener, EchoOptions { name, latency: Duration::ZERO, fail: false, tls: None })?;
    }
    Ok(())
}

/// The demo's HTTPS port, beside the usual 8080.
pub const DEMO_HTTPS_PORT: u16 = 8443;

/// Where the demo writes its certificate: `loadbalancer-demo-UID` in the system's temporary
/// directory.
pub fn certificate_dir() -> PathBuf {
    std::env::temp_dir().join(format!("loadbalancer-demo-{}", rustix::process::getuid().as_raw()))
}

/// Serves HTTPS too, on the plain listener's host at [`DEMO_HTTPS_PORT`] (port 0 beside a plain
/// port 0), with a self-signed certificate for `localhost` made now and written to `dir`
/// ([`certificate_dir`]), which is returned. A config that serves HTTPS already, or has no plain
/// listener, is left as it is (`None`).
pub fn add_https(config: &mut Config, dir: &Path) -> io::Result<Option<PathBuf>> {
    let Some(listen) = config.listen.as_deref().filter(|_| config.tls.is_none()) else { return Ok(None) };
    let (host, port) = listen.rsplit_once(':').unwrap_or(("[::]", "8080"));
    let https_port = if port == "0" { 0 } else { DEMO_HTTPS_PORT };
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let made = crate::tls::selfsigned::localhost_certificate(SystemTime::now()).map_err(io::Error::other)?;
    let files = CertificateFiles { cert_file: dir.join("localhost.pem"), key_file: dir.join("localhost.key") };
    std::fs::write(&files.cert_file, &made.cert_pem)?;
    write_private(&files.key_file, made.key_pem.as_bytes())?;
    let loaded = load_certificates(std::slice::from_ref(&files)).map_err(|(_, problem)| io::Error::other(problem))?;
    config.tls = Some(TlsListenConfig {
        listen: format!("{host}:{https_port}"),
        certificates: vec![files],
        loaded,
        handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    });
    Ok(Some(dir))
}

/// Writes a key file readable by its owner alone.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents)
}

/// The most routes the instructions show an example request for.
const MAX_ROUTE_EXAMPLES: usize = 6;

/// A request that takes `route`, as a curl command, and what the route does with it.
fn route_example(route: &RouteConfig, port: u16) -> (String, String) {
    let host = route.matcher.hosts.first().map(|pattern| pattern.to_string().replace("*.", "www."));
    let target = match (&route.matcher.path, &route.matcher.path_prefix) {
        (Some(path), _) => path.clone(),
        (None, Some(prefix)) if prefix.ends_with('/') => format!("{prefix}index.html"),
        (None, Some(prefix)) => format!("{prefix}/users"),
        (None, None) => "/".to_string(),
    };
    let method = match route.matcher.methods.first() {
        Some(method) if method != "GET" => format!("-X {method} "),
        _ => String::new(),
    };
    let host_flag = host.map_or_else(String::new, |host| format!("-H 'Host: {host}' "));
    let what = match &route.action {
        RouteAction::Pool(pool) if route.strip_prefix => format!("route {}: pool {pool}, prefix stripped", route.name),
        RouteAction::Pool(pool) => format!("route {}: pool {pool}", route.name),
        RouteAction::Redirect { status, .. } => format!("route {}: a {status} redirect", route.name),
        RouteAction::Respond { status, .. } => format!("route {}: answered {status} by the load balancer", route.name),
    };
    (format!("curl -i {method}{host_flag}localhost:{port}{target}"), what)
}

/// What to try, printed once everything listens.
pub fn instructions(config: &Config, port: u16, https: Option<(u16, &Path)>) -> String {
    let backends: Vec<&str> = config.all_servers().map(|server| server.url.as_str()).collect();
    let algorithms: Vec<String> = match &config.pools[..] {
        [only] => vec![only.algorithm.name().to_string()],
        pools => pools.iter().map(|pool| format!("{} {}", pool.name, pool.algorithm.name())).collect(),
    };
    let mut examples = vec![
        (format!("curl localhost:{port}/ping"), "a few times: the backend rotates".to_string()),
        (format!("curl 'localhost:{port}/hello?x=1'"), "the request as the backend saw it".to_string()),
        (format!("curl localhost:{port}{}", config.metrics_path), "counters and backend health".to_string()),
        (format!("curl -d 'some data' localhost:{port}/echo"), "the body, streamed back".to_string()),
    ];
    if let Some((https_port, _)) = https {
        let command = format!("curl -k https://localhost:{https_port}/ping");
        examples.insert(1, (command, "the same, over HTTPS (-k: the certificate is self-signed)".to_string()));
    }
    examples.extend(config.routes.iter().take(MAX_ROUTE_EXAMPLES).map(|route| route_example(route, port)));
    let https_text = match https {
        Some((https_port, dir)) => format!(
            "HTTPS on https://localhost:{https_port}/ with a self-signed certificate for localhost, made at \
             start-up for this demo only and written to {}\n(curl --cacert {} trusts it instead of -k).\n\n",
            dir.display(),
            dir.join("localhost.pem").display()
        ),
        None => String::new(),
    };
    let width = examples.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    let try_lines: Vec<String> =
        examples.iter().map(|(command, what)| format!("  {command:<width$}  # {what}")).collect();
    format!(
        "\n\
         loadbalancer demo: {count} echo backends ({backends}) behind http://localhost:{port}/ ({algorithm})\n\
         \n\
         Try, in another terminal:\n\
         {try_lines}\n\
         \n\
         {https_text}\
         Open http://localhost:{port}{status_page} in a browser: a live status page.\n\
         \n\
         Press Ctrl-C to stop.\n",
        count = backends.len(),
        backends = backends.join(", "),
        algorithm = algorithms.join(", "),
        try_lines = try_lines.join("\n"),
        status_page = status_page::PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn a_routing_config_gets_a_request_for_each_route() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes.json")).unwrap();
        let config = Config::from_json(&text, "examples/routes.json", &Overrides::default()).unwrap();
        let text = instructions(&config, 8080, None);
        assert!(text.contains("5 echo backends"), "{text}");
        assert!(text.contains("default round_robin, api least_conn, static round_robin"), "{text}");
        assert!(text.contains("curl -i -H 'Host: api.localhost' localhost:8080/v1/users"), "{text}");
        assert!(text.contains("# route api: pool api, prefix stripped"), "{text}");
        assert!(text.contains("curl -i -H 'Host: www.localhost' localhost:8080/static/index.html"), "{text}");
        assert!(text.contains("curl -i localhost:8080/lb-ping"), "{text}");
        assert!(text.contains("# route old: a 308 redirect"), "{text}");
    }

    #[test]
    fn instructions_name_the_commands_and_the_status_page() {
        let config = Config::from_json(BUILT_IN_CONFIG, "config.json", &Overrides::default()).unwrap();
        let text = instructions(&config, 8080, None);
        assert!(text.contains("3 echo backends"), "{text}");
        assert!(text.contains("curl localhost:8080/lb-metrics"), "{text}");
        assert!(text.contains("Open http://localhost:8080/lb-status in a browser"), "{text}");
        assert!(!text.contains("https"), "{text}");
    }

    #[test]
    fn the_demo_serves_https_with_a_certificate_it_made_and_says_where_it_is() {
        let mut config = Config::from_json(BUILT_IN_CONFIG, "config.json", &Overrides::default()).unwrap();
        let scratch = std::env::temp_dir().join(format!("lb-demo-test-{}", std::process::id()));
        let dir = add_https(&mut config, &scratch).unwrap().expect("the built-in config serves no HTTPS of its own");
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.listen, format!("[::]:{DEMO_HTTPS_PORT}"), "beside the plain :8080");
        assert_eq!(tls.loaded[0].names, ["localhost"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("localhost.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is its owner's alone");
        let text = instructions(&config, 8080, Some((8443, &dir)));
        assert!(text.contains("curl -k https://localhost:8443/ping"), "{text}");
        assert!(text.contains(&format!("written to {}", dir.display())), "{text}");
        assert!(text.contains("for this demo only"), "{text}");
        assert_eq!(add_https(&mut config, &scratch).unwrap(), None, "a config that serves HTTPS keeps its own");
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
