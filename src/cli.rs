//! Command-line flags and environment variables: what `main` needs to know before loading config.
//!
//! Flags beat environment variables, which beat the config file, which beats the defaults.

use crate::config::{Override, Overrides, Source};

pub const USAGE: &str = "\
loadbalancer: an HTTP/1.1 reverse-proxy load balancer on plain blocking threads

USAGE:
    loadbalancer [--config PATH] [--algorithm NAME] [--listen ADDR] [--demo]

FLAGS:
    --config PATH      config file (default: $LB_CONFIG, else ./config.json)
    --algorithm NAME   round_robin, weighted_round_robin, least_conn or ip_hash
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
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
                _ => (arg.clone(), None),
            };
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
}
