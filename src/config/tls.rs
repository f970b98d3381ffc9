//! The HTTPS listener's settings: `tlsListen`, `certificates`, `tlsHandshakeTimeout` and
//! `redirectToHttps`. Runs on the thread that loads the config (`main`, or `config-watcher` on a
//! reload).
//!
//! Each `certificates` entry is loaded here, so that a bad certificate or key file is a config
//! error naming the entry, the file and the problem, at start-up or on a reload, rather than a
//! handshake that fails later. A relative path is taken from the config file's directory, so a
//! config and its certificates can move together.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::reader::{Reader, kind_of};
use super::{ConfigError, parse_listen};
use crate::tls::LoadedCert;
use crate::tls::certs;

pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One `certificates` entry: where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsListenConfig {
    /// Address to bind, as `HOST:PORT` (as `listen`).
    pub listen: String,
    pub certificates: Vec<CertificateFiles>,
    /// The certificates as read when the config was: the first is served to a client that asks
    /// for no name, or for one no certificate covers.
    pub loaded: Vec<LoadedCert>,
    /// How long a client has from its connection to its finished handshake.
    pub handshake_timeout: Duration,
}

impl TlsListenConfig {
    /// The TLS port, for `redirectToHttps`'s `Location`.
    pub fn port(&self) -> u16 {
        self.listen.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or(443)
    }
}

/// Loads every entry of `files`; the error names the entry's index and the problem.
pub fn load_certificates(files: &[CertificateFiles]) -> Result<Vec<LoadedCert>, (usize, String)> {
    let provider = crate::tls::config::provider();
    files
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            certs::load(&entry.cert_file, &entry.key_file, &provider).map_err(|error| (index, error.to_string()))
        })
        .collect()
}

impl Reader<'_> {
    /// `tlsListen` and what goes with it; `None` without `tlsListen`. `certificates` and
    /// `tlsHandshakeTimeout` without `tlsListen` are errors, so that a config never looks as if it
    /// served HTTPS when it does not.
    pub(super) fn tls_listen(&self) -> Result<Option<TlsListenConfig>, ConfigError> {
        let Some(text) = self.string("tlsListen")? else {
            for key in ["certificates", "tlsHandshakeTimeout"] {
                if self.object.contains_key(key) {
                    return Err(self.error(key, "needs tlsListen (the address to serve HTTPS on)"));
                }
            }
            return Ok(None);
        };
        let listen = parse_listen(&text).map_err(|problem| self.error("tlsListen", problem))?;
        let certificates = self.certificate_files()?;
        let loaded = load_certificates(&certificates)
            .map_err(|(index, problem)| self.error(&format!("certificates[{index}]"), problem))?;
        let handshake_timeout = self.duration("tlsHandshakeTimeout", DEFAULT_TLS_HANDSHAKE_TIMEOUT, false)?;
        Ok(Some(TlsListenConfig { listen, certificates, loaded, handshake_timeout }))
    }

    fn certificate_files(&self) -> Result<Vec<CertificateFiles>, ConfigError> {
        let entries = match self.object.get("certificates") {
            None => return Err(self.error("certificates", "is required with tlsListen")),
            Some(Value::Array(entries)) if entries.is_empty() => {
                return Err(self.error("certificates", "must list at least one {\"certFile\", \"keyFile\"}"));
            }
            Some(Value::Array(entries)) => entries,
            Some(other) => return Err(self.error("certificates", format!("must be a list, got {}", kind_of(other)))),
        };
        let base = self.config_dir();
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let key = format!("certificates[{index}]");
                let Value::Object(fields) = entry else {
                    return Err(self.error(&key, format!("must be an object, got {}", kind_of(entry))));
                };
                let file = |name: &str| match fields.get(name) {
                    Some(Value::String(path)) if !path.is_empty() => Ok(base.join(path)),
                    Some(other) => {
                        Err(self.error(&format!("{key}.{name}"), format!("must be a file path, got {other}")))
                    }
                    None => Err(self.error(&format!("{key}.{name}"), "is required")),
                };
                if let Some(unknown) = fields.keys().find(|name| !["certFile", "keyFile"].contains(&name.as_str())) {
                    return Err(self.error(&format!("{key}.{unknown}"), "unknown key (valid keys: certFile, keyFile)"));
                }
                Ok(CertificateFiles { cert_file: file("certFile")?, key_file: file("keyFile")? })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use std::time::{Duration, SystemTime};

    #[test]
    fn tls_alone_needs_no_plain_listener_and_paths_are_taken_from_the_config_file() {
        let dir = std::env::temp_dir().join(format!("lb-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let made = crate::tls::selfsigned::localhost_certificate(SystemTime::now()).unwrap();
        std::fs::write(dir.join("certs/site.pem"), &made.cert_pem).unwrap();
        std::fs::write(dir.join("certs/site.key"), &made.key_pem).unwrap();
        let text = r#"{"tlsListen": "127.0.0.1:8443", "tlsHandshakeTimeout": "3s",
            "certificates": [{"certFile": "certs/site.pem", "keyFile": "certs/site.key"}],
            "servers": ["http://127.0.0.1:1"]}"#;
        let file = dir.join("config.json");
        let config = Config::from_json(text, &file.display().to_string(), &Overrides::default()).unwrap();
        assert_eq!(config.listen, None, "no listenPort: HTTPS only");
        let tls = config.tls.unwrap();
        assert_eq!((tls.listen.as_str(), tls.port()), ("127.0.0.1:8443", 8443));
        assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
        assert_eq!(tls.certificates[0].cert_file, dir.join("certs/site.pem"));
        assert_eq!(tls.loaded[0].names, ["localhost"]);
        assert!(!config.redirect_to_https);

        let both = r#"{"listenPort": ":8080", "tlsListen": ":8443", "redirectToHttps": true,
            "certificates": [{"certFile": "certs/site.pem", "keyFile": "certs/site.key"}],
            "servers": ["http://127.0.0.1:1"]}"#;
        let config = Config::from_json(both, &file.display().to_string(), &Overrides::default()).unwrap();
        assert_eq!(config.listen.as_deref(), Some("[::]:8080"));
        assert!(config.redirect_to_https);
        assert_eq!(config.tls.unwrap().handshake_timeout, super::DEFAULT_TLS_HANDSHAKE_TIMEOUT);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
