//! The load balancer's own endpoints, answered without a backend: the JSON metrics
//! (`metricsPath`), and the operational pages beside them: the live status page
//! ([`status_page::PATH`], `/lb-status`), which reads that JSON from the same listener.
//!
//! They are served on the admin listener when `adminListen` is set (and then nowhere else: the
//! same paths on the public listener go to the backends like any other), otherwise on the public
//! listener. Endpoints that change state (`POST /lb-reload`) are served on the admin listener
//! only, never on the public one.

use crate::http::head::RequestHead;
use crate::http::reply::Reply;
use crate::server::Shared;
use crate::status_page;

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
    if read_only && path == status_page::PATH {
        return Some(Reply::content(status_page::CONTENT_TYPE, status_page::render(&shared.config.metrics_path)));
    }
    None
}
