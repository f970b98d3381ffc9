//! `loadbalancer check`, the real binary on config files written to a temporary directory: the
//! summary and exit status 0 for a valid file, status 2 and the one-line error for a bad one, and
//! `--request` explanations with their exit statuses. Nothing listens: no backend is started.

use std::path::PathBuf;
use std::process::{Command, Output};

const CONFIG: &str = r#"{
  "servers": ["http://127.0.0.1:3001"],
  "pools": {"api": {"algorithm": "least_conn", "servers": ["http://127.0.0.1:4001"]}},
  "routes": [
    {"name": "old", "match": {"host": "old.example.com"},
     "redirect": {"location": "https://www.example.com{path}{query}"}},
    {"name": "api", "match": {"host": "api.example.com", "pathPrefix": "/v1"}, "pool": "api",
     "stripPrefix": true, "requestHeaders": {"set": {"X-Env": "prod"}}}
  ]
}"#;

/// A config file in a directory of its own, removed when dropped.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("lb-check-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.json");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .arg("check")
        .args(args)
        .env_remove("LB_CONFIG")
        .env_remove("LB_ALGORITHM")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_valid_file_is_summarised_and_exits_0() {
    let file = ConfigFile::new("valid", CONFIG);
    let output = check(&["--config", file.path()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", text(&output.stderr));
    assert!(stdout.starts_with(&format!("config: {}\n", file.path())), "{stdout}");
    assert!(stdout.contains("pool api\n  algorithm: least_conn\n"), "{stdout}");
    assert!(stdout.contains("    http://127.0.0.1:4001 (name b-"), "{stdout}");
    assert!(stdout.contains("defaultPool: default (takes every request no route takes)\n"), "{stdout}");
    assert!(stdout.contains("routes[1] api\n  match: host api.example.com, pathPrefix /v1\n  pool: api\n"), "{stdout}");
    assert!(stdout.ends_with("config OK: 2 pools, 2 routes\n"), "{stdout}");
}

#[test]
fn the_config_is_chosen_and_overridden_as_when_serving() {
    let file = ConfigFile::new("env", CONFIG);
    let output = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .arg("check")
        .env("LB_CONFIG", file.path())
        .env("LB_ALGORITHM", "ip_hash")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("pool default\n  algorithm: ip_hash\n"), "{stdout}");
    assert!(stdout.contains("pool api\n  algorithm: least_conn\n"), "a pool's own algorithm stays: {stdout}");

    let output = check(&["--config", file.path(), "--algorithm", "fastest"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).starts_with("--algorithm: unknown algorithm \"fastest\""), "{}", text(&output.stderr));
}

#[test]
fn a_bad_file_exits_2_with_the_line_serving_prints() {
    let file = ConfigFile::new("bad", r#"{"servers": ["http://127.0.0.1:3001"], "routes": [{"pool": "nope"}]}"#);
    let output = check(&["--config", file.path()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(text(&output.stdout), "");
    assert_eq!(
        text(&output.stderr),
        format!("{}: routes[0].pool: unknown pool \"nope\" (pools: default)\n", file.path())
    );
    let missing = check(&["--config", "/nonexistent/lb.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).starts_with("/nonexistent/lb.json: cannot read file"), "{}", text(&missing.stderr));
}

#[test]
fn a_request_is_explained_and_a_refused_one_exits_1() {
    let file = ConfigFile::new("request", CONFIG);
    let routed = check(&["--config", file.path(), "--request", "GET http://api.example.com/v1/users?id=7"]);
    let stdout = text(&routed.stdout);
    assert_eq!(routed.status.code(), Some(0), "{stdout}{}", text(&routed.stderr));
    assert!(stdout.starts_with("config OK: 2 pools, 2 routes\nrequest: GET /v1/users?id=7 HTTP/1.1\n"), "{stdout}");
    assert!(stdout.contains("  routes[0] old: no: host \"api.example.com\" matches none of old.example.com\n"));
    assert!(stdout.contains("taken by routes[1] api → pool api\n"), "{stdout}");
    assert!(
        stdout.contains(
            "  GET /users?id=7 HTTP/1.1\n  Host: api.example.com\n  X-Env: prod\n  X-Forwarded-For: 192.0.2.1\n"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("  X-Forwarded-Prefix: /v1\n"), "{stdout}");

    let redirected = check(&["--config", file.path(), "--request", "GET /a\\nHost: old.example.com"]);
    assert_eq!(redirected.status.code(), Some(0));
    assert!(
        text(&redirected.stdout).ends_with("→ redirect: 308 Permanent Redirect, Location: https://www.example.com/a\n"),
        "{}",
        text(&redirected.stdout)
    );

    let defaulted = check(&["--config", file.path(), "--request", "POST /v1/x", "--header", "Host: www.example.com"]);
    assert_eq!(defaulted.status.code(), Some(0));
    assert!(text(&defaulted.stdout).contains("no route takes it → defaultPool default\n"));

    let refused = check(&["--config", file.path(), "--request", "GET /../x", "--header", "Host: a"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(text(&refused.stdout), "config OK: 2 pools, 2 routes\n400 Bad Request: path climbs above /\n");

    let bad_flag = check(&["--config", file.path(), "--header", "X-Api 1"]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert_eq!(text(&bad_flag.stderr), "--header: must be \"Name: value\", got \"X-Api 1\"\n");
}
