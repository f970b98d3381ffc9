//! Backend servers in the config: the `servers` list of a pool, each a URL or an object with a
//! weight, a name, a backup flag and (for `https://`) a `tlsServerName`, its host looked up once
//! as the config is read. Runs on the thread that loads the config.

use std::net::SocketAddr;

use serde_json::Value;

use super::backend_tls::{CaFile, ClientConfigs, ServerTls};
use super::reader::{Reader, integer_in, kind_of};
use super::{ConfigError, DEFAULT_WEIGHT, MAX_WEIGHT};
use crate::resolve::{overlap, resolve_all};

/// The keys a server object may have.
const SERVER_KEYS: [&str; 5] = ["url", "weight", "name", "backup", "tlsServerName"];

/// One backend: its URL as written, where it resolves to, and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Normalised `http://host:port` or `https://host:port`, used in logs and metrics.
    pub url: String,
    /// The `name` given, else one derived from the URL (`b-` and 8 hex digits): what the sticky
    /// cookie holds and what the hashing algorithms know the backend by.
    pub name: String,
    /// The `Host` header value for health probes.
    pub host_header: String,
    /// The host as written in the URL (an IPv6 literal in brackets), looked up again each
    /// health-check round.
    pub host: String,
    pub port: u16,
    /// Every address the host resolved to when the config was read; connects try them in order.
    /// Empty if it did not resolve.
    pub addrs: Vec<SocketAddr>,
    /// Why the host did not resolve, if it did not.
    pub resolve_error: Option<String>,
    pub weight: u32,
    /// Gets traffic only while no other server of the pool is available.
    pub backup: bool,
    /// For an `https://` URL, how it is spoken to: the name its certificate is verified by and
    /// the pool's client configuration. `None` for `http://`.
    pub tls: Option<ServerTls>,
}

