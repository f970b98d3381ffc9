//! Command-line flags and environment variables: what `main` needs to know before loading config,
//! and which command to run (serving, `check` or `compare`).
//!
//! Flags beat environment variables, which beat the config file, which beats the defaults.

use std::path::PathBuf;

use crate::config::{Override, Overrides, Source};

pub const USAGE: &str = "\
loadbalancer: an HTTP/1.1 reverse-proxy load balancer on plain blocking threads

USAGE:
    loadbalancer [--config PATH] [--algorithm NAME] [--listen ADDR] [--demo]
    loadbalancer check [--config PATH] [--algorithm NAME] [--request REQUEST [--header FIELD]...]
    loadbalancer compare [--out FILE.svg] [--requests N] [--clients N]

COMMANDS:
    (none)             serve: balance requests across the configured backends
    check              validate the config and print its pools and routes, without serving;
                       with --request, show which route and pool would take that request
                       (see loadbalancer check --help)
    compare            run every algorithm on the same load against built-in test backends
                       and print a table (see loadbalancer compare --help)

FLAGS:
    --config PATH      config file (default: $LB_CONFIG, else ./config.json)
    --algorithm NAME   round_robin, weighted_round_robin, least_conn, ip_hash, least_time,
                       url_hash, sticky, maglev, p2c or random
                       (default: $LB_ALGORITHM, else the file's \"algorithm\")
    --listen ADDR      \":PORT\" or \"HOST:PORT\" (default: the file's \"listenPort\")
    --demo             also start echo backends for the configured loopback servers
    --help             print this help
    --version          print the version

ENVIRONMENT:
    LB_CONFIG          config file, when --config is not given
    LB_ALGORITHM       algorithm, when --algorithm is not given
    LB_DEBUG=1         debug logging
    RUST_LOG           log filter, e.g. RUST_LOG=warn or RUST_LOG=access=off
";

pub const COMPARE_USAGE: &str = "\
loadbalancer compare: every balancing algorithm on the same load, side by side

Starts echo backends in this process (fast ones, a slow one and one that closes every
connection; the report lists them first), then, for each algorithm in turn, a load balancer in
front of them, and sends each the same requests from closed-loop clients. Prints, per algorithm,
throughput, p50/p99 latency, errors, retries and each backend's share of the successful answers.

USAGE:
    loadbalancer compare [--out FILE.svg] [--requests N] [--clients N]

FLAGS:
    --out FILE.svg     also draw the results as an SVG chart in FILE.svg
    --requests N       requests each client sends per algorithm (default: 250)
    --clients N        concurrent clients, each with one keep-alive connection (default: 8, at most 256)
    --help             print this help

Each algorithm runs for at most 3 s; RUST_LOG=warn shows the load balancers' own warnings.
";

pub const CHECK_USAGE: &str = "\
loadbalancer check: validate the config and show what it does, without serving

Reads the config exactly as serving would (--config, $LB_CONFIG, --algorithm, $LB_ALGORITHM),
then prints each pool (algorithm, health checks, retries, timeouts, servers and the addresses
they resolve to), the default pool and each route in order. Binds no port and starts none of
the serving threads. Exit status 0 for a valid config; 2 and one line FILE: KEY: PROBLEM for
a bad one.

With --request, it also reads that request with the load balancer's own parser and shows, for
each route, whether it matches or why not, what takes the request, and for a pool the exact
request line and header fields the backend would receive (the client's address shown as
192.0.2.1, an address reserved for documentation). Exit status 1 when the load balancer would
refuse the request (the answer is printed, e.g. 400 Bad Request: ...).

USAGE:
    loadbalancer check [--config PATH] [--algorithm NAME] [--request REQUEST [--header FIELD]...]

FLAGS:
    --config PATH      config file (default: $LB_CONFIG, else ./config.json)
    --algorithm NAME   overrides the file's \"algorithm\", as when serving (default: $LB_ALGORITHM)
    --request REQUEST  \"METHOD TARGET\" or \"METHOD TARGET HTTP/1.x\" (default version HTTP/1.1),
                       the target in origin form (/v1/users) or absolute form
                       (http://api.example.com/v1/users); header fields may follow, each
                       after a newline or the two characters \\n:
                       \"GET /v1/users\\nHost: api.example.com\"
    --header FIELD     one more header field, \"Name: value\" (repeatable), e.g.
                       --header \"Host: api.example.com\" --header \"X-Api: 1\"
    --help             print this help
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the load balancer (the default).
    Serve(Options),
    /// `loadbalancer check`: validate the config and print what it does.
    Check(CheckOptions),
    /// `loadbalancer compare`: run every algorithm on the same load and report.
    Compare(CompareOptions),
}

impl Command {
    /// Reads `args` (without the program name): `check` or `compare` as the first argument selects
    /// that command, anything else is the load balancer's own flags. The error is one line naming
    /// the flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
        let mut args = args.into_iter().peekable();
        match args.peek().map(String::as_str) {
            Some("check") => {
                args.next();
                CheckOptions::parse(args).map(Command::Check)
            }
            Some("compare") => {
                args.next();
                CompareOptions::parse(args).map(Command::Compare)
            }
            _ => Options::parse(args).map(Command::Serve),
        }
    }
}

