//! The `routes` key: the content-switching rules, read from JSON into validated [`RouteConfig`]
//! values.
//!
//! Pure and without I/O: it runs on whichever thread reads the config (the main thread at start,
//! `config-watcher` on reload). Every refusal is a [`KeyError`] naming the exact key
//! (`routes[2].match.host[1]`) and the problem; the caller adds where the config came from.
//! Which route a request takes is [`crate::routing`]'s business, not this module's.
//!
//! A route is an optional `name`, an optional `match` (every field given must hold; a list inside
//! one field is an OR), exactly one action (`pool`, `redirect` or `respond`) and, for a `pool`
//! route only, `stripPrefix`, `requestHeaders` and `responseHeaders`.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{is_token, kind_of};
pub use crate::http::edits::HeaderEdits;
use crate::http::target::{HostPattern, validate_prefix};

/// The status of a redirect that does not name one: permanent, and the method is kept.
pub const DEFAULT_REDIRECT_STATUS: u16 = 308;
/// The status of a `respond` action that does not name one.
pub const DEFAULT_RESPOND_STATUS: u16 = 200;
/// The statuses a redirect may use.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
/// The placeholders a redirect's `location` may hold, each written `{name}`.
pub const PLACEHOLDERS: [&str; 3] = ["host", "path", "query"];
/// The longest route name, in bytes.
pub const MAX_ROUTE_NAME_BYTES: usize = 64;

const ROUTE_KEYS: &[&str] =
    &["name", "match", "pool", "redirect", "respond", "stripPrefix", "requestHeaders", "responseHeaders"];
const MATCH_KEYS: &[&str] = &["host", "path", "pathPrefix", "methods", "headers"];
const REDIRECT_KEYS: &[&str] = &["location", "status"];
const RESPOND_KEYS: &[&str] = &["status", "body", "headers"];
const EDIT_KEYS: &[&str] = &["remove", "set", "add"];
const ACTIONS: [&str; 3] = ["pool", "redirect", "respond"];

/// Fields `requestHeaders` and `responseHeaders` may not touch: hop-by-hop and framing fields, which
/// the load balancer writes itself, and `Host`, which it sets from the request.
const MANAGED_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "host",
];
/// Fields the load balancer writes on every forwarded request, after a route's edits: a route
/// editing them would send two readings of who the client is.
const FORWARDING_FIELDS: &[&str] = &["x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-prefix"];
/// Fields a `respond` action may not list: the load balancer frames its own answers.
const FRAMING_FIELDS: &[&str] = &["content-length", "transfer-encoding", "connection"];
/// Methods whose lower-case spelling is a mistake rather than an extension method.
const STANDARD_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT"];

/// A refused value: the key path inside the config (`routes[1].pool`) and what is wrong with it.
/// The config reader turns it into a `ConfigError` that also names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub problem: String,
}

impl KeyError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> KeyError {
        KeyError { key: key.into(), problem: problem.into() }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for KeyError {}

/// One validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// As configured, or `route-N` for the route at index N; unique among the routes. Shared with
    /// the access lines of the requests it takes.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Whether the backend gets the path without `matcher.path_prefix`. Only true for a
    /// [`RouteAction::Pool`] route with a prefix other than `/`.
    pub strip_prefix: bool,
    /// Edits to the request sent to the backend; empty unless the action is a pool.
    pub request_headers: HeaderEdits,
    /// Edits to the backend's response; empty unless the action is a pool. Shared with the reverse
    /// thread that relays the response.
    pub response_headers: Arc<HeaderEdits>,
}

/// What a request must look like to take a route. Every non-empty field must hold; the default
/// matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// Any one of them must match the request's host; empty for any host.
    pub hosts: Vec<HostPattern>,
    /// The exact normalised path, without the query. Never set together with `path_prefix`.
    pub path: Option<String>,
    /// A normalised path prefix, matched segment by segment
    /// ([`crate::http::target::prefix_matches`]).
    pub path_prefix: Option<String>,
    /// Method tokens, compared exactly; empty for any method.
    pub methods: Vec<String>,
    /// Every one must hold (their order only decides which failure `explain` reports).
    pub headers: Vec<HeaderCondition>,
}

/// A condition on a request header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Lower case.
    pub name: String,
    /// A value some field of that name must equal exactly (the field's value taken without the
    /// spaces and tabs around it), or `None` for "the field is present".
    pub wanted: Option<String>,
}

/// What a route does with the requests it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward to the pool of that name, one of the names [`read_routes`] was given.
    Pool(String),
    /// Answer with a redirect. `location` is a template whose only placeholders are `{host}`,
    /// `{path}` and `{query}`; `status` is one of [`REDIRECT_STATUSES`].
    Redirect { location: String, status: u16 },
    /// Answer with this status (200 to 599), body and extra header fields (never framing ones).
    Respond { status: u16, body: String, headers: Vec<(String, String)> },
}

/// Reads the value of the `routes` key: a list of routes, tried in order. `pool_names` are the
/// pools a `pool` action may name.
pub fn read_routes(value: &Value, pool_names: &[&str]) -> Result<Vec<RouteConfig>, KeyError> {
    let Value::Array(entries) = value else {
        return Err(KeyError::new("routes", format!("must be a list, got {}", kind_of(value))));
    };
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let key = format!("routes[{index}]");
        let route = read_route(&key, index, entry, pool_names)?;
        if let Some(earlier) = routes.iter().position(|seen| seen.name == route.name) {
            let named = entry.get("name").is_some();
            return Err(if named {
                KeyError::new(format!("{key}.name"), format!("the name {:?} is taken by routes[{earlier}]", route.name))
            } else {
                KeyError::new(
                    key,
                    format!("its default name {:?} is taken by routes[{earlier}]; give it a name", route.name),
                )
            });
        }
        routes.push(route);
    }
    Ok(routes)
}

