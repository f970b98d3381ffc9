//! `echo-backend`: the bundled test backend as a command-line program.
//!
//! Parses the flags, loads the certificate when serving HTTPS, binds the listener, prints one
//! `echo-backend NAME listening on HOST:PORT` line on stdout and serves forever with
//! [`loadbalancer::echo::serve`].

use std::io::Write;
use std::net::{TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use loadbalancer::duration::parse_duration;
use loadbalancer::echo::{EchoOptions, serve};
use loadbalancer::tls::{TlsServer, certs};

const USAGE: &str = "\
echo-backend: a small HTTP/1.1 backend for trying out and testing the load balancer

USAGE:
    echo-backend [--port N] [--host ADDR] [--name NAME] [--latency DURATION] [--fail]
                 [--tls-cert FILE --tls-key FILE]

OPTIONS:
    --port N              port to listen on, 0 for any free port (default 3001)
    --host ADDR           address to listen on (default 127.0.0.1)
    --name NAME           name reported in X-Backend and JSON answers (default backend-PORT)
    --latency DURATION    delay every answer except /health, e.g. 50ms, 2s (default 0s)
    --fail                close every connection without answering, except /health
    --tls-cert FILE       serve HTTPS only, with this PEM certificate chain (leaf first; it
                          must name a DNS name); needs --tls-key
    --tls-key FILE        the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1)
    --help                print this help

ENDPOINTS:
    GET /health       200 ok
    GET /ping         pong from backend :PORT
    POST /echo        the request body, streamed back
    GET /status/N     an answer with status N (200..=599)
    GET /bytes/N      N bytes, byte i being i % 251
    GET /ws           WebSocket upgrade; echoes each message
    anything else     a JSON description of the request
";

#[derive(Debug)]
struct Args {
    port: u16,
    host: String,
    name: Option<String>,
    latency: Duration,
    fail: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Parses the command line; `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        port: 3001,
        host: "127.0.0.1".to_string(),
        name: None,
        latency: Duration::ZERO,
        fail: false,
        tls_cert: None,
        tls_key: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?} (see --help)"));
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag, None),
        };
        let mut value = |flag: &str| -> Result<String, String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => args.next().ok_or_else(|| format!("--{flag} needs a value (see --help)")),
            }
        };
        match flag {
            "port" => {
                let text = value(flag)?;
                parsed.port =
                    text.trim().parse().map_err(|_| format!("--port must be a number in 0..=65535, got {text:?}"))?;
            }
            "host" => {
                let text = value(flag)?;
                if text.trim().is_empty() {
                    return Err("--host must not be empty".to_string());
                }
                parsed.host = text.trim().to_string();
            }
            "name" => {
                let text = value(flag)?;
                if text.is_empty() || text.chars().any(char::is_control) {
                    return Err(format!("--name must be non-empty text without control characters, got {text:?}"));
                }
                parsed.name = Some(text);
            }
            "latency" => {
                let text = value(flag)?;
                parsed.latency = parse_duration(&text).map_err(|error| format!("--latency {error}"))?;
            }
            "tls-cert" | "tls-key" => {
                let text = value(flag)?;
                if text.is_empty() {
                    return Err(format!("--{flag} needs a file"));
                }
                let path = Some(PathBuf::from(text));
                if flag == "tls-cert" { parsed.tls_cert = path } else { parsed.tls_key = path }
            }
            "fail" | "help" | "h" if inline.is_some() => {
                return Err(format!("--{flag} takes no value"));
            }
            "fail" => parsed.fail = true,
            "help" | "h" => return Ok(None),
            _ => return Err(format!("unknown flag {arg:?} (see --help)")),
        }
    }
    match (&parsed.tls_cert, &parsed.tls_key) {
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_string()),
        _ => {}
    }
    Ok(Some(parsed))
}

/// The HTTPS configuration serving the certificate in `cert_file` with the key in `key_file`.
fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = certs::load(cert_file, key_file, &loadbalancer::tls::config::provider())
        .map_err(|error| format!("--tls-cert/--tls-key: {error}"))?;
    let server = TlsServer::new(vec![cert]).map_err(|error| format!("the TLS configuration: {error}"))?;
    Ok(server.config())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("echo-backend: {message}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert_file), Some(key_file)) => match tls_config(cert_file, key_file) {
            Ok(config) => Some(config),
            Err(message) => {
                eprintln!("echo-backend: {message}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let addresses: Vec<_> = match (args.host.as_str(), args.port).to_socket_addrs() {
        Ok(addresses) => addresses.collect(),
        Err(error) => {
            eprintln!("echo-backend: --host {:?} cannot be resolved: {error}", args.host);
            return ExitCode::from(2);
        }
    };
    if addresses.is_empty() {
        eprintln!("echo-backend: --host {:?} resolves to no address", args.host);
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(&addresses[..]) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("echo-backend: cannot listen on {}:{}: {error}", args.host, args.port);
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            eprintln!("echo-backend: cannot read the bound address: {error}");
            return ExitCode::FAILURE;
        }
    };
    let name = args.name.unwrap_or_else(|| format!("backend-{}", local.port()));
    println!("echo-backend {name} listening on {local}");
    let _ = std::io::stdout().flush();
    serve(listener, EchoOptions { name, latency: args.latency, fail: args.fail, tls });
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!(args.port, 3001);
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.name, None);
        assert_eq!(args.latency, Duration::ZERO);
        assert!(!args.fail);
        assert_eq!((args.tls_cert, args.tls_key), (None, None));
    }

    #[test]
    fn spellings() {
        let args = parse(&["-port", "5001", "--name=a", "-fail", "--latency", "50ms"]).unwrap().unwrap();
        assert_eq!(args.port, 5001);
        assert_eq!(args.name.as_deref(), Some("a"));
        assert!(args.fail);
        assert_eq!(args.latency, Duration::from_millis(50));
        assert_eq!(parse(&["--port=0"]).unwrap().unwrap().port, 0);
        assert!(parse(&["--help"]).unwrap().is_none());
        let tls = parse(&["--tls-cert", "leaf.pem", "--tls-key=key.pem"]).unwrap().unwrap();
        assert_eq!(tls.tls_cert.as_deref(), Some(Path::new("leaf.pem")));
        assert_eq!(tls.tls_key.as_deref(), Some(Path::new("key.pem")));
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, flag) in [
            (&["--port", "x"][..], "--port"),
            (&["--port", "70000"], "--port"),
            (&["--port"], "--port"),
            (&["--latency", "5"], "--latency"),
            (&["--fail=yes"], "--fail"),
            (&["--bogus"], "--bogus"),
            (&["stray"], "stray"),
            (&["--tls-cert", "leaf.pem"], "--tls-key"),
            (&["--tls-key", "key.pem"], "--tls-cert"),
            (&["--tls-cert"], "--tls-cert"),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }
}
