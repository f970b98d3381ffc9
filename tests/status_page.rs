//! `GET /lb-status`, the live status page: served as HTML beside the metrics, and rendered by a
//! real browser. Headless Chromium loads the page from a running load balancer, runs its script
//! (which fetches the metrics JSON and draws a table per pool and a row per backend), and dumps
//! the resulting DOM, which the test reads for each pool's heading and each backend's state badge.
//!
//! Without Chromium installed the browser test is skipped with a message, except under CI (the
//! `CI` environment variable set), where it fails: CI must install the browser (`.ci/run` does).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{EchoBackend, LoadBalancer, TempDir, config, wait_until};

/// How long one browser run may take before it is killed and the test fails.
const BROWSER_LIMIT: Duration = Duration::from_secs(30);

/// Flags that keep the browser on loopback: no background services (updates, sync, metrics,
/// safe browsing), and a host resolver that finds no name at all, so nothing is looked up or
/// contacted beyond the load balancer's 127.0.0.1 address.
const LOOPBACK_ONLY: [&str; 9] = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
];

/// Browser executables tried, in order, on `PATH`.
const BROWSER_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

#[test]
fn the_page_is_served_as_html_with_the_metrics_path_filled_in() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"metricsPath\": \"/stats\""));

    let page = lb.get("/lb-status");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("const METRICS_PATH = \"/stats\";"), "the page fetches the configured metrics path");

    let mut client = common::Client::connect(lb.addr());
    client.send(b"HEAD /lb-status HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let head = client.response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(page.body.len().to_string().as_str()));
    assert!(client.is_closed(), "no body follows the head");

    assert_eq!(lb.get("/stats").json()["total_requests"], 0, "neither request went to a backend");
}

#[test]
fn a_browser_shows_each_pool_and_each_backend_state() {
    let Some(browser) = find_browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and no Chromium is installed ({}): CI must install it to run the browser test",
            BROWSER_NAMES.join(", ")
        );
        eprintln!(
            "SKIPPED a_browser_shows_each_pool_and_each_backend_state: no Chromium installed (looked for {} on PATH)",
            BROWSER_NAMES.join(", ")
        );
        return;
    };
    let mut backends: Vec<EchoBackend> = (0..3).map(|_| EchoBackend::start(&[])).collect();
    let urls: Vec<String> = backends.iter().map(EchoBackend::url).collect();
    // The first two in pool default, the third in pool api.
    let pool_of = |index: usize| if index < 2 { "default" } else { "api" };
    let lb = LoadBalancer::start(&format!(
        r#"{{"healthCheckInterval": "200ms", "healthCheckTimeout": "500ms", "servers": ["{}", "{}"],
            "pools": {{"api": {{"algorithm": "least_conn", "servers": ["{}"]}}}}}}"#,
        urls[0], urls[1], urls[2]
    ));
    wait_until(Duration::from_secs(10), "every backend healthy", || lb.metrics()["healthy_backends"] == 3);
    for _ in 0..6 {
        assert_eq!(lb.get("/ping").status, 200);
    }
    let page_url = format!("http://127.0.0.1:{}/lb-status", lb.port);

    let dom = dump_dom(&browser, &page_url);
    assert_eq!(connection(&dom).as_deref(), Some("live"), "the page did not reach the metrics:\n{dom}");
    assert!(dom.contains("id=\"algorithm\">default: round_robin, api: least_conn</strong>"), "{dom}");
    let headings = [("default", "round_robin", "2 / 2 healthy"), ("api", "least_conn", "1 / 1 healthy")];
    for (pool, algorithm, health) in headings {
        let table = pool_table(&dom, pool).unwrap_or_else(|| panic!("no table for pool {pool} in:\n{dom}"));
        assert!(table.contains(&format!("<span class=\"pool-name\">pool {pool}</span>")), "{table}");
        assert!(table.contains(&format!("<span class=\"pool-algorithm\">{algorithm}</span>")), "{table}");
        assert!(table.contains(&format!("<span class=\"pool-health\">{health}</span>")), "{table}");
    }
    assert!(dom.find("data-pool=\"default\"") < dom.find("data-pool=\"api\""), "in the config's order");
    for (index, url) in urls.iter().enumerate() {
        let table = pool_table(&dom, pool_of(index)).unwrap();
        assert_eq!(badge_state(table, url).as_deref(), Some("healthy"), "the badge of {url} in:\n{dom}");
        let other = pool_table(&dom, if pool_of(index) == "default" { "api" } else { "default" }).unwrap();
        assert_eq!(badge_state(other, url), None, "{url} is only in its own pool's table");
    }

    backends[1].kill();
    wait_until(Duration::from_secs(10), "the killed backend reported unhealthy", || {
        lb.metrics()["backends"][1]["state"] == "unhealthy"
    });
    let dom = dump_dom(&browser, &page_url);
    for (index, url) in urls.iter().enumerate() {
        let expected = if index == 1 { "unhealthy" } else { "healthy" };
        let table = pool_table(&dom, pool_of(index)).unwrap();
        assert_eq!(badge_state(table, url).as_deref(), Some(expected), "the badge of {url} in:\n{dom}");
    }
    let default = pool_table(&dom, "default").unwrap();
    assert!(default.contains("<span class=\"pool-health\">1 / 2 healthy</span>"), "{default}");
    assert!(dom.contains(">unhealthy</span>"), "the badge says the state in words");

    // The same page where the metrics cannot be fetched: it says so and keeps trying.
    let page = TempDir::new();
    let file = page.write("lb-status.html", &lb.get("/lb-status").text());
    let dom = dump_dom(&browser, &format!("file://{}", file.display()));
    assert_eq!(connection(&dom).as_deref(), Some("lost"), "{dom}");
    assert!(dom.contains(">cannot reach the load balancer</div>"), "{dom}");
}

