//! `loadbalancer check`: a validated config described in its own terms, and, for one request, the
//! path it would take through the routes to a pool or to an answer of the load balancer's own.
//!
//! Runs on the `main` thread, after the config has loaded, and only builds text: it binds no
//! port, starts no thread and sends nothing. Every decision is the serving code's own: the head is
//! read by [`parse_request`], the endpoints by [`endpoints::endpoint`], the route by
//! [`Router::decide`] (explained by [`Router::explain`]), and the head the backend would receive
//! is written by [`request_for_backend`] with the route's [`RouteChanges`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::balance::{Algorithm, HashKey};
use crate::client_ip::client_address;
use crate::config::Config;
use crate::config::pool::PoolConfig;
use crate::config::routes::{HeaderEdits, RouteAction, RouteConfig, RouteMatch};
use crate::duration::format_duration;
use crate::endpoints::{self, Listener};
use crate::http::head::{HeadLimits, RequestHead, parse_request};
use crate::http::reply::{Reply, reason_phrase};
use crate::http::rewrite::{Forwarded, request_for_backend};
use crate::proxy::{NO_ROUTE, declares_too_large_a_body};
use crate::routing::{Decision, RouteChanges, Router};

/// The client address shown in the head a backend would receive: 192.0.2.1, from TEST-NET-1,
/// the block RFC 5737 reserves for documentation, so it is never a real client.
pub const PLACEHOLDER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The whole config, pool by pool and route by route, ending with the [`ok_line`].
/// `file` is where the config came from.
pub fn summary(config: &Config, file: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {file}");
    let _ = writeln!(out, "listen: {}", config.listen);
    for pool in &config.pools {
        describe_pool(&mut out, pool);
    }
    match config.default_pool.and_then(|index| config.pools.get(index)) {
        Some(pool) => {
            let _ = writeln!(out, "defaultPool: {} (takes every request no route takes)", pool.name);
        }
        None => out.push_str("defaultPool: none (a request no route takes is answered 404)\n"),
    }
    if config.routes.is_empty() {
        out.push_str("routes: none\n");
    }
    for (index, route) in config.routes.iter().enumerate() {
        describe_route(&mut out, index, route);
    }
    out.push_str(&ok_line(config));
    out
}

