//! The load balancer's own endpoints, answered without a backend: the JSON metrics
//! (`metricsPath`), the same metrics for Prometheus (`{metricsPath}/prometheus`), and the
//! operational pages beside them: the live status page ([`status_page::PATH`], `/lb-status`),
//! which reads that JSON from the same listener.
//!
//! They are served on the admin listener when `adminListen` is set (and then nowhere else: the
//! same paths on the public listener go to the backends like any other), otherwise on the public
//! listener. Endpoints that change state (`POST /lb-reload`) are served on the admin listener
//! only, never on the public one.
//!
//! - `metricsPath` (`/lb-metrics`): the JSON metrics, and `{metricsPath}/prometheus` the same
//!   in the Prometheus text format;
//! - `/lb-health`: readiness, 200 while at least one backend is available, else 503, with a line
//!   per pool when there are several; `/lb-health?pool=NAME` the same for one pool (404 for a
//!   pool that does not exist);
//! - `POST /lb-reload`: reread the config file now ([`crate::reload`]).

use std::time::Instant;

use crate::config::Config;
use crate::http::head::RequestHead;
use crate::http::reply::Reply;
use crate::pool::Pool;
use crate::shared::Shared;
use crate::{prometheus, reload, status_page};

/// Where the Prometheus exposition is served, below `metricsPath`.
pub const PROMETHEUS_SUFFIX: &str = "/prometheus";
/// Readiness: 200 while some backend is available, else 503.
pub const HEALTH_PATH: &str = "/lb-health";
/// `POST` rereads the config file (admin listener only).
pub const RELOAD_PATH: &str = "/lb-reload";

const TEXT: &str = "text/plain; charset=utf-8";

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// One of the load balancer's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET metricsPath`: the JSON metrics.
    Metrics,
    /// `GET {metricsPath}/prometheus`.
    Prometheus,
    /// `GET /lb-status`.
    StatusPage,
    /// `GET /lb-health`.
    Health,
    /// `/lb-reload`, on the admin listener (a method other than `POST` is answered 405).
    Reload,
}

impl Endpoint {
    /// What it is, for a person reading `loadbalancer check --request`.
    pub fn describe(self) -> &'static str {
        match self {
            Endpoint::Metrics => "the JSON metrics (metricsPath)",
            Endpoint::Prometheus => "the Prometheus metrics (metricsPath + /prometheus)",
            Endpoint::StatusPage => "the status page",
            Endpoint::Health => "the readiness answer (200 while any backend is available, else 503)",
            Endpoint::Reload => "a config reload",
        }
    }
}

/// Which of the load balancer's own endpoints `head` is for on this listener, if any; `None` if
/// it is for none (the public listener then routes it; the admin listener says 404). Pure: the
/// same test for serving and for `loadbalancer check`.
pub fn endpoint(config: &Config, head: &RequestHead, listener: Listener) -> Option<Endpoint> {
    if listener == Listener::Public && config.admin_listen.is_some() {
        return None;
    }
    let read_only = matches!(head.method.as_str(), "GET" | "HEAD");
    let path = head.path();
    if read_only && path == config.metrics_path {
        return Some(Endpoint::Metrics);
    }
    if read_only && path == status_page::PATH {
        return Some(Endpoint::StatusPage);
    }
    if read_only && path.strip_prefix(config.metrics_path.trim_end_matches('/')) == Some(PROMETHEUS_SUFFIX) {
        return Some(Endpoint::Prometheus);
    }
    if read_only && path == HEALTH_PATH {
        return Some(Endpoint::Health);
    }
    if listener == Listener::Admin && path == RELOAD_PATH {
        return Some(Endpoint::Reload);
    }
    None
}

/// The answer to `head` if it is for one of the load balancer's own endpoints on this listener;
/// `None` if the request is not (the public listener then proxies it; the admin listener says 404).
pub fn answer(shared: &Shared, config: &Config, head: &RequestHead, listener: Listener) -> Option<Reply> {
    Some(match endpoint(config, head, listener)? {
        Endpoint::Metrics => Reply::json(shared.metrics().to_json()),
        Endpoint::StatusPage => Reply::content(status_page::CONTENT_TYPE, status_page::render(&config.metrics_path)),
        Endpoint::Prometheus => {
            let text = prometheus::render(&shared.metrics());
            Reply::content(prometheus::CONTENT_TYPE, text.into_bytes())
        }
        Endpoint::Health => {
            let query = head.target.split_once('?').map(|(_, query)| query);
            let pool = query.and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("pool=")));
            readiness(shared, pool)
        }
        Endpoint::Reload if head.method != "POST" => {
            Reply::error(405, Some("Method Not Allowed: use POST")).with_field("Allow", "POST".into())
        }
        Endpoint::Reload => match reload::reload(shared, true) {
            reload::Outcome::Applied(summary) => {
                Reply::content(TEXT, format!("config reloaded: {summary}\n").into_bytes())
            }
            reload::Outcome::Unchanged => Reply::content(TEXT, b"config unchanged\n".to_vec()),
            reload::Outcome::Refused(problem) => {
                Reply::error(500, Some(&format!("config not reloaded, the running config stays: {problem}\n")))
            }
        },
    })
}

/// Readiness for an orchestrator or a load balancer in front: 200 while at least one backend can
/// take requests (healthy and not ejected), 503 when none can. With several pools, a line per
/// pool follows the total; `only` asks about one pool.
fn readiness(shared: &Shared, only: Option<&str>) -> Reply {
    let pools = shared.pools();
    let now = Instant::now();
    let count =
        |pool: &Pool| (pool.backends.iter().filter(|backend| backend.is_available(now)).count(), pool.backends.len());
    let (available, text) = match only {
        Some(name) => {
            let Some(pool) = pools.get(name) else {
                return Reply::error(404, Some("Not Found: no such pool"));
            };
            let (available, total) = count(pool);
            (available, format!("pool {name}: {available} of {total} backends available\n"))
        }
        None => {
            let counts: Vec<(usize, usize)> = pools.list.iter().map(|pool| count(pool)).collect();
            let available: usize = counts.iter().map(|(available, _)| available).sum();
            let total: usize = counts.iter().map(|(_, total)| total).sum();
            let mut text = format!("{available} of {total} backends available\n");
            if pools.list.len() > 1 {
                for (pool, (available, total)) in pools.list.iter().zip(&counts) {
                    text.push_str(&format!("pool {}: {available} of {total} backends available\n", pool.name()));
                }
            }
            (available, text)
        }
    };
    if available > 0 {
        Reply::content(TEXT, text.into_bytes())
    } else {
        Reply::error(503, Some(&format!("Service Unavailable: {text}")))
    }
}
