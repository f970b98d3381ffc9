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

use crate::config::routes::{HeaderCondition, HeaderEdits, RouteAction, RouteConfig, RouteMatch};
use crate::http::edits::NO_EDITS;
use crate::http::head::{Fields, RequestHead};
use crate::http::rewrite::RouteRewrite;
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
            if head.host.is_empty() {
                format!("the request names no host (wanted {})", patterns.join(", "))
            } else {
                format!("host {:?} matches none of {}", head.host, patterns.join(", "))
            }
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

/// What the route a request took changes in the head its backend receives, owned for as long as
/// that head is being written: the stripped target and its `X-Forwarded-Prefix`
/// ([`forwarded_target`]) and the route's `requestHeaders`. With no route (the default pool took
/// the request) nothing changes.
///
/// The one reading of a route's rewrite, for the proxy and for `loadbalancer check --request` alike.
#[derive(Debug, Clone)]
pub struct RouteChanges<'a> {
    stripped: Option<(String, String)>,
    fields: &'a HeaderEdits,
}

impl<'a> RouteChanges<'a> {
    pub fn new(route: Option<&'a RouteConfig>, head: &RequestHead) -> RouteChanges<'a> {
        RouteChanges {
            stripped: route.and_then(|route| forwarded_target(route, head)),
            fields: route.map_or(&NO_EDITS, |route| &route.request_headers),
        }
    }

    /// The changes in the form [`crate::http::rewrite::request_for_backend`] takes.
    pub fn rewrite(&self) -> RouteRewrite<'_> {
        RouteRewrite {
            target: self.stripped.as_ref().map(|(target, _)| target.as_str()),
            forwarded_prefix: self.stripped.as_ref().map(|(_, prefix)| prefix.as_str()),
            fields: self.fields,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::read_routes;
    use crate::http::head::{HeadLimits, parse_request};

    /// The running pools, by index.
    const POOLS: &[&str] = &["default", "static", "api"];

    const ROUTES: &str = r#"[
      {"name": "old", "match": {"host": "old.example.com"},
       "redirect": {"location": "https://www.example.com{path}{query}", "status": 308}},
      {"name": "api", "match": {"host": "api.example.com", "pathPrefix": "/v1"}, "pool": "api",
       "stripPrefix": true,
       "requestHeaders": {"remove": ["X-Debug"], "set": {"X-Env": "prod"}},
       "responseHeaders": {"set": {"Cache-Control": "no-store"}}},
      {"name": "assets", "match": {"host": "*.example.com", "pathPrefix": "/static/"}, "pool": "static"},
      {"name": "ping", "match": {"path": "/lb-ping", "methods": ["GET", "HEAD"]},
       "respond": {"status": 200, "body": "ok\n"}},
      {"name": "canary", "match": {"host": ["beta.test", "*.beta.test"], "headers": {"X-Canary": "yes"}},
       "pool": "api"},
      {"name": "debug", "match": {"headers": {"x-debug": true, "X-Team": "edge"}}, "pool": "static"},
      {"name": "writes", "match": {"methods": ["POST", "PUT"], "pathPrefix": "/"}, "pool": "api"}
    ]"#;

    fn routes(json: &str) -> Vec<RouteConfig> {
        read_routes(&serde_json::from_str(json).unwrap(), POOLS).unwrap_or_else(|error| panic!("{error}"))
    }

    fn pool_index(name: &str) -> Option<usize> {
        POOLS.iter().position(|pool| *pool == name)
    }

    fn router(json: &str, default_pool: Option<usize>) -> Router {
        Router::new(routes(json), pool_index, default_pool)
    }

    /// A head read by the real parser from `text`, whose lines end in `\n` here and `\r\n` on the wire.
    fn request(text: &str) -> RequestHead {
        let raw = format!("{}\r\n", text.replace('\n', "\r\n"));
        match parse_request(raw.as_bytes(), &HeadLimits::default()) {
            Ok(Some((head, _))) => head,
            other => panic!("{text:?} did not parse: {other:?}"),
        }
    }

    /// A decision in one line: `route→pool`, `default→pool`, `route STATUS location` for a redirect,
    /// `route STATUS "body"` for an answer of the route's own, or `404`.
    fn outcome(decision: Decision<'_>) -> String {
        match decision {
            Decision::Pool { route: Some(route), pool } => format!("{}→{pool}", route.name),
            Decision::Pool { route: None, pool } => format!("default→{pool}"),
            Decision::Redirect { route, status, location } => format!("{} {status} {location}", route.name),
            Decision::Respond { route, status, body, .. } => format!("{} {status} {body:?}", route.name),
            Decision::NoRoute => "404".to_string(),
        }
    }

    #[test]
    fn the_first_route_whose_every_condition_holds_wins() {
        let router = router(ROUTES, Some(0));
        let cases: &[(&str, &str)] = &[
            // Route order: "old" takes every request for its host, even those a later route wants.
            ("GET /anything HTTP/1.1\nHost: old.example.com\n", "old 308 https://www.example.com/anything"),
            ("GET /lb-ping HTTP/1.1\nHost: old.example.com\n", "old 308 https://www.example.com/lb-ping"),
            ("POST /x HTTP/1.1\nHost: old.example.com\nContent-Length: 0\n", "old 308 https://www.example.com/x"),
            ("GET /a?b=1&c HTTP/1.1\nHost: Old.Example.COM.:8080\n", "old 308 https://www.example.com/a?b=1&c"),
            // A host and a segment-aware prefix, both required.
            ("GET /v1 HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1/ HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1/users/7 HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1?q=1 HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1/../v1/x HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET http://API.example.com:8080/v1/x HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1beta HTTP/1.1\nHost: api.example.com\n", "default→0"),
            ("GET /V1 HTTP/1.1\nHost: api.example.com\n", "default→0"),
            ("GET /v2/../v1 HTTP/1.1\nHost: api.example.com\n", "api→2"),
            ("GET /v1 HTTP/1.1\nHost: www.example.com\n", "default→0"),
            // A wildcard host stands for exactly one label.
            ("GET /static/app.css HTTP/1.1\nHost: www.example.com\n", "assets→1"),
            ("GET /static/ HTTP/1.1\nHost: a.example.com\n", "assets→1"),
            ("GET /static/app.css HTTP/1.1\nHost: A.Example.COM:8080\n", "assets→1"),
            ("GET /static/app.css HTTP/1.1\nHost: api.example.com\n", "assets→1"),
            ("GET /static/app.css HTTP/1.1\nHost: example.com\n", "default→0"),
            ("GET /static/app.css HTTP/1.1\nHost: a.b.example.com\n", "default→0"),
            ("GET /static/app.css HTTP/1.1\nHost: a.example.com.evil.test\n", "default→0"),
            ("GET /static HTTP/1.1\nHost: www.example.com\n", "default→0"),
            // An exact path (the query aside) and methods, compared exactly.
            ("GET /lb-ping HTTP/1.1\nHost: lb.internal\n", "ping 200 \"ok\\n\""),
            ("HEAD /lb-ping HTTP/1.1\nHost: lb.internal\n", "ping 200 \"ok\\n\""),
            ("GET /lb-ping?probe=1 HTTP/1.1\nHost: lb.internal\n", "ping 200 \"ok\\n\""),
            ("GET /lb-ping/ HTTP/1.1\nHost: lb.internal\n", "default→0"),
            ("GET /lb-ping/x HTTP/1.1\nHost: lb.internal\n", "default→0"),
            ("get /lb-ping HTTP/1.1\nHost: lb.internal\n", "default→0"),
            ("POST /lb-ping HTTP/1.1\nHost: lb.internal\nContent-Length: 0\n", "writes→2"),
            ("PUT /x HTTP/1.1\nHost: lb.internal\nContent-Length: 0\n", "writes→2"),
            ("DELETE /x HTTP/1.1\nHost: lb.internal\n", "default→0"),
            // A list of hosts is an OR; a header value is exact, its name any case, any occurrence.
            ("GET / HTTP/1.1\nHost: beta.test\nX-Canary: yes\n", "canary→2"),
            ("GET / HTTP/1.1\nHost: eu.beta.test\nx-canary: yes\n", "canary→2"),
            ("GET / HTTP/1.1\nHost: beta.test\nX-CANARY: \t yes \t\n", "canary→2"),
            ("GET / HTTP/1.1\nHost: beta.test\nX-Canary: no\nX-Canary: yes\n", "canary→2"),
            ("GET / HTTP/1.1\nHost: beta.test\nX-Canary: Yes\n", "default→0"),
            ("GET / HTTP/1.1\nHost: beta.test\nX-Canary: yes, no\n", "default→0"),
            ("GET / HTTP/1.1\nHost: beta.test\nX-Canary-2: yes\n", "default→0"),
            ("GET / HTTP/1.1\nHost: beta.test\n", "default→0"),
            ("GET / HTTP/1.1\nHost: a.b.beta.test\nX-Canary: yes\n", "default→0"),
            ("GET / HTTP/1.1\nHost: other.test\nX-Canary: yes\n", "default→0"),
            // Every header condition must hold; "present" holds for an empty value too.
            ("GET / HTTP/1.1\nHost: h\nX-Debug: 1\nX-Team: edge\n", "debug→1"),
            ("GET / HTTP/1.1\nHost: h\nx-debug:\nx-team: edge\n", "debug→1"),
            ("GET / HTTP/1.1\nHost: h\nX-Debug: 1\n", "default→0"),
            ("GET / HTTP/1.1\nHost: h\nX-Team: edge\n", "default→0"),
            // A request without a host matches no host condition.
            ("GET /static/a HTTP/1.0\n", "default→0"),
            ("GET /lb-ping HTTP/1.0\n", "ping 200 \"ok\\n\""),
            // The target "*" has no path: it matches no path or pathPrefix condition, not even "/".
            ("OPTIONS * HTTP/1.1\nHost: lb.internal\n", "default→0"),
            ("OPTIONS * HTTP/1.1\nHost: old.example.com\n", "old 308 https://www.example.com/"),
        ];
        for (text, expected) in cases {
            assert_eq!(outcome(router.decide(&request(text))), *expected, "{text:?}");
        }
    }

    #[test]
    fn a_request_no_route_takes_goes_to_the_default_pool_or_gets_404() {
        let unmatched = request("GET /nothing HTTP/1.1\nHost: h\n");
        let matched = request("GET /lb-ping HTTP/1.1\nHost: h\n");
        let with_default = router(ROUTES, Some(1));
        assert_eq!(with_default.decide(&unmatched), Decision::Pool { route: None, pool: 1 });
        assert_eq!(with_default.default_pool(), Some(1));
        let without_default = router(ROUTES, None);
        assert_eq!(without_default.decide(&unmatched), Decision::NoRoute);
        assert_eq!(without_default.default_pool(), None);
        assert_eq!(outcome(without_default.decide(&matched)), "ping 200 \"ok\\n\"");
        let no_routes = Router::new(Vec::new(), pool_index, Some(0));
        assert!(no_routes.routes().is_empty());
        assert_eq!(no_routes.decide(&matched), Decision::Pool { route: None, pool: 0 });
        assert_eq!(Router::new(Vec::new(), pool_index, None).decide(&matched), Decision::NoRoute);
        let everything = router(r#"[{"pool": "static"}]"#, None);
        assert_eq!(outcome(everything.decide(&unmatched)), "route-0→1", "no match matches every request");
    }

    #[test]
    fn a_decision_carries_the_route_and_its_answer() {
        let router = router(ROUTES, None);
        assert_eq!(router.routes().len(), 7);
        let head = request("GET /v1/x HTTP/1.1\nHost: api.example.com\n");
        let Decision::Pool { route: Some(route), pool: 2 } = router.decide(&head) else { panic!() };
        assert!(std::ptr::eq(route, &router.routes()[1]));
        let json = r#"[{"match": {"path": "/down"},
                        "respond": {"status": 503, "body": "later\n", "headers": {"Retry-After": "60"}}}]"#;
        let router = super::tests::router(json, None);
        let decision = router.decide(&request("GET /down HTTP/1.1\nHost: h\n"));
        let Decision::Respond { route, status: 503, body: "later\n", headers } = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(&*route.name, "route-0");
        assert_eq!(headers, [("Retry-After".to_string(), "60".to_string())]);
    }

