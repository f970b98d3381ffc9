//! `loadbalancer compare`: every balancing algorithm on the same work, side by side.
//!
//! Starts the echo backends of [`BACKENDS`] in this process, then, for each algorithm of
//! [`Algorithm::ALL`] in turn, a [`Server`] in front of them, sends it the same bounded
//! closed-loop [`Load`], prints one table row, and shuts the server down before the next one.
//! Optionally draws the results as an SVG chart. The echo backends live until the process ends.
//!
//! The parts, one job each:
//! - [`workload`]: the deterministic request sequence (paths and `X-Forwarded-For` visitors);
//! - [`client`]: one keep-alive HTTP connection that sends a request and reads its answer;
//! - [`load`]: the client threads, bounded by count and time, collecting one sample per request;
//! - [`summary`]: percentiles, errors and backend shares from the samples;
//! - [`table`] and [`svg`]: the two ways of showing the results.

pub mod client;
pub mod load;
pub mod summary;
pub mod svg;
pub mod table;
pub mod workload;

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::balance::Algorithm;
use crate::cli::CompareOptions;
use crate::config::{Config, Overrides};
use crate::echo::{self, EchoOptions};
use crate::server::Server;

pub use load::Load;
pub use summary::AlgorithmResult;
pub use workload::Workload;

/// One echo backend of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPlan {
    /// Its `X-Backend` name, a column of the table.
    pub name: &'static str,
    /// Its weight in the load balancer's config (only weighted algorithms look at it).
    pub weight: u32,
    /// How long it waits before each answer.
    pub latency: Duration,
    /// Whether it closes every connection without answering (its health checks still pass, so
    /// only retries hide it).
    pub fail: bool,
}

/// The backends every algorithm is compared on. Change this table to change the experiment.
pub const BACKENDS: [BackendPlan; 4] = [
    BackendPlan { name: "fast-1", weight: 2, latency: Duration::ZERO, fail: false },
    BackendPlan { name: "fast-2", weight: 1, latency: Duration::ZERO, fail: false },
    BackendPlan { name: "slow", weight: 1, latency: Duration::from_millis(20), fail: false },
    BackendPlan { name: "failing", weight: 1, latency: Duration::ZERO, fail: true },
];

/// No client starts a request later than this after an algorithm's run began.
pub const TIME_LIMIT_PER_ALGORITHM: Duration = Duration::from_secs(3);

/// The requests: 1000 distinct URLs, 64 visitor addresses per client.
pub const WORKLOAD: Workload = Workload { keys: 1000, visitors_per_client: 64 };

/// How long a retry waits before the next backend (`retryDelay`); short, so that the failing
/// backend shows up in the latency without drowning the slow one.
const RETRY_DELAY: &str = "5ms";
const HEALTH_CHECK_INTERVAL: &str = "1s";
/// How long each load balancer may take to finish its requests when it is stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl BackendPlan {
    /// `slow (answers after 20 ms)`: the name and whatever sets it apart.
    pub fn describe(&self) -> String {
        let mut traits = Vec::new();
        if self.weight != 1 {
            traits.push(format!("weight {}", self.weight));
        }
        if !self.latency.is_zero() {
            traits.push(format!("answers after {} ms", self.latency.as_millis()));
        }
        if self.fail {
            traits.push("closes every connection, passes health checks".to_string());
        }
        match traits.is_empty() {
            true => self.name.to_string(),
            false => format!("{} ({})", self.name, traits.join(", ")),
        }
    }
}

/// Runs the comparison `options` asks for, printing the report to `out` as it goes, and writes
/// the chart if asked. A bad `--out` path fails before anything runs.
pub fn run(options: &CompareOptions, out: &mut impl Write) -> io::Result<Vec<AlgorithmResult>> {
    let chart_file = match &options.out {
        Some(path) => Some((path, File::create(path).map_err(|error| context(error, "--out", path))?)),
        None => None,
    };
    let started = Instant::now();
    let load = Load {
        clients: options.clients,
        requests_per_client: options.requests_per_client,
        time_limit: TIME_LIMIT_PER_ALGORITHM,
        workload: WORKLOAD,
    };
    let backend_addrs = start_backends()?;
    let backend_names: Vec<&str> = BACKENDS.iter().map(|plan| plan.name).collect();
    let algorithm_names: Vec<&str> = Algorithm::ALL.iter().map(|algorithm| algorithm.name()).collect();

    let notes = notes(&load);
    writeln!(out, "loadbalancer compare: {}", notes.join("\n"))?;
    writeln!(out, "shares are of the successful answers; retries are attempts moved to another backend")?;
    writeln!(out)?;
    let table = table::Table::new(&algorithm_names, &backend_names);
    writeln!(out, "{}", table.header())?;
    out.flush()?;
    let mut results = Vec::with_capacity(Algorithm::ALL.len());
    for algorithm in Algorithm::ALL {
        let result = run_algorithm(algorithm, &backend_addrs, &load)?;
        writeln!(out, "{}", table.row(&result))?;
        out.flush()?;
        results.push(result);
    }
    writeln!(out)?;
    writeln!(out, "compared {} algorithms in {:.1} s", results.len(), started.elapsed().as_secs_f64())?;

    if let Some((path, mut file)) = chart_file {
        let title = "loadbalancer compare: every balancing algorithm on the same load";
        let chart = svg::Chart { title, notes: &notes, backends: &backend_names, results: &results };
        file.write_all(svg::render(&chart).as_bytes()).map_err(|error| context(error, "--out", path))?;
        writeln!(out, "chart written to {}", path.display())?;
    }
    Ok(results)
}

