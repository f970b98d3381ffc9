//! Thread `health`: Active health checks: every `healthCheckInterval`, a `GET healthCheckPath` to each
//! backend, with hysteresis.
//!
//! One dedicated thread owns the schedule. Each round it starts short-lived probe threads
//! (`health-probe-N`), one per backend up to [`MAX_PARALLEL_PROBES`], and waits for them all, so
//! a backend that hangs costs the others nothing (beyond that many backends, probes take turns):
//! every probe is bounded by `healthCheckTimeout`, from connect to status line. The first
//! round runs at start-up. A status in `healthCheckStatus` ([`HealthyStatuses`]; by default any
//! below 500, since a backend that answers HTTP at all is up) is a success; anything else, or no
//! answer in time, is a failure. Only changes of state are logged (WARN when a backend goes down, INFO when it
//! comes back), as decided by [`Backend::record_probe`]. Each round also closes backend
//! connections that have sat idle in a pool for too long. Before its probe, each backend's host
//! name is looked up again, in its probe thread ([`Backend::resolve_again`]): a changed DNS record
//! is followed without a restart, and a name that does not resolve fails the probe with that reason.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backend::{Backend, HealthFlip};
use crate::config::HealthSettings;
use crate::shared::Shared;

/// Runs rounds of probes until `stop` receives a message or is dropped.
pub fn run(shared: &Shared, stop: &Receiver<()>) {
    loop {
        let settings = shared.config().health.clone();
        let pool = shared.pool();
        probe_round(&pool.backends, &settings);
        pool.balancer.refresh(&pool.backends);
        match stop.recv_timeout(settings.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The most probes a round runs at once. Tens of backends are probed all in parallel; a pool of
/// a thousand is probed by this many threads in turn, each probe still bounded by
/// `healthCheckTimeout`, rather than by a thousand threads.
pub const MAX_PARALLEL_PROBES: usize = 64;

/// Probes every backend, up to [`MAX_PARALLEL_PROBES`] at a time, and records the results.
pub fn probe_round(backends: &[std::sync::Arc<Backend>], settings: &HealthSettings) {
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        for prober in 0..backends.len().min(MAX_PARALLEL_PROBES) {
            let next = &next;
            let spawned =
                thread::Builder::new().name(format!("health-probe-{prober}")).spawn_scoped(scope, move || {
                    while let Some(backend) = backends.get(next.fetch_add(1, Ordering::Relaxed)) {
                        probe_and_record(backend, settings);
                    }
                });
            if let Err(error) = spawned {
                log::warn!("cannot start a health probe thread: {error}");
            }
        }
        // Whatever no thread could be started for is probed here, one at a time.
        while let Some(backend) = backends.get(next.fetch_add(1, Ordering::Relaxed)) {
            probe_and_record(backend, settings);
        }
    });
}

/// Probes one backend, records the result with hysteresis, and logs a change of state.
fn probe_and_record(backend: &Backend, settings: &HealthSettings) {
    backend.prune_idle();
    let result = backend.resolve_again().and_then(|()| probe(backend, settings));
    if let Err(reason) = &result {
        log::debug!("health probe of {} failed: {reason}", backend.url);
    }
    match backend.record_probe(result.is_ok(), settings.healthy_threshold, settings.unhealthy_threshold) {
        Some(HealthFlip::BecameUnhealthy) => log::warn!(
            "backend {} is now unhealthy after {} failed health checks ({})",
            backend.url,
            settings.unhealthy_threshold,
            result.err().unwrap_or_default()
        ),
        Some(HealthFlip::BecameHealthy) => log::info!(
            "backend {} is healthy again after {} successful health checks",
            backend.url,
            settings.healthy_threshold
        ),
        None => {}
    }
}

/// One probe: connect, send `GET path`, read the status line, all within `settings.timeout`.
/// Returns the status on success (one of `settings.statuses`) and a reason on failure. New
/// backends of a reload are admitted by this same probe, so by the same rule.
pub fn probe(backend: &Backend, settings: &HealthSettings) -> Result<u16, String> {
    let deadline = Instant::now() + settings.timeout;
    let mut stream =
        backend.connect(settings.timeout, settings.timeout).map_err(|error| format!("connect: {error}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadbalancer-health-check\r\nConnection: close\r\n\r\n",
        settings.path, backend.host_header
    );
    stream.write_all(request.as_bytes()).map_err(|error| format!("send: {error}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(status) = status_of(&head)? {
            return if settings.statuses.contains(status) { Ok(status) } else { Err(format!("status {status}")) };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || head.len() > 4096 {
            return Err(format!("no status line within {} ms", settings.timeout.as_millis()));
        }
        stream.set_read_timeout(Some(remaining)).map_err(|error| error.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed without a response".to_string()),
            Ok(count) => head.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("read: {error}")),
        }
    }
}

/// The statuses a probe counts as healthy (`healthCheckStatus`): ranges of status codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthyStatuses(Vec<RangeInclusive<u16>>);

impl Default for HealthyStatuses {
    /// Any answer below 500: a backend that answers HTTP at all is up, one that answers 5xx is not.
    fn default() -> Self {
        HealthyStatuses(vec![100..=499])
    }
}

impl fmt::Display for HealthyStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self
            .0
            .iter()
            .map(|range| match (range.start(), range.end()) {
                (low, high) if low == high => low.to_string(),
                (low, high) => format!("{low}-{high}"),
            })
            .collect();
        f.write_str(&ranges.join(", "))
    }
}

