//! Content switching: which route a request takes, and what that route does with it.
//!
//! A [`Router`] is owned by the shared state, built once from the validated routes of a config and
//! replaced whole on reload; every worker thread reads it for every request. It is pure: no I/O,
//! no locks, no threads. Routes are tried in order and the first whose every condition holds wins;
//! a request no route takes goes to the default pool, or is answered `404` when there is none.
//!
//! [`Router::decide`] is on every request's path, so it only compares: a few byte comparisons per
//! route and no allocation unless the answer is a redirect, whose location is built for the
//! request.
//!
//! A request whose target is `*` (`OPTIONS *`) has no path: it matches no `path` or `pathPrefix`
//! condition.

use crate::config::routes::{HeaderCondition, RouteAction, RouteConfig, RouteMatch};
use crate::http::head::{Fields, RequestHead};
use crate::http::target::{prefix_matches, strip_prefix};

/// The routes of one config, with each pool route's pool looked up once.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<RouteConfig>,
    /// For each route, the index of its pool among the running pools; `None` for a route that
    /// answers itself, or whose pool is (by a bug) not running.
    pool_of_route: Vec<Option<usize>>,
    default_pool: Option<usize>,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send to pool `pool`; `route` is None when no route matched and the default pool takes it.
    Pool { route: Option<&'a RouteConfig>, pool: usize },
    /// Answer with a redirect to `location`, the route's template expanded for this request.
    Redirect { route: &'a RouteConfig, status: u16, location: String },
    /// Answer with the route's own status, body and header fields.
    Respond { route: &'a RouteConfig, status: u16, body: &'a str, headers: &'a [(String, String)] },
    /// Nothing matched and there is no default pool: answer 404.
    NoRoute,
}

/// The first condition of a route that a request fails.
#[derive(Debug, Clone, Copy)]
enum Mismatch<'a> {
    Host,
    Path,
    PathPrefix,
    Method,
    Header(&'a HeaderCondition),
}

impl Router {
    /// `pool_index` maps a pool name to its index in the running pools. Every name was validated
    /// against the config's pools, so a missing one is a bug: it is logged, and that route then
    /// matches no request.
    pub fn new(
        routes: Vec<RouteConfig>,
        pool_index: impl Fn(&str) -> Option<usize>,
        default_pool: Option<usize>,
    ) -> Router {
        let pool_of_route = routes
            .iter()
            .map(|route| match &route.action {
                RouteAction::Pool(name) => {
                    let index = pool_index(name);
                    if index.is_none() {
                        log::error!(
                            "route {:?} names pool {name:?}, which is not running; the route is skipped",
                            route.name
                        );
                    }
                    index
                }
                RouteAction::Redirect { .. } | RouteAction::Respond { .. } => None,
            })
            .collect();
        Router { routes, pool_of_route, default_pool }
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// The pool that takes requests no route matches.
    pub fn default_pool(&self) -> Option<usize> {
        self.default_pool
    }

    /// The first route in order that takes `head`, and what it does; else the default pool, else
    /// [`Decision::NoRoute`].
    pub fn decide(&self, head: &RequestHead) -> Decision<'_> {
        for (route, pool) in self.routes.iter().zip(&self.pool_of_route) {
            if first_mismatch(&route.matcher, head).is_some() {
                continue;
            }
            match &route.action {
                RouteAction::Pool(_) => match pool {
                    Some(pool) => return Decision::Pool { route: Some(route), pool: *pool },
                    None => continue,
                },
                RouteAction::Redirect { location, status } => {
                    return Decision::Redirect { route, status: *status, location: redirect_location(location, head) };
                }
                RouteAction::Respond { status, body, headers } => {
                    return Decision::Respond { route, status: *status, body, headers };
                }
            }
        }
        match self.default_pool {
            Some(pool) => Decision::Pool { route: None, pool },
            None => Decision::NoRoute,
        }
    }

    /// For `loadbalancer check --request`: for each route in order, whether it matched or the
    /// first condition that failed. Every route is listed; the first `Ok` is the one
    /// [`Router::decide`] takes.
    pub fn explain(&self, head: &RequestHead) -> Vec<(&RouteConfig, Result<(), String>)> {
        let explain_one =
            |route: &RouteConfig, pool: Option<usize>| match (first_mismatch(&route.matcher, head), &route.action) {
                (Some(mismatch), _) => Err(describe(mismatch, &route.matcher, head)),
                (None, RouteAction::Pool(name)) if pool.is_none() => Err(format!("pool {name:?} is not running")),
                (None, _) => Ok(()),
            };
        self.routes.iter().zip(&self.pool_of_route).map(|(route, pool)| (route, explain_one(route, *pool))).collect()
    }
}

/// The path of `head` for path conditions: `None` for a target without one (`*`).
fn request_path(head: &RequestHead) -> Option<&str> {
    Some(head.path()).filter(|path| path.starts_with('/'))
}

/// The query of `head` as received, without its `?`: `None` when there is no `?`.
fn request_query(head: &RequestHead) -> Option<&str> {
    head.target.split_once('?').map(|(_, query)| query)
}

/// The first condition of `matcher` that `head` fails, checked in the order host, path,
/// pathPrefix, methods, headers; `None` when the route takes the request.
fn first_mismatch<'a>(matcher: &'a RouteMatch, head: &RequestHead) -> Option<Mismatch<'a>> {
    if !matcher.hosts.is_empty() && !matcher.hosts.iter().any(|pattern| pattern.matches(&head.host)) {
        return Some(Mismatch::Host);
    }
    let path = request_path(head);
    if let Some(wanted) = &matcher.path
        && path != Some(wanted.as_str())
    {
        return Some(Mismatch::Path);
    }
    if let Some(prefix) = &matcher.path_prefix
        && !path.is_some_and(|path| prefix_matches(prefix, path))
    {
        return Some(Mismatch::PathPrefix);
    }
    if !matcher.methods.is_empty() && !matcher.methods.contains(&head.method) {
        return Some(Mismatch::Method);
    }
    matcher.headers.iter().find(|condition| !header_holds(condition, &head.fields)).map(Mismatch::Header)
}