/// Flags of `loadbalancer check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    pub config_path: Option<Override>,
    pub algorithm: Option<String>,
    /// `--request`: the request line, perhaps followed by header lines.
    pub request: Option<String>,
    /// `--header`: more header fields, each `Name: value`.
    pub headers: Vec<String>,
    pub help: bool,
}

impl CheckOptions {
    /// Reads the flags after `check`. The error is one line naming the flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<CheckOptions, String> {
        let mut options = CheckOptions::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline_value) = split_inline_value(&arg);
            let mut value = |name: &str| {
                inline_value.clone().or_else(|| args.next()).ok_or_else(|| format!("{name}: needs a value"))
            };
            match flag.as_str() {
                "--config" => {
                    options.config_path =
                        Some(Override { value: value("--config")?, source: Source::Flag("--config") });
                }
                "--algorithm" => options.algorithm = Some(value("--algorithm")?),
                "--request" => {
                    let request = value("--request")?;
                    if request.trim().is_empty() {
                        return Err("--request: needs a request, like \"GET /path\"".to_string());
                    }
                    options.request = Some(request);
                }
                "--header" => {
                    let field = value("--header")?;
                    if field.split_once(':').is_none_or(|(name, _)| name.trim().is_empty()) {
                        return Err(format!("--header: must be \"Name: value\", got {field:?}"));
                    }
                    options.headers.push(field);
                }
                "--help" | "-h" => options.help = true,
                other => return Err(format!("{other}: unknown flag for check (try loadbalancer check --help)")),
            }
        }
        if options.request.is_none() && !options.headers.is_empty() {
            return Err("--header: only with --request, the request it belongs to".to_string());
        }
        Ok(options)
    }

    /// The flags that choose and override the config, read exactly as serving reads them.
    pub fn serving(&self) -> Options {
        Options { config_path: self.config_path.clone(), algorithm: self.algorithm.clone(), ..Options::default() }
    }
}

/// Flags of `loadbalancer compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareOptions {
    /// Where to write the SVG chart, if anywhere.
    pub out: Option<PathBuf>,
    pub requests_per_client: usize,
    pub clients: usize,
    pub help: bool,
}

pub const DEFAULT_COMPARE_REQUESTS: usize = 250;
pub const DEFAULT_COMPARE_CLIENTS: usize = 8;
pub const MAX_COMPARE_REQUESTS: usize = 1_000_000;
/// Each client is a thread with its own connection and its own `10.0.CLIENT.x` addresses.
pub const MAX_COMPARE_CLIENTS: usize = 256;

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            out: None,
            requests_per_client: DEFAULT_COMPARE_REQUESTS,
            clients: DEFAULT_COMPARE_CLIENTS,
            help: false,
        }
    }
}

