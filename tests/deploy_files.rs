//! The files in `deploy/` stay true to the binary: the Kubernetes ConfigMap holds a config the real
//! validator accepts, the Deployment and the systemd unit pass flags the binary accepts and point
//! them at the file that is mounted, the unit reloads with SIGHUP, and both give shutdown more time
//! than the binary's grace.
//!
//! Plain string handling, no YAML parser: the files are written by hand in a fixed shape.

use std::time::Duration;

use loadbalancer::access_log::AccessLogFormat;
use loadbalancer::cli::Command;
use loadbalancer::config::{Config, DEFAULT_METRICS_PATH, Overrides, parse_backend_url};
use loadbalancer::duration::parse_duration;
use loadbalancer::server::SHUTDOWN_GRACE;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The value after `key:` on the first line of `text` that starts with it (indentation aside).
fn yaml_value<'a>(text: &'a str, key: &str) -> &'a str {
    let needle = format!("{key}:");
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(&needle))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in the file"))
}

/// The block scalar `config.json: |` of the ConfigMap, unindented.
fn configmap_config_json(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|line| line.trim() != "config.json: |").skip(1);
    let first = lines.next().expect("config.json has content");
    let indent = first.len() - first.trim_start().len();
    let mut text = format!("{}\n", &first[indent..]);
    for line in lines.take_while(|line| line.trim().is_empty() || line.len() - line.trim_start().len() >= indent) {
        text.push_str(line.get(indent..).unwrap_or(""));
        text.push('\n');
    }
    text
}

/// Each backend URL with its host replaced by a loopback address of its own, 127.0.0.N (cluster
/// names do not resolve here).
fn with_loopback_backends(config_json: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(config_json).expect("the embedded config is JSON");
    for (index, server) in value["servers"].as_array_mut().expect("servers is a list").iter_mut().enumerate() {
        let url = server.as_str().expect("servers are URL strings");
        let (_host, port) = parse_backend_url(url).unwrap();
        *server = format!("http://127.0.0.{}:{port}", index + 1).into();
    }
    value.to_string()
}

/// The flags in `args`, as the binary would read them: must be serving with `--config`; returns
/// the config path.
fn config_flag(args: Vec<String>) -> String {
    match Command::parse(args.clone()) {
        Ok(Command::Serve(options)) => options.config_path.expect("--config is given").value,
        other => panic!("{args:?} are not serving flags: {other:?}"),
    }
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let yaml = read("deploy/kubernetes.yaml");
    let embedded = configmap_config_json(&yaml);
    let text = with_loopback_backends(&embedded);
    let config = Config::from_json(&text, "config.json", &Overrides::default())
        .unwrap_or_else(|error| panic!("{error}\n{embedded}"));
    assert_eq!(config.listen.as_deref(), Some("[::]:8080"));
    assert_eq!(config.pools[0].servers.len(), 3);
    assert_eq!(config.access_log, AccessLogFormat::Json);
    assert_eq!(config.metrics_path, DEFAULT_METRICS_PATH, "the liveness probe asks for the default path");
    assert!(embedded.contains("\"http://app-0.app:8080\""), "{embedded}");
}

#[test]
fn the_kubernetes_deployment_runs_the_mounted_config_and_probes_its_port() {
    let yaml = read("deploy/kubernetes.yaml");
    assert_eq!(yaml.split("\n---\n").count(), 3, "ConfigMap, Deployment, Service");
    let args: Vec<String> = serde_json::from_str(yaml_value(&yaml, "args")).expect("args: a flow list of strings");
    let config_path = config_flag(args);
    let mount = yaml_value(&yaml, "mountPath");
    assert_eq!(config_path, format!("{mount}/config.json"), "the ConfigMap key, where it is mounted");

    assert!(yaml.contains("path: /lb-health") && yaml.contains(&format!("path: {DEFAULT_METRICS_PATH}")));
    assert_eq!(yaml.matches("port: 8080").count(), 2, "both probes on the listen port");
    assert_eq!(yaml_value(&yaml, "containerPort"), "8080");

    let stop = Duration::from_secs(yaml_value(&yaml, "terminationGracePeriodSeconds").parse().unwrap());
    let pre_stop = Duration::from_secs(yaml_value(&yaml, "seconds").parse().unwrap());
    assert!(stop > pre_stop + SHUTDOWN_GRACE, "{stop:?} leaves time for the preStop pause and the shutdown grace");
}

#[test]
fn the_systemd_unit_passes_accepted_flags_and_outwaits_the_grace() {
    let unit = read("deploy/loadbalancer.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    let mut exec = setting("ExecStart").split_whitespace().map(str::to_string);
    assert_eq!(exec.next().as_deref(), Some("/usr/local/bin/loadbalancer"));
    assert_eq!(config_flag(exec.collect()), "/etc/loadbalancer/config.json");

    assert_eq!(setting("ExecReload"), "/bin/kill -HUP $MAINPID", "SIGHUP rereads the config file");
    assert_eq!(setting("KillSignal"), "SIGTERM");
    let stop = parse_duration(setting("TimeoutStopSec")).unwrap();
    assert!(stop > SHUTDOWN_GRACE, "TimeoutStopSec {stop:?} must exceed the {SHUTDOWN_GRACE:?} grace");
    assert_eq!(setting("RestartPreventExitStatus"), "2", "the exit code of a bad config");
}
