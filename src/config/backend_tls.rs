//! TLS towards `https://` backends, as the config gives it: `backendCaFile` (top level, or per
//! pool), a server's `tlsServerName`, and the rustls client configuration a pool's https servers
//! are connected with. Runs on the thread that loads the config (`main` at start-up,
//! `config-watcher` or `admin` on a reload).
//!
//! The client configuration is built here, when the config is read, so that a CA file that cannot
//! be used is a config error naming its key, and no request ever reads a file. It is built only
//! for a pool with an `https://` server: a host without a system root bundle, and no https
//! backend, starts as it always did. Pools verifying against the same roots (the same
//! `backendCaFile`, or the system's) share one configuration, and with it one cache of sessions
//! to resume.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;

use super::reader::Reader;
use super::{ConfigError, Source};
use crate::tls::{Roots, client_config};

/// A `backendCaFile`: the file, and the key that named it (`backendCaFile` at the top level,
/// `pools.api.backendCaFile` in a pool), for an error that a pool inheriting it may raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub key: String,
}

/// How one `https://` server is spoken to.
#[derive(Clone)]
pub struct ServerTls {
    /// What its certificate must cover, and the SNI sent when it is a DNS name: `tlsServerName`
    /// when given, else the URL's host.
    pub verified_name: ServerName<'static>,
    /// The pool's client configuration: the roots it is verified against.
    pub client: Arc<ClientConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("verified_name", &self.verified_name).finish_non_exhaustive()
    }
}

/// The same name, verified against the same configuration (not merely equal roots: two loads
/// of one file are two configurations).
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.verified_name == other.verified_name && Arc::ptr_eq(&self.client, &other.client)
    }
}

/// The client configurations built so far in one config load, by their roots (`None`: the
/// system's).
#[derive(Default)]
pub(super) struct ClientConfigs {
    built: Vec<(Option<PathBuf>, Arc<ClientConfig>)>,
}

impl ClientConfigs {
    /// The configuration trusting `ca_file` (the system's roots when `None`), built on first use.
    /// An error is the problem, naming the file.
    pub(super) fn get(&mut self, ca_file: Option<&CaFile>) -> Result<Arc<ClientConfig>, String> {
        let path = ca_file.map(|ca_file| ca_file.path.clone());
        if let Some((_, client)) = self.built.iter().find(|(roots, _)| *roots == path) {
            return Ok(Arc::clone(client));
        }
        let client = match &path {
            // The message starts "backendCaFile PATH: ", and the key already says backendCaFile.
            Some(path) => client_config(Roots::CaFile(path))
                .map_err(|problem| problem.strip_prefix("backendCaFile ").map_or(problem.clone(), str::to_owned))?,
            None => client_config(Roots::System)?,
        };
        self.built.push((path, Arc::clone(&client)));
        Ok(client)
    }
}

