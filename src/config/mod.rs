//! The configuration: `config.json` and its overrides, checked once, in two stages.
//!
//! Stage one reads the file as a JSON value; stage two walks it key by key and builds a [`Config`]
//! whose every field is valid (weights ≥ 1, durations parsed, backend host names looked up).
//! Runtime code only ever sees a `Config`. A backend name that does not resolve is not an error
//! here: that backend starts down, and the health checks look it up again every round. Every refusal is one [`ConfigError`] naming where the value came
//! from (the file, a flag or an environment variable), the key, and the problem, so a user can fix
//! it without reading source code.
//!
//! Precedence, highest first: command-line flag, environment variable, file, default.
//!
//! The folder: this file holds [`Config`] and the top-level keys; `reader.rs` the primitives every
//! key is read with; `pool.rs` the pools and their inherited settings; `servers.rs` a pool's
//! backends; `routes.rs` the routes; `tls.rs` the HTTPS listener and its certificates; `backend_tls.rs`
//! TLS towards `https://` backends; `statuses.rs` `healthCheckStatus`; `cidr.rs` address blocks;
//! `file.rs` the file a reload rereads. All of it runs on the thread that loads the config.

pub mod backend_tls;
mod cidr;
pub mod file;
pub mod pool;
mod reader;
pub mod routes;
mod servers;
pub mod statuses;
pub mod tls;

pub use backend_tls::{CaFile, ServerTls};
pub use cidr::Cidr;
pub use reader::parse_size;
use reader::{Reader, flag_error, integer_in, is_token, kind_of};
pub use servers::{ServerConfig, parse_backend_url};
pub use tls::{CertificateFiles, TlsListenConfig};

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::access_log::AccessLogFormat;
use crate::balance::maglev;
use crate::balance::{Algorithm, BalanceSettings, HashKey};
use crate::duration::parse_duration;
use crate::ejection::PassiveHealthSettings;
use crate::min_rate::MinRate;
use pool::{DEFAULT_POOL, PoolConfig};
use routes::{RouteConfig, read_routes};
use statuses::HealthyStatuses;

pub const DEFAULT_LISTEN: &str = ":8080";
/// Requests in progress at once (see README, "Pool size"): no worker waits on a client, so this
/// bounds the requests waiting on backends.
pub const DEFAULT_WORKERS: usize = 256;
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/health";
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_MAX_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(50);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_METRICS_PATH: &str = "/lb-metrics";
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 1000;
pub const MAX_WORKERS: usize = 4096;
pub const MAX_RETRIES_LIMIT: u32 = 16;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The largest request head `maxHeaderBytes` may allow.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1 << 20;
/// The most header fields `maxHeaders` may allow (the parser's field table has this many slots).
pub const MAX_HEADERS_LIMIT: usize = 256;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 256;
/// Bytes the watcher may hold for clients still sending their requests, by default.
pub const DEFAULT_MAX_WAITING_BYTES: usize = 16 << 20;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The most `rateLimit.maxClients` may be (about 500 MiB of buckets).
pub const MAX_RATE_LIMITED_CLIENTS: u64 = 10_000_000;

/// The keys a config file may contain, in the order the README lists them.
const KNOWN_KEYS: [&str; 50] = [
    "listenPort",
    "tlsListen",
    "certificates",
    "tlsHandshakeTimeout",
    "redirectToHttps",
    "algorithm",
    "hashKey",
    "stickyCookie",
    "slowStart",
    "maglevTableSize",
    "workers",
    "healthCheckInterval",
    "healthCheckPath",
    "healthCheckTimeout",
    "healthCheckStatus",
    "healthyThreshold",
    "unhealthyThreshold",
    "passiveHealth",
    "failOpen",
    "maxRetries",
    "retryDelay",
    "requestTimeout",
    "rateLimit",
    "metricsPath",
    "accessLog",
    "servers",
    "allBackups",
    "maxHeaderBytes",
    "maxUriBytes",
    "maxHeaders",
    "maxBodyBytes",
    "maxConnections",
    "maxConnectionsPerClient",
    "maxWaitingBytes",
    "headerReadTimeout",
    "idleTimeout",
    "bodyReadTimeout",
    "connectTimeout",
    "backendCaFile",
    "writeTimeout",
    "tunnelIdleTimeout",
    "minRequestBodyRate",
    "minResponseRate",
    "trustedProxies",
    "adminListen",
    "pairThreads",
    "reloadInterval",
    "pools",
    "routes",
    "defaultPool",
];

/// A validated configuration. Every field holds a usable value.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind for plain HTTP, as `HOST:PORT` (`[::]:8080` for `":8080"`: every
    /// interface, IPv6 and IPv4 both, see [`crate::server::bind_listener`]). `None` when only
    /// HTTPS is served (`tlsListen` without `listenPort`).
    pub listen: Option<String>,
    /// The HTTPS listener, with `tlsListen`.
    pub tls: Option<TlsListenConfig>,
    /// Whether the plain listener answers `308` to the `https://` URL (its own endpoints excepted).
    pub redirect_to_https: bool,
    pub workers: usize,
    /// Every pool: `default` (the top-level `servers`) first when there is one, then `pools` by name.
    pub pools: Vec<PoolConfig>,
    /// The content-switching rules, tried in order ([`crate::routing`]).
    pub routes: Vec<RouteConfig>,
    /// The pool that takes a request no route matched, as an index into `pools`.
    pub default_pool: Option<usize>,
    pub rate_limit: Option<RateLimitSettings>,
    pub metrics_path: String,
    /// How each request is logged: a text line, a JSON line, or not at all.
    pub access_log: AccessLogFormat,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// The floors under a client's transfer rates.
    pub min_rates: MinRates,
    /// Peers whose `X-Forwarded-For` is believed (see [`crate::client_ip`]).
    pub trusted_proxies: Vec<Cidr>,
    /// Where the metrics are served instead of the main listener, as `HOST:PORT`.
    pub admin_listen: Option<String>,
    /// Where each request's forward and reverse threads come from.
    pub pair_threads: PairThreads,
    /// How often the config file is checked for changes; zero for never.
    pub reload_interval: Duration,
}

impl Config {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// Every server of every pool, pool by pool.
    pub fn all_servers(&self) -> impl Iterator<Item = &ServerConfig> {
        self.pools.iter().flat_map(|pool| &pool.servers)
    }
}