    #[test]
    fn a_route_whose_pool_is_not_running_is_skipped_without_panicking() {
        let only_api = |name: &str| (name == "api").then_some(7);
        let router = Router::new(routes(ROUTES), only_api, Some(9));
        assert_eq!(outcome(router.decide(&request("GET /static/a HTTP/1.1\nHost: www.example.com\n"))), "default→9");
        assert_eq!(outcome(router.decide(&request("GET /v1 HTTP/1.1\nHost: api.example.com\n"))), "api→7");
        let explained = router.explain(&request("GET /static/a HTTP/1.1\nHost: www.example.com\n"));
        assert_eq!(explained[2].1, Err("pool \"static\" is not running".to_string()));
    }

    #[test]
    fn explain_gives_each_route_and_the_first_condition_it_fails() {
        let router = router(ROUTES, Some(0));
        let explain = |text: &str| -> Vec<(String, Result<(), String>)> {
            let head = request(text);
            router.explain(&head).into_iter().map(|(route, verdict)| (route.name.to_string(), verdict)).collect()
        };
        let fail = |name: &str, why: &str| (name.to_string(), Err(why.to_string()));
        let pass = |name: &str| (name.to_string(), Ok(()));
        assert_eq!(
            explain("POST /v1beta HTTP/1.1\nHost: api.example.com\nX-Canary: no\nContent-Length: 0\n"),
            [
                fail("old", "host \"api.example.com\" matches none of old.example.com"),
                fail("api", "path \"/v1beta\" is not under \"/v1\""),
                fail("assets", "path \"/v1beta\" is not under \"/static/\""),
                fail("ping", "path \"/v1beta\" is not \"/lb-ping\""),
                fail("canary", "host \"api.example.com\" matches none of beta.test, *.beta.test"),
                fail("debug", "no x-team field (wanted \"edge\")"),
                pass("writes"),
            ]
        );
        let verdicts = explain("DELETE /lb-ping HTTP/1.0\nX-Debug: 1\nX-Team: core\nX-Team: web \n");
        assert_eq!(verdicts[0], fail("old", "the request names no host (wanted old.example.com)"));
        assert_eq!(verdicts[3], fail("ping", "method DELETE is not one of GET, HEAD"));
        assert_eq!(verdicts[5], fail("debug", "x-team is \"core\", \"web\", not \"edge\""));
        assert_eq!(verdicts[6], fail("writes", "method DELETE is not one of POST, PUT"));
        let verdicts = explain("GET / HTTP/1.1\nHost: h\nX-Team: edge\n");
        assert_eq!(verdicts[5], fail("debug", "no x-debug field"));
        let verdicts = explain("GET / HTTP/1.1\nHost: beta.test\n");
        assert_eq!(verdicts[4], fail("canary", "no x-canary field (wanted \"yes\")"));
        let verdicts = explain("OPTIONS * HTTP/1.1\nHost: www.example.com\n");
        assert_eq!(verdicts[2], fail("assets", "target \"*\" has no path and is not under \"/static/\""));
        assert_eq!(verdicts[3], fail("ping", "target \"*\" has no path and is not \"/lb-ping\""));
    }

