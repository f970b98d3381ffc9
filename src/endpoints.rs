//! The load balancer's own endpoints, answered without a backend: the JSON metrics
//! (`metricsPath`), the same metrics for Prometheus (`{metricsPath}/prometheus`), and the
//! operational pages beside them.
//!
//! They are served on the admin listener when `adminListen` is set (and then nowhere else: the
//! same paths on the public listener go to the backends like any other), otherwise on the public
//! listener. Endpoints that change state (`POST /lb-reload`) are served on the admin listener
//! only, never on the public one.

use crate::http::head::RequestHead;
use crate::http::reply::Reply;
use crate::prometheus;
use crate::server::Shared;

/// Where the Prometheus exposition is served, below `metricsPath`.
pub const PROMETHEUS_SUFFIX: &str = "/prometheus";

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// The answer to `head` if it is for one of the load balancer's own endpoints on this listener;
/// `None` if the request is not (the public listener then proxies it; the admin listener says 404).
pub fn answer(shared: &Shared, head: &RequestHead, listener: Listener) -> Option<Reply> {
    if listener == Listener::Public && shared.config.admin_listen.is_some() {
        return None;
    }
    let read_only = matches!(head.method.as_str(), "GET" | "HEAD");
    let path = head.path();
    if read_only && path == shared.config.metrics_path {
        return Some(Reply::json(shared.metrics().to_json()));
    }
    if read_only && path.strip_prefix(shared.config.metrics_path.trim_end_matches('/')) == Some(PROMETHEUS_SUFFIX) {
        let text = prometheus::render(&shared.metrics());
        return Some(Reply::content(prometheus::CONTENT_TYPE, text.into_bytes()));
    }
    None
}