fn read_route(key: &str, index: usize, entry: &Value, pool_names: &[&str]) -> Result<RouteConfig, KeyError> {
    let fields = object(key, entry, ROUTE_KEYS)?;
    let name = match fields.get("name") {
        None => format!("route-{index}"),
        Some(value) => route_name(&format!("{key}.name"), value)?,
    };
    let matcher = match fields.get("match") {
        None => RouteMatch::default(),
        Some(value) => read_match(&format!("{key}.match"), value)?,
    };
    let action = read_action(key, fields, pool_names)?;
    let is_pool = matches!(action, RouteAction::Pool(_));
    let strip_prefix = match fields.get("stripPrefix") {
        None => false,
        Some(Value::Bool(strip)) => *strip,
        Some(other) => {
            return Err(KeyError::new(format!("{key}.stripPrefix"), format!("must be true or false, got {other}")));
        }
    };
    if strip_prefix {
        let strip_key = format!("{key}.stripPrefix");
        if !is_pool {
            return Err(KeyError::new(strip_key, "only for a route with a pool: there is no backend to strip it for"));
        }
        match matcher.path_prefix.as_deref() {
            None => return Err(KeyError::new(strip_key, "needs match.pathPrefix, the prefix to strip")),
            Some("/") => return Err(KeyError::new(strip_key, "match.pathPrefix \"/\" leaves nothing to strip")),
            Some(_) => {}
        }
    }
    let mut edits = [HeaderEdits::default(), HeaderEdits::default()];
    for (field, edits) in ["requestHeaders", "responseHeaders"].into_iter().zip(&mut edits) {
        let Some(value) = fields.get(field) else { continue };
        let edits_key = format!("{key}.{field}");
        if !is_pool {
            return Err(KeyError::new(
                edits_key,
                "only for a route with a pool: a respond action lists its fields in respond.headers, \
                 and a redirect sends none",
            ));
        }
        *edits = read_edits(&edits_key, value)?;
    }
    let [request_headers, response_headers] = edits;
    Ok(RouteConfig {
        name: Arc::from(name),
        matcher,
        action,
        strip_prefix,
        request_headers,
        response_headers: Arc::new(response_headers),
    })
}

fn route_name(key: &str, value: &Value) -> Result<String, KeyError> {
    let name = string(key, value)?;
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"._-".contains(&byte);
    if name.is_empty() || name.len() > MAX_ROUTE_NAME_BYTES || !name.bytes().all(allowed) {
        return Err(KeyError::new(key, format!("must be 1 to 64 letters, digits, '.', '_' or '-', got {name:?}")));
    }
    Ok(name.to_string())
}

fn read_match(key: &str, value: &Value) -> Result<RouteMatch, KeyError> {
    let fields = object(key, value, MATCH_KEYS)?;
    let mut matcher = RouteMatch::default();
    if let Some(value) = fields.get("host") {
        let host_key = format!("{key}.host");
        let pattern = |key: &str, value: &Value| {
            HostPattern::parse(string(key, value)?).map_err(|problem| KeyError::new(key, problem))
        };
        matcher.hosts = match value {
            Value::Array(list) => {
                if list.is_empty() {
                    return Err(KeyError::new(host_key, "must list at least one host pattern"));
                }
                let items = list.iter().enumerate();
                items.map(|(index, item)| pattern(&format!("{host_key}[{index}]"), item)).collect::<Result<_, _>>()?
            }
            Value::String(_) => vec![pattern(&host_key, value)?],
            other => {
                let problem = format!("must be a host pattern or a list of them, got {}", kind_of(other));
                return Err(KeyError::new(host_key, problem));
            }
        };
    }
    for (field, slot) in [("path", &mut matcher.path), ("pathPrefix", &mut matcher.path_prefix)] {
        let Some(value) = fields.get(field) else { continue };
        let path_key = format!("{key}.{field}");
        let path = string(&path_key, value)?;
        validate_prefix(path).map_err(|problem| KeyError::new(&path_key, problem))?;
        *slot = Some(path.to_string());
    }
    if matcher.path.is_some() && matcher.path_prefix.is_some() {
        return Err(KeyError::new(
            key,
            "has both path and pathPrefix: keep path to match that one path, \
             or pathPrefix to match it and everything under it",
        ));
    }
    if let Some(value) = fields.get("methods") {
        let methods_key = format!("{key}.methods");
        let list = list(&methods_key, value)?;
        if list.is_empty() {
            return Err(KeyError::new(methods_key, "must list at least one method"));
        }
        for (index, item) in list.iter().enumerate() {
            let item_key = format!("{methods_key}[{index}]");
            let method = string(&item_key, item)?;
            check_method(method).map_err(|problem| KeyError::new(&item_key, problem))?;
            matcher.methods.push(method.to_string());
        }
    }
    if let Some(value) = fields.get("headers") {
        let headers_key = format!("{key}.headers");
        let Value::Object(conditions) = value else {
            let problem = format!("must be an object of field name to value or true, got {}", kind_of(value));
            return Err(KeyError::new(headers_key, problem));
        };
        for (name, wanted) in conditions {
            let condition_key = format!("{headers_key}.{name}");
            check_field_name(name).map_err(|problem| KeyError::new(&condition_key, problem))?;
            let wanted = match wanted {
                Value::Bool(true) => None,
                Value::String(wanted) => {
                    check_wanted_value(wanted).map_err(|problem| KeyError::new(&condition_key, problem))?;
                    Some(wanted.clone())
                }
                other => {
                    return Err(KeyError::new(
                        condition_key,
                        format!("must be a value to equal, or true for \"present\", got {other}"),
                    ));
                }
            };
            matcher.headers.push(HeaderCondition { name: name.to_ascii_lowercase(), wanted });
        }
    }
    Ok(matcher)
}