    #[test]
    fn stripping_a_prefix_cuts_the_path_at_its_segment_and_keeps_the_query() {
        let routes = routes(
            r#"[{"match": {"pathPrefix": "/v1"}, "pool": "api", "stripPrefix": true},
                {"match": {"pathPrefix": "/static/"}, "pool": "static", "stripPrefix": true},
                {"match": {"pathPrefix": "/a/b"}, "pool": "api", "stripPrefix": true},
                {"match": {"pathPrefix": "/keep"}, "pool": "api"}]"#,
        );
        // The route's index, the request's target, and the backend's target and prefix.
        type Case = (usize, &'static str, Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (0, "/v1/x", Some(("/x", "/v1"))),
            (0, "/v1/users/7?full=1", Some(("/users/7?full=1", "/v1"))),
            (0, "/v1", Some(("/", "/v1"))),
            (0, "/v1/", Some(("/", "/v1"))),
            (0, "/v1?q=1", Some(("/?q=1", "/v1"))),
            (0, "/v1?", Some(("/?", "/v1"))),
            (0, "/v1//x/./y", Some(("/x/y", "/v1"))),
            (0, "/v1beta", None),
            (0, "/v2", None),
            (1, "/static/app.css", Some(("/app.css", "/static"))),
            (1, "/static/", Some(("/", "/static"))),
            (1, "/static/?v=2", Some(("/?v=2", "/static"))),
            (1, "/static", None),
            (2, "/a/b/c", Some(("/c", "/a/b"))),
            (2, "/a/b", Some(("/", "/a/b"))),
            (3, "/keep/x", None),
        ];
        for (index, target, expected) in cases {
            let head = request(&format!("GET {target} HTTP/1.1\nHost: h\n"));
            let expected = expected.map(|(target, prefix)| (target.to_string(), prefix.to_string()));
            assert_eq!(forwarded_target(&routes[*index], &head), expected, "route {index}, {target}");
        }
        let asterisk = request("OPTIONS * HTTP/1.1\nHost: h\n");
        assert_eq!(forwarded_target(&routes[0], &asterisk), None);
    }

    #[test]
    fn redirect_templates_expand_host_path_and_query() {
        let cases: &[(&str, &str, &str)] = &[
            ("https://www.example.com{path}{query}", "GET /a?b=1 HTTP/1.1\nHost: h\n", "https://www.example.com/a?b=1"),
            ("https://www.example.com{path}{query}", "GET /a HTTP/1.1\nHost: h\n", "https://www.example.com/a"),
            ("https://www.example.com{path}{query}", "GET /a? HTTP/1.1\nHost: h\n", "https://www.example.com/a"),
            (
                "https://www.example.com{path}{query}",
                "GET /a/./b/../c HTTP/1.1\nHost: h\n",
                "https://www.example.com/a/c",
            ),
            ("https://www.example.com{path}{query}", "GET /%7Ea HTTP/1.1\nHost: h\n", "https://www.example.com/~a"),
            ("https://{host}{path}", "GET /x?y HTTP/1.1\nHost: Old.Example.COM:8080\n", "https://old.example.com/x"),
            ("https://{host}/new{path}?from=old", "GET / HTTP/1.1\nHost: h\n", "https://h/new/?from=old"),
            ("https://{host}{path}", "GET /x HTTP/1.1\nHost: [0::1]:80\n", "https://[::1]/x"),
            ("/search{query}", "GET /find?q=a%20b HTTP/1.1\nHost: h\n", "/search?q=a%20b"),
            ("/moved", "GET /a?b HTTP/1.1\nHost: h\n", "/moved"),
            ("https://{host}{path}{query}", "GET /a HTTP/1.0\n", "https:///a"),
            ("https://{host}{path}{query}", "OPTIONS * HTTP/1.1\nHost: h\n", "https://h/"),
            ("{path}{path}{host}{host}", "GET /p HTTP/1.1\nHost: h\n", "/p/phh"),
        ];
        for (template, text, expected) in cases {
            assert_eq!(redirect_location(template, &request(text)), *expected, "{template} for {text:?}");
        }
        let router = router(r#"[{"redirect": {"location": "https://{host}{path}{query}", "status": 301}}]"#, None);
        let decision = router.decide(&request("GET /a?b HTTP/1.1\nHost: h\n"));
        assert!(
            matches!(decision, Decision::Redirect { status: 301, ref location, .. } if location == "https://h/a?b")
        );
    }
}
