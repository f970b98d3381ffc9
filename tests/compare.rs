//! `loadbalancer compare` through the real binary: every algorithm reported, shares that add up,
//! the failing backend never credited with an answer, a complete SVG chart, and clean refusals
//! of bad flags.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::TempDir;
use loadbalancer::balance::Algorithm;

/// The longest a comparison may take before the test kills it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `loadbalancer ARGS`, killing it if it outlives `DEADLINE`.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LB_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let stderr = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + DEADLINE;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadbalancer {args:?} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// The table's backend columns, from its header line (every column after `retries`).
fn backend_columns(stdout: &str) -> Vec<String> {
    let header = stdout.lines().find(|line| line.starts_with("algorithm ")).expect("a table header");
    let columns: Vec<&str> = header.split_whitespace().collect();
    let retries = columns.iter().position(|column| *column == "retries").expect("a retries column");
    columns[retries + 1..].iter().map(|column| column.to_string()).collect()
}

/// The shares printed on `algorithm`'s row, in percent, in column order.
fn shares(stdout: &str, algorithm: &str) -> Vec<f64> {
    let row = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(algorithm))
        .unwrap_or_else(|| panic!("no row for {algorithm} in:\n{stdout}"));
    row.split_whitespace()
        .filter_map(|word| word.strip_suffix('%'))
        .map(|number| number.parse().unwrap_or_else(|_| panic!("{number:?} in {row:?}")))
        .collect()
}

#[test]
fn compare_reports_every_algorithm_and_draws_the_chart() {
    let dir = TempDir::new();
    let chart = dir.0.join("c.svg");
    let output = run(&["compare", "--requests", "30", "--clients", "4", "--out", chart.to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);

    let backends = backend_columns(&stdout);
    let failing = backends.iter().position(|name| name == "failing").expect("a failing backend column");
    for algorithm in Algorithm::ALL {
        let name = algorithm.name();
        let shares = shares(&stdout, name);
        assert_eq!(shares.len(), backends.len(), "{name}: one share per backend:\n{stdout}");
        let total: f64 = shares.iter().sum();
        assert!((total - 100.0).abs() <= 0.5, "{name}: shares add up to {total}:\n{stdout}");
        assert_eq!(shares[failing], 0.0, "{name}: the failing backend never answers:\n{stdout}");
    }
    assert!(stdout.contains(&format!("chart written to {}", chart.display())), "{stdout}");

    let svg = std::fs::read_to_string(&chart).unwrap();
    let svg = svg.trim();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.ends_with("</svg>"), "{svg}");
    for algorithm in Algorithm::ALL {
        assert!(svg.contains(algorithm.name()), "{} missing from the chart", algorithm.name());
    }
}

#[test]
fn compare_help_and_bad_flags() {
    let help = run(&["compare", "--help"]);
    assert!(help.status.success());
    let usage = String::from_utf8(help.stdout).unwrap();
    assert!(usage.contains("loadbalancer compare [--out FILE.svg] [--requests N] [--clients N]"), "{usage}");

    let main_help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    assert!(main_help.contains("loadbalancer compare"), "{main_help}");

    for (args, flag) in [
        (&["compare", "--clients", "0"][..], "--clients"),
        (&["compare", "--requests", "lots"][..], "--requests"),
        (&["compare", "--out"][..], "--out"),
        (&["compare", "--colour"][..], "--colour"),
    ] {
        let refused = run(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(refused.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line for {args:?}: {stderr}");
        assert!(stderr.starts_with(flag), "{args:?}: {stderr}");
        assert!(refused.stdout.is_empty(), "nothing ran for {args:?}");
    }
}

#[test]
fn compare_refuses_an_unwritable_chart_path_before_running() {
    let dir = TempDir::new();
    let chart = dir.0.join("no-such-directory").join("c.svg");
    let output = run(&["compare", "--out", chart.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--out") && stderr.contains("no-such-directory"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing ran: {}", String::from_utf8_lossy(&output.stdout));
}