fn check_method(method: &str) -> Result<(), String> {
    if !is_token(method) {
        return Err(format!("{method:?} is not a method: a method is a token, like GET"));
    }
    let upper = method.to_ascii_uppercase();
    if upper != method && STANDARD_METHODS.contains(&upper.as_str()) {
        return Err(format!("{method:?}: methods are case-sensitive; write {upper:?}"));
    }
    Ok(())
}

/// A value a request field must equal: as it reads after the spaces and tabs around it are cut.
fn check_wanted_value(value: &str) -> Result<(), String> {
    check_field_value(value)?;
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(format!(
            "{value:?} could never match: field values are compared without the spaces and tabs around them"
        ));
    }
    Ok(())
}

fn read_action(key: &str, fields: &Map<String, Value>, pool_names: &[&str]) -> Result<RouteAction, KeyError> {
    let found: Vec<&str> = ACTIONS.into_iter().filter(|action| fields.contains_key(*action)).collect();
    let problem = |found: &str| format!("needs exactly one action: pool, redirect or respond (found {found})");
    match found.as_slice() {
        [] => Err(KeyError::new(key, problem("none"))),
        ["pool"] => read_pool(&format!("{key}.pool"), &fields["pool"], pool_names),
        ["redirect"] => read_redirect(&format!("{key}.redirect"), &fields["redirect"]),
        ["respond"] => read_respond(&format!("{key}.respond"), &fields["respond"]),
        [first @ .., last] => Err(KeyError::new(key, problem(&format!("{} and {last}", first.join(", "))))),
    }
}

fn read_pool(key: &str, value: &Value, pool_names: &[&str]) -> Result<RouteAction, KeyError> {
    let pool = string(key, value)?;
    if !pool_names.contains(&pool) {
        let mut known = pool_names.to_vec();
        known.sort_unstable();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return Err(KeyError::new(key, format!("unknown pool {pool:?} (pools: {known})")));
    }
    Ok(RouteAction::Pool(pool.to_string()))
}

fn read_redirect(key: &str, value: &Value) -> Result<RouteAction, KeyError> {
    let fields = object(key, value, REDIRECT_KEYS)?;
    let location_key = format!("{key}.location");
    let Some(location) = fields.get("location") else {
        return Err(KeyError::new(location_key, "is required, e.g. \"https://www.example.com{path}{query}\""));
    };
    let location = string(&location_key, location)?;
    check_location(location).map_err(|problem| KeyError::new(&location_key, problem))?;
    let status = match fields.get("status") {
        None => DEFAULT_REDIRECT_STATUS,
        Some(value) => match value.as_u64() {
            Some(status) if REDIRECT_STATUSES.iter().any(|&allowed| u64::from(allowed) == status) => status as u16,
            _ => {
                return Err(KeyError::new(
                    format!("{key}.status"),
                    format!("must be 301, 302, 303, 307 or 308, got {value}"),
                ));
            }
        },
    };
    Ok(RouteAction::Redirect { location: location.to_string(), status })
}

