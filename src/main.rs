//! The `loadbalancer` binary, on the `main` thread: flags and environment → config → logging →
//! signal handlers ([`signals`]) → [`Server::start`] → wait for signals: SIGHUP rereads the config
//! file (as `POST /lb-reload` does), SIGTERM or SIGINT starts a graceful shutdown → exit code.
//! Or, with `check` first, the config loaded as for serving and described ([`check`]); with
//! `compare` first, [`compare::run`] and its exit code.
//!
//! Exit codes: 0 after a clean shutdown (or a finished comparison, or a valid config for
//! `check`), 2 for a bad command line or config (nothing listens), 1 when the server cannot start
//! (the port is taken, say), a comparison fails, or `check --request` names a request the load
//! balancer would refuse.

use std::io::Write;
use std::process::ExitCode;

use env_logger::TimestampPrecision;
use env_logger::fmt::ConfigurableFormat;
use loadbalancer::access_log;
use loadbalancer::cli::{CHECK_USAGE, COMPARE_USAGE, CheckOptions, Command, CompareOptions, Options, USAGE};
use loadbalancer::config::file::ConfigFile;
use loadbalancer::config::{Config, ConfigError};
use loadbalancer::reload;
use loadbalancer::server::{SHUTDOWN_GRACE, Server};
use loadbalancer::shared::Shared;
use loadbalancer::signals::{self, Signal};
use loadbalancer::{check, compare, demo};

fn main() -> ExitCode {
    let options = match Command::parse(std::env::args().skip(1)) {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Check(options)) => return run_check(&options),
        Ok(Command::Compare(options)) => return run_compare(&options),
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

    let env = |name: &str| std::env::var(name).ok();
    let config_path = options.config_path(env);
    let overrides = options.overrides(env);
    let (config, built_in) = match Config::load(&config_path, &overrides) {
        Ok(config) => (config, false),
        Err(error) if options.demo && is_missing_default(&error, &options) => {
            match Config::from_json(demo::BUILT_IN_CONFIG, "built-in config.json", &overrides) {
                Ok(config) => (config, true),
                Err(error) => return config_failure(&error),
            }
        }
        Err(error) => return config_failure(&error),
    };
    // Config errors went to stderr as they are, before any log prefix.
    init_logging(log::LevelFilter::Info);
    #[cfg(debug_assertions)]
    if loadbalancer::fault::enable_from_env() {
        log::warn!(
            "{}=1: requests with an {} field panic on purpose (fault injection, debug builds only)",
            loadbalancer::fault::ENV,
            loadbalancer::fault::FIELD
        );
    }
    if built_in {
        log::info!("no ./config.json here: using the built-in demo config");
    }

    let mut config = config;
    if options.demo
        && let Err(error) = demo::start_backends(&config)
    {
        eprintln!("{error}");
        return ExitCode::from(1);
    }
    let demo_certificate =
        match options.demo.then(|| demo::add_https(&mut config, &demo::certificate_dir())).transpose() {
            Ok(dir) => dir.flatten(),
            Err(error) => {
                eprintln!("--demo cannot make its HTTPS certificate: {error}");
                return ExitCode::from(1);
            }
        };
    let signals = match signals::listen() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("cannot install the signal handlers: {error}");
            return ExitCode::from(1);
        }
    };
    let demo_text = options.demo.then(|| config.clone());
    let config_file = (!built_in).then(|| ConfigFile::new(config_path.clone(), overrides.clone()));
    let server = match Server::start_watching(config, config_file) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    if let Some(config) = demo_text {
        let https = server.https_addr().zip(demo_certificate.as_deref()).map(|(addr, dir)| (addr.port(), dir));
        println!("{}", demo::instructions(&config, server.local_addr().port(), https));
    }

    let stopped_by = loop {
        match signals.recv() {
            Ok(Signal::Reload) => reload_on_hang_up(server.shared()),
            Ok(Signal::Stop(name)) => break name,
            // The signals thread is gone (it cannot be, while this receiver lives): stop.
            Err(_) => break "the loss of the signals thread",
        }
    };
    log::info!(
        "{stopped_by}: shutting down: no new connections; waiting up to {} s for requests in flight",
        SHUTDOWN_GRACE.as_secs()
    );
    if server.shutdown(SHUTDOWN_GRACE) {
        log::info!("all requests finished; bye");
    }
    ExitCode::SUCCESS
}

/// SIGHUP: reread the config file now, exactly as `POST /lb-reload` does; the outcome is logged
/// (and counted) by the reload itself.
fn reload_on_hang_up(shared: &Shared) {
    match &shared.config_file {
        Some(file) => {
            log::info!("SIGHUP: rereading {}", file.path);
            let _ = reload::reload(shared, true);
        }
        None => log::warn!("SIGHUP: the config did not come from a file, so there is nothing to reread"),
    }
}

/// `loadbalancer check`: the config read exactly as for serving, then described on stdout; a bad
/// config is the same one line on stderr and exit status 2. Nothing binds or listens.
fn run_check(options: &CheckOptions) -> ExitCode {
    if options.help {
        print!("{CHECK_USAGE}");
        return ExitCode::SUCCESS;
    }
    // Warnings only, such as a server name that does not resolve, on stderr.
    init_logging(log::LevelFilter::Warn);
    let env = |name: &str| std::env::var(name).ok();
    let serving = options.serving();
    let config_path = serving.config_path(env);
    let config = match Config::load(&config_path, &serving.overrides(env)) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    let Some(request) = &options.request else {
        print!("{}", check::summary(&config, &config_path));
        return ExitCode::SUCCESS;
    };
    print!("{}", check::ok_line(&config));
    match check::explain_request(&config, &check::request_bytes(request, &options.headers)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            print!("{text}");
            ExitCode::from(1)
        }
    }
}

/// `loadbalancer compare`: the report on stdout, a failure as one line on stderr.
fn run_compare(options: &CompareOptions) -> ExitCode {
    if options.help {
        print!("{COMPARE_USAGE}");
        return ExitCode::SUCCESS;
    }
    // Errors only: every attempt on the deliberately failing backend is a warning, and the table
    // already counts them as retries.
    init_logging(log::LevelFilter::Error);
    match compare::run(options, &mut std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare: {error}");
            ExitCode::from(1)
        }
    }
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

/// `default` unless told otherwise (Info when serving: start-up, health changes, one access line
/// per request); `LB_DEBUG=1` for debug; `RUST_LOG` for anything finer.
///
/// Every line is `[time LEVEL target] message`, except JSON access lines (`"accessLog": "json"`):
/// those are the message alone, so that each is a JSON object a log shipper can parse as it is.
fn init_logging(default: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(default);
    // rustls warns about what any client of a public port can do (an IP address sent as SNI, a
    // hello it refuses), once per handshake: a log anyone could flood. The load balancer counts
    // and reports handshake failures itself; `RUST_LOG=rustls=warn` brings these lines back.
    builder.filter_module("rustls", log::LevelFilter::Error);
    builder.parse_env(env_logger::Env::default());
    if std::env::var("LB_DEBUG").is_ok_and(|value| value == "1") {
        builder.filter_level(log::LevelFilter::Debug);
    }
    let mut usual = ConfigurableFormat::default();
    usual.timestamp(Some(TimestampPrecision::Millis));
    builder.format(move |out, record| {
        if access_log::is_bare(record.target()) {
            writeln!(out, "{}", record.args())
        } else {
            usual.format(out, record)
        }
    });
    builder.init();
}
