//! Pools in the config: the top-level `servers` (pool `default`) and the named pools of `pools`,
//! each with the settings that belong to a set of backends (algorithm, health checks, retries,
//! timeouts to the backend). Read once per config load, on the thread that loads it (`main` at
//! start-up, `config-watcher` or `admin` on a reload).
//!
//! A pool takes every per-pool key it names and inherits the rest from the top level, so
//!
//! ```json
//! {"algorithm": "least_conn", "maxRetries": 1, "servers": ["http://127.0.0.1:3001"],
//!  "pools": {"api": {"maxRetries": 3, "servers": ["http://127.0.0.1:4001"]}}}
//! ```
//!
//! gives pool `default` (least_conn, 1 retry) and pool `api` (least_conn, 3 retries). An object
//! key (`passiveHealth`) is inherited field by field the same way. A server listed in two pools
//! is two backend records, one per pool: each pool keeps its own health, counters and idle
//! connections for it, as each pool may probe it with another path.

use std::time::Duration;

use serde_json::Value;

use super::backend_tls::{CaFile, ClientConfigs};
use super::statuses::HealthyStatuses;
use super::{ConfigError, HealthSettings, Reader, ServerConfig, kind_of};
use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_CHECK_INTERVAL, DEFAULT_HEALTH_CHECK_PATH, DEFAULT_HEALTH_CHECK_TIMEOUT,
    DEFAULT_HEALTHY_THRESHOLD, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_DELAY,
    DEFAULT_UNHEALTHY_THRESHOLD, MAX_RETRIES_LIMIT,
};
use crate::balance::{Algorithm, BalanceSettings};
use crate::ejection::PassiveHealthSettings;

/// The name of the pool the top-level `servers` make.
pub const DEFAULT_POOL: &str = "default";

/// The keys a pool in `pools` may set: its servers, and the per-pool settings.
pub const POOL_KEYS: [&str; 20] = [
    "servers",
    "algorithm",
    "hashKey",
    "stickyCookie",
    "slowStart",
    "maglevTableSize",
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
    "connectTimeout",
    "backendCaFile",
    "allBackups",
];

/// One pool: its backends and how requests to them are balanced, checked and retried.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
    pub algorithm: Algorithm,
    /// The algorithms' own settings: hash key, sticky cookie, slow start, Maglev table size.
    pub balancing: BalanceSettings,
    pub health: HealthSettings,
    /// Ejecting backends whose real requests fail.
    pub passive_health: PassiveHealthSettings,
    /// With no backend available, try them all rather than answer 503.
    pub fail_open: bool,
    pub max_retries: u32,
    pub retry_delay: Duration,
    /// How long a backend may take to start its response.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// What the pool's `https://` servers are verified against: this file's certificates, or the
    /// system's roots when `None`.
    pub backend_ca_file: Option<CaFile>,
    /// With every primary server down, share among every backup, not only the first.
    pub all_backups: bool,
}

impl PoolConfig {
    /// The built-in settings, which the top level overrides and the pools inherit.
    pub fn builtin(name: &str) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            servers: Vec::new(),
            algorithm: Algorithm::RoundRobin,
            balancing: BalanceSettings::default(),
            health: HealthSettings {
                interval: DEFAULT_HEALTH_CHECK_INTERVAL,
                path: DEFAULT_HEALTH_CHECK_PATH.to_string(),
                timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
                healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
                unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
                statuses: HealthyStatuses::default(),
            },
            passive_health: PassiveHealthSettings::default(),
            fail_open: false,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_delay: DEFAULT_RETRY_DELAY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backend_ca_file: None,
            all_backups: false,
        }
    }
}

/// Whether `name` can name a pool: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn is_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

