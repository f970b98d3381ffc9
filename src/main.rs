//! The `loadbalancer` binary: flags and environment → config → logging and signal handler →
//! [`Server::start`] → wait for SIGINT/SIGTERM → graceful shutdown → exit code.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a bad command line or config (nothing listens),
//! 1 when the server cannot start (the port is taken, say).

use std::process::ExitCode;
use std::time::Duration;

use loadbalancer::cli::{Options, USAGE};
use loadbalancer::config::{Config, ConfigError};
use loadbalancer::demo;
use loadbalancer::server::Server;

/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if options.version {
        println!("loadbalancer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    init_logging();

    let env = |name: &str| std::env::var(name).ok();
    let config_path = options.config_path(env);
    let overrides = options.overrides(env);
    let config = match Config::load(&config_path, &overrides) {
        Ok(config) => config,
        Err(error) if options.demo && is_missing_default(&error, &options) => {
            log::info!("no ./config.json here: using the built-in demo config");
            match Config::from_json(demo::BUILT_IN_CONFIG, "built-in config.json", &overrides) {
                Ok(config) => config,
                Err(error) => return config_failure(&error),
            }
        }
        Err(error) => return config_failure(&error),
    };

    if options.demo
        && let Err(error) = demo::start_backends(&config)
    {
        eprintln!("{error}");
        return ExitCode::from(1);
    }
    let (stop_sender, stop_signal) = crossbeam_channel::bounded::<()>(1);
    if let Err(error) = ctrlc::set_handler(move || {
        let _ = stop_sender.try_send(());
    }) {
        eprintln!("cannot install the signal handler: {error}");
        return ExitCode::from(1);
    }
    let demo_text = options.demo.then(|| config.clone());
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    if let Some(config) = demo_text {
        println!("{}", demo::instructions(&config, server.local_addr().port()));
    }

    let _ = stop_signal.recv();
    log::info!(
        "shutting down: no new connections; waiting up to {} s for requests in flight",
        SHUTDOWN_GRACE.as_secs()
    );
    if server.shutdown(SHUTDOWN_GRACE) {
        log::info!("all requests finished; bye");
    }
    ExitCode::SUCCESS
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(2)
}

/// `--demo` may run where there is no config.json; only then the built-in one is used.
fn is_missing_default(error: &ConfigError, options: &Options) -> bool {
    options.config_path.is_none()
        && std::env::var_os("LB_CONFIG").is_none()
        && error.key.is_empty()
        && error.problem.starts_with("cannot read file")
        && !std::path::Path::new("config.json").exists()
}

/// Info by default (start-up, health changes, one access line per request); `LB_DEBUG=1` for
/// debug; `RUST_LOG` for anything finer.
fn init_logging() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    builder.parse_env(env_logger::Env::default());
    if std::env::var("LB_DEBUG").is_ok_and(|value| value == "1") {
        builder.filter_level(log::LevelFilter::Debug);
    }
    builder.format_timestamp_millis();
    builder.init();
}