/// What was compared, in three lines: the load, the requests, the backends.
fn notes(load: &Load) -> [String; 3] {
    [
        format!(
            "{} algorithms, each sent the same {} requests ({} clients × {}, keep-alive, at most {} s)",
            Algorithm::ALL.len(),
            load.clients * load.requests_per_client,
            load.clients,
            load.requests_per_client,
            load.time_limit.as_secs()
        ),
        format!(
            "requests: GET /item/0..{} from {} visitor addresses (X-Forwarded-For) per client",
            load.workload.keys - 1,
            load.workload.visitors_per_client
        ),
        format!("backends: {}", BACKENDS.iter().map(BackendPlan::describe).collect::<Vec<_>>().join("; ")),
    ]
}

/// Starts one echo backend per [`BACKENDS`] entry on a free loopback port; returns their addresses.
fn start_backends() -> io::Result<Vec<SocketAddr>> {
    BACKENDS
        .iter()
        .map(|plan| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| {
                io::Error::new(error.kind(), format!("cannot start backend {}: {error}", plan.name))
            })?;
            let addr = listener.local_addr()?;
            let options =
                EchoOptions { name: plan.name.to_string(), latency: plan.latency, fail: plan.fail, tls: None };
            echo::spawn(listener, options)?;
            Ok(addr)
        })
        .collect()
}

/// One algorithm: a load balancer in front of `backends`, the load through it, then shutdown.
fn run_algorithm(algorithm: Algorithm, backends: &[SocketAddr], load: &Load) -> io::Result<AlgorithmResult> {
    let config = config_for(algorithm, backends)
        .map_err(|problem| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {problem}", algorithm.name())))?;
    let server = Server::start(config)?;
    let run = load::run(server.local_addr(), load);
    let retries = server.shared().metrics().retry_attempts;
    if !server.shutdown(SHUTDOWN_GRACE) {
        log::warn!("{}: the load balancer did not stop within {} s", algorithm.name(), SHUTDOWN_GRACE.as_secs());
    }
    let backend_names: Vec<&str> = BACKENDS.iter().map(|plan| plan.name).collect();
    Ok(AlgorithmResult::from_run(algorithm.name(), &run?, retries, &backend_names))
}

/// The config of the load balancer compared for `algorithm`, written as a user would write
/// config.json and checked the same way. `backends` are in [`BACKENDS`] order.
pub fn config_for(algorithm: Algorithm, backends: &[SocketAddr]) -> Result<Config, String> {
    let servers: Vec<serde_json::Value> = BACKENDS
        .iter()
        .zip(backends)
        .map(|(plan, addr)| serde_json::json!({ "url": format!("http://{addr}"), "weight": plan.weight }))
        .collect();
    let text = serde_json::json!({
        "listenPort": "127.0.0.1:0",
        "algorithm": algorithm.name(),
        "healthCheckInterval": HEALTH_CHECK_INTERVAL,
        "retryDelay": RETRY_DELAY,
        // The clients speak for many visitors through X-Forwarded-For, as a proxy in front would.
        "trustedProxies": ["127.0.0.1/32"],
        "servers": servers,
    })
    .to_string();
    Config::from_json(&text, "compare's config", &Overrides::default()).map_err(|error| error.to_string())
}

fn context(error: io::Error, flag: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{flag} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn every_algorithm_gets_a_valid_config_with_every_backend() {
        let addrs: Vec<SocketAddr> =
            (0..BACKENDS.len()).map(|index| SocketAddr::from(([127, 0, 0, 1], 4001 + index as u16))).collect();
        for algorithm in Algorithm::ALL {
            let config = config_for(algorithm, &addrs).unwrap_or_else(|problem| panic!("{problem}"));
            assert_eq!(config.pools[0].algorithm, algorithm);
            assert_eq!(config.listen.as_deref(), Some("127.0.0.1:0"));
            assert_eq!(config.pools[0].servers.len(), BACKENDS.len());
            for ((server, plan), addr) in config.pools[0].servers.iter().zip(&BACKENDS).zip(&addrs) {
                assert_eq!((server.addrs.as_slice(), server.weight), (std::slice::from_ref(addr), plan.weight));
            }
            assert!(config.trusted_proxies.iter().any(|block| block.contains(IpAddr::from([127, 0, 0, 1]))));
        }
    }

    #[test]
    fn the_backend_table_is_usable() {
        let mut names: Vec<&str> = BACKENDS.iter().map(|plan| plan.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BACKENDS.len(), "names are unique: they tell answers apart");
        assert!(BACKENDS.iter().any(|plan| !plan.fail), "something must answer");
        assert!(BACKENDS.iter().all(|plan| plan.weight >= 1));
    }

    #[test]
    fn backends_describe_what_sets_them_apart() {
        let plain = BackendPlan { name: "plain", weight: 1, latency: Duration::ZERO, fail: false };
        assert_eq!(plain.describe(), "plain");
        let odd = BackendPlan { name: "odd", weight: 3, latency: Duration::from_millis(20), fail: true };
        assert_eq!(
            odd.describe(),
            "odd (weight 3, answers after 20 ms, closes every connection, passes health checks)"
        );
    }
}
