//! Thread `config-watcher`, and `POST /lb-reload`: applying a changed config file without a
//! restart, and without dropping a request.
//!
//! The watcher reads the file every `reloadInterval` (`"0s"` turns it off); a change of its
//! contents triggers a reload, as does `POST /lb-reload` on the admin listener.
//! A reload reads and validates the whole file first, with the same checks and messages as at
//! start-up (flags and environment variables still win over it). A bad file changes nothing:
//! one ERROR line names the file, the key and the problem. A good one is applied:
//!
//! - pools are matched by name; pools new to the file start with new records, pools gone from it
//!   leave with theirs;
//! - backends that stay (same pool, URL, name and `backup` role) keep their record: health, counters, idle
//!   connections, passive-health state; a changed weight is taken over, and so are the addresses
//!   the host resolves to now;
//! - an `https://` backend that stays is updated in place with the TLS settings just read: the
//!   pool's new client configuration (its `backendCaFile` read again, so a changed file, or a
//!   changed path, takes effect) and its `tlsServerName`. Its idle connections are closed, having
//!   been verified under the old settings; the next connection is a full handshake, verified
//!   under the new ones. A CA file changed on disk is read at the next reload (a change to the
//!   config file, SIGHUP or `POST /lb-reload`), not watched like the certificates;
//! - a backend host name that does not resolve does not make the file bad: that backend is down
//!   (the health checks keep looking it up), as at start-up;
//! - new backends are probed once before they are put in the pool, and enter it healthy only if
//!   that probe passed, so they get no traffic before they have been checked;
//! - removed backends leave the pool at once: requests already on them finish, since a request
//!   holds the pool it started with;
//! - the algorithm, weights, limits, timeouts, health, retry and rate-limit settings change;
//! - the HTTPS certificates are replaced: handshakes from then on get the new ones, sessions
//!   already made keep theirs, and the session-ticket key stays, so clients go on resuming;
//! - `listenPort`, `tlsListen`, `adminListen`, `workers` and `pairThreads` are fixed at start-up: a
//!   change is logged as needing a restart and otherwise ignored (a config that starts serving
//!   HTTPS, or stops, needs a restart too).
//!
//! The certificate and key files are watched too, on the same `reloadInterval`: when one changes
//! on disk (an ACME client renewing it), the certificates alone are read again and, if every one
//! loads, replace the running ones as a reload would; if one does not (a renewal caught half
//! written, say), one ERROR line names it and the running certificates stay until the files
//! change again.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backend::Backend;
use crate::balance::hash::fnv1a;
use crate::config::tls::load_certificates;
use crate::config::{Config, HealthSettings};
use crate::health;
use crate::pool::{Pool, Pools};
use crate::shared::Shared;

/// How often the watcher looks whether `reloadInterval` has been turned on, while it is off.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(String),
    /// The file is the one already running.
    Unchanged,
    Refused(String),
}

/// The watcher thread's loop, until `stop` is dropped.
pub fn watch(shared: &Shared, stop: &Receiver<()>) {
    let mut certificates_seen = certificate_fingerprint(&shared.config());
    loop {
        let interval = shared.config().reload_interval;
        let wait = if interval.is_zero() { IDLE_CHECK } else { interval };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if !interval.is_zero() && !shared.is_shutting_down() {
            reload(shared, false);
            refresh_certificates(shared, &mut certificates_seen);
        }
    }
}

/// Rereads the config file and applies it if it changed (or always, if `forced`), logging the
/// outcome and counting it in the metrics.
pub fn reload(shared: &Shared, forced: bool) -> Outcome {
    let Some(file) = &shared.config_file else {
        return Outcome::Refused("the config did not come from a file".to_string());
    };
    let mut last_read = file.last_read.lock();
    // Read every time, not judged by its modification time: a file rewritten twice within the
    // file system's time resolution must not be missed. It is small.
    let text = match std::fs::read_to_string(&file.path) {
        Ok(text) => text,
        // Checked again next time; an editor may be replacing the file right now.
        Err(error) if !forced => {
            log::debug!("cannot read {} to reload it: {error}", file.path);
            return Outcome::Unchanged;
        }
        Err(error) => return refuse(shared, format!("{}: cannot read file: {error}", file.path)),
    };
    let contents_hash = fnv1a(text.as_bytes());
    if *last_read == Some(contents_hash) && !forced {
        return Outcome::Unchanged;
    }
    *last_read = Some(contents_hash);
    match Config::from_json(&text, &file.path, &file.overrides) {
        Ok(config) => {
            let summary = apply(shared, config);
            shared.stats.record_reload(true);
            log::info!("config reloaded from {}: {summary}", file.path);
            Outcome::Applied(summary)
        }
        Err(error) => refuse(shared, error.to_string()),
    }
}