impl Reader<'_> {
    /// `backendCaFile` in this object, a path taken from the config file's directory when
    /// relative (as the certificates' are); `None` if the object does not name one. The file is
    /// read only if a pool has an https server to verify.
    pub(super) fn backend_ca_file(&self) -> Result<Option<CaFile>, ConfigError> {
        match self.object.get("backendCaFile") {
            None => Ok(None),
            Some(Value::String(path)) if !path.is_empty() => {
                Ok(Some(CaFile { path: self.config_dir().join(path), key: format!("{}backendCaFile", self.prefix) }))
            }
            Some(other) => Err(self.error("backendCaFile", format!("must be a file path, got {other}"))),
        }
    }

    /// The directory relative paths in the config are taken from: the config file's.
    pub(super) fn config_dir(&self) -> PathBuf {
        match &self.file {
            Source::File(path) => Path::new(path).parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => PathBuf::new(),
        }
    }

    /// An error naming `key` in full, whatever object this reader walks.
    pub(super) fn error_at(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError { source: self.file.clone(), key: key.to_string(), problem: problem.into() }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::{Config, Overrides};

    /// A directory of its own, holding a config file's neighbours; removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static MADE: AtomicUsize = AtomicUsize::new(0);
            let serial = MADE.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("lb-backend-tls-{}-{serial}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes a CA certificate, made now, as `name`.
        fn ca(&self, name: &str) -> PathBuf {
            let made = rcgen::generate_simple_self_signed(vec!["test CA".to_string()]).unwrap();
            let path = self.0.join(name);
            std::fs::write(&path, made.cert.pem()).unwrap();
            path
        }

        /// Loads `text` as the file `config.json` in this directory.
        fn load(&self, text: &str) -> Result<Config, ConfigError> {
            Config::from_json(text, &self.0.join("config.json").display().to_string(), &Overrides::default())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_string()).unwrap()
    }

    #[test]
    fn https_servers_are_verified_by_host_or_tls_server_name_against_the_pool_ca_file() {
        let dir = TempDir::new();
        let (shared_ca, own_ca) = (dir.ca("shared.pem"), dir.ca("own.pem"));
        let config = dir
            .load(&format!(
                r#"{{"backendCaFile": "shared.pem",
                     "servers": ["https://localhost:8443", "https://127.0.0.1",
                                 {{"url": "https://127.0.0.2:9443", "tlsServerName": "app.internal"}},
                                 "http://127.0.0.1:3001"],
                     "pools": {{"inherits": {{"servers": ["https://127.0.0.1:4443"]}},
                                "own": {{"backendCaFile": {own_ca:?}, "servers": ["https://127.0.0.1:5443"]}}}}}}"#
            ))
            .unwrap();
        let default = config.pool("default").unwrap();
        assert_eq!(default.backend_ca_file, Some(CaFile { path: shared_ca.clone(), key: "backendCaFile".into() }));
        let servers = &default.servers;
        let urls: Vec<&str> = servers.iter().map(|server| server.url.as_str()).collect();
        assert_eq!(
            urls,
            ["https://localhost:8443", "https://127.0.0.1:443", "https://127.0.0.2:9443", "http://127.0.0.1:3001"]
        );
        let hosts: Vec<&str> = servers.iter().map(|server| server.host_header.as_str()).collect();
        assert_eq!(hosts, ["localhost:8443", "127.0.0.1", "127.0.0.2:9443", "127.0.0.1:3001"], "443 is https's own");
        let names: Vec<Option<ServerName>> =
            servers.iter().map(|server| server.tls.as_ref().map(|tls| tls.verified_name.clone())).collect();
        assert_eq!(
            names,
            [Some(dns("localhost")), Some(verify_ip("127.0.0.1")), Some(dns("app.internal")), None],
            "the host, else tlsServerName; none for http"
        );

        // One configuration per set of roots, shared by the pools that trust it.
        let client = |pool: &str, index: usize| {
            Arc::clone(&config.pool(pool).unwrap().servers[index].tls.as_ref().unwrap().client)
        };
        assert!(Arc::ptr_eq(&client("default", 0), &client("default", 2)));
        assert!(Arc::ptr_eq(&client("default", 0), &client("inherits", 0)), "inherited, and shared");
        assert!(!Arc::ptr_eq(&client("default", 0), &client("own", 0)));
        let own = config.pool("own").unwrap().backend_ca_file.clone().unwrap();
        assert_eq!(own, CaFile { path: own_ca, key: "pools.own.backendCaFile".into() });
        assert_eq!(client("own", 0).alpn_protocols, [b"http/1.1".to_vec()]);
    }

    fn verify_ip(address: &str) -> ServerName<'static> {
        crate::tls::verified_name(address, None).unwrap()
    }

    #[test]
    fn a_ca_file_is_read_only_for_a_pool_with_an_https_server() {
        let dir = TempDir::new();
        let config = dir
            .load(
                r#"{"backendCaFile": "missing.pem", "servers": ["http://127.0.0.1:3001"],
                      "pools": {"plain": {"servers": ["http://127.0.0.1:3002"]}}}"#,
            )
            .unwrap();
        assert!(config.all_servers().all(|server| server.tls.is_none()));
    }

    #[test]
    fn mistakes_are_errors_naming_the_key() {
        let dir = TempDir::new();
        let missing = dir.0.join("missing.pem");
        let not_pem = dir.0.join("config.json.bak");
        std::fs::write(&not_pem, "no certificate here").unwrap();
        let cases = [
            (
                r#"{"servers": [{"url": "http://127.0.0.1:3001", "tlsServerName": "localhost"}]}"#.to_string(),
                "servers[0].tlsServerName",
                r#"is only for https:// backends, and "http://127.0.0.1:3001" is spoken to in plain HTTP"#.to_string(),
            ),
            (
                r#"{"servers": [{"url": "https://127.0.0.1:3001", "tlsServerName": "bad name!"}]}"#.to_string(),
                "servers[0].tlsServerName",
                r#""bad name!" (the TLS server name) is neither a valid DNS name nor an IP address"#.to_string(),
            ),
            (
                r#"{"servers": [{"url": "https://127.0.0.1:3001", "tlsServerName": 7}]}"#.to_string(),
                "servers[0].tlsServerName",
                "must be a string, got a number".to_string(),
            ),
            (
                r#"{"servers": ["https://bad..host:3001"]}"#.to_string(),
                "servers[0]",
                r#""bad..host" (the host) is neither a valid DNS name nor an IP address: give the name its certificate holds in tlsServerName"#
                    .to_string(),
            ),
            (
                r#"{"backendCaFile": "missing.pem", "servers": ["https://127.0.0.1:3001"]}"#.to_string(),
                "backendCaFile",
                format!("{}: No such file or directory (os error 2)", missing.display()),
            ),
            (
                r#"{"servers": ["http://127.0.0.1:3001"],
                    "pools": {"api": {"backendCaFile": "config.json.bak", "servers": ["https://127.0.0.1:4001"]}}}"#
                    .to_string(),
                "pools.api.backendCaFile",
                format!("{}: no CERTIFICATE block", not_pem.display()),
            ),
            (
                // Inherited: the key that named the file is the top level's.
                r#"{"backendCaFile": "missing.pem", "servers": ["http://127.0.0.1:3001"],
                    "pools": {"api": {"servers": ["https://127.0.0.1:4001"]}}}"#
                    .to_string(),
                "backendCaFile",
                format!("{}: No such file or directory (os error 2)", missing.display()),
            ),
            (
                r#"{"backendCaFile": "", "servers": ["https://127.0.0.1:3001"]}"#.to_string(),
                "backendCaFile",
                r#"must be a file path, got """#.to_string(),
            ),
            (
                r#"{"pools": {"api": {"backendCaFile": true, "servers": ["https://127.0.0.1:4001"]}}}"#.to_string(),
                "pools.api.backendCaFile",
                "must be a file path, got true".to_string(),
            ),
        ];
        for (text, key, problem) in cases {
            let error = dir.load(&text).unwrap_err();
            assert_eq!((error.key.as_str(), error.problem.as_str()), (key, problem.as_str()), "{text}");
        }
    }
}