impl Reader<'_> {
    /// The per-pool settings this object names, the rest taken from `inherited`; no servers.
    /// `algorithm` is a command-line or environment override, which wins over the object.
    pub(super) fn pool_settings(
        &self,
        name: &str,
        inherited: &PoolConfig,
        algorithm: Option<Algorithm>,
    ) -> Result<PoolConfig, ConfigError> {
        let algorithm = match algorithm {
            Some(algorithm) => algorithm,
            None => match self.string("algorithm")? {
                Some(name) => Algorithm::from_name(&name).map_err(|problem| self.error("algorithm", problem))?,
                None => inherited.algorithm,
            },
        };
        let health = HealthSettings {
            interval: self.duration("healthCheckInterval", inherited.health.interval, false)?,
            path: self.path("healthCheckPath", &inherited.health.path)?,
            timeout: self.duration("healthCheckTimeout", inherited.health.timeout, false)?,
            healthy_threshold: self.threshold("healthyThreshold", inherited.health.healthy_threshold)?,
            unhealthy_threshold: self.threshold("unhealthyThreshold", inherited.health.unhealthy_threshold)?,
            statuses: match self.object.get("healthCheckStatus") {
                Some(value) => {
                    HealthyStatuses::from_json(value).map_err(|problem| self.error("healthCheckStatus", problem))?
                }
                None => inherited.health.statuses.clone(),
            },
        };
        Ok(PoolConfig {
            name: name.to_string(),
            servers: Vec::new(),
            algorithm,
            balancing: self.balancing(&inherited.balancing)?,
            health,
            passive_health: self.passive_health(&inherited.passive_health)?,
            fail_open: self.boolean("failOpen")?.unwrap_or(inherited.fail_open),
            max_retries: self
                .integer("maxRetries", 0, u64::from(MAX_RETRIES_LIMIT))?
                .map_or(inherited.max_retries, |n| n as u32),
            retry_delay: self.duration("retryDelay", inherited.retry_delay, true)?,
            request_timeout: self.duration("requestTimeout", inherited.request_timeout, false)?,
            connect_timeout: self.duration("connectTimeout", inherited.connect_timeout, false)?,
            backend_ca_file: match self.backend_ca_file()? {
                Some(ca_file) => Some(ca_file),
                None => inherited.backend_ca_file.clone(),
            },
            all_backups: self.boolean("allBackups")?.unwrap_or(inherited.all_backups),
        })
    }

    /// Every pool: `default` from the top-level `servers` (when given), then those of `pools`, in
    /// name order. `top` holds the top level's settings, which the named pools inherit.
    pub(super) fn pools(&self, top: PoolConfig) -> Result<Vec<PoolConfig>, ConfigError> {
        let named = match self.object.get("pools") {
            None => None,
            Some(Value::Object(named)) => Some(named),
            Some(other) => {
                return Err(self.error(
                    "pools",
                    format!(
                        "must be an object of named pools, like {{\"api\": {{\"servers\": [...]}}}}, got {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        let mut pools = Vec::new();
        // Shared by every pool, so pools with the same roots share one client configuration.
        let mut clients = ClientConfigs::default();
        if self.object.contains_key("servers") || named.is_none_or(|named| named.is_empty()) {
            let servers = self.servers(top.backend_ca_file.as_ref(), &mut clients)?;
            pools.push(PoolConfig { servers, ..top.clone() });
        }
        for (name, value) in named.into_iter().flatten() {
            let key = format!("pools.{name}");
            if !is_pool_name(name) {
                return Err(self.error(&key, "a pool name is 1 to 64 letters, digits, '.', '_' or '-'"));
            }
            if name == DEFAULT_POOL && !pools.is_empty() {
                return Err(self.error(
                    &key,
                    "the top-level servers are pool \"default\": define them in one place (remove one or the other)",
                ));
            }
            let Value::Object(object) = value else {
                return Err(self.error(&key, format!("must be an object with \"servers\", got {}", kind_of(value))));
            };
            for field in object.keys() {
                if !POOL_KEYS.contains(&field.as_str()) {
                    return Err(self.error(
                        &format!("{key}.{field}"),
                        format!("unknown key for a pool (valid keys: {})", POOL_KEYS.join(", ")),
                    ));
                }
            }
            let reader = Reader { file: self.file.clone(), object, prefix: format!("{}{key}.", self.prefix) };
            // The override of `algorithm` is the top level's; a pool that names its own keeps it.
            let mut pool = reader.pool_settings(name, &top, None)?;
            pool.servers = reader.servers(pool.backend_ca_file.as_ref(), &mut clients)?;
            pools.push(pool);
        }
        Ok(pools)
    }
}