/// A hash of every certificate and key file's contents (and of which files they are), `None`
/// without HTTPS. A file that cannot be read counts as empty: its coming back is a change.
fn certificate_fingerprint(config: &Config) -> Option<u64> {
    let tls = config.tls.as_ref()?;
    let mut all = Vec::new();
    for files in &tls.certificates {
        for path in [&files.cert_file, &files.key_file] {
            all.extend_from_slice(path.as_os_str().as_encoded_bytes());
            all.push(0);
            all.extend_from_slice(&std::fs::read(path).unwrap_or_default());
            all.push(0);
        }
    }
    Some(fnv1a(&all))
}

/// Rereads the certificates if their files changed since `seen`, and serves them if they load.
fn refresh_certificates(shared: &Shared, seen: &mut Option<u64>) {
    let config = shared.config();
    let now = certificate_fingerprint(&config);
    if now == *seen {
        return;
    }
    *seen = now;
    let (Some(server), Some(tls)) = (&shared.tls, &config.tls) else { return };
    match load_certificates(&tls.certificates) {
        Ok(certs) => {
            log::info!("certificates reloaded from disk: {}", crate::server::certificate_list(&certs));
            server.replace_certificates(certs);
        }
        Err((index, problem)) => {
            log::error!("certificates[{index}]: {problem} (not reloaded; the running certificates stay)");
        }
    }
}

fn refuse(shared: &Shared, problem: String) -> Outcome {
    shared.stats.record_reload(false);
    log::error!("{problem} (config not reloaded; the running config stays)");
    Outcome::Refused(problem)
}

/// Puts `config` in place (keeping the settings fixed at start-up) and returns a summary.
fn apply(shared: &Shared, mut config: Config) -> String {
    let running = shared.config();
    keep_fixed_settings(&running, &mut config);
    if let (Some(server), Some(tls)) = (&shared.tls, &config.tls) {
        server.replace_certificates(tls.loaded.clone());
    }
    let old_pools = shared.pools();
    let mut added: Vec<(Arc<Backend>, &HealthSettings)> = Vec::new();
    let mut kept_count = 0;
    let mut pool_backends: Vec<Vec<Arc<Backend>>> = Vec::with_capacity(config.pools.len());
    for pool in &config.pools {
        let old = old_pools.get(&pool.name);
        let backends: Vec<Arc<Backend>> = pool
            .servers
            .iter()
            .map(|server| {
                let kept = old.and_then(|old| {
                    old.backends.iter().find(|backend| {
                        backend.url == server.url && backend.name == server.name && backend.backup == server.backup
                    })
                });
                match kept {
                    Some(kept) => {
                        kept_count += 1;
                        kept.set_weight(server.weight);
                        if server.tls.is_some() {
                            kept.set_tls(server.tls.clone());
                        }
                        // As just looked up for this config; the health rounds keep it current.
                        let _ = kept.take_resolution(match &server.resolve_error {
                            Some(reason) => Err(reason.clone()),
                            None => Ok(server.addrs.clone()),
                        });
                        Arc::clone(kept)
                    }
                    None => {
                        let backend = Arc::new(Backend::new_unchecked(server));
                        added.push((Arc::clone(&backend), &pool.health));
                        backend
                    }
                }
            })
            .collect();
        pool_backends.push(backends);
    }
    probe_new_backends(&added);
    let old_count = old_pools.backends().count();
    let removed = old_count - kept_count;
    let list: Vec<Arc<Pool>> = config
        .pools
        .iter()
        .zip(pool_backends)
        .map(|(pool, backends)| Arc::new(Pool::with_backends(pool, backends)))
        .collect();
    let pools = Pools::with_pools(&config, list);
    let described: Vec<String> = pools
        .list
        .iter()
        .map(|pool| format!("{} ({} backends, {})", pool.name(), pool.backends.len(), pool.config.algorithm.name()))
        .collect();
    let shape = match &pools.list[..] {
        [only] => format!("algorithm {}", only.config.algorithm.name()),
        _ => format!("pools: {}", described.join(", ")),
    };
    let summary =
        format!("{} backends ({} added, {} removed), {shape}", pools.backends().count(), added.len(), removed);
    shared.replace_config(config, pools);
    summary
}