/// `config OK: 3 pools, 4 routes`, the last line of [`summary`].
pub fn ok_line(config: &Config) -> String {
    let (pools, routes) = (config.pools.len(), config.routes.len());
    format!("config OK: {pools} pool{}, {routes} route{}\n", plural(pools), plural(routes))
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn describe_pool(out: &mut String, pool: &PoolConfig) {
    let _ = writeln!(out, "pool {}", pool.name);
    let mut algorithm = pool.algorithm.name().to_string();
    let balancing = &pool.balancing;
    if pool.algorithm == Algorithm::Maglev {
        let hash_key = match &balancing.hash_key {
            HashKey::ClientIp => "ip".to_string(),
            HashKey::Url => "url".to_string(),
            HashKey::Header(name) => format!("header:{name}"),
        };
        let _ = write!(algorithm, " (hashKey {hash_key}, maglevTableSize {})", balancing.maglev_table_size);
    }
    if pool.algorithm == Algorithm::Sticky {
        match &balancing.sticky_cookie {
            Some(cookie) => {
                let _ = write!(algorithm, " (stickyCookie {cookie})");
            }
            None => algorithm.push_str(" (no stickyCookie)"),
        }
    }
    if !balancing.slow_start.is_zero() {
        let _ = write!(algorithm, ", slowStart {}", format_duration(balancing.slow_start));
    }
    let _ = writeln!(out, "  algorithm: {algorithm}");
    let health = &pool.health;
    let _ = writeln!(
        out,
        "  health checks: GET {} every {} (healthCheckTimeout {}, healthyThreshold {}, unhealthyThreshold {}, \
         healthCheckStatus {})",
        health.path,
        format_duration(health.interval),
        format_duration(health.timeout),
        health.healthy_threshold,
        health.unhealthy_threshold,
        health.statuses
    );
    let passive = &pool.passive_health;
    if passive.max_ejected_percent == 0 {
        out.push_str("  passiveHealth: off\n");
    } else {
        let _ = writeln!(
            out,
            "  passiveHealth: failures {}, cooldown {}, maxEjectedPercent {}",
            passive.failures,
            format_duration(passive.cooldown),
            passive.max_ejected_percent
        );
    }
    let _ = writeln!(
        out,
        "  maxRetries: {}, retryDelay: {}, connectTimeout: {}, requestTimeout: {}",
        pool.max_retries,
        format_duration(pool.retry_delay),
        format_duration(pool.connect_timeout),
        format_duration(pool.request_timeout)
    );
    let _ = writeln!(out, "  failOpen: {}, allBackups: {}", pool.fail_open, pool.all_backups);
    let _ = writeln!(out, "  servers:");
    for server in &pool.servers {
        let backup = if server.backup { ", backup" } else { "" };
        let addresses = match &server.resolve_error {
            Some(error) => format!("does not resolve ({error}): starts down"),
            None => server.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        };
        let _ =
            writeln!(out, "    {} (name {}, weight {}{backup}) → {addresses}", server.url, server.name, server.weight);
    }
}

fn describe_route(out: &mut String, index: usize, route: &RouteConfig) {
    let _ = writeln!(out, "routes[{index}] {}", route.name);
    let _ = writeln!(out, "  match: {}", describe_match(&route.matcher));
    match &route.action {
        RouteAction::Pool(pool) => {
            let _ = writeln!(out, "  pool: {pool}");
        }
        RouteAction::Redirect { location, status } => {
            let _ = writeln!(out, "  redirect: {status} to {location}");
        }
        RouteAction::Respond { status, body, headers } => {
            let _ = write!(out, "  respond: {status}, body {body:?}");
            for (name, value) in headers {
                let _ = write!(out, ", {name}: {value}");
            }
            out.push('\n');
        }
    }
    if route.strip_prefix {
        out.push_str("  stripPrefix: true\n");
    }
    for (key, edits) in [("requestHeaders", &route.request_headers), ("responseHeaders", &*route.response_headers)] {
        if !edits.is_empty() {
            let _ = writeln!(out, "  {key}: {}", describe_edits(edits));
        }
    }
}

/// The conditions in the config's terms, `every request` when there are none.
fn describe_match(matcher: &RouteMatch) -> String {
    let mut parts = Vec::new();
    if !matcher.hosts.is_empty() {
        let hosts: Vec<String> = matcher.hosts.iter().map(ToString::to_string).collect();
        parts.push(format!("host {}", hosts.join(" or ")));
    }
    if let Some(path) = &matcher.path {
        parts.push(format!("path {path}"));
    }
    if let Some(prefix) = &matcher.path_prefix {
        parts.push(format!("pathPrefix {prefix}"));
    }
    if !matcher.methods.is_empty() {
        parts.push(format!("methods {}", matcher.methods.join(" or ")));
    }
    for condition in &matcher.headers {
        parts.push(match &condition.wanted {
            Some(wanted) => format!("header {}: {wanted}", condition.name),
            None => format!("header {} present", condition.name),
        });
    }
    if parts.is_empty() { "every request".to_string() } else { parts.join(", ") }
}

/// `remove A, B; set C: 1; add D: 2`, in the order they apply.
fn describe_edits(edits: &HeaderEdits) -> String {
    let fields = |list: &[(String, String)]| {
        list.iter().map(|(name, value)| format!("{name}: {value}")).collect::<Vec<_>>().join(", ")
    };
    let mut parts = Vec::new();
    if !edits.remove.is_empty() {
        parts.push(format!("remove {}", edits.remove.join(", ")));
    }
    if !edits.set.is_empty() {
        parts.push(format!("set {}", fields(&edits.set)));
    }
    if !edits.add.is_empty() {
        parts.push(format!("add {}", fields(&edits.add)));
    }
    parts.join("; ")
}

/// The head bytes for `check --request`: `request` is the request line, `METHOD TARGET` (then
/// `HTTP/1.1` is added) or `METHOD TARGET HTTP/1.x`, perhaps followed by header lines, each after
/// a newline or the two characters `\n`; `headers` are more fields, `Name: value`. An
/// absolute-form target (`http://api.example.com/v1`) with no `Host` field given gets the `Host`
/// field a client sends with it. Nothing else is added or normalised: the parser sees what was
/// typed, and refuses what it would refuse from a client.
pub fn request_bytes(request: &str, headers: &[String]) -> Vec<u8> {
    let request = request.replace("\\n", "\n");
    let mut lines = request.split('\n').map(|line| line.trim_end_matches('\r'));
    let request_line = lines.next().unwrap_or_default().trim();
    let mut text = request_line.to_string();
    if request_line.split_ascii_whitespace().count() == 2 {
        text.push_str(" HTTP/1.1");
    }
    text.push_str("\r\n");
    let fields: Vec<&str> =
        lines.chain(headers.iter().map(String::as_str)).filter(|line| !line.trim().is_empty()).collect();
    let names_host =
        fields.iter().any(|field| field.split(':').next().is_some_and(|name| name.trim().eq_ignore_ascii_case("host")));
    if !names_host && let Some(authority) = request_line.split_ascii_whitespace().nth(1).and_then(absolute_authority) {
        text.push_str("Host: ");
        text.push_str(authority);
        text.push_str("\r\n");
    }
    for field in fields {
        text.push_str(field);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// The authority of an absolute-form target, as written: `a.example:8080` in
/// `http://a.example:8080/x`; `None` for any other form.
fn absolute_authority(target: &str) -> Option<&str> {
    let scheme_end = target.find("://")?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") && !target[..scheme_end].eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Some(authority).filter(|authority| !authority.is_empty())
}

/// What the load balancer would do with the request of `bytes` ([`request_bytes`]): `Ok` with the
/// explanation when it routes or answers it, `Err` with the status it would answer when it
/// refuses it.
pub fn explain_request(config: &Config, bytes: &[u8]) -> Result<String, String> {
    let head = match parse_request(bytes, &HeadLimits::from(&config.limits)) {
        Ok(Some((head, _))) => head,
        Ok(None) => return Err("the request head is incomplete\n".to_string()),
        Err(error) => return Err(refusal(&error.reply())),
    };
    let mut out = String::new();
    let _ = writeln!(out, "request: {} {} HTTP/1.{}", head.method, head.target, head.minor_version);
    let host = if head.host.is_empty() { "none".to_string() } else { format!("{:?}", head.host) };
    let _ = writeln!(out, "  host {host}, path {:?}", head.path());

    if let Some(endpoint) = endpoints::endpoint(config, &head, Listener::Public) {
        let _ = writeln!(out, "answered by the load balancer itself: {}; no route is tried", endpoint.describe());
        return Ok(out);
    }
    if declares_too_large_a_body(&head, &config.limits) {
        out.push_str(&refusal(&Reply::error(413, None)));
        return Err(out);
    }

    let router = Router::new(
        config.routes.clone(),
        |name| config.pools.iter().position(|pool| pool.name == name),
        config.default_pool,
    );
    explain_routes(&mut out, config, &router, &head);
    match router.decide(&head) {
        Decision::Pool { route, pool } => {
            let pool = &config.pools[pool];
            match route {
                Some(route) => {
                    let _ = writeln!(out, "taken by {} → pool {}", route_label(config, route), pool.name);
                }
                None => {
                    let _ = writeln!(out, "no route takes it → defaultPool {}", pool.name);
                }
            }
            describe_backend_head(&mut out, config, route, &head);
        }
        Decision::Redirect { route, status, location } => {
            let _ = writeln!(
                out,
                "taken by {} → redirect: {status} {}, Location: {location}",
                route_label(config, route),
                reason_phrase(status)
            );
        }
        Decision::Respond { route, status, body, headers } => {
            let _ = write!(
                out,
                "taken by {} → respond: {status} {}, body {body:?}",
                route_label(config, route),
                reason_phrase(status)
            );
            for (name, value) in headers {
                let _ = write!(out, ", {name}: {value}");
            }
            out.push('\n');
        }
        Decision::NoRoute => {
            let _ = writeln!(out, "no route takes it and there is no defaultPool → 404 {NO_ROUTE}");
        }
    }
    Ok(out)
}

/// `routes[N] NAME`, N the route's place in the config.
fn route_label(config: &Config, route: &RouteConfig) -> String {
    let index = config.routes.iter().position(|candidate| candidate.name == route.name).unwrap_or_default();
    format!("routes[{index}] {}", route.name)
}

/// One line per route: whether it matches `head`, or the first condition it fails.
fn explain_routes(out: &mut String, config: &Config, router: &Router, head: &RequestHead) {
    if router.routes().is_empty() {
        out.push_str("routes: none\n");
        return;
    }
    let mut taken_by: Option<String> = None;
    for (route, verdict) in router.explain(head) {
        let label = route_label(config, route);
        match (verdict, &taken_by) {
            (Err(why), _) => {
                let _ = writeln!(out, "  {label}: no: {why}");
            }
            (Ok(()), None) => {
                let _ = writeln!(out, "  {label}: matches");
                taken_by = Some(label);
            }
            (Ok(()), Some(first)) => {
                let _ = writeln!(out, "  {label}: matches too, but {first} comes first");
            }
        }
    }
}

/// The head the backend would receive, line by line, as the proxy writes it.
fn describe_backend_head(out: &mut String, config: &Config, route: Option<&RouteConfig>, head: &RequestHead) {
    let client = client_address(PLACEHOLDER_CLIENT, &head.fields, &config.trusted_proxies);
    let changes = RouteChanges::new(route, head);
    let mut bytes = Vec::new();
    request_for_backend(head, Forwarded { peer: PLACEHOLDER_CLIENT, client }, &changes.rewrite(), &mut bytes);
    let _ = writeln!(out, "the backend receives ({PLACEHOLDER_CLIENT} stands for the client's address):");
    for line in String::from_utf8_lossy(&bytes).split("\r\n").filter(|line| !line.is_empty()) {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(route) = route.filter(|route| !route.response_headers.is_empty()) {
        let _ = writeln!(out, "responseHeaders on its answer: {}", describe_edits(&route.response_headers));
    }
}

/// The load balancer's answer to a request it refuses, as one line: `400 Bad Request: ...`.
fn refusal(reply: &Reply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    let mut line = format!("{} {}", reply.status, body.trim_end());
    if !body.starts_with(reason_phrase(reply.status)) {
        line = format!("{} {}: {}", reply.status, reason_phrase(reply.status), body.trim_end());
    }
    line.push('\n');
    line
}