impl CompareOptions {
    /// Reads the flags after `compare`. The error is one line naming the flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<CompareOptions, String> {
        let mut options = CompareOptions::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline_value) = split_inline_value(&arg);
            let mut value = |name: &str| {
                inline_value.clone().or_else(|| args.next()).ok_or_else(|| format!("{name}: needs a value"))
            };
            match flag.as_str() {
                "--out" => {
                    let path = value("--out")?;
                    if path.is_empty() {
                        return Err("--out: needs a file name".to_string());
                    }
                    options.out = Some(PathBuf::from(path));
                }
                "--requests" => {
                    options.requests_per_client = count("--requests", &value("--requests")?, MAX_COMPARE_REQUESTS)?;
                }
                "--clients" => options.clients = count("--clients", &value("--clients")?, MAX_COMPARE_CLIENTS)?,
                "--help" | "-h" => options.help = true,
                other => return Err(format!("{other}: unknown flag for compare (try loadbalancer compare --help)")),
            }
        }
        Ok(options)
    }
}

/// `--flag=value` → (`--flag`, `Some(value)`); anything else is returned whole.
fn split_inline_value(arg: &str) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
        _ => (arg.to_string(), None),
    }
}

/// A whole number from 1 to `max`, or an error naming `flag`.
fn count(flag: &str, text: &str, max: usize) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{flag}: must be a whole number from 1 to {max}, got {text:?}"))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub config_path: Option<Override>,
    pub algorithm: Option<String>,
    pub listen: Option<String>,
    pub demo: bool,
    pub help: bool,
    pub version: bool,
}

