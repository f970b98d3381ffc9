//! `--demo`: echo backends started inside the load balancer's own process, one for each
//! configured server on this machine (of every pool), so that a newcomer sees balancing with a
//! single command. Runs on `main` before the server starts; each echo backend has its own threads.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use crate::config::Config;
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
        let Some(addr) = server.addrs.iter().find(|addr| addr.ip().is_loopback()) else {
            return Err(io::Error::other(format!(
                "--demo starts backends on this machine only, and {} is not a loopback address",
                server.url
            )));
        };
        let listener = TcpListener::bind(addr).map_err(|error| {
            io::Error::new(error.kind(), format!("--demo cannot start a backend on {addr}: {error}"))
        })?;
        echo::spawn(listener, EchoOptions { name, latency: Duration::ZERO, fail: false })?;
    }
    Ok(())
}

/// What to try, printed once everything listens.
pub fn instructions(config: &Config, port: u16) -> String {
    let backends: Vec<&str> = config.all_servers().map(|server| server.url.as_str()).collect();
    let algorithms: Vec<String> = match &config.pools[..] {
        [only] => vec![only.algorithm.name().to_string()],
        pools => pools.iter().map(|pool| format!("{} {}", pool.name, pool.algorithm.name())).collect(),
    };
    let examples = [
        (format!("curl localhost:{port}/ping"), "a few times: the backend rotates"),
        (format!("curl 'localhost:{port}/hello?x=1'"), "the request as the backend saw it"),
        (format!("curl localhost:{port}{}", config.metrics_path), "counters and backend health"),
        (format!("curl -d 'some data' localhost:{port}/echo"), "the body, streamed back"),
    ];
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
    fn instructions_name_the_commands_and_the_status_page() {
        let config = Config::from_json(BUILT_IN_CONFIG, "config.json", &Overrides::default()).unwrap();
        let text = instructions(&config, 8080);
        assert!(text.contains("3 echo backends"), "{text}");
        assert!(text.contains("curl localhost:8080/lb-metrics"), "{text}");
        assert!(text.contains("Open http://localhost:8080/lb-status in a browser"), "{text}");
    }
}
