//! Thread `health`: Active health checks: every `healthCheckInterval`, a `GET healthCheckPath` to each
//! backend, with hysteresis.
//!
//! One dedicated thread owns the schedule of every pool, each pool on its own interval with its
//! own path, timeout and thresholds; pools that fall due together are probed in one round. Each round it starts short-lived probe threads
//! (`health-probe-N`), one per backend up to [`MAX_PARALLEL_PROBES`], and waits for them all, so
//! a backend that hangs costs the others nothing (beyond that many backends, probes take turns):
//! every probe is bounded by `healthCheckTimeout`, from connect to status line. The first
//! round runs at start-up. A status in `healthCheckStatus` ([`crate::config::statuses::HealthyStatuses`]; by default any
//! below 500, since a backend that answers HTTP at all is up) is a success; anything else, or no
//! answer in time, is a failure. Only changes of state are logged (WARN when a backend goes down, INFO when it
//! comes back), as decided by [`Backend::record_probe`]. Each round also closes backend
//! connections that have sat idle in a pool for too long. Before its probe, each backend's host
//! name is looked up again, in its probe thread ([`Backend::resolve_again`]): a changed DNS record
//! is followed without a restart, and a name that does not resolve fails the probe with that reason.
//! An `https://` backend is probed over TLS, the connection made and verified by
//! [`Backend::connect`] as a request's is, so a certificate that does not verify fails the probe
//! with rustls's reason (`connect: TLS handshake failed: invalid peer certificate: ...`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backend::{Backend, HealthFlip};
use crate::config::HealthSettings;
use crate::pool::Pool;
use crate::shared::Shared;

/// Runs rounds of probes until `stop` receives a message or is dropped. A pool is due when its
/// interval has passed since its last round (a pool new to a reload is due at once); the thread
/// sleeps until the next pool is due, but never longer than [`LONGEST_SLEEP`], so that a reload
/// shortening an interval is followed soon.
pub fn run(shared: &Shared, stop: &Receiver<()>) {
    // When each pool, by name, was last probed.
    let mut last_round: HashMap<String, Instant> = HashMap::new();
    loop {
        let pools = shared.pools();
        let now = Instant::now();
        let due: Vec<&Arc<Pool>> = pools
            .list
            .iter()
            .filter(|pool| last_round.get(pool.name()).is_none_or(|&last| now >= last + pool.config.health.interval))
            .collect();
        let jobs: Vec<(&Arc<Backend>, &HealthSettings)> =
            due.iter().flat_map(|pool| pool.backends.iter().map(|backend| (backend, &pool.config.health))).collect();
        probe_round(&jobs);
        let finished = Instant::now();
        for pool in &due {
            pool.balancer.refresh(&pool.backends);
            last_round.insert(pool.name().to_string(), finished);
        }
        last_round.retain(|name, _| pools.get(name).is_some());
        let next_due = pools
            .list
            .iter()
            .filter_map(|pool| last_round.get(pool.name()).map(|&last| last + pool.config.health.interval))
            .min()
            .unwrap_or(finished + LONGEST_SLEEP);
        let sleep = next_due.saturating_duration_since(Instant::now()).min(LONGEST_SLEEP);
        match stop.recv_timeout(sleep) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The longest the thread sleeps between looks at the schedule.
pub const LONGEST_SLEEP: Duration = Duration::from_secs(1);

/// The most probes a round runs at once. Tens of backends are probed all in parallel; a pool of
/// a thousand is probed by this many threads in turn, each probe still bounded by
/// `healthCheckTimeout`, rather than by a thousand threads.
pub const MAX_PARALLEL_PROBES: usize = 64;

/// Probes every backend, each with its pool's settings, up to [`MAX_PARALLEL_PROBES`] at a time,
/// and records the results.
pub fn probe_round(jobs: &[(&Arc<Backend>, &HealthSettings)]) {
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        for prober in 0..jobs.len().min(MAX_PARALLEL_PROBES) {
            let next = &next;
            let spawned =
                thread::Builder::new().name(format!("health-probe-{prober}")).spawn_scoped(scope, move || {
                    while let Some((backend, settings)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        probe_and_record(backend, settings);
                    }
                });
            if let Err(error) = spawned {
                log::warn!("cannot start a health probe thread: {error}");
            }
        }
        // Whatever no thread could be started for is probed here, one at a time.
        while let Some((backend, settings)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
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
    let stream = backend.connect(settings.timeout, settings.timeout).map_err(|error| format!("connect: {error}"))?;
    let mut stream = &stream;
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
        stream.socket().set_read_timeout(Some(remaining)).map_err(|error| error.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed without a response".to_string()),
            Ok(count) => head.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("read: {error}")),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::statuses::HealthyStatuses;
    use std::net::TcpListener;

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
        let strict = HealthSettings {
            statuses: HealthyStatuses::from_json(&"2xx".into()).unwrap(),
            ..settings(Duration::from_secs(2))
        };
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
        let settings = settings(Duration::from_millis(300));
        probe_round(&[(&hanging, &settings), (&fine, &settings)]);
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
        let settings = settings(Duration::from_millis(500));
        let jobs: Vec<(&Arc<Backend>, &HealthSettings)> = backends.iter().map(|backend| (backend, &settings)).collect();
        probe_round(&jobs);
        assert!(backends.iter().all(|backend| backend.last_checked().is_some()), "every backend probed once");
        assert!(backends.iter().all(|backend| !backend.is_healthy()));
    }
}
