//! `--demo`: echo backends started inside the load balancer's own process, one for each
//! configured server on this machine (of every pool), so that a newcomer sees balancing with a
//! single command. Runs on `main` before the server starts; each echo backend has its own threads.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use crate::config::Config;
use crate::config::routes::{RouteAction, RouteConfig};
use crate::echo::{self, EchoOptions};
use crate::status_page;

/// The config used by `--demo` when `./config.json` does not exist: the repository's own.
pub const BUILT_IN_CONFIG: &str = include_str!("../config.json");

/// Starts one echo backend per configured server address, in every pool. Every server must be on
/// a loopback address. Backends are named `backend-N` in a single pool, `POOL-N` with several
/// pools; a server listed in two pools is started once.
pub fn start_backends(config: &Config) -> io::Result<()> {
    let mut started = Vec::new();
    for pool in &config.pools {
        for (index, server) in pool.servers.iter().enumerate() {
            if started.contains(&server.url) {
                continue;
            }
            started.push(server.url.clone());
            let name = match config.pools.len() {
                1 => format!("backend-{}", index + 1),
                _ => format!("{}-{}", pool.name, index + 1),
            };
            start_backend(server, name)?;
        }
    }
    Ok(())
}

fn start_backend(server: &crate::config::ServerConfig, name: String) -> io::Result<()> {
    {
        if server.tls.is_some() {
            // Its certificate would have to verify against real roots: not a demo's business.
            return Err(io::Error::other(format!(
                "--demo starts plain HTTP backends, and {} is an https backend",
                server.url
            )));
        }
        let Some(addr) = server.addrs.iter().find(|addr| addr.ip().is_loopback()) else {
            return Err(io::Error::other(format!(
                "--demo starts backends on this machine only, and {} is not a loopback address",
                server.url
            )));
        };
        let listener = TcpListener::bind(addr).map_err(|error| {
            io::Error::new(error.kind(), format!("--demo cannot start a backend on {addr}: {error}"))
        })?;
        echo::spawn(listener, EchoOptions { name, latency: Duration::ZERO, fail: false, tls: None })?;
    }
    Ok(())
}

/// The most routes the instructions show an example request for.
const MAX_ROUTE_EXAMPLES: usize = 6;

/// A request that takes `route`, as a curl command, and what the route does with it.
fn route_example(route: &RouteConfig, port: u16) -> (String, String) {
    let host = route.matcher.hosts.first().map(|pattern| pattern.to_string().replace("*.", "www."));
    let target = match (&route.matcher.path, &route.matcher.path_prefix) {
        (Some(path), _) => path.clone(),
        (None, Some(prefix)) if prefix.ends_with('/') => format!("{prefix}index.html"),
        (None, Some(prefix)) => format!("{prefix}/users"),
        (None, None) => "/".to_string(),
    };
    let method = match route.matcher.methods.first() {
        Some(method) if method != "GET" => format!("-X {method} "),
        _ => String::new(),
    };
    let host_flag = host.map_or_else(String::new, |host| format!("-H 'Host: {host}' "));
    let what = match &route.action {
        RouteAction::Pool(pool) if route.strip_prefix => format!("route {}: pool {pool}, prefix stripped", route.name),
        RouteAction::Pool(pool) => format!("route {}: pool {pool}", route.name),
        RouteAction::Redirect { status, .. } => format!("route {}: a {status} redirect", route.name),
        RouteAction::Respond { status, .. } => format!("route {}: answered {status} by the load balancer", route.name),
    };
    (format!("curl -i {method}{host_flag}localhost:{port}{target}"), what)
}

/// What to try, printed once everything listens.
pub fn instructions(config: &Config, port: u16) -> String {
    let backends: Vec<&str> = config.all_servers().map(|server| server.url.as_str()).collect();
    let algorithms: Vec<String> = match &config.pools[..] {
        [only] => vec![only.algorithm.name().to_string()],
        pools => pools.iter().map(|pool| format!("{} {}", pool.name, pool.algorithm.name())).collect(),
    };
    let mut examples = vec![
        (format!("curl localhost:{port}/ping"), "a few times: the backend rotates".to_string()),
        (format!("curl 'localhost:{port}/hello?x=1'"), "the request as the backend saw it".to_string()),
        (format!("curl localhost:{port}{}", config.metrics_path), "counters and backend health".to_string()),
        (format!("curl -d 'some data' localhost:{port}/echo"), "the body, streamed back".to_string()),
    ];
    examples.extend(config.routes.iter().take(MAX_ROUTE_EXAMPLES).map(|route| route_example(route, port)));
    let width = examples.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    let try_lines: Vec<String> =
        examples.iter().map(|(command, what)| format!("  {command:<width$}  # {what}")).collect();
    format!(
        "\n\
         loadbalancer demo: {count} echo backends ({backends}) behind http://localhost:{port}/ ({algorithm})\n\
         \n\
         Try, in another terminal:\n\
         {try_lines}\n\
         \n\
         Open http://localhost:{port}{status_page} in a browser: a live status page.\n\
         \n\
         Press Ctrl-C to stop.\n",
        count = backends.len(),
        backends = backends.join(", "),
        algorithm = algorithms.join(", "),
        try_lines = try_lines.join("\n"),
        status_page = status_page::PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn a_routing_config_gets_a_request_for_each_route() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes.json")).unwrap();
        let config = Config::from_json(&text, "examples/routes.json", &Overrides::default()).unwrap();
        let text = instructions(&config, 8080);
        assert!(text.contains("5 echo backends"), "{text}");
        assert!(text.contains("default round_robin, api least_conn, static round_robin"), "{text}");
        assert!(text.contains("curl -i -H 'Host: api.localhost' localhost:8080/v1/users"), "{text}");
        assert!(text.contains("# route api: pool api, prefix stripped"), "{text}");
        assert!(text.contains("curl -i -H 'Host: www.localhost' localhost:8080/static/index.html"), "{text}");
        assert!(text.contains("curl -i localhost:8080/lb-ping"), "{text}");
        assert!(text.contains("# route old: a 308 redirect"), "{text}");
    }

    #[test]
    fn instructions_name_the_commands_and_the_status_page() {
        let config = Config::from_json(BUILT_IN_CONFIG, "config.json", &Overrides::default()).unwrap();
        let text = instructions(&config, 8080);
        assert!(text.contains("3 echo backends"), "{text}");
        assert!(text.contains("curl localhost:8080/lb-metrics"), "{text}");
        assert!(text.contains("Open http://localhost:8080/lb-status in a browser"), "{text}");
    }
}