/// The first of [`BROWSER_NAMES`] found on `PATH`.
fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| BROWSER_NAMES.map(|name| dir.join(name)))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Loads `url` in headless Chromium and returns the DOM once the page's script has run for five
/// seconds of virtual time: Chromium runs timers without waiting for them and pauses that clock
/// while the page's requests are on the network, so every poll's fetch completes, in about a
/// second of real time. The browser gets a fresh profile and is killed (with everything it
/// started) if it runs longer than [`BROWSER_LIMIT`].
fn dump_dom(browser: &Path, url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let profile = TempDir::new();
    let started = Instant::now();
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(LOOPBACK_ONLY)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", browser.display()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_LIMIT {
            kill_process_group(child.id());
            let _ = child.wait();
            panic!("{} did not finish loading {url} within {BROWSER_LIMIT:?}", browser.display());
        }
        thread::sleep(Duration::from_millis(50));
    };
    // Helper processes inherit stdout; make sure none outlives the browser and holds it open.
    kill_process_group(child.id());
    let dom = reader.join().unwrap();
    assert!(status.success(), "{} exited with {status} loading {url}", browser.display());
    eprintln!("{} rendered {url} in {:.1} s", browser.display(), started.elapsed().as_secs_f64());
    dom
}

/// Kills every process in the group `leader` started (the browser and its helpers), if any remain.
fn kill_process_group(leader: u32) {
    let _ = Command::new("sh").arg("-c").arg(format!("kill -KILL -- -{leader} 2>/dev/null")).status();
}

/// The `data-state` of the badge in the row whose `data-backend` is `url`: the first `data-state`
/// after that attribute and before the next row's.
fn badge_state(dom: &str, url: &str) -> Option<String> {
    let row_start = dom.find(&format!("data-backend=\"{url}\""))?;
    let row = &dom[row_start + 1..];
    let row = &row[..row.find("data-backend=\"").unwrap_or(row.len())];
    attribute(row, "data-state")
}

/// The part of `dom` from the table of pool `pool` (its `data-pool` attribute) to the next pool's.
fn pool_table<'a>(dom: &'a str, pool: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-pool=\"{pool}\""))?;
    let table = &dom[start + 1..];
    Some(&table[..table.find("data-pool=\"").unwrap_or(table.len())])
}

/// The page's connection indicator (`data-connection` of the element `#connection`): `live` once
/// the metrics arrived, `lost` when they cannot be fetched. (The stylesheet names the same
/// attribute in selectors, so the search starts at the element's id.)
fn connection(dom: &str) -> Option<String> {
    attribute(&dom[dom.find("id=\"connection\"")?..], "data-connection")
}

/// The value of the first `name="..."` attribute in `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let value = html.split_once(&format!("{name}=\""))?.1;
    Some(value[..value.find('"')?].to_string())
}