impl HealthyStatuses {
    const EXPECTED: &str = "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204]";

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|range| range.contains(&status))
    }

    /// Reads `healthCheckStatus`: a class (`"2xx"`), a range of classes or codes (`"2xx-3xx"`,
    /// `"200-399"`), one code (`200` or `"200"`), or a non-empty list of those (`[200, 204]`).
    /// Every code is from 100 to 599. The error is the problem, for the caller to name the key.
    pub fn from_json(value: &serde_json::Value) -> Result<HealthyStatuses, String> {
        use serde_json::Value;
        let entry = |value: &Value| match value {
            Value::String(text) => parse_status_range(text),
            Value::Number(_) => match value.as_u64() {
                Some(code) if (100..=599).contains(&code) => Ok(code as u16..=code as u16),
                _ => Err(format!("{value} is not a status from 100 to 599")),
            },
            other => Err(format!("{}, got {other}", HealthyStatuses::EXPECTED)),
        };
        match value {
            Value::Array(list) if list.is_empty() => Err("must list at least one status".to_string()),
            Value::Array(list) => list.iter().map(entry).collect::<Result<_, _>>().map(HealthyStatuses),
            single => entry(single).map(|range| HealthyStatuses(vec![range])),
        }
    }
}

/// `"2xx"`, `"2xx-3xx"`, `"200-399"`, `"204"` (or a mix such as `"200-3xx"`) as a range of codes.
fn parse_status_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let invalid = || format!("{}, got {text:?}", HealthyStatuses::EXPECTED);
    // One side: a code, or a class whose lowest and highest codes it stands for.
    let side = |part: &str| -> Result<(u16, u16), String> {
        let part = part.trim();
        let bytes = part.as_bytes();
        let (low, high) = match bytes {
            [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                let hundreds = u16::from(class - b'0') * 100;
                (hundreds, hundreds + 99)
            }
            [_, _, _] if bytes.iter().all(u8::is_ascii_digit) => {
                let code: u16 = part.parse().map_err(|_| invalid())?;
                (code, code)
            }
            _ => return Err(invalid()),
        };
        if !(100..=599).contains(&low) {
            return Err(format!("{part:?} is not a status from 100 to 599"));
        }
        Ok((low, high))
    };
    let (low, high) = match text.split_once('-') {
        Some((from, to)) => (side(from)?.0, side(to)?.1),
        None => side(text)?,
    };
    if low > high {
        return Err(format!("{text:?} must go from the lower status to the higher"));
    }
    Ok(low..=high)
}

/// The status code from a buffered status line, once the whole line is there.
fn status_of(head: &[u8]) -> Result<Option<u16>, String> {
    let Some(line_end) = head.iter().position(|&byte| byte == b'\n') else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(status) if version.starts_with("HTTP/1.") && (100..600).contains(&status) => Ok(Some(status)),
        _ => Err(format!("not an HTTP status line: {:?}", line.trim_end())),
    }
}