/// A redirect template: visible ASCII, and every `{` opens one of the [`PLACEHOLDERS`].
fn check_location(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(bad) = template.chars().find(|&char| !char.is_ascii_graphic()) {
        return Err(format!(
            "{template:?} contains {bad:?}: a location is visible ASCII without spaces (percent-encode the rest)"
        ));
    }
    let mut rest = template;
    while let Some(brace) = rest.find(['{', '}']) {
        if rest[brace..].starts_with('}') {
            return Err(format!("{template:?} has a \"}}\" that closes no placeholder"));
        }
        let after = &rest[brace + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("{template:?} has a \"{{\" without a closing \"}}\""));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!("unknown placeholder {{{name}}} (placeholders: {{host}}, {{path}}, {{query}})"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn read_respond(key: &str, value: &Value) -> Result<RouteAction, KeyError> {
    let fields = object(key, value, RESPOND_KEYS)?;
    let status = match fields.get("status") {
        None => DEFAULT_RESPOND_STATUS,
        Some(value) => match value.as_u64() {
            Some(status @ 200..=599) => status as u16,
            _ => {
                return Err(KeyError::new(
                    format!("{key}.status"),
                    format!("must be a status from 200 to 599, got {value}"),
                ));
            }
        },
    };
    let body = match fields.get("body") {
        None => String::new(),
        Some(value) => string(&format!("{key}.body"), value)?.to_string(),
    };
    if !body.is_empty() && matches!(status, 204 | 304) {
        return Err(KeyError::new(format!("{key}.body"), format!("a {status} answer has no body")));
    }
    let mut headers = Vec::new();
    if let Some(value) = fields.get("headers") {
        let headers_key = format!("{key}.headers");
        for (name, value) in fields_object(&headers_key, value)? {
            let field_key = format!("{headers_key}.{name}");
            check_field_name(name).map_err(|problem| KeyError::new(&field_key, problem))?;
            if FRAMING_FIELDS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(KeyError::new(
                    field_key,
                    format!("{name} is written by the load balancer, which frames its own answers"),
                ));
            }
            headers.push((name.clone(), field_value(&field_key, value)?));
        }
    }
    Ok(RouteAction::Respond { status, body, headers })
}

fn read_edits(key: &str, value: &Value) -> Result<HeaderEdits, KeyError> {
    let fields = object(key, value, EDIT_KEYS)?;
    let mut edits = HeaderEdits::default();
    if let Some(value) = fields.get("remove") {
        let remove_key = format!("{key}.remove");
        for (index, item) in list(&remove_key, value)?.iter().enumerate() {
            let item_key = format!("{remove_key}[{index}]");
            let name = string(&item_key, item)?;
            check_edited_name(key, name).map_err(|problem| KeyError::new(&item_key, problem))?;
            edits.remove.push(name.to_ascii_lowercase());
        }
    }
    for (field, list) in [("set", &mut edits.set), ("add", &mut edits.add)] {
        let Some(value) = fields.get(field) else { continue };
        let field_key = format!("{key}.{field}");
        for (name, value) in fields_object(&field_key, value)? {
            let name_key = format!("{field_key}.{name}");
            check_edited_name(key, name).map_err(|problem| KeyError::new(&name_key, problem))?;
            let value = field_value(&name_key, value)?;
            let earlier = list.iter().find(|(earlier, _)| earlier.eq_ignore_ascii_case(name));
            if let (Some((earlier, _)), "set") = (earlier, field) {
                return Err(KeyError::new(name_key, format!("sets the field {earlier} twice (names ignore case)")));
            }
            list.push((name.clone(), value));
        }
    }
    Ok(edits)
}

/// A field name `requestHeaders` or `responseHeaders` (the list at `key`) may name.
fn check_edited_name(key: &str, name: &str) -> Result<(), String> {
    check_field_name(name)?;
    let lower = name.to_ascii_lowercase();
    if MANAGED_FIELDS.contains(&lower.as_str()) {
        return Err(format!(
            "{name} is managed by the load balancer (a hop-by-hop or framing field, or Host) and cannot be edited"
        ));
    }
    if key.ends_with("requestHeaders") && FORWARDING_FIELDS.contains(&lower.as_str()) {
        return Err(format!("{name} is written by the load balancer for every request and cannot be edited"));
    }
    Ok(())
}

fn check_field_name(name: &str) -> Result<(), String> {
    if is_token(name) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a field name: a field name is a token, like X-Env"))
    }
}

fn check_field_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|byte| matches!(byte, b'\r' | b'\n' | b'\0')) {
        return Err(format!("{value:?}: a field value cannot hold CR, LF or NUL"));
    }
    Ok(())
}

/// A field value to send: a string without CR, LF or NUL.
fn field_value(key: &str, value: &Value) -> Result<String, KeyError> {
    let value = string(key, value)?;
    check_field_value(value).map_err(|problem| KeyError::new(key, problem))?;
    Ok(value.to_string())
}

/// An object of field name to value, checked one by one by the caller.
fn fields_object<'a>(key: &str, value: &'a Value) -> Result<&'a Map<String, Value>, KeyError> {
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(KeyError::new(key, format!("must be an object of field name to value, got {}", kind_of(other)))),
    }
}

/// `value` as an object whose keys are all in `valid`.
fn object<'a>(key: &str, value: &'a Value, valid: &[&str]) -> Result<&'a Map<String, Value>, KeyError> {
    let Value::Object(fields) = value else {
        return Err(KeyError::new(key, format!("must be an object, got {}", kind_of(value))));
    };
    if let Some(unknown) = fields.keys().find(|field| !valid.contains(&field.as_str())) {
        return Err(KeyError::new(
            format!("{key}.{unknown}"),
            format!("unknown key (valid keys: {})", valid.join(", ")),
        ));
    }
    Ok(fields)
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str, KeyError> {
    value.as_str().ok_or_else(|| KeyError::new(key, format!("must be a string, got {}", kind_of(value))))
}