/// Bounds on what clients may send and how many may connect; each has its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (431).
    pub max_header_bytes: usize,
    /// Longest request target (414).
    pub max_uri_bytes: usize,
    /// Most header fields (431).
    pub max_headers: usize,
    /// Largest request body, if limited (413).
    pub max_body_bytes: Option<u64>,
    /// Most client connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Most connections open at once from one peer address (`None`: no cap); more are answered
    /// 503 and closed. Peers in `trustedProxies` are exempt.
    pub max_connections_per_client: Option<u32>,
    /// Most bytes the watcher holds, all together, for clients still sending a request.
    pub max_waiting_bytes: usize,
}

/// `minRequestBodyRate` and `minResponseRate` (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRates {
    pub request_body: Option<MinRate>,
    pub response: Option<MinRate>,
}

impl Default for MinRates {
    fn default() -> Self {
        MinRates { request_body: Some(MinRate::DEFAULT), response: Some(MinRate::DEFAULT) }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: Some(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
            max_waiting_bytes: DEFAULT_MAX_WAITING_BYTES,
        }
    }
}

/// How long each wait may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request's first byte (or a new connection) to its complete head (408).
    pub header_read: Duration,
    /// A kept-alive connection idle between requests (closed silently).
    pub idle: Duration,
    /// A pause within a request body (408 if nothing was answered yet).
    pub body_read: Duration,
    /// A write to a client that stopped reading (the connection is dropped).
    pub write: Duration,
    /// An upgraded connection (WebSocket) with no traffic either way (closed).
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            body_read: DEFAULT_BODY_READ_TIMEOUT,
            write: DEFAULT_WRITE_TIMEOUT,
            tunnel_idle: DEFAULT_TUNNEL_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub path: String,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// The statuses that count as healthy (`healthCheckStatus`).
    pub statuses: HealthyStatuses,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSettings {
    pub requests_per_second: f64,
    pub burst: f64,
    /// Most clients tracked at once (`rateLimit.maxClients`); past it, new clients get 429.
    pub max_clients: usize,
}

/// Where a setting came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(String),
    Flag(&'static str),
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => f.write_str(path),
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(name) => f.write_str(name),
        }
    }
}

/// A value given outside the file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub value: String,
    pub source: Source,
}

/// Settings that beat the file: from flags or the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub algorithm: Option<Override>,
    pub listen: Option<Override>,
}

