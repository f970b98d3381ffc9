//! Signals sent to the real process: SIGHUP rereads the config file (with `reloadInterval`
//! off, so nothing else can have), keeps the process serving and refuses a bad file with one
//! ERROR line; SIGTERM and SIGINT still stop it gracefully with exit status 0.

mod common;

use std::time::Duration;

use common::{EchoBackend, LoadBalancer, signal, wait_until};

const DEADLINE: Duration = Duration::from_secs(10);

/// A config for `servers` with `algorithm`, reread only when told to.
fn config_with(algorithm: &str, servers: &[String]) -> String {
    let list: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        "{{\"algorithm\": \"{algorithm}\", \"reloadInterval\": \"0s\", \"healthCheckInterval\": \"200ms\", \
         \"healthCheckTimeout\": \"500ms\", \"servers\": [{}]}}",
        list.join(", ")
    )
}

fn backend_urls(lb: &LoadBalancer) -> Vec<String> {
    let metrics = lb.metrics();
    metrics["backends"].as_array().unwrap().iter().map(|backend| backend["url"].as_str().unwrap().to_string()).collect()
}

#[test]
fn sighup_rereads_the_config_and_the_process_keeps_serving() {
    let first = EchoBackend::start(&["--name", "first"]);
    let second = EchoBackend::start(&["--name", "second"]);
    let mut lb = LoadBalancer::start(&config_with("round_robin", &[first.url()]));
    assert_eq!(lb.get("/before").json()["server"], "first");

    lb.rewrite_config(&config_with("least_conn", &[first.url(), second.url()]));
    // The file has changed, but with reloadInterval "0s" only a signal rereads it.
    assert_eq!(lb.metrics()["algorithm"], "round_robin");
    signal(lb.pid(), "HUP");
    wait_until(DEADLINE, "the reload after SIGHUP", || lb.metrics()["config_reloads"] == 1);
    let metrics = lb.metrics();
    assert_eq!(metrics["algorithm"], "least_conn");
    assert_eq!(metrics["config_reload_failures"], 0);
    assert_eq!(backend_urls(&lb), [first.url(), second.url()]);
    lb.log.wait_for("SIGHUP: rereading", DEADLINE);
    let line = lb.log.wait_for("config reloaded from", DEADLINE);
    assert!(line.contains("2 backends (1 added, 0 removed), algorithm least_conn"), "{line}");

    // Still running, and serving from the new pool.
    let mut servers: Vec<String> =
        (0..4).map(|index| lb.get(&format!("/after/{index}")).json()["server"].as_str().unwrap().to_string()).collect();
    servers.sort();
    servers.dedup();
    assert_eq!(servers, ["first", "second"]);

    // A second hang-up rereads the file again, though it has not changed: as POST /lb-reload does.
    signal(lb.pid(), "HUP");
    wait_until(DEADLINE, "the second reload", || lb.metrics()["config_reloads"] == 2);
    assert_eq!(lb.get("/again").status, 200);

    signal(lb.pid(), "TERM");
    assert_eq!(lb.wait_exit(DEADLINE).code(), Some(0));
    assert_eq!(lb.log.count_containing("SIGTERM: shutting down"), 1, "{:?}", lb.log.all());
}

#[test]
fn sighup_with_a_bad_file_changes_nothing_and_logs_one_error_line() {
    let backend = EchoBackend::start(&["--name", "only"]);
    let mut lb = LoadBalancer::start(&config_with("round_robin", &[backend.url()]));
    let bad = format!(
        "{{\"reloadInterval\": \"0s\", \"algorithm\": \"least_conn\", \"servers\": [{{\"url\": \"{}\", \"weight\": 0}}]}}",
        backend.url()
    );
    lb.rewrite_config(&bad);
    signal(lb.pid(), "HUP");
    wait_until(DEADLINE, "the refused reload", || lb.metrics()["config_reload_failures"] == 1);
    let error = lb.log.wait_for("config not reloaded", DEADLINE);
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("servers[0].weight: must be at least 1"), "{error}");
    assert_eq!(lb.log.count_containing("ERROR"), 1, "{:?}", lb.log.all());
    let metrics = lb.metrics();
    assert_eq!(metrics["config_reloads"], 0);
    assert_eq!(metrics["algorithm"], "round_robin", "the running config stays");
    assert_eq!(metrics["backends"][0]["weight"], 1);
    assert_eq!(lb.get("/still").json()["server"], "only");

    signal(lb.pid(), "INT");
    assert_eq!(lb.wait_exit(DEADLINE).code(), Some(0));
    assert_eq!(lb.log.count_containing("SIGINT: shutting down"), 1, "{:?}", lb.log.all());
}

#[test]
fn sigterm_and_sigint_each_stop_it_with_exit_status_zero() {
    let backend = EchoBackend::start(&[]);
    for name in ["TERM", "INT"] {
        let mut lb = LoadBalancer::start(&config_with("round_robin", &[backend.url()]));
        assert_eq!(lb.get("/").status, 200);
        signal(lb.pid(), name);
        assert_eq!(lb.wait_exit(DEADLINE).code(), Some(0), "SIG{name}");
        lb.log.wait_for(&format!("SIG{name}: shutting down"), DEADLINE);
        lb.log.wait_for("all requests finished; bye", DEADLINE);
        assert_eq!(lb.log.count_containing("config reloaded"), 0, "SIG{name} is no reload");
    }
}
