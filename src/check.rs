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
    if let Some(listen) = &config.listen {
        let redirect = if config.redirect_to_https { " (answers 308 to https://)" } else { "" };
        let _ = writeln!(out, "listen: {listen}{redirect}");
    }
    if let Some(tls) = &config.tls {
        let _ = writeln!(out, "tlsListen: {}", tls.listen);
        for (index, cert) in tls.loaded.iter().enumerate() {
            let default = if index == 0 { " (default)" } else { "" };
            let _ = writeln!(out, "  certificate {}: {}{default}", cert.cert_file.display(), cert.names.join(", "));
        }
    }
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
    if pool.servers.iter().any(|server| server.tls.is_some()) {
        let roots = match &pool.backend_ca_file {
            Some(ca_file) => format!("backendCaFile {}", ca_file.path.display()),
            None => "the system's roots".to_string(),
        };
        let _ = writeln!(out, "  https servers verified against {roots}");
    }
    let _ = writeln!(out, "  servers:");
    for server in &pool.servers {
        let mut notes = if server.backup { ", backup".to_string() } else { String::new() };
        if let Some(tls) = &server.tls {
            let _ = write!(notes, ", TLS name {}", tls.verified_name.to_str());
        }
        let addresses = match &server.resolve_error {
            Some(error) => format!("does not resolve ({error}): starts down"),
            None => server.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        };
        let _ =
            writeln!(out, "    {} (name {}, weight {}{notes}) → {addresses}", server.url, server.name, server.weight);
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
    request_for_backend(
        head,
        Forwarded { peer: PLACEHOLDER_CLIENT, client, tls: false },
        &changes.rewrite(),
        &mut bytes,
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    const CONFIG: &str = r#"{
      "servers": ["http://127.0.0.1:3001"],
      "pools": {
        "api": {"algorithm": "least_conn", "healthCheckPath": "/healthz", "maxRetries": 1,
                "servers": [{"url": "http://127.0.0.1:4001", "name": "api-1", "weight": 3},
                            {"url": "http://127.0.0.1:4002", "name": "api-2", "backup": true}]}
      },
      "routes": [
        {"name": "old", "match": {"host": "old.example.com"},
         "redirect": {"location": "https://www.example.com{path}{query}", "status": 301}},
        {"name": "api", "match": {"host": "api.example.com", "pathPrefix": "/v1"}, "pool": "api",
         "stripPrefix": true,
         "requestHeaders": {"remove": ["X-Debug"], "set": {"X-Env": "prod"}},
         "responseHeaders": {"set": {"Cache-Control": "no-store"}}},
        {"name": "ping", "match": {"path": "/ping", "methods": ["GET", "HEAD"]},
         "respond": {"status": 200, "body": "pong\n"}}
      ]
    }"#;

    fn config(text: &str) -> Config {
        Config::from_json(text, "lb.json", &Overrides::default()).unwrap_or_else(|error| panic!("{error}"))
    }

    fn explain(config: &Config, request: &str, headers: &[&str]) -> Result<String, String> {
        let headers: Vec<String> = headers.iter().map(|field| field.to_string()).collect();
        explain_request(config, &request_bytes(request, &headers))
    }

    #[test]
    fn the_summary_lists_pools_servers_the_default_and_routes_in_order() {
        let text = summary(&config(CONFIG), "lb.json");
        let expected = "\
config: lb.json
listen: [::]:8080
pool default
  algorithm: round_robin
  health checks: GET /health every 10s (healthCheckTimeout 3s, healthyThreshold 2, unhealthyThreshold 2, healthCheckStatus 100-499)
  passiveHealth: failures 5, cooldown 30s, maxEjectedPercent 50
  maxRetries: 2, retryDelay: 50ms, connectTimeout: 3s, requestTimeout: 10s
  failOpen: false, allBackups: false
  servers:
    http://127.0.0.1:3001 (name b-a82313ae, weight 1) → 127.0.0.1:3001
pool api
  algorithm: least_conn
  health checks: GET /healthz every 10s (healthCheckTimeout 3s, healthyThreshold 2, unhealthyThreshold 2, healthCheckStatus 100-499)
  passiveHealth: failures 5, cooldown 30s, maxEjectedPercent 50
  maxRetries: 1, retryDelay: 50ms, connectTimeout: 3s, requestTimeout: 10s
  failOpen: false, allBackups: false
  servers:
    http://127.0.0.1:4001 (name api-1, weight 3) → 127.0.0.1:4001
    http://127.0.0.1:4002 (name api-2, weight 1, backup) → 127.0.0.1:4002
defaultPool: default (takes every request no route takes)
routes[0] old
  match: host old.example.com
  redirect: 301 to https://www.example.com{path}{query}
routes[1] api
  match: host api.example.com, pathPrefix /v1
  pool: api
  stripPrefix: true
  requestHeaders: remove x-debug; set X-Env: prod
  responseHeaders: set Cache-Control: no-store
routes[2] ping
  match: path /ping, methods GET or HEAD
  respond: 200, body \"pong\\n\"
config OK: 2 pools, 3 routes
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_summary_says_when_there_is_no_default_pool_and_which_settings_an_algorithm_uses() {
        let text = summary(
            &config(
                r#"{"pools": {"web": {"algorithm": "maglev", "hashKey": "header:X-User", "failOpen": true,
                                       "passiveHealth": {"maxEjectedPercent": 0},
                                       "servers": ["http://127.0.0.1:3001"]}},
                    "routes": [{"match": {"headers": {"X-Canary": "yes", "X-Debug": true}}, "pool": "web"}]}"#,
            ),
            "lb.json",
        );
        assert!(text.contains("  algorithm: maglev (hashKey header:x-user, maglevTableSize 65537)\n"), "{text}");
        assert!(text.contains("  passiveHealth: off\n"), "{text}");
        assert!(text.contains("  failOpen: true, allBackups: false\n"), "{text}");
        assert!(text.contains("defaultPool: none (a request no route takes is answered 404)\n"), "{text}");
        assert!(text.contains("routes[0] route-0\n  match: header x-canary: yes, header x-debug present\n"), "{text}");
        assert!(text.ends_with("config OK: 1 pool, 1 route\n"), "{text}");
    }

    #[test]
    fn a_route_that_strips_its_prefix_shows_the_exact_head_the_backend_receives() {
        let text = explain(&config(CONFIG), "GET http://api.example.com/v1/users?id=7", &["X-Debug: 1", "X-Team: web"]);
        let expected = "\
request: GET /v1/users?id=7 HTTP/1.1
  host \"api.example.com\", path \"/v1/users\"
  routes[0] old: no: host \"api.example.com\" matches none of old.example.com
  routes[1] api: matches
  routes[2] ping: no: path \"/v1/users\" is not \"/ping\"
taken by routes[1] api → pool api
the backend receives (192.0.2.1 stands for the client's address):
  GET /users?id=7 HTTP/1.1
  Host: api.example.com
  X-Team: web
  X-Env: prod
  X-Forwarded-For: 192.0.2.1
  X-Real-IP: 192.0.2.1
  X-Forwarded-Proto: http
  X-Forwarded-Prefix: /v1
responseHeaders on its answer: set Cache-Control: no-store
";
        assert_eq!(text.as_deref(), Ok(expected));
    }

    #[test]
    fn each_route_says_which_condition_it_fails() {
        let config = config(CONFIG);
        // On host: every route with a host fails on it, and the default pool takes the request.
        let text = explain(&config, "POST /v1/x\nHost: www.example.com", &["X-Api: 1"]).unwrap();
        assert!(text.contains("  routes[0] old: no: host \"www.example.com\" matches none of old.example.com\n"));
        assert!(text.contains("  routes[1] api: no: host \"www.example.com\" matches none of api.example.com\n"));
        assert!(text.contains("  routes[2] ping: no: path \"/v1/x\" is not \"/ping\"\n"), "{text}");
        assert!(text.contains("no route takes it → defaultPool default\n"), "{text}");
        assert!(text.contains("\n  POST /v1/x HTTP/1.1\n  Host: www.example.com\n  X-Api: 1\n"), "{text}");
        assert!(!text.contains("X-Forwarded-Prefix"), "{text}");
        // On prefix: /v1beta is not under /v1.
        let text = explain(&config, "GET /v1beta HTTP/1.1", &["Host: api.example.com"]).unwrap();
        assert!(text.contains("  routes[1] api: no: path \"/v1beta\" is not under \"/v1\"\n"), "{text}");
        assert!(text.contains("\n  GET /v1beta HTTP/1.1\n"), "{text}");
        // On method.
        let text = explain(&config, "DELETE /ping\\nHost: a", &[]).unwrap();
        assert!(text.contains("  routes[2] ping: no: method DELETE is not one of GET, HEAD\n"), "{text}");
    }

    #[test]
    fn routes_that_answer_themselves_and_no_route() {
        let config = config(CONFIG);
        let text = explain(&config, "GET /a?b HTTP/1.0\nHost: OLD.example.com", &[]).unwrap();
        assert!(text.contains("  routes[0] old: matches\n"), "{text}");
        assert!(
            text.ends_with(
                "taken by routes[0] old → redirect: 301 Moved Permanently, Location: https://www.example.com/a?b\n"
            ),
            "{text}"
        );
        let text = explain(&config, "HEAD /ping", &["Host: a"]).unwrap();
        assert!(text.ends_with("taken by routes[2] ping → respond: 200 OK, body \"pong\\n\"\n"), "{text}");

        let without_default = super::tests::config(
            r#"{"pools": {"api": {"servers": ["http://127.0.0.1:4001"]}},
                "routes": [{"name": "api", "match": {"pathPrefix": "/api"}, "pool": "api"},
                           {"name": "api-too", "match": {"pathPrefix": "/"}, "pool": "api"}]}"#,
        );
        let text = explain(&without_default, "GET /api/x", &["Host: a"]).unwrap();
        assert!(text.contains("  routes[1] api-too: matches too, but routes[0] api comes first\n"), "{text}");
        let text = explain(&without_default, "OPTIONS *", &["Host: a"]).unwrap();
        assert!(text.contains("  routes[0] api: no: target \"*\" has no path and is not under \"/api\"\n"), "{text}");
        assert!(text.ends_with("no route takes it and there is no defaultPool → 404 Not Found\n"), "{text}");
    }

    #[test]
    fn a_request_the_load_balancer_refuses_is_its_answer() {
        let config = config(CONFIG);
        let refused: &[(&str, &[&str], &str)] = &[
            ("GET /a/../../etc", &["Host: a"], "400 Bad Request: path climbs above /\n"),
            ("GET /v1/x", &[], "400 Bad Request: missing Host header\n"),
            ("GET /x", &["Host: a", "Host: b"], "400 Bad Request: "),
            ("CONNECT a.example:443", &["Host: a.example:443"], "405 Method Not Allowed: CONNECT is not forwarded"),
        ];
        for (request, headers, expected) in refused {
            let answer = explain(&config, request, headers).unwrap_err();
            assert!(answer.starts_with(expected), "{request}: {answer}");
        }
        let limited = super::tests::config(r#"{"servers": ["http://127.0.0.1:3001"], "maxBodyBytes": 10}"#);
        let answer = explain(&limited, "POST /x", &["Host: a", "Content-Length: 11"]).unwrap_err();
        assert!(answer.ends_with("\n413 Content Too Large\n"), "{answer}");
    }

    #[test]
    fn the_load_balancers_own_endpoints_are_not_routed() {
        let text = explain(&config(CONFIG), "GET /lb-metrics", &["Host: api.example.com"]).unwrap();
        assert!(
            text.ends_with("answered by the load balancer itself: the JSON metrics (metricsPath); no route is tried\n")
        );
    }

    #[test]
    fn request_text_becomes_a_head_as_a_client_would_send_it() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("GET /x", &[], "GET /x HTTP/1.1\r\n\r\n"),
            ("GET /x HTTP/1.0", &[], "GET /x HTTP/1.0\r\n\r\n"),
            ("GET /x\\nHost: a\nX-A: 1", &["X-B: 2"], "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n"),
            (
                "GET http://a.example:8080/x?y",
                &[],
                "GET http://a.example:8080/x?y HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
            ),
            ("GET http://a.example/x", &["host: b"], "GET http://a.example/x HTTP/1.1\r\nhost: b\r\n\r\n"),
        ];
        for (request, headers, expected) in cases {
            let headers: Vec<String> = headers.iter().map(|field| field.to_string()).collect();
            assert_eq!(String::from_utf8(request_bytes(request, &headers)).unwrap(), *expected, "{request}");
        }
    }
}