/// Whether some field named `condition.name` is present, and, when a value is wanted, equals it
/// once the spaces and tabs around it are cut.
fn header_holds(condition: &HeaderCondition, fields: &Fields) -> bool {
    let mut values = fields.values(&condition.name);
    match &condition.wanted {
        None => values.next().is_some(),
        Some(wanted) => values.any(|value| trim_spaces(value) == wanted.as_bytes()),
    }
}

fn trim_spaces(value: &[u8]) -> &[u8] {
    let is_text = |byte: &u8| *byte != b' ' && *byte != b'\t';
    let start = value.iter().position(is_text).unwrap_or(value.len());
    let end = value.iter().rposition(is_text).map_or(start, |last| last + 1);
    &value[start..end]
}

/// Why `head` fails `mismatch`, for a person reading `check --request`.
fn describe(mismatch: Mismatch<'_>, matcher: &RouteMatch, head: &RequestHead) -> String {
    let path = || match request_path(head) {
        Some(path) => format!("path {path:?}"),
        None => format!("target {:?} has no path and", head.target),
    };
    match mismatch {
        Mismatch::Host => {
            let patterns: Vec<String> = matcher.hosts.iter().map(ToString::to_string).collect();
            let host = if head.host.is_empty() { "no host".to_string() } else { format!("host {:?}", head.host) };
            format!("{host} matches none of {}", patterns.join(", "))
        }
        Mismatch::Path => format!("{} is not {:?}", path(), matcher.path.as_deref().unwrap_or_default()),
        Mismatch::PathPrefix => {
            format!("{} is not under {:?}", path(), matcher.path_prefix.as_deref().unwrap_or_default())
        }
        Mismatch::Method => format!("method {} is not one of {}", head.method, matcher.methods.join(", ")),
        Mismatch::Header(HeaderCondition { name, wanted: None }) => format!("no {name} field"),
        Mismatch::Header(HeaderCondition { name, wanted: Some(wanted) }) => {
            let seen: Vec<String> = head
                .fields
                .values(name)
                .map(|value| format!("{:?}", String::from_utf8_lossy(trim_spaces(value))))
                .collect();
            if seen.is_empty() {
                format!("no {name} field (wanted {wanted:?})")
            } else {
                format!("{name} is {}, not {wanted:?}", seen.join(", "))
            }
        }
    }
}

/// The target the backend receives for `route`, and the `X-Forwarded-Prefix` value to send with
/// it; `None` when the route does not strip a prefix (or the request's path is not under it).
///
/// The path loses the prefix at its segment boundary and keeps its query: under `/v1`, `/v1/x?q`
/// becomes `/x?q`, and `/v1` or `/v1?q` becomes `/` or `/?q`. The `X-Forwarded-Prefix` value is the
/// prefix without a trailing slash (`/static/` gives `/static`), so that the backend can put it in
/// front of a path of its own (which starts with `/`) to build the client's URL. It is never empty:
/// a route may not strip the prefix `/`.
pub fn forwarded_target(route: &RouteConfig, head: &RequestHead) -> Option<(String, String)> {
    if !route.strip_prefix {
        return None;
    }
    let prefix = route.matcher.path_prefix.as_deref()?;
    let path = request_path(head).filter(|path| prefix_matches(prefix, path))?;
    let mut target = strip_prefix(prefix, path);
    if let Some(query) = request_query(head) {
        target.push('?');
        target.push_str(query);
    }
    let forwarded_prefix = prefix.strip_suffix('/').filter(|rest| !rest.is_empty()).unwrap_or(prefix);
    Some((target, forwarded_prefix.to_string()))
}

/// Expands a redirect template for this request: `{host}` is the request's normalised host (empty
/// when it names none), `{path}` its normalised path (`/` for the target `*`), and `{query}` `?`
/// and the query as received when the query is not empty, else nothing. Anything else is copied;
/// the config allows no other placeholder. Every part is visible ASCII, so the result is a safe
/// field value.
pub fn redirect_location(template: &str, head: &RequestHead) -> String {
    let mut location = String::with_capacity(template.len() + head.target.len() + head.host.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        location.push_str(&rest[..open]);
        rest = &rest[open..];
        if let Some(after) = rest.strip_prefix("{host}") {
            location.push_str(&head.host);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{path}") {
            location.push_str(request_path(head).unwrap_or("/"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{query}") {
            if let Some(query) = request_query(head).filter(|query| !query.is_empty()) {
                location.push('?');
                location.push_str(query);
            }
            rest = after;
        } else {
            location.push('{');
            rest = &rest[1..];
        }
    }
    location.push_str(rest);
    location
}