/// Probes backends new to the pools, all at once, each with its pool's health settings, and admits
/// those that pass.
fn probe_new_backends(added: &[(Arc<Backend>, &HealthSettings)]) {
    thread::scope(|scope| {
        for (backend, settings) in added {
            let spawned = thread::Builder::new().name("reload-probe".to_string()).spawn_scoped(scope, || {
                let result = health::probe(backend, settings);
                if let Err(reason) = &result {
                    log::warn!(
                        "new backend {} failed its first health check ({reason}): no traffic until it passes",
                        backend.url
                    );
                }
                backend.admit(result.is_ok());
            });
            if let Err(error) = spawned {
                log::warn!("cannot probe new backend {}: {error}", backend.url);
            }
        }
    });
}

/// Settings that only a restart can change: logged if the file changed them, and kept.
fn keep_fixed_settings(running: &Config, config: &mut Config) {
    let needs_restart = |key: &str, from: &dyn std::fmt::Debug, to: &dyn std::fmt::Debug| {
        log::warn!("{key} changed from {from:?} to {to:?}: that needs a restart; keeping {from:?} until then");
    };
    if config.listen != running.listen {
        needs_restart("listenPort", &running.listen, &config.listen);
        config.listen = running.listen.clone();
    }
    match (&running.tls, &mut config.tls) {
        (Some(running_tls), Some(tls)) if tls.listen != running_tls.listen => {
            needs_restart("tlsListen", &running_tls.listen, &tls.listen);
            tls.listen = running_tls.listen.clone();
        }
        (Some(_), Some(_)) | (None, None) => {}
        (None, Some(tls)) => {
            needs_restart("tlsListen", &None::<String>, &Some(&tls.listen));
            config.tls = None;
            config.redirect_to_https = false;
        }
        (Some(running_tls), None) => {
            needs_restart("tlsListen", &Some(&running_tls.listen), &None::<String>);
            config.tls = running.tls.clone();
        }
    }
    if config.admin_listen != running.admin_listen {
        needs_restart("adminListen", &running.admin_listen, &config.admin_listen);
        config.admin_listen = running.admin_listen.clone();
    }
    if config.workers != running.workers {
        needs_restart("workers", &running.workers, &config.workers);
        config.workers = running.workers;
    }
    if config.pair_threads != running.pair_threads {
        needs_restart("pairThreads", &running.pair_threads.name(), &config.pair_threads.name());
        config.pair_threads = running.pair_threads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(text: &str) -> Config {
        Config::from_json(text, "config.json", &Overrides::default()).unwrap()
    }

    #[test]
    fn settings_fixed_at_start_up_are_kept_and_the_rest_taken() {
        let running = config(r#"{"listenPort": ":8080", "workers": 8, "servers": ["http://127.0.0.1:1"]}"#);
        let mut changed = config(
            r#"{"listenPort": ":9090", "workers": 16, "pairThreads": "pooled", "adminListen": "127.0.0.1:9901",
                "algorithm": "least_conn", "servers": ["http://127.0.0.1:2"]}"#,
        );
        keep_fixed_settings(&running, &mut changed);
        assert_eq!(changed.listen, running.listen);
        assert_eq!(changed.workers, 8);
        assert_eq!(changed.pair_threads, running.pair_threads);
        assert_eq!(changed.admin_listen, None);
        assert_eq!(changed.pools[0].algorithm.name(), "least_conn", "everything else is taken");
        assert_eq!(changed.pools[0].servers[0].url, "http://127.0.0.1:2");
    }
}