fn list<'a>(key: &str, value: &'a Value) -> Result<&'a [Value], KeyError> {
    match value {
        Value::Array(list) => Ok(list),
        other => Err(KeyError::new(key, format!("must be a list, got {}", kind_of(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pools in no particular order: errors list them sorted.
    const POOLS: &[&str] = &["default", "static", "api"];

    fn read(json: &str) -> Result<Vec<RouteConfig>, KeyError> {
        let value: Value = serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"));
        read_routes(&value, POOLS)
    }

    fn one(json: &str) -> RouteConfig {
        let mut routes = read(&format!("[{json}]")).unwrap_or_else(|error| panic!("{json}: {error}"));
        routes.remove(0)
    }

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_example_from_the_docs_reads_into_these_values() {
        let routes = read(
            r#"[
              {"name": "old", "match": {"host": "old.example.com"},
               "redirect": {"location": "https://www.example.com{path}{query}", "status": 308}},
              {"name": "api", "match": {"host": "api.example.com", "pathPrefix": "/v1"}, "pool": "api",
               "stripPrefix": true,
               "requestHeaders": {"remove": ["X-Debug"], "set": {"X-Env": "prod"}},
               "responseHeaders": {"set": {"Cache-Control": "no-store"}}},
              {"name": "assets", "match": {"host": "*.example.com", "pathPrefix": "/static/"}, "pool": "static"},
              {"name": "ping", "match": {"path": "/lb-ping", "methods": ["GET", "HEAD"]},
               "respond": {"status": 200, "body": "ok\n"}}
            ]"#,
        )
        .unwrap();
        let names: Vec<&str> = routes.iter().map(|route| &*route.name).collect();
        assert_eq!(names, ["old", "api", "assets", "ping"]);
        assert_eq!(
            routes[0].action,
            RouteAction::Redirect { location: "https://www.example.com{path}{query}".to_string(), status: 308 }
        );
        assert_eq!(
            routes[1],
            RouteConfig {
                name: "api".into(),
                matcher: RouteMatch {
                    hosts: vec![HostPattern::parse("api.example.com").unwrap()],
                    path_prefix: Some("/v1".to_string()),
                    ..RouteMatch::default()
                },
                action: RouteAction::Pool("api".to_string()),
                strip_prefix: true,
                request_headers: HeaderEdits {
                    remove: vec!["x-debug".to_string()],
                    set: strings(&[("X-Env", "prod")]),
                    add: Vec::new()
                },
                response_headers: Arc::new(HeaderEdits {
                    set: strings(&[("Cache-Control", "no-store")]),
                    ..HeaderEdits::default()
                }),
            }
        );
        assert_eq!(routes[2].matcher.hosts, [HostPattern::parse("*.example.com").unwrap()]);
        assert!(
            !routes[2].strip_prefix && routes[2].request_headers.is_empty() && routes[2].response_headers.is_empty()
        );
        assert_eq!(routes[3].matcher.path.as_deref(), Some("/lb-ping"));
        assert_eq!(routes[3].matcher.methods, ["GET", "HEAD"]);
        assert_eq!(
            routes[3].action,
            RouteAction::Respond { status: 200, body: "ok\n".to_string(), headers: Vec::new() }
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let route = one(r#"{"pool": "default"}"#);
        assert_eq!(&*route.name, "route-0");
        assert_eq!(route.matcher, RouteMatch::default(), "no match matches everything");
        assert!(!route.strip_prefix);
        assert_eq!(one(r#"{"match": {}, "pool": "api"}"#).matcher, RouteMatch::default());
        let routes = read(r#"[{"pool": "api"}, {"name": "x", "pool": "api"}, {"pool": "api"}]"#).unwrap();
        let names: Vec<&str> = routes.iter().map(|route| &*route.name).collect();
        assert_eq!(names, ["route-0", "x", "route-2"]);
        assert_eq!(
            one(r#"{"redirect": {"location": "/new"}}"#).action,
            RouteAction::Redirect { location: "/new".to_string(), status: DEFAULT_REDIRECT_STATUS }
        );
        assert_eq!(
            one(r#"{"respond": {}}"#).action,
            RouteAction::Respond { status: DEFAULT_RESPOND_STATUS, body: String::new(), headers: Vec::new() }
        );
        assert_eq!(read("[]").unwrap(), []);
        assert!(!one(r#"{"match": {"pathPrefix": "/a"}, "pool": "api", "stripPrefix": false}"#).strip_prefix);
    }

    #[test]
    fn match_fields_read_into_their_normal_forms() {
        let route = one(r#"{"match": {"host": ["A.example.com.", "*.Example.org"], "methods": ["GET", "PURGE"],
                          "headers": {"X-Canary": "yes", "Authorization": true, "X-Empty": ""}},
                "pool": "api"}"#);
        let hosts: Vec<String> = route.matcher.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["a.example.com", "*.example.org"]);
        assert_eq!(route.matcher.methods, ["GET", "PURGE"], "an extension method is a token too");
        let condition = |name: &str, wanted: Option<&str>| HeaderCondition {
            name: name.to_string(),
            wanted: wanted.map(str::to_string),
        };
        // serde_json keeps an object's keys sorted.
        assert_eq!(
            route.matcher.headers,
            [condition("authorization", None), condition("x-canary", Some("yes")), condition("x-empty", Some(""))]
        );
    }

    #[test]
    fn respond_headers_and_header_edits_keep_their_names_as_written() {
        let route = one(
            r#"{"respond": {"status": 503, "body": "down\n", "headers": {"Retry-After": "120", "X-Why": "upkeep"}}}"#,
        );
        assert_eq!(
            route.action,
            RouteAction::Respond {
                status: 503,
                body: "down\n".to_string(),
                headers: strings(&[("Retry-After", "120"), ("X-Why", "upkeep")])
            }
        );
        let route = one(r#"{"pool": "api", "requestHeaders": {"remove": ["X-A", "x-b"], "set": {"X-Env": "prod"},
                                                   "add": {"Via": "1.1 edge", "via": "1.1 other"}}}"#);
        let edits = &route.request_headers;
        assert_eq!(edits.remove, ["x-a", "x-b"]);
        assert_eq!(edits.set, strings(&[("X-Env", "prod")]));
        assert_eq!(edits.add, strings(&[("Via", "1.1 edge"), ("via", "1.1 other")]), "add may repeat a name");
    }

    #[test]
    fn header_edits_say_what_they_drop_and_what_they_append() {
        let edits = HeaderEdits {
            remove: vec!["x-debug".to_string()],
            set: strings(&[("X-Env", "prod")]),
            add: strings(&[("Via", "edge"), ("X-Env", "extra")]),
        };
        assert!(!edits.is_empty());
        assert!(HeaderEdits::default().is_empty());
        for (name, dropped) in
            [("X-Debug", true), ("x-debug", true), ("X-DEBUG", true), ("x-env", true), ("X-Env", true), ("Via", false)]
        {
            assert_eq!(edits.drops(name.as_bytes()), dropped, "{name}");
        }
        assert!(!edits.drops(b"x-debu"), "whole names only");
        let additions: Vec<(&str, &str)> = edits.additions().collect();
        assert_eq!(additions, [("X-Env", "prod"), ("Via", "edge"), ("X-Env", "extra")]);
    }

    /// Every refusal: the routes JSON, the key it names, and a fragment of the problem.
    #[test]
    fn every_mistake_is_refused_naming_its_key() {
        let long_name = format!(r#"[{{"name": "{}", "pool": "api"}}]"#, "a".repeat(65));
        let cases: &[(&str, &str, &str)] = &[
            // The list and its entries.
            (r#"{"pool": "api"}"#, "routes", "must be a list, got an object"),
            ("[1]", "routes[0]", "must be an object, got a number"),
            (
                r#"[{"pool": "api", "colour": 1}]"#,
                "routes[0].colour",
                "unknown key (valid keys: name, match, pool, redirect, respond, stripPrefix, requestHeaders, \
                 responseHeaders)",
            ),
            // Names.
            (r#"[{"name": "a b", "pool": "api"}]"#, "routes[0].name", "1 to 64 letters, digits, '.', '_' or '-'"),
            (r#"[{"name": "", "pool": "api"}]"#, "routes[0].name", "1 to 64"),
            (&long_name, "routes[0].name", "1 to 64"),
            (r#"[{"name": "é", "pool": "api"}]"#, "routes[0].name", "1 to 64"),
            (r#"[{"name": 7, "pool": "api"}]"#, "routes[0].name", "must be a string, got a number"),
            (
                r#"[{"name": "a", "pool": "api"}, {"pool": "api"}, {"name": "a", "pool": "api"}]"#,
                "routes[2].name",
                "the name \"a\" is taken by routes[0]",
            ),
            (
                r#"[{"name": "route-1", "pool": "api"}, {"pool": "api"}]"#,
                "routes[1]",
                "its default name \"route-1\" is taken by routes[0]; give it a name",
            ),
            // match.
            (r#"[{"match": "a", "pool": "api"}]"#, "routes[0].match", "must be an object, got a string"),
            (
                r#"[{"match": {"hots": "a"}, "pool": "api"}]"#,
                "routes[0].match.hots",
                "unknown key (valid keys: host, path, pathPrefix, methods, headers)",
            ),
            (
                r#"[{"match": {"host": "a:80"}, "pool": "api"}]"#,
                "routes[0].match.host",
                "\"a:80\": a host pattern has no port",
            ),
            (r#"[{"match": {"host": ["a", "*"]}, "pool": "api"}]"#, "routes[0].match.host[1]", "every host"),
            (r#"[{"match": {"host": ["a", 1]}, "pool": "api"}]"#, "routes[0].match.host[1]", "must be a string"),
            (r#"[{"match": {"host": []}, "pool": "api"}]"#, "routes[0].match.host", "at least one host pattern"),
            (r#"[{"match": {"host": 1}, "pool": "api"}]"#, "routes[0].match.host", "a host pattern or a list of them"),
            (r#"[{"match": {"host": "a b"}, "pool": "api"}]"#, "routes[0].match.host", "character"),
            (r#"[{"match": {"path": "a"}, "pool": "api"}]"#, "routes[0].match.path", "must start with \"/\""),
            (r#"[{"match": {"path": "/a/../b"}, "pool": "api"}]"#, "routes[0].match.path", "write it as \"/b\""),
            (r#"[{"match": {"path": "/a?b"}, "pool": "api"}]"#, "routes[0].match.path", "path contains a backslash, ?"),
            (r#"[{"match": {"path": 1}, "pool": "api"}]"#, "routes[0].match.path", "must be a string"),
            (r#"[{"match": {"pathPrefix": "//a"}, "pool": "api"}]"#, "routes[0].match.pathPrefix", "empty segment"),
            (r#"[{"match": {"pathPrefix": "v1"}, "pool": "api"}]"#, "routes[0].match.pathPrefix", "must start with"),
            (
                r#"[{"match": {"path": "/a", "pathPrefix": "/a"}, "pool": "api"}]"#,
                "routes[0].match",
                "has both path and pathPrefix: keep path",
            ),
            (r#"[{"match": {"methods": "GET"}, "pool": "api"}]"#, "routes[0].match.methods", "must be a list"),
            (r#"[{"match": {"methods": []}, "pool": "api"}]"#, "routes[0].match.methods", "at least one method"),
            (r#"[{"match": {"methods": ["GE T"]}, "pool": "api"}]"#, "routes[0].match.methods[0]", "is not a method"),
            (r#"[{"match": {"methods": [""]}, "pool": "api"}]"#, "routes[0].match.methods[0]", "is not a method"),
            (
                r#"[{"match": {"methods": ["GET", "get"]}, "pool": "api"}]"#,
                "routes[0].match.methods[1]",
                "methods are case-sensitive; write \"GET\"",
            ),
            (r#"[{"match": {"methods": [1]}, "pool": "api"}]"#, "routes[0].match.methods[0]", "must be a string"),
            (r#"[{"match": {"headers": ["X-A"]}, "pool": "api"}]"#, "routes[0].match.headers", "must be an object"),
            (
                r#"[{"match": {"headers": {"X Debug": true}}, "pool": "api"}]"#,
                "routes[0].match.headers.X Debug",
                "is not a field name",
            ),
            (
                r#"[{"match": {"headers": {"X-Debug": false}}, "pool": "api"}]"#,
                "routes[0].match.headers.X-Debug",
                "or true for \"present\", got false",
            ),
            (r#"[{"match": {"headers": {"X-Debug": 1}}, "pool": "api"}]"#, "routes[0].match.headers.X-Debug", "got 1"),
            (
                r#"[{"match": {"headers": {"X-Debug": " on"}}, "pool": "api"}]"#,
                "routes[0].match.headers.X-Debug",
                "could never match",
            ),
            (
                r#"[{"match": {"headers": {"X-Debug": "on\r\n"}}, "pool": "api"}]"#,
                "routes[0].match.headers.X-Debug",
                "CR, LF or NUL",
            ),
            // Actions.
            (
                r#"[{"pool": "api"}, {"pool": "api"}, {"name": "x"}]"#,
                "routes[2]",
                "needs exactly one action: pool, redirect or respond (found none)",
            ),
            (
                r#"[{"pool": "api", "respond": {}}]"#,
                "routes[0]",
                "needs exactly one action: pool, redirect or respond (found pool and respond)",
            ),
            (
                r#"[{"pool": "api", "redirect": {"location": "/"}, "respond": {}}]"#,
                "routes[0]",
                "(found pool, redirect and respond)",
            ),
            (
                r#"[{"pool": "api"}, {"pool": "apii"}]"#,
                "routes[1].pool",
                "unknown pool \"apii\" (pools: api, default, static)",
            ),
            (r#"[{"pool": ["api"]}]"#, "routes[0].pool", "must be a string, got a list"),
            (r#"[{"redirect": "/"}]"#, "routes[0].redirect", "must be an object, got a string"),
            (
                r#"[{"redirect": {"location": "/", "code": 301}}]"#,
                "routes[0].redirect.code",
                "unknown key (valid keys: location, status)",
            ),
            (r#"[{"redirect": {"status": 301}}]"#, "routes[0].redirect.location", "is required"),
            (r#"[{"redirect": {"location": ""}}]"#, "routes[0].redirect.location", "must not be empty"),
            (r#"[{"redirect": {"location": 1}}]"#, "routes[0].redirect.location", "must be a string"),
            (r#"[{"redirect": {"location": "/a b"}}]"#, "routes[0].redirect.location", "without spaces"),
            (r#"[{"redirect": {"location": "/a\u0001"}}]"#, "routes[0].redirect.location", "visible ASCII"),
            (r#"[{"redirect": {"location": "/a\r\nX: y"}}]"#, "routes[0].redirect.location", "visible ASCII"),
            (r#"[{"redirect": {"location": "/caf\u00e9"}}]"#, "routes[0].redirect.location", "percent-encode"),
            (
                r#"[{"redirect": {"location": "https://{scheme}.example.com{path}"}}]"#,
                "routes[0].redirect.location",
                "unknown placeholder {scheme} (placeholders: {host}, {path}, {query})",
            ),
            (r#"[{"redirect": {"location": "/{PATH}"}}]"#, "routes[0].redirect.location", "unknown placeholder {PATH}"),
            (r#"[{"redirect": {"location": "/{}"}}]"#, "routes[0].redirect.location", "unknown placeholder {}"),
            (r#"[{"redirect": {"location": "/{path"}}]"#, "routes[0].redirect.location", "without a closing"),
            (r#"[{"redirect": {"location": "/path}"}}]"#, "routes[0].redirect.location", "closes no placeholder"),
            (
                r#"[{"redirect": {"location": "/", "status": 200}}]"#,
                "routes[0].redirect.status",
                "must be 301, 302, 303, 307 or 308, got 200",
            ),
            (r#"[{"redirect": {"location": "/", "status": "308"}}]"#, "routes[0].redirect.status", "got \"308\""),
            (r#"[{"redirect": {"location": "/", "status": 308.5}}]"#, "routes[0].redirect.status", "got 308.5"),
            (r#"[{"respond": 200}]"#, "routes[0].respond", "must be an object, got a number"),
            (
                r#"[{"respond": {"type": "text/plain"}}]"#,
                "routes[0].respond.type",
                "unknown key (valid keys: status, body, headers)",
            ),
            (r#"[{"respond": {"status": 101}}]"#, "routes[0].respond.status", "from 200 to 599, got 101"),
            (r#"[{"respond": {"status": 199}}]"#, "routes[0].respond.status", "from 200 to 599, got 199"),
            (r#"[{"respond": {"status": 600}}]"#, "routes[0].respond.status", "from 200 to 599, got 600"),
            (r#"[{"respond": {"status": -1}}]"#, "routes[0].respond.status", "got -1"),
            (r#"[{"respond": {"body": 1}}]"#, "routes[0].respond.body", "must be a string"),
            (r#"[{"respond": {"status": 204, "body": "x"}}]"#, "routes[0].respond.body", "a 204 answer has no body"),
            (r#"[{"respond": {"status": 304, "body": "x"}}]"#, "routes[0].respond.body", "a 304 answer has no body"),
            (r#"[{"respond": {"headers": []}}]"#, "routes[0].respond.headers", "must be an object"),
            (
                r#"[{"respond": {"headers": {"Content-Length": "3"}}}]"#,
                "routes[0].respond.headers.Content-Length",
                "frames its own answers",
            ),
            (
                r#"[{"respond": {"headers": {"transfer-encoding": "chunked"}}}]"#,
                "routes[0].respond.headers.transfer-encoding",
                "frames its own answers",
            ),
            (
                r#"[{"respond": {"headers": {"CONNECTION": "close"}}}]"#,
                "routes[0].respond.headers.CONNECTION",
                "frames its own answers",
            ),
            (r#"[{"respond": {"headers": {"X Y": "1"}}}]"#, "routes[0].respond.headers.X Y", "is not a field name"),
            (r#"[{"respond": {"headers": {"X-Y": "a\nb"}}}]"#, "routes[0].respond.headers.X-Y", "CR, LF or NUL"),
            (r#"[{"respond": {"headers": {"X-Y": 1}}}]"#, "routes[0].respond.headers.X-Y", "must be a string"),
            // stripPrefix.
            (
                r#"[{"match": {"pathPrefix": "/a"}, "pool": "api", "stripPrefix": "yes"}]"#,
                "routes[0].stripPrefix",
                "must be true or false",
            ),
            (r#"[{"pool": "api", "stripPrefix": true}]"#, "routes[0].stripPrefix", "needs match.pathPrefix"),
            (
                r#"[{"match": {"path": "/a"}, "pool": "api", "stripPrefix": true}]"#,
                "routes[0].stripPrefix",
                "needs match.pathPrefix",
            ),
            (
                r#"[{"match": {"pathPrefix": "/"}, "pool": "api", "stripPrefix": true}]"#,
                "routes[0].stripPrefix",
                "leaves nothing to strip",
            ),
            (
                r#"[{"match": {"pathPrefix": "/a"}, "respond": {}, "stripPrefix": true}]"#,
                "routes[0].stripPrefix",
                "only for a route with a pool",
            ),
            (
                r#"[{"match": {"pathPrefix": "/a"}, "redirect": {"location": "/"}, "stripPrefix": true}]"#,
                "routes[0].stripPrefix",
                "only for a route with a pool",
            ),
            // requestHeaders and responseHeaders.
            (
                r#"[{"respond": {}, "requestHeaders": {"set": {"X-A": "1"}}}]"#,
                "routes[0].requestHeaders",
                "only for a route with a pool: a respond action lists its fields in respond.headers",
            ),
            (
                r#"[{"respond": {}, "responseHeaders": {}}]"#,
                "routes[0].responseHeaders",
                "only for a route with a pool",
            ),
            (
                r#"[{"redirect": {"location": "/"}, "responseHeaders": {"set": {"X-A": "1"}}}]"#,
                "routes[0].responseHeaders",
                "and a redirect sends none",
            ),
            (r#"[{"pool": "api", "requestHeaders": []}]"#, "routes[0].requestHeaders", "must be an object, got a list"),
            (
                r#"[{"pool": "api", "requestHeaders": {"delete": ["X-A"]}}]"#,
                "routes[0].requestHeaders.delete",
                "unknown key (valid keys: remove, set, add)",
            ),
            (
                r#"[{"pool": "api", "responseHeaders": {"remove": "X-A"}}]"#,
                "routes[0].responseHeaders.remove",
                "must be a list",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"remove": ["X-A", "X:A"]}}]"#,
                "routes[0].requestHeaders.remove[1]",
                "is not a field name",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"remove": [1]}}]"#,
                "routes[0].requestHeaders.remove[0]",
                "must be a string",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"set": ["X-A"]}}]"#,
                "routes[0].requestHeaders.set",
                "must be an object of field name to value",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"add": {"X-A": 1}}}]"#,
                "routes[0].requestHeaders.add.X-A",
                "must be a string",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"set": {"X-A": "a\rb"}}}]"#,
                "routes[0].requestHeaders.set.X-A",
                "CR, LF or NUL",
            ),
            (
                r#"[{"pool": "api", "responseHeaders": {"add": {"X-A": "a\u0000"}}}]"#,
                "routes[0].responseHeaders.add.X-A",
                "CR, LF or NUL",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"set": {"X-Env": "a", "x-env": "b"}}}]"#,
                "routes[0].requestHeaders.set.x-env",
                "sets the field X-Env twice",
            ),
            (
                r#"[{"pool": "api", "requestHeaders": {"set": {"X A": "a"}}}]"#,
                "routes[0].requestHeaders.set.X A",
                "is not a field name",
            ),
        ];
        for (json, key, fragment) in cases {
            let error = match read(json) {
                Ok(routes) => panic!("{json} was accepted: {routes:?}"),
                Err(error) => error,
            };
            assert_eq!(error.key, *key, "{json}: {error}");
            assert!(error.problem.contains(fragment), "{json}: {:?} does not say {fragment:?}", error.problem);
            assert_eq!(error.to_string(), format!("{key}: {}", error.problem));
        }
    }

    #[test]
    fn header_edits_refuse_every_field_the_load_balancer_manages() {
        let managed = [
            "Connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "Content-Length",
            "TE",
            "Trailer",
            "Upgrade",
            "Proxy-Connection",
            "Host",
        ];
        for name in managed {
            for spelling in [name.to_string(), name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
                for side in ["requestHeaders", "responseHeaders"] {
                    let cases = [
                        (format!(r#"{{"remove": ["{spelling}"]}}"#), format!("routes[0].{side}.remove[0]")),
                        (format!(r#"{{"set": {{"{spelling}": "x"}}}}"#), format!("routes[0].{side}.set.{spelling}")),
                        (format!(r#"{{"add": {{"{spelling}": "x"}}}}"#), format!("routes[0].{side}.add.{spelling}")),
                    ];
                    for (edits, key) in cases {
                        let json = format!(r#"[{{"pool": "api", "{side}": {edits}}}]"#);
                        let error = read(&json).expect_err(&json);
                        assert_eq!(error.key, key, "{json}");
                        assert!(error.problem.contains("managed by the load balancer"), "{json}: {error}");
                    }
                }
            }
        }
    }

    #[test]
    fn request_edits_refuse_the_forwarding_fields_and_response_edits_allow_them() {
        for name in ["X-Forwarded-For", "x-real-ip", "X-Forwarded-Proto", "X-Forwarded-Prefix"] {
            let json = format!(r#"[{{"pool": "api", "requestHeaders": {{"set": {{"{name}": "x"}}}}}}]"#);
            let error = read(&json).expect_err(&json);
            assert_eq!(error.key, format!("routes[0].requestHeaders.set.{name}"));
            assert!(error.problem.contains("written by the load balancer for every request"), "{error}");
            let json = format!(r#"[{{"pool": "api", "responseHeaders": {{"set": {{"{name}": "x"}}}}}}]"#);
            assert!(read(&json).is_ok(), "{json}");
        }
    }
}