/// The default probe schedule as text, for the start-up log.
pub fn describe(settings: &HealthSettings) -> String {
    format!(
        "GET {} every {} (timeout {}, down after {}, up after {})",
        settings.path,
        crate::duration::format_duration(settings.interval),
        crate::duration::format_duration(settings.timeout),
        settings.unhealthy_threshold,
        settings.healthy_threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Duration;

    fn settings(timeout: Duration) -> HealthSettings {
        HealthSettings {
            interval: Duration::from_secs(1),
            path: "/health".into(),
            timeout,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            statuses: HealthyStatuses::default(),
        }
    }

    fn statuses(value: serde_json::Value) -> Result<HealthyStatuses, String> {
        HealthyStatuses::from_json(&value)
    }

    #[test]
    fn healthy_status_forms() {
        let default = HealthyStatuses::default();
        assert!([100, 200, 204, 301, 404, 499].iter().all(|&code| default.contains(code)), "below 500");
        assert!(![500, 503, 599].iter().any(|&code| default.contains(code)));
        assert_eq!(default.to_string(), "100-499");

        let two = statuses("2xx".into()).unwrap();
        assert!(two.contains(200) && two.contains(299) && !two.contains(199) && !two.contains(300));
        let two_three = statuses("2xx-3xx".into()).unwrap();
        assert_eq!(two_three, HealthyStatuses(vec![200..=399]));
        assert_eq!(statuses("200-399".into()).unwrap(), two_three);
        assert_eq!(statuses("200-3xx".into()).unwrap(), two_three, "a code and a class");
        assert_eq!(statuses("2XX".into()).unwrap(), two);
        assert_eq!(statuses("204".into()).unwrap(), HealthyStatuses(vec![204..=204]));
        assert_eq!(statuses(serde_json::json!(204)).unwrap(), HealthyStatuses(vec![204..=204]));
        let list = statuses(serde_json::json!([200, 204, "3xx"])).unwrap();
        assert!(list.contains(200) && list.contains(204) && list.contains(302));
        assert!(!list.contains(201) && !list.contains(404));
        assert_eq!(list.to_string(), "200, 204, 300-399");
    }

    #[test]
    fn healthy_status_mistakes_say_what_is_wrong() {
        let cases = [
            (
                serde_json::json!("2xxx"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"2xxx\"",
            ),
            (
                serde_json::json!("ok"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"ok\"",
            ),
            (
                serde_json::json!("6xx"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"6xx\"",
            ),
            (serde_json::json!("3xx-2xx"), "\"3xx-2xx\" must go from the lower status to the higher"),
            (serde_json::json!("099-200"), "\"099\" is not a status from 100 to 599"),
            (serde_json::json!("200-600"), "\"600\" is not a status from 100 to 599"),
            (
                serde_json::json!("200-"),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got \"200-\"",
            ),
            (serde_json::json!([]), "must list at least one status"),
            (serde_json::json!([200, 600]), "600 is not a status from 100 to 599"),
            (serde_json::json!([200, 2.5]), "2.5 is not a status from 100 to 599"),
            (
                serde_json::json!(true),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got true",
            ),
            (
                serde_json::json!([[200]]),
                "must be \"2xx\", \"2xx-3xx\", a range like \"200-399\" or a list like [200, 204], got [200]",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(statuses(value.clone()), Err(expected.to_string()), "{value}");
        }
    }

    /// A one-shot server that answers one connection with `response` after `delay`.
    fn answer_once(response: &'static [u8], delay: Duration) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                thread::sleep(delay);
                let _ = stream.write_all(response);
            }
        });
        port
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(status_of(b"HTTP/1.0 302 Found\r\n"), Ok(Some(302)));
        assert_eq!(status_of(b"HTTP/1.1 20"), Ok(None));
        assert!(status_of(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn probe_success_failure_and_timeout() {
        let ok = crate::backend::test_backend(answer_once(b"HTTP/1.1 204 No Content\r\n\r\n", Duration::ZERO), 1);
        assert_eq!(probe(&ok, &settings(Duration::from_secs(2))), Ok(204));

        let failing = crate::backend::test_backend(answer_once(b"HTTP/1.1 503 Unavailable\r\n\r\n", Duration::ZERO), 1);
        assert_eq!(probe(&failing, &settings(Duration::from_secs(2))), Err("status 503".to_string()));

        let no_health = crate::backend::test_backend(answer_once(b"HTTP/1.1 404 Not Found\r\n\r\n", Duration::ZERO), 1);
        assert_eq!(probe(&no_health, &settings(Duration::from_secs(2))), Ok(404), "up, by default");
        let strict = HealthSettings { statuses: statuses("2xx".into()).unwrap(), ..settings(Duration::from_secs(2)) };
        let no_health = crate::backend::test_backend(answer_once(b"HTTP/1.1 404 Not Found\r\n\r\n", Duration::ZERO), 1);
        assert_eq!(probe(&no_health, &strict), Err("status 404".to_string()), "down, with \"2xx\"");

        let slow = crate::backend::test_backend(answer_once(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(2)), 1);
        let started = Instant::now();
        assert!(probe(&slow, &settings(Duration::from_millis(200))).is_err());
        assert!(started.elapsed() < Duration::from_secs(1), "the probe is bounded by its timeout");
    }

    #[test]
    fn a_hanging_backend_does_not_delay_the_others() {
        let hanging = Arc::new(crate::backend::test_backend(answer_once(b"", Duration::from_secs(3)), 1));
        let fine = Arc::new(crate::backend::test_backend(answer_once(b"HTTP/1.1 200 OK\r\n\r\n", Duration::ZERO), 1));
        let started = Instant::now();
        probe_round(&[Arc::clone(&hanging), Arc::clone(&fine)], &settings(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!hanging.is_healthy());
        assert!(fine.is_healthy());
        assert!(fine.last_checked().is_some());
    }

    #[test]
    fn a_pool_larger_than_the_probe_threads_is_probed_whole() {
        // Ports nothing listens on: each probe fails at once with a refused connection.
        let ports: Vec<u16> = (0..MAX_PARALLEL_PROBES * 3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
            .collect();
        let backends: Vec<Arc<Backend>> =
            ports.iter().map(|&port| Arc::new(crate::backend::test_backend(port, 1))).collect();
        probe_round(&backends, &settings(Duration::from_millis(500)));
        assert!(backends.iter().all(|backend| backend.last_checked().is_some()), "every backend probed once");
        assert!(backends.iter().all(|backend| !backend.is_healthy()));
    }
}