impl Reader<'_> {
    /// The pool's `servers`; its `https://` ones verified against `ca_file` (the system's roots
    /// when `None`), with a client configuration from `clients`.
    pub(super) fn servers(
        &self,
        ca_file: Option<&CaFile>,
        clients: &mut ClientConfigs,
    ) -> Result<Vec<ServerConfig>, ConfigError> {
        let list = match self.object.get("servers") {
            None => {
                return Err(
                    self.error("servers", "is required: list at least one backend, e.g. [\"http://127.0.0.1:3001\"]")
                );
            }
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(self.error("servers", "must list at least one backend"));
            }
            Some(Value::Array(list)) => list,
            Some(other) => return Err(self.error("servers", format!("must be a list, got {}", kind_of(other)))),
        };
        let mut parsed = Vec::with_capacity(list.len());
        for (index, entry) in list.iter().enumerate() {
            parsed.push(self.server(&format!("servers[{index}]"), entry, ca_file, clients)?);
        }
        if parsed.iter().all(|server| server.backup) {
            return Err(self.error("servers", "needs at least one server that is not a backup"));
        }
        let targets: Vec<(String, u16)> = parsed.iter().map(|server| (server.host.clone(), server.port)).collect();
        let mut servers: Vec<ServerConfig> = Vec::with_capacity(list.len());
        for ((index, mut server), resolved) in parsed.into_iter().enumerate().zip(resolve_all(&targets)) {
            let key = format!("servers[{index}]");
            match resolved {
                Ok(addrs) => server.addrs = addrs,
                Err(reason) => server.resolve_error = Some(reason),
            }
            if let Some(earlier) = servers.iter().position(|seen| seen.url == server.url) {
                return Err(self.error(&key, format!("{} is listed twice (also servers[{earlier}])", server.url)));
            }
            // Two names for one backend would give it both weights. Names that do not resolve
            // have no addresses, and cannot be compared.
            if let Some(earlier) = servers.iter().position(|seen| overlap(&seen.addrs, &server.addrs)) {
                return Err(self.error(
                    &key,
                    format!("{} is the same backend as servers[{earlier}] ({})", server.url, servers[earlier].url),
                ));
            }
            if let Some(earlier) = servers.iter().position(|seen| seen.name == server.name) {
                return Err(self.error(&key, format!("the name {:?} is taken by servers[{earlier}]", server.name)));
            }
            servers.push(server);
        }
        Ok(servers)
    }

    /// One entry of `servers`, its host not yet looked up.
    fn server(
        &self,
        key: &str,
        entry: &Value,
        ca_file: Option<&CaFile>,
        clients: &mut ClientConfigs,
    ) -> Result<ServerConfig, ConfigError> {
        let (url, weight, name, backup, tls_server_name) = match entry {
            Value::String(url) => (url.as_str(), DEFAULT_WEIGHT, None, false, None),
            Value::Object(fields) => {
                for field in fields.keys() {
                    if !SERVER_KEYS.contains(&field.as_str()) {
                        return Err(self.error(
                            &format!("{key}.{field}"),
                            format!("unknown key (valid keys: {})", SERVER_KEYS.join(", ")),
                        ));
                    }
                }
                let url = match fields.get("url") {
                    Some(Value::String(url)) => url.as_str(),
                    Some(other) => {
                        return Err(
                            self.error(&format!("{key}.url"), format!("must be a string, got {}", kind_of(other)))
                        );
                    }
                    None => return Err(self.error(&format!("{key}.url"), "is required")),
                };
                let weight = match fields.get("weight") {
                    None => DEFAULT_WEIGHT,
                    Some(value) => integer_in(value, 1, u64::from(MAX_WEIGHT))
                        .map_err(|problem| self.error(&format!("{key}.weight"), problem))?
                        as u32,
                };
                let name = match fields.get("name") {
                    None => None,
                    Some(Value::String(name)) if is_backend_name(name) => Some(name.clone()),
                    Some(other) => {
                        return Err(self.error(
                            &format!("{key}.name"),
                            format!("must be 1 to 64 letters, digits, '.', '_' or '-', got {other}"),
                        ));
                    }
                };
                let backup = match fields.get("backup") {
                    None => false,
                    Some(Value::Bool(backup)) => *backup,
                    Some(other) => {
                        return Err(self.error(
                            &format!("{key}.backup"),
                            format!("must be true or false, got {}", kind_of(other)),
                        ));
                    }
                };
                let tls_server_name = match fields.get("tlsServerName") {
                    None => None,
                    Some(Value::String(name)) => Some(name.as_str()),
                    Some(other) => {
                        return Err(self.error(
                            &format!("{key}.tlsServerName"),
                            format!("must be a string, got {}", kind_of(other)),
                        ));
                    }
                };
                (url, weight, name, backup, tls_server_name)
            }
            other => {
                return Err(self.error(
                    key,
                    format!(
                        "must be a URL string or {{\"url\": ..., \"weight\": N, \"name\": ..., \"backup\": ...}}, got {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        let url_key = if entry.is_string() { key.to_string() } else { format!("{key}.url") };
        let (host, port) = parse_backend_url(url).map_err(|problem| self.error(&url_key, problem))?;
        // parse_backend_url took nothing but these two schemes.
        let https = url.starts_with("https://");
        let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
        let tls = match (https, tls_server_name) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(self.error(
                    &format!("{key}.tlsServerName"),
                    format!("is only for https:// backends, and {url:?} is spoken to in plain HTTP"),
                ));
            }
            (true, _) => {
                let verified_name =
                    crate::tls::verified_name(&host, tls_server_name).map_err(|problem| match tls_server_name {
                        Some(_) => self.error(&format!("{key}.tlsServerName"), problem),
                        None => self.error(
                            &url_key,
                            format!("{problem}: give the name its certificate holds in tlsServerName"),
                        ),
                    })?;
                let client = clients.get(ca_file).map_err(|problem| match ca_file {
                    Some(ca_file) => self.error_at(&ca_file.key, problem),
                    // The system's roots were wanted for this server: name it.
                    None => self.error(
                        key,
                        format!(
                            "an https backend verified against the system's roots, which cannot be read: {problem}"
                        ),
                    ),
                })?;
                Some(ServerTls { verified_name, client })
            }
        };
        let host_header = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let url = format!("{scheme}://{host}:{port}");
        let name = name.unwrap_or_else(|| format!("b-{:08x}", crate::balance::hash::fnv1a(url.as_bytes()) as u32));
        Ok(ServerConfig {
            url,
            name,
            host_header,
            host,
            port,
            addrs: Vec::new(),
            resolve_error: None,
            weight,
            backup,
            tls,
        })
    }
}

/// A backend name, safe in a cookie value and a log line.
fn is_backend_name(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

/// `"http://host:port"` or `"https://host:port"` → `(host, port)`; without a port, 80 for
/// `http` and 443 for `https`.
pub fn parse_backend_url(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, 80),
        (None, Some(rest)) => (rest, 443),
        (None, None) => {
            return Err(format!(
                "{url:?} is not a URL like \"http://127.0.0.1:3001\" or \"https://app.internal:8443\""
            ));
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) || authority.contains(char::is_whitespace) {
        return Err(format!("{url:?} must be only scheme, host and port, like \"http://127.0.0.1:3001\""));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            let port: u16 = port.parse().map_err(|_| format!("{url:?} has an invalid port"))?;
            (host, port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() || port == 0 {
        return Err(format!("{url:?} needs a host and a port from 1 to 65535"));
    }
    Ok((host.to_string(), port))
}