impl Options {
    /// Reads flags from `args` (without the program name). The error is one line naming the flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline_value) = split_inline_value(&arg);
            let mut value = |name: &str| {
                inline_value.clone().or_else(|| args.next()).ok_or_else(|| format!("{name}: needs a value"))
            };
            match flag.as_str() {
                "--config" => {
                    options.config_path =
                        Some(Override { value: value("--config")?, source: Source::Flag("--config") });
                }
                "--algorithm" => options.algorithm = Some(value("--algorithm")?),
                "--listen" => options.listen = Some(value("--listen")?),
                "--demo" => options.demo = true,
                "--help" | "-h" => options.help = true,
                "--version" | "-V" => options.version = true,
                other => return Err(format!("{other}: unknown flag (try --help)")),
            }
        }
        Ok(options)
    }

    /// The config file to read: `--config`, else `$LB_CONFIG`, else `config.json`.
    pub fn config_path(&self, env: impl Fn(&str) -> Option<String>) -> String {
        self.config_path
            .as_ref()
            .map(|given| given.value.clone())
            .or_else(|| env("LB_CONFIG").filter(|path| !path.is_empty()))
            .unwrap_or_else(|| "config.json".to_string())
    }

    /// The settings that beat the file, flags first, then the environment.
    pub fn overrides(&self, env: impl Fn(&str) -> Option<String>) -> Overrides {
        let algorithm = match &self.algorithm {
            Some(name) => Some(Override { value: name.clone(), source: Source::Flag("--algorithm") }),
            None => env("LB_ALGORITHM")
                .filter(|name| !name.is_empty())
                .map(|name| Override { value: name, source: Source::Env("LB_ALGORITHM") }),
        };
        let listen = self.listen.clone().map(|value| Override { value, source: Source::Flag("--listen") });
        Overrides { algorithm, listen }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_lists_every_algorithm() {
        for algorithm in crate::balance::Algorithm::ALL {
            assert!(USAGE.contains(algorithm.name()), "{}", algorithm.name());
        }
    }

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn flags_in_both_spellings() {
        let options = parse(&["--config", "a.json", "--algorithm=least_conn", "--listen", ":9000", "--demo"]).unwrap();
        assert_eq!(options.config_path.unwrap().value, "a.json");
        assert_eq!(options.algorithm.as_deref(), Some("least_conn"));
        assert_eq!(options.listen.as_deref(), Some(":9000"));
        assert!(options.demo);
        assert_eq!(parse(&["--config"]).unwrap_err(), "--config: needs a value");
        assert_eq!(parse(&["--colour"]).unwrap_err(), "--colour: unknown flag (try --help)");
    }

    #[test]
    fn flag_beats_environment_beats_default() {
        let env = |name: &str| match name {
            "LB_CONFIG" => Some("env.json".to_string()),
            "LB_ALGORITHM" => Some("ip_hash".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let bare = parse(&[]).unwrap();
        assert_eq!(bare.config_path(none), "config.json");
        assert_eq!(bare.config_path(env), "env.json");
        assert_eq!(bare.overrides(env).algorithm.unwrap().source, Source::Env("LB_ALGORITHM"));
        assert_eq!(bare.overrides(none), Overrides::default());

        let flagged = parse(&["--config", "flag.json", "--algorithm", "least_conn"]).unwrap();
        assert_eq!(flagged.config_path(env), "flag.json");
        let algorithm = flagged.overrides(env).algorithm.unwrap();
        assert_eq!((algorithm.value.as_str(), algorithm.source), ("least_conn", Source::Flag("--algorithm")));
    }

    fn command(args: &[&str]) -> Result<Command, String> {
        Command::parse(args.iter().map(|arg| arg.to_string()))
    }

    fn compare(args: &[&str]) -> Result<CompareOptions, String> {
        let mut all = vec!["compare"];
        all.extend_from_slice(args);
        match command(&all)? {
            Command::Compare(options) => Ok(options),
            other => panic!("not compare: {other:?}"),
        }
    }

    #[test]
    fn compare_is_a_command_and_anything_else_serves() {
        assert_eq!(command(&[]).unwrap(), Command::Serve(Options::default()));
        assert_eq!(command(&["--demo"]).unwrap(), Command::Serve(Options { demo: true, ..Options::default() }));
        assert_eq!(command(&["compare"]).unwrap(), Command::Compare(CompareOptions::default()));
        assert_eq!(
            command(&["--demo", "compare"]).unwrap_err(),
            "compare: unknown flag (try --help)",
            "compare is a command only in first place"
        );
    }

    #[test]
    fn compare_flags_in_both_spellings() {
        let options = compare(&["--out", "c.svg", "--requests=30", "--clients", "4"]).unwrap();
        assert_eq!(options.out, Some(PathBuf::from("c.svg")));
        assert_eq!((options.requests_per_client, options.clients), (30, 4));
        assert!(!options.help);
        assert!(compare(&["--help"]).unwrap().help);
        let defaults = compare(&[]).unwrap();
        assert_eq!(defaults.out, None);
        assert_eq!(
            (defaults.requests_per_client, defaults.clients),
            (DEFAULT_COMPARE_REQUESTS, DEFAULT_COMPARE_CLIENTS)
        );
    }

    #[test]
    fn bad_compare_flags_are_one_line_naming_the_flag() {
        let cases: [(&[&str], &str); 8] = [
            (&["--requests", "0"], "--requests: must be a whole number from 1 to 1000000, got \"0\""),
            (&["--requests=many"], "--requests: must be a whole number from 1 to 1000000, got \"many\""),
            (&["--clients", "-3"], "--clients: must be a whole number from 1 to 256, got \"-3\""),
            (&["--clients", "257"], "--clients: must be a whole number from 1 to 256, got \"257\""),
            (&["--clients"], "--clients: needs a value"),
            (&["--out"], "--out: needs a value"),
            (&["--out="], "--out: needs a file name"),
            (&["--config", "x.json"], "--config: unknown flag for compare (try loadbalancer compare --help)"),
        ];
        for (args, expected) in cases {
            assert_eq!(compare(args).unwrap_err(), expected, "{args:?}");
        }
    }

    #[test]
    fn usage_mentions_compare_and_its_defaults() {
        assert!(USAGE.contains("loadbalancer compare [--out FILE.svg] [--requests N] [--clients N]"));
        assert!(COMPARE_USAGE.contains(&format!("(default: {DEFAULT_COMPARE_REQUESTS})")));
        assert!(
            COMPARE_USAGE.contains(&format!("(default: {DEFAULT_COMPARE_CLIENTS}, at most {MAX_COMPARE_CLIENTS})"))
        );
        let time_limit = crate::compare::TIME_LIMIT_PER_ALGORITHM.as_secs();
        assert!(COMPARE_USAGE.contains(&format!("runs for at most {time_limit} s")));
    }

    fn check(args: &[&str]) -> Result<CheckOptions, String> {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        match command(&all)? {
            Command::Check(options) => Ok(options),
            other => panic!("not check: {other:?}"),
        }
    }

    #[test]
    fn check_is_a_command_with_the_config_flags_of_serving() {
        assert_eq!(command(&["check"]).unwrap(), Command::Check(CheckOptions::default()));
        let options = check(&["--config=lb.json", "--algorithm", "maglev"]).unwrap();
        assert_eq!(options.config_path.as_ref().unwrap().value, "lb.json");
        let env = |name: &str| (name == "LB_ALGORITHM").then(|| "ip_hash".to_string());
        let serving = options.serving();
        assert_eq!(serving.config_path(env), "lb.json");
        assert_eq!(serving.overrides(env).algorithm.unwrap().value, "maglev");
        let bare = check(&[]).unwrap().serving();
        assert_eq!(bare.config_path(|name| (name == "LB_CONFIG").then(|| "env.json".to_string())), "env.json");
        assert_eq!(bare.overrides(env).algorithm.unwrap().source, Source::Env("LB_ALGORITHM"));
        assert!(check(&["-h"]).unwrap().help);
        assert_eq!(command(&["--demo", "check"]).unwrap_err(), "check: unknown flag (try --help)");
    }

    #[test]
    fn check_takes_a_request_and_its_header_fields() {
        let options =
            check(&["--request", "POST /v1/x", "--header", "Host: api.example.com", "--header=X-Api: 1"]).unwrap();
        assert_eq!(options.request.as_deref(), Some("POST /v1/x"));
        assert_eq!(options.headers, ["Host: api.example.com", "X-Api: 1"]);
        let inline = check(&["--request=GET http://a.example/x"]).unwrap();
        assert_eq!(inline.request.as_deref(), Some("GET http://a.example/x"));
    }

    #[test]
    fn bad_check_flags_are_one_line_naming_the_flag() {
        let cases: [(&[&str], &str); 7] = [
            (&["--listen", ":80"], "--listen: unknown flag for check (try loadbalancer check --help)"),
            (&["--demo"], "--demo: unknown flag for check (try loadbalancer check --help)"),
            (&["--request"], "--request: needs a value"),
            (&["--request", " "], "--request: needs a request, like \"GET /path\""),
            (&["--request", "GET /", "--header", "X-Api 1"], "--header: must be \"Name: value\", got \"X-Api 1\""),
            (&["--request", "GET /", "--header", ": 1"], "--header: must be \"Name: value\", got \": 1\""),
            (&["--header", "Host: a"], "--header: only with --request, the request it belongs to"),
        ];
        for (args, expected) in cases {
            assert_eq!(check(args).unwrap_err(), expected, "{args:?}");
        }
    }

    #[test]
    fn usage_mentions_check_and_its_placeholder_client() {
        assert!(USAGE.contains("loadbalancer check [--config PATH]"));
        assert!(CHECK_USAGE.contains(&crate::check::PLACEHOLDER_CLIENT.to_string()));
        assert!(CHECK_USAGE.contains("--header FIELD"));
    }
}