/// Why a configuration was refused: `file: key: problem`, or `--flag: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Source,
    /// The key path inside the file (`servers[1].weight`); empty for flags, env and whole-file errors.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.key.is_empty()) {
            (Source::File(_), false) => write!(f, "{}: {}: {}", self.source, self.key, self.problem),
            _ => write!(f, "{}: {}", self.source, self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`, then applies `overrides`.
    pub fn load(path: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            source: Source::File(path.to_string()),
            key: String::new(),
            problem: format!("cannot read file: {error}"),
        })?;
        Config::from_json(&text, path, overrides)
    }

    /// Validates `text`, the contents of the file called `file_name`, then applies `overrides`.
    pub fn from_json(text: &str, file_name: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = Source::File(file_name.to_string());
        let root: Value = serde_json::from_str(text).map_err(|error| ConfigError {
            source: file.clone(),
            key: String::new(),
            problem: format!("invalid JSON: {error}"),
        })?;
        let Value::Object(object) = root else {
            return Err(ConfigError { source: file, key: String::new(), problem: "must be a JSON object".to_string() });
        };
        Reader { file, object: &object, prefix: String::new() }.read(overrides)
    }
}

impl Reader<'_> {
    fn read(&self, overrides: &Overrides) -> Result<Config, ConfigError> {
        for key in self.object.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                return Err(self.error(key, format!("unknown key (valid keys: {})", KNOWN_KEYS.join(", "))));
            }
        }
        let tls = self.tls_listen()?;
        let listen = match &overrides.listen {
            Some(given) => Some(parse_listen(&given.value).map_err(|problem| flag_error(&given.source, problem))?),
            None => match self.string("listenPort")? {
                Some(text) => Some(parse_listen(&text).map_err(|problem| self.error("listenPort", problem))?),
                // Only HTTPS is wanted.
                None if tls.is_some() => None,
                None => Some(parse_listen(DEFAULT_LISTEN).expect("the default listen address is valid")),
            },
        };
        let redirect_to_https = self.boolean("redirectToHttps")?.unwrap_or(false);
        if redirect_to_https && tls.is_none() {
            return Err(self.error("redirectToHttps", "needs tlsListen (the HTTPS listener to send clients to)"));
        }
        if redirect_to_https && listen.is_none() {
            return Err(self.error("redirectToHttps", "needs listenPort (the plain listener that redirects)"));
        }
        let algorithm = match &overrides.algorithm {
            Some(given) => {
                Some(Algorithm::from_name(&given.value).map_err(|problem| flag_error(&given.source, problem))?)
            }
            None => None,
        };
        let top = self.pool_settings(DEFAULT_POOL, &PoolConfig::builtin(DEFAULT_POOL), algorithm)?;
        let pools = self.pools(top)?;
        let default_pool = match self.string("defaultPool")? {
            Some(name) => match pools.iter().position(|pool| pool.name == name) {
                Some(index) => Some(index),
                None => {
                    let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
                    return Err(
                        self.error("defaultPool", format!("unknown pool {name:?} (pools: {})", names.join(", ")))
                    );
                }
            },
            None => pools.iter().position(|pool| pool.name == DEFAULT_POOL),
        };
        let pool_names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
        let routes = match self.object.get("routes") {
            None => Vec::new(),
            Some(value) => read_routes(value, &pool_names).map_err(|error| self.error(&error.key, error.problem))?,
        };
        let workers = self.integer("workers", 1, MAX_WORKERS as u64)?.map_or(DEFAULT_WORKERS, |n| n as usize);
        Ok(Config {
            listen,
            tls,
            redirect_to_https,
            workers,
            pools,
            routes,
            default_pool,
            rate_limit: self.rate_limit()?,
            metrics_path: self.path("metricsPath", DEFAULT_METRICS_PATH)?,
            access_log: match self.string("accessLog")? {
                Some(name) => AccessLogFormat::from_name(&name).map_err(|problem| self.error("accessLog", problem))?,
                None => AccessLogFormat::Text,
            },
            limits: self.limits()?,
            timeouts: Timeouts {
                header_read: self.duration("headerReadTimeout", DEFAULT_HEADER_READ_TIMEOUT, false)?,
                idle: self.duration("idleTimeout", DEFAULT_IDLE_TIMEOUT, false)?,
                body_read: self.duration("bodyReadTimeout", DEFAULT_BODY_READ_TIMEOUT, false)?,
                write: self.duration("writeTimeout", DEFAULT_WRITE_TIMEOUT, false)?,
                tunnel_idle: self.duration("tunnelIdleTimeout", DEFAULT_TUNNEL_IDLE_TIMEOUT, false)?,
            },
            min_rates: MinRates {
                request_body: self.min_rate("minRequestBodyRate")?,
                response: self.min_rate("minResponseRate")?,
            },
            trusted_proxies: self.trusted_proxies()?,
            admin_listen: match self.string("adminListen")? {
                Some(text) => Some(parse_listen(&text).map_err(|problem| self.error("adminListen", problem))?),
                None => None,
            },
            pair_threads: match self.string("pairThreads")? {
                Some(name) => PairThreads::from_name(&name).map_err(|problem| self.error("pairThreads", problem))?,
                None => PairThreads::Spawn,
            },
            reload_interval: self.duration("reloadInterval", DEFAULT_RELOAD_INTERVAL, true)?,
        })
    }

    /// The algorithms' settings this object names, the rest from `inherited`.
    fn balancing(&self, inherited: &BalanceSettings) -> Result<BalanceSettings, ConfigError> {
        let hash_key = match self.string("hashKey")? {
            Some(text) => HashKey::parse(&text).map_err(|problem| self.error("hashKey", problem))?,
            None => inherited.hash_key.clone(),
        };
        let sticky_cookie = match self.string("stickyCookie")? {
            Some(name) if is_token(&name) => Some(name),
            Some(name) => {
                return Err(self.error(
                    "stickyCookie",
                    format!("must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {name:?}"),
                ));
            }
            None => inherited.sticky_cookie.clone(),
        };
        let maglev_table_size = match self.integer("maglevTableSize", 3, 1 << 24)? {
            Some(size) if !maglev::is_prime(size) => {
                return Err(
                    self.error("maglevTableSize", format!("must be a prime number (such as 65537), got {size}"))
                );
            }
            Some(size) => size as usize,
            None => inherited.maglev_table_size,
        };
        Ok(BalanceSettings {
            hash_key,
            sticky_cookie,
            slow_start: self.duration("slowStart", inherited.slow_start, true)?,
            maglev_table_size,
        })
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let max_header_bytes = self
            .size("maxHeaderBytes", 1024, MAX_HEADER_BYTES_LIMIT as u64)?
            .map_or(DEFAULT_MAX_HEADER_BYTES, |n| n as usize);
        let max_uri_bytes = match self.size("maxUriBytes", 16, 1 << 20)? {
            Some(bytes) if bytes as usize > max_header_bytes => {
                return Err(
                    self.error("maxUriBytes", format!("must not be more than maxHeaderBytes ({max_header_bytes})"))
                );
            }
            Some(bytes) => bytes as usize,
            // The default shrinks to fit a smaller head.
            None => DEFAULT_MAX_URI_BYTES.min(max_header_bytes),
        };
        Ok(Limits {
            max_header_bytes,
            max_uri_bytes,
            max_headers: self
                .integer("maxHeaders", 1, MAX_HEADERS_LIMIT as u64)?
                .map_or(DEFAULT_MAX_HEADERS, |n| n as usize),
            max_body_bytes: self.size("maxBodyBytes", 0, u64::MAX)?,
            max_connections: self
                .integer("maxConnections", 1, 1_000_000)?
                .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            max_connections_per_client: match self.integer("maxConnectionsPerClient", 0, 1_000_000)? {
                None => Some(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
                Some(0) => None,
                Some(cap) => Some(cap as u32),
            },
            max_waiting_bytes: self
                .size("maxWaitingBytes", 64 * 1024, 1 << 40)?
                .map_or(DEFAULT_MAX_WAITING_BYTES, |n| n as usize),
        })
    }

    /// A floor under a transfer rate: `{"bytesPerSecond": 500, "grace": "20s"}` (either key may
    /// be left out for its default), or `false` for none.
    fn min_rate(&self, key: &str) -> Result<Option<MinRate>, ConfigError> {
        let defaults = MinRate::DEFAULT;
        let fields = match self.object.get(key) {
            None => return Ok(Some(defaults)),
            Some(Value::Bool(false)) => return Ok(None),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                return Err(self.error(
                    key,
                    format!(
                        "must be an object like {{\"bytesPerSecond\": 500, \"grace\": \"20s\"}}, or false, got {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        for name in fields.keys() {
            if !["bytesPerSecond", "grace"].contains(&name.as_str()) {
                return Err(self.error(&format!("{key}.{name}"), "unknown key (valid keys: bytesPerSecond, grace)"));
            }
        }
        let bytes_per_second = match fields.get("bytesPerSecond") {
            None => defaults.bytes_per_second,
            Some(value) => integer_in(value, 1, 1 << 40)
                .map_err(|problem| self.error(&format!("{key}.bytesPerSecond"), problem))?,
        };
        let grace = match fields.get("grace") {
            None => defaults.grace,
            Some(Value::String(text)) => {
                parse_duration(text).map_err(|problem| self.error(&format!("{key}.grace"), problem))?
            }
            Some(other) => {
                return Err(self.error(
                    &format!("{key}.grace"),
                    format!("must be a duration such as \"20s\", got {}", kind_of(other)),
                ));
            }
        };
        Ok(Some(MinRate { bytes_per_second, grace }))
    }

    /// Passive health settings this object names, the rest from `inherited`.
    fn passive_health(&self, inherited: &PassiveHealthSettings) -> Result<PassiveHealthSettings, ConfigError> {
        let defaults = *inherited;
        let Some(value) = self.object.get("passiveHealth") else {
            return Ok(defaults);
        };
        let Value::Object(fields) = value else {
            return Err(self.error(
                "passiveHealth",
                format!(
                    "must be an object like {{\"failures\": 5, \"cooldown\": \"30s\", \"maxEjectedPercent\": 50}}, got {}",
                    kind_of(value)
                ),
            ));
        };
        const KEYS: [&str; 3] = ["failures", "cooldown", "maxEjectedPercent"];
        for key in fields.keys() {
            if !KEYS.contains(&key.as_str()) {
                return Err(self
                    .error(&format!("passiveHealth.{key}"), format!("unknown key (valid keys: {})", KEYS.join(", "))));
            }
        }
        let whole = |key: &str, min: u64, max: u64, default: u32| -> Result<u32, ConfigError> {
            match fields.get(key) {
                None => Ok(default),
                Some(value) => integer_in(value, min, max)
                    .map(|number| number as u32)
                    .map_err(|problem| self.error(&format!("passiveHealth.{key}"), problem)),
            }
        };
        let cooldown = match fields.get("cooldown") {
            None => defaults.cooldown,
            Some(Value::String(text)) => match parse_duration(text) {
                Ok(duration) if !duration.is_zero() => duration,
                Ok(_) => return Err(self.error("passiveHealth.cooldown", "must be longer than 0s")),
                Err(problem) => return Err(self.error("passiveHealth.cooldown", problem)),
            },
            Some(other) => {
                return Err(self.error("passiveHealth.cooldown", format!("must be a string, got {}", kind_of(other))));
            }
        };
        Ok(PassiveHealthSettings {
            failures: whole("failures", 1, 1000, defaults.failures)?,
            cooldown,
            max_ejected_percent: whole("maxEjectedPercent", 0, 100, defaults.max_ejected_percent)?,
        })
    }

    fn rate_limit(&self) -> Result<Option<RateLimitSettings>, ConfigError> {
        let Some(value) = self.object.get("rateLimit") else {
            return Ok(None);
        };
        let Value::Object(fields) = value else {
            return Err(self.error(
                "rateLimit",
                format!("must be an object like {{\"requestsPerSecond\": 10, \"burst\": 20}}, got {}", kind_of(value)),
            ));
        };
        for key in fields.keys() {
            if !["requestsPerSecond", "burst", "maxClients"].contains(&key.as_str()) {
                return Err(self.error(
                    &format!("rateLimit.{key}"),
                    "unknown key (valid keys: requestsPerSecond, burst, maxClients)",
                ));
            }
        }
        let positive = |key: &str| -> Result<Option<f64>, ConfigError> {
            match fields.get(key) {
                None => Ok(None),
                Some(Value::Number(number)) if number.as_f64().is_some_and(|n| n > 0.0 && n.is_finite()) => {
                    Ok(number.as_f64())
                }
                Some(other) => {
                    Err(self.error(&format!("rateLimit.{key}"), format!("must be a number above 0, got {other}")))
                }
            }
        };
        let Some(requests_per_second) = positive("requestsPerSecond")? else {
            return Err(self.error("rateLimit.requestsPerSecond", "is required when rateLimit is set"));
        };
        let burst = positive("burst")?.unwrap_or(requests_per_second.ceil());
        if burst < 1.0 {
            return Err(self.error("rateLimit.burst", "must be at least 1"));
        }
        let max_clients = match fields.get("maxClients") {
            None => crate::ratelimit::DEFAULT_MAX_CLIENTS,
            Some(value) => integer_in(value, 1, MAX_RATE_LIMITED_CLIENTS)
                .map_err(|problem| self.error("rateLimit.maxClients", problem))? as usize,
        };
        Ok(Some(RateLimitSettings { requests_per_second, burst, max_clients }))
    }
}

/// `":8080"` → `[::]:8080` (every interface, IPv6 and IPv4 both); `"127.0.0.1:8080"`,
/// `"[::1]:8080"` and `"localhost:8080"` kept.
pub fn parse_listen(text: &str) -> Result<String, String> {
    let invalid = || format!("must be \":PORT\" or \"HOST:PORT\", got {text:?}");
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.is_empty() {
        return Ok(format!("[::]:{port}"));
    }
    if host.contains(char::is_whitespace) || (host.contains(':') && !host.starts_with('[')) {
        return Err(invalid());
    }
    Ok(format!("{host}:{port}"))
}

/// How pair threads are provided, from the `pairThreads` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairThreads {
    Spawn,
    Pooled,
}

impl PairThreads {
    pub const ALL: [PairThreads; 2] = [PairThreads::Spawn, PairThreads::Pooled];

    pub fn name(self) -> &'static str {
        match self {
            PairThreads::Spawn => "spawn",
            PairThreads::Pooled => "pooled",
        }
    }

    pub fn from_name(name: &str) -> Result<PairThreads, String> {
        PairThreads::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("must be \"spawn\" or \"pooled\", got {name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::fnv1a;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_json(text, "config.json", &Overrides::default()).map_err(|error| error.to_string())
    }

    #[test]
    fn pools_inherit_what_they_do_not_name() {
        let config = load(
            r#"{"algorithm": "least_conn", "maxRetries": 1, "healthCheckPath": "/up",
                "passiveHealth": {"failures": 7}, "connectTimeout": "2s",
                "servers": ["http://127.0.0.1:3001"],
                "pools": {"api": {"maxRetries": 3, "algorithm": "maglev", "passiveHealth": {"cooldown": "9s"},
                                  "servers": ["http://127.0.0.1:4001", "http://127.0.0.1:3001"]},
                          "static": {"servers": ["http://127.0.0.1:5001"], "failOpen": true}}}"#,
        )
        .unwrap();
        let names: Vec<&str> = config.pools.iter().map(|pool| pool.name.as_str()).collect();
        assert_eq!(names, ["default", "api", "static"]);
        assert_eq!(config.default_pool, Some(0), "the top-level servers are the default pool");
        let (top, api, assets) = (&config.pools[0], config.pool("api").unwrap(), config.pool("static").unwrap());
        assert_eq!((top.algorithm, top.max_retries), (Algorithm::LeastConn, 1));
        assert_eq!((api.algorithm, api.max_retries), (Algorithm::Maglev, 3));
        assert_eq!((assets.algorithm, assets.max_retries, assets.fail_open), (Algorithm::LeastConn, 1, true));
        assert_eq!((api.health.path.as_str(), assets.connect_timeout), ("/up", Duration::from_secs(2)));
        assert_eq!((api.passive_health.failures, api.passive_health.cooldown), (7, Duration::from_secs(9)));
        assert_eq!(api.servers.len(), 2, "a server may be in two pools");
        assert_eq!(config.all_servers().count(), 4);
    }

    #[test]
    fn pools_without_top_level_servers_and_the_default_pool() {
        let config = load(r#"{"pools": {"a": {"servers": ["http://127.0.0.1:1"]}}}"#).unwrap();
        assert_eq!((config.pools.len(), config.default_pool), (1, None), "no default: unmatched requests get 404");
        let config = load(
            r#"{"defaultPool": "b", "servers": ["http://127.0.0.1:1"],
                "pools": {"b": {"servers": ["http://127.0.0.1:2"]}}}"#,
        )
        .unwrap();
        assert_eq!(config.default_pool, Some(1));
        let overridden = Config::from_json(
            r#"{"servers": ["http://127.0.0.1:1"],
                "pools": {"own": {"algorithm": "p2c", "servers": ["http://127.0.0.1:2"]},
                          "inherits": {"servers": ["http://127.0.0.1:3"]}}}"#,
            "config.json",
            &Overrides {
                algorithm: Some(Override { value: "random".into(), source: Source::Flag("--algorithm") }),
                ..Overrides::default()
            },
        )
        .unwrap();
        let algorithms: Vec<Algorithm> = overridden.pools.iter().map(|pool| pool.algorithm).collect();
        assert_eq!(algorithms, [Algorithm::Random, Algorithm::Random, Algorithm::P2c], "default, inherits, own");
    }

    #[test]
    fn pool_mistakes_name_the_key() {
        let cases = [
            (r#"{"pools": {}}"#, "servers: is required"),
            (r#"{"pools": []}"#, "pools: must be an object of named pools"),
            (
                r#"{"servers": ["http://127.0.0.1:1"], "pools": {"default": {"servers": ["http://127.0.0.1:2"]}}}"#,
                "pools.default: the top-level servers are pool \"default\"",
            ),
            (r#"{"pools": {"a b": {"servers": ["http://127.0.0.1:2"]}}}"#, "pools.a b: a pool name is 1 to 64"),
            (r#"{"pools": {"a": ["http://127.0.0.1:2"]}}"#, "pools.a: must be an object with \"servers\""),
            (r#"{"pools": {"a": {}}}"#, "pools.a.servers: is required"),
            (r#"{"pools": {"a": {"servers": ["ftp://x"]}}}"#, "pools.a.servers[0]:"),
            (
                r#"{"pools": {"a": {"servers": ["http://127.0.0.1:2"], "workers": 4}}}"#,
                "pools.a.workers: unknown key for a pool",
            ),
            (r#"{"pools": {"a": {"servers": ["http://127.0.0.1:2"], "maxRetries": 99}}}"#, "pools.a.maxRetries:"),
            (r#"{"pools": {"a": {"servers": ["http://127.0.0.1:2"], "algorithm": "fastest"}}}"#, "pools.a.algorithm:"),
            (
                r#"{"pools": {"a": {"servers": ["http://127.0.0.1:2"], "passiveHealth": {"x": 1}}}}"#,
                "pools.a.passiveHealth.x:",
            ),
            (
                r#"{"defaultPool": "b", "pools": {"a": {"servers": ["http://127.0.0.1:2"]}}}"#,
                "defaultPool: unknown pool \"b\" (pools: a)",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn seed_style_file_loads_with_defaults() {
        let config = load(
            r#"{"listenPort": ":8080", "healthCheckInterval": "5s",
                "servers": ["http://localhost:5001", "http://127.0.0.1:5002"]}"#,
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("[::]:8080"));
        assert_eq!(config.pools[0].algorithm, Algorithm::RoundRobin);
        assert_eq!(config.workers, DEFAULT_WORKERS);
        assert_eq!(config.pools[0].health.interval, Duration::from_secs(5));
        assert_eq!(config.pools[0].health.timeout, DEFAULT_HEALTH_CHECK_TIMEOUT);
        assert_eq!(config.pools[0].health.path, "/health");
        assert_eq!((config.pools[0].health.healthy_threshold, config.pools[0].health.unhealthy_threshold), (2, 2));
        assert_eq!(config.pools[0].max_retries, 2);
        assert_eq!(config.pools[0].retry_delay, Duration::from_millis(50));
        assert_eq!(config.pools[0].request_timeout, Duration::from_secs(10));
        assert_eq!(config.rate_limit, None);
        assert_eq!(config.metrics_path, "/lb-metrics");
        assert_eq!(config.access_log, AccessLogFormat::Text);
        assert_eq!(config.pools[0].servers.len(), 2);
        assert_eq!(config.pools[0].servers[0].url, "http://localhost:5001");
        assert_eq!(config.pools[0].servers[0].host_header, "localhost:5001");
        assert!(!config.pools[0].servers[0].addrs.is_empty());
        assert_eq!(config.pools[0].servers[1].weight, 1);
        let other_ports =
            load(r#"{"servers": ["http://localhost:5001", "http://127.0.0.1:5002", "http://[::1]:5003"]}"#);
        assert_eq!(
            other_ports.map(|config| config.pools[0].servers.len()),
            Ok(3),
            "one host, other ports: other backends"
        );
    }

    #[test]
    fn backup_servers_and_all_backups_are_read() {
        let config = load(
            r#"{"allBackups": true, "servers": ["http://127.0.0.1:1", {"url": "http://127.0.0.1:2", "backup": true}]}"#,
        )
        .unwrap();
        assert!(config.pools[0].all_backups);
        assert_eq!((config.pools[0].servers[0].backup, config.pools[0].servers[1].backup), (false, true));
        assert!(!load(r#"{"servers": ["http://127.0.0.1:1"]}"#).unwrap().pools[0].all_backups);
    }

    #[test]
    fn every_key_is_read() {
        let config = load(
            r#"{"listenPort": "127.0.0.1:9000", "algorithm": "weighted_round_robin", "workers": 8,
                "healthCheckInterval": "1s", "healthCheckPath": "/up", "healthCheckTimeout": "500ms",
                "healthyThreshold": 3, "unhealthyThreshold": 4, "maxRetries": 1, "retryDelay": "0ms",
                "requestTimeout": "2s", "rateLimit": {"requestsPerSecond": 5, "burst": 10},
                "metricsPath": "/stats", "accessLog": "json",
                "servers": [{"url": "http://127.0.0.1:3001", "weight": 3}, "http://127.0.0.1:3002/"]}"#,
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(config.pools[0].algorithm, Algorithm::WeightedRoundRobin);
        assert_eq!(config.workers, 8);
        assert_eq!(
            config.pools[0].health,
            HealthSettings {
                interval: Duration::from_secs(1),
                path: "/up".into(),
                timeout: Duration::from_millis(500),
                healthy_threshold: 3,
                unhealthy_threshold: 4,
                statuses: HealthyStatuses::default(),
            }
        );
        let strict = load(r#"{"healthCheckStatus": "2xx-3xx", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert!(strict.pools[0].health.statuses.contains(302) && !strict.pools[0].health.statuses.contains(404));
        assert_eq!(config.pools[0].max_retries, 1);
        assert_eq!(config.pools[0].retry_delay, Duration::ZERO);
        assert_eq!(config.pools[0].request_timeout, Duration::from_secs(2));
        assert_eq!(
            config.rate_limit,
            Some(RateLimitSettings { requests_per_second: 5.0, burst: 10.0, max_clients: 100_000 })
        );
        let bounded =
            load(r#"{"rateLimit": {"requestsPerSecond": 1, "maxClients": 50}, "servers": ["http://127.0.0.1:1"]}"#)
                .unwrap();
        assert_eq!(
            bounded.rate_limit,
            Some(RateLimitSettings { requests_per_second: 1.0, burst: 1.0, max_clients: 50 })
        );
        assert_eq!(config.metrics_path, "/stats");
        assert_eq!(config.access_log, AccessLogFormat::Json);
        assert_eq!(config.pools[0].servers[0].weight, 3);
        assert_eq!(config.pools[0].servers[1].url, "http://127.0.0.1:3002");
    }

    #[test]
    fn balancing_keys_and_backend_names() {
        let config = load(
            r#"{"algorithm": "maglev", "hashKey": "header:X-User", "stickyCookie": "lb", "slowStart": "30s",
                "maglevTableSize": 251,
                "servers": [{"url": "http://127.0.0.1:3001", "name": "web-1"}, "http://127.0.0.1:3002"]}"#,
        )
        .unwrap();
        assert_eq!(
            config.pools[0].balancing,
            BalanceSettings {
                hash_key: HashKey::Header("x-user".to_string()),
                sticky_cookie: Some("lb".to_string()),
                slow_start: Duration::from_secs(30),
                maglev_table_size: 251,
            }
        );
        assert_eq!(config.pools[0].servers[0].name, "web-1");
        // A name derived from the URL alone: the same in every instance, whatever the list order.
        assert_eq!(config.pools[0].servers[1].name, format!("b-{:08x}", fnv1a(b"http://127.0.0.1:3002") as u32));
        let defaults = load(r#"{"servers": ["http://127.0.0.1:3001"]}"#).unwrap();
        assert_eq!(defaults.pools[0].balancing, BalanceSettings::default());
        assert_eq!(defaults.pools[0].passive_health, PassiveHealthSettings::default());
        assert!(!defaults.pools[0].fail_open);
        assert_eq!(defaults.reload_interval, DEFAULT_RELOAD_INTERVAL);
        let operating = load(
            r#"{"failOpen": true, "reloadInterval": "0s", "passiveHealth": {"failures": 3, "cooldown": "1m",
                "maxEjectedPercent": 0}, "servers": ["http://127.0.0.1:3001"]}"#,
        )
        .unwrap();
        assert!(operating.pools[0].fail_open);
        assert_eq!(operating.reload_interval, Duration::ZERO);
        assert_eq!(
            operating.pools[0].passive_health,
            PassiveHealthSettings { failures: 3, cooldown: Duration::from_secs(60), max_ejected_percent: 0 }
        );
    }

    #[test]
    fn each_error_names_the_file_the_key_and_the_problem() {
        let cases = [
            ("{", "config.json: invalid JSON: EOF while parsing an object at line 1 column 1"),
            ("[]", "config.json: must be a JSON object"),
            ("{}", "config.json: servers: is required"),
            (r#"{"servers": []}"#, "config.json: servers: must list at least one backend"),
            (r#"{"servers": "http://a"}"#, "config.json: servers: must be a list, got a string"),
            (
                r#"{"colour": 1, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: colour: unknown key (valid keys: listenPort,",
            ),
            (
                r#"{"algorithm": "fastest", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: algorithm: unknown algorithm \"fastest\" (valid: round_robin, weighted_round_robin, least_conn, ip_hash, least_time, url_hash, sticky, maglev, p2c, random)",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:1", {"url": "http://127.0.0.1:2", "weight": 0}]}"#,
                "config.json: servers[1].weight: must be at least 1",
            ),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:2", "weight": 1.5}]}"#,
                "config.json: servers[0].weight: must be a whole number, got 1.5",
            ),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:2", "weight": 5000}]}"#,
                "config.json: servers[0].weight: must be at most 1000",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:1", {"url": "http://127.0.0.1:2", "backup": "yes"}]}"#,
                "config.json: servers[1].backup: must be true or false, got a string",
            ),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:2", "backup": true}]}"#,
                "config.json: servers: needs at least one server that is not a backup",
            ),
            (r#"{"servers": [{"weight": 2}]}"#, "config.json: servers[0].url: is required"),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:2", "wieght": 2}]}"#,
                "config.json: servers[0].wieght: unknown key",
            ),
            (r#"{"servers": ["localhost:3001"]}"#, "config.json: servers[0]: \"localhost:3001\" is not a URL"),
            (
                r#"{"servers": ["ftp://127.0.0.1:3001"]}"#,
                "config.json: servers[0]: \"ftp://127.0.0.1:3001\" is not a URL like \"http://127.0.0.1:3001\"",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:99999"]}"#,
                "config.json: servers[0]: \"http://127.0.0.1:99999\" has an invalid port",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:3001/api"]}"#,
                "config.json: servers[0]: \"http://127.0.0.1:3001/api\" must be only scheme, host and port",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:1", "http://127.0.0.1:1"]}"#,
                "config.json: servers[1]: http://127.0.0.1:1 is listed twice (also servers[0])",
            ),
            (
                r#"{"servers": ["http://localhost:1", {"url": "http://127.0.0.1:1", "weight": 2}]}"#,
                "config.json: servers[1]: http://127.0.0.1:1 is the same backend as servers[0] (http://localhost:1)",
            ),
            (
                r#"{"servers": ["http://127.0.0.1:2", "http://127.0.0.1:1", "http://[::ffff:127.0.0.1]:1"]}"#,
                "config.json: servers[2]: http://[::ffff:127.0.0.1]:1 is the same backend as servers[1] (http://127.0.0.1:1)",
            ),
            (r#"{"servers": [7]}"#, "config.json: servers[0]: must be a URL string or"),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:1", "name": "web 1"}]}"#,
                "config.json: servers[0].name: must be 1 to 64 letters, digits, '.', '_' or '-', got \"web 1\"",
            ),
            (
                r#"{"servers": [{"url": "http://127.0.0.1:1", "name": "a"}, {"url": "http://127.0.0.1:2", "name": "a"}]}"#,
                "config.json: servers[1]: the name \"a\" is taken by servers[0]",
            ),
            (
                r#"{"hashKey": "cookie", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: hashKey: must be \"ip\", \"url\" or \"header:NAME\", got \"cookie\"",
            ),
            (
                r#"{"stickyCookie": "my cookie", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: stickyCookie: must be a cookie name",
            ),
            (
                r#"{"maglevTableSize": 65536, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maglevTableSize: must be a prime number (such as 65537), got 65536",
            ),
            (
                r#"{"slowStart": "soon", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: slowStart: must be a duration like",
            ),
            (
                r#"{"failOpen": "yes", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: failOpen: must be true or false, got a string",
            ),
            (
                r#"{"passiveHealth": 5, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: passiveHealth: must be an object like",
            ),
            (
                r#"{"passiveHealth": {"failures": 0}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: passiveHealth.failures: must be at least 1",
            ),
            (
                r#"{"passiveHealth": {"cooldown": "0s"}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: passiveHealth.cooldown: must be longer than 0s",
            ),
            (
                r#"{"passiveHealth": {"maxEjectedPercent": 101}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: passiveHealth.maxEjectedPercent: must be at most 100",
            ),
            (
                r#"{"passiveHealth": {"threshold": 3}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: passiveHealth.threshold: unknown key (valid keys: failures, cooldown, maxEjectedPercent)",
            ),
            (
                r#"{"reloadInterval": "often", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: reloadInterval: must be a duration like",
            ),
            (
                r#"{"healthCheckInterval": "5", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthCheckInterval: must be a duration like \"50ms\", \"3s\" or \"1m\", got \"5\"",
            ),
            (
                r#"{"healthCheckInterval": 5, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthCheckInterval: must be a string, got a number",
            ),
            (
                r#"{"requestTimeout": "0s", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: requestTimeout: must be longer than 0s",
            ),
            (r#"{"workers": 0, "servers": ["http://127.0.0.1:1"]}"#, "config.json: workers: must be at least 1"),
            (
                r#"{"certificates": [], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates: needs tlsListen (the address to serve HTTPS on)",
            ),
            (
                r#"{"redirectToHttps": true, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: redirectToHttps: needs tlsListen (the HTTPS listener to send clients to)",
            ),
            (
                r#"{"tlsListen": ":8443", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates: is required with tlsListen",
            ),
            (
                r#"{"tlsListen": ":8443", "certificates": [], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates: must list at least one {\"certFile\", \"keyFile\"}",
            ),
            (
                r#"{"tlsListen": ":8443", "certificates": [{"certFile": "a.pem"}], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates[0].keyFile: is required",
            ),
            (
                r#"{"tlsListen": ":8443", "certificates": [{"certFile": "a", "keyFile": "b", "chain": "c"}],
                    "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates[0].chain: unknown key (valid keys: certFile, keyFile)",
            ),
            (
                r#"{"tlsListen": "8443", "certificates": [], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: tlsListen: must be \":PORT\" or \"HOST:PORT\", got \"8443\"",
            ),
            (
                r#"{"tlsListen": ":8443", "certificates": [{"certFile": "/nonexistent/a.pem", "keyFile": "/nonexistent/a.key"}],
                    "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: certificates[0]: /nonexistent/a.pem: cannot be read: No such file or directory (os error 2)",
            ),
            (
                r#"{"maxRetries": -1, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxRetries: must be a whole number, got -1",
            ),
            (
                r#"{"healthyThreshold": 0, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthyThreshold: must be at least 1",
            ),
            (
                r#"{"listenPort": "8080x", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: listenPort: must be \":PORT\" or \"HOST:PORT\"",
            ),
            (
                r#"{"healthCheckStatus": "ok", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthCheckStatus: must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"ok\"",
            ),
            (
                r#"{"healthCheckStatus": [200, 700], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthCheckStatus: 700 is not a status from 100 to 599",
            ),
            (
                r#"{"healthCheckPath": "health", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: healthCheckPath: must be a path starting with \"/\"",
            ),
            (r#"{"rateLimit": 5, "servers": ["http://127.0.0.1:1"]}"#, "config.json: rateLimit: must be an object"),
            (
                r#"{"accessLog": "xml", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: accessLog: must be \"text\", \"json\" or \"off\", got \"xml\"",
            ),
            (
                r#"{"accessLog": false, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: accessLog: must be a string, got a boolean",
            ),
            (
                r#"{"rateLimit": {"burst": 5}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.requestsPerSecond: is required",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 0}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.requestsPerSecond: must be a number above 0, got 0",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 5, "burst": 0.5}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.burst: must be at least 1",
            ),
            (
                r#"{"rateLimit": {"rps": 5}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.rps: unknown key (valid keys: requestsPerSecond, burst, maxClients)",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 5, "maxClients": 0}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.maxClients: must be at least 1",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 5, "maxClients": 2.5}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.maxClients: must be a whole number, got 2.5",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 5, "maxClients": 20000000}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: rateLimit.maxClients: must be at most 10000000",
            ),
            (
                r#"{"minResponseRate": 500, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: minResponseRate: must be an object like {\"bytesPerSecond\": 500, \"grace\": \"20s\"}, or false, got a number",
            ),
            (
                r#"{"minRequestBodyRate": {"bytesPerSecond": 0}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: minRequestBodyRate.bytesPerSecond: must be at least 1",
            ),
            (
                r#"{"minRequestBodyRate": {"rate": 5}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: minRequestBodyRate.rate: unknown key (valid keys: bytesPerSecond, grace)",
            ),
            (
                r#"{"minRequestBodyRate": {"grace": "soon"}, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: minRequestBodyRate.grace: ",
            ),
            (
                r#"{"maxWaitingBytes": "1KiB", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxWaitingBytes: must be at least 65536 bytes",
            ),
            (
                r#"{"maxConnectionsPerClient": -1, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxConnectionsPerClient: ",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(error.starts_with(expected), "for {text}\n  got: {error}\n want: {expected}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn limits_timeouts_identity_and_admin_keys() {
        let config = load(
            r#"{"maxHeaderBytes": "16KiB", "maxUriBytes": 2048, "maxHeaders": 20, "maxBodyBytes": "1MiB",
                "maxConnections": 50, "maxConnectionsPerClient": 7, "maxWaitingBytes": "2MiB",
                "headerReadTimeout": "2s", "idleTimeout": "1s", "bodyReadTimeout": "3s",
                "connectTimeout": "400ms", "writeTimeout": "4s", "tunnelIdleTimeout": "5m",
                "minRequestBodyRate": {"bytesPerSecond": 100, "grace": "5s"}, "minResponseRate": false,
                "trustedProxies": ["10.0.0.0/8", "::1"], "adminListen": "127.0.0.1:9100",
                "servers": ["http://127.0.0.1:1"]}"#,
        )
        .unwrap();
        assert_eq!(
            config.limits,
            Limits {
                max_header_bytes: 16 * 1024,
                max_uri_bytes: 2048,
                max_headers: 20,
                max_body_bytes: Some(1 << 20),
                max_connections: 50,
                max_connections_per_client: Some(7),
                max_waiting_bytes: 2 << 20,
            }
        );
        assert_eq!(
            config.timeouts,
            Timeouts {
                header_read: Duration::from_secs(2),
                idle: Duration::from_secs(1),
                body_read: Duration::from_secs(3),
                write: Duration::from_secs(4),
                tunnel_idle: Duration::from_secs(300),
            }
        );
        assert_eq!(config.pools[0].connect_timeout, Duration::from_millis(400));
        let floor = MinRate { bytes_per_second: 100, grace: Duration::from_secs(5) };
        assert_eq!(config.min_rates, MinRates { request_body: Some(floor), response: None });
        assert_eq!(config.trusted_proxies, [Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("::1/128").unwrap()]);
        assert_eq!(config.admin_listen.as_deref(), Some("127.0.0.1:9100"));
        let pooled = load(r#"{"pairThreads": "pooled", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(pooled.pair_threads, PairThreads::Pooled);

        let defaults = load(r#"{"servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!((defaults.limits, defaults.timeouts), (Limits::default(), Timeouts::default()));
        assert!(defaults.trusted_proxies.is_empty() && defaults.admin_listen.is_none());
        assert_eq!(defaults.pair_threads, PairThreads::Spawn);
        let small_head = load(r#"{"maxHeaderBytes": "2KiB", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(small_head.limits.max_uri_bytes, 2048, "the target limit shrinks with the head limit");
        assert_eq!(defaults.limits.max_body_bytes, None);
        assert_eq!(defaults.limits.max_connections_per_client, Some(DEFAULT_MAX_CONNECTIONS_PER_CLIENT));
        assert_eq!(defaults.limits.max_waiting_bytes, DEFAULT_MAX_WAITING_BYTES);
        assert_eq!(defaults.min_rates, MinRates::default());
    }

    #[test]
    fn errors_for_limits_and_identity_keys() {
        let cases = [
            (
                r#"{"maxHeaderBytes": 10, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxHeaderBytes: must be at least 1024 bytes",
            ),
            (
                r#"{"maxHeaderBytes": "64kb", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxHeaderBytes: must be a whole number of bytes or a size like",
            ),
            (
                r#"{"maxUriBytes": 70000, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxUriBytes: must not be more than maxHeaderBytes (65536)",
            ),
            (
                r#"{"maxHeaders": 1000, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxHeaders: must be at most 256",
            ),
            (
                r#"{"maxBodyBytes": -1, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxBodyBytes: must be a whole number of bytes",
            ),
            (
                r#"{"maxConnections": 0, "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: maxConnections: must be at least 1",
            ),
            (
                r#"{"idleTimeout": "0s", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: idleTimeout: must be longer than 0s",
            ),
            (
                r#"{"trustedProxies": "10.0.0.0/8", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: trustedProxies: must be a list",
            ),
            (
                r#"{"trustedProxies": ["10.0.0.0/33"], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: trustedProxies[0]: \"10.0.0.0/33\" is not an address block",
            ),
            (
                r#"{"trustedProxies": ["proxy.local"], "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: trustedProxies[0]: \"proxy.local\" is not an address block",
            ),
            (
                r#"{"pairThreads": "forked", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: pairThreads: must be \"spawn\" or \"pooled\", got \"forked\"",
            ),
            (
                r#"{"adminListen": "9100", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: adminListen: must be \":PORT\" or \"HOST:PORT\"",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(error.starts_with(expected), "for {text}\n  got: {error}\n want: {expected}");
        }
    }

    #[test]
    fn address_blocks() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped addresses count as IPv4");
        assert!(!block.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("192.0.2.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::5".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "KiB", "1.5MiB", "10MB", "10 MiB", "99999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let error = Config::load("/nonexistent/lb.json", &Overrides::default()).unwrap_err().to_string();
        assert!(error.starts_with("/nonexistent/lb.json: cannot read file:"), "{error}");
    }

    #[test]
    fn overrides_beat_the_file_and_their_errors_name_the_flag() {
        let text = r#"{"algorithm": "least_conn", "listenPort": ":80", "servers": ["http://127.0.0.1:1"]}"#;
        let overrides = Overrides {
            algorithm: Some(Override { value: "ip_hash".into(), source: Source::Env("LB_ALGORITHM") }),
            listen: Some(Override { value: "127.0.0.1:0".into(), source: Source::Flag("--listen") }),
        };
        let config = Config::from_json(text, "config.json", &overrides).unwrap();
        assert_eq!(config.pools[0].algorithm, Algorithm::IpHash);
        assert_eq!(config.listen.as_deref(), Some("127.0.0.1:0"));

        let bad = Overrides {
            algorithm: Some(Override { value: "nope".into(), source: Source::Flag("--algorithm") }),
            listen: None,
        };
        let error = Config::from_json(text, "config.json", &bad).unwrap_err().to_string();
        assert!(error.starts_with("--algorithm: unknown algorithm \"nope\" (valid: round_robin,"), "{error}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8080").unwrap(), "[::]:8080");
        assert_eq!(parse_listen("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        assert_eq!(parse_listen("[::1]:8080").unwrap(), "[::1]:8080");
        for bad in ["8080", ":", ":http", "::1:80", "a b:80"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backend_urls() {
        assert_eq!(parse_backend_url("http://localhost:5001").unwrap(), ("localhost".into(), 5001));
        assert_eq!(parse_backend_url("http://example.test").unwrap(), ("example.test".into(), 80));
        assert_eq!(parse_backend_url("http://[::1]:8000/").unwrap(), ("[::1]".into(), 8000));
        assert_eq!(parse_backend_url("http://[::1]").unwrap(), ("[::1]".into(), 80));
        assert_eq!(parse_backend_url("https://api.internal").unwrap(), ("api.internal".into(), 443));
        assert_eq!(parse_backend_url("https://127.0.0.1:8443/").unwrap(), ("127.0.0.1".into(), 8443));
        assert_eq!(parse_backend_url("https://[::1]").unwrap(), ("[::1]".into(), 443));
        for bad in ["ftp://x", "http://", "https://", "http://a:0", "http://user@a:1", "http://a:1?x", "https:/a"] {
            assert!(parse_backend_url(bad).is_err(), "{bad}");
        }
    }
}
