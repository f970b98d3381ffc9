//! Backend host names to addresses, with the system resolver (`getaddrinfo`).
//!
//! Runs on whichever thread asks, never on a request's path: the thread loading a config (the
//! main thread at start-up, `config-watcher` or `admin` on a reload) and each round's
//! `health-probe-N` threads, one backend each, so a slow resolver delays no other backend. A name
//! that does not resolve is not an error of the config: that backend is down until it resolves.

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;

/// Most lookups a config load runs at once.
const PARALLEL_LOOKUPS: usize = 16;

/// Every address `host` (an IPv6 literal may keep its brackets) has for `port`, in the
/// resolver's order, or why there are none.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> =
        (bare, port).to_socket_addrs().map_err(|error| format!("cannot resolve host {host:?}: {error}"))?.collect();
    if addrs.is_empty() {
        return Err(format!("host {host:?} resolves to no address"));
    }
    Ok(addrs)
}

/// [`resolve`] for each `(host, port)`, up to [`PARALLEL_LOOKUPS`] at a time, results in order.
pub fn resolve_all(targets: &[(String, u16)]) -> Vec<Result<Vec<SocketAddr>, String>> {
    let mut results = Vec::with_capacity(targets.len());
    for batch in targets.chunks(PARALLEL_LOOKUPS) {
        thread::scope(|scope| {
            let lookups: Vec<_> = batch
                .iter()
                .map(|(host, port)| {
                    let spawned = thread::Builder::new()
                        .name("resolve".to_string())
                        .spawn_scoped(scope, move || resolve(host, *port));
                    (host, *port, spawned)
                })
                .collect();
            for (host, port, spawned) in lookups {
                results.push(match spawned {
                    Ok(lookup) => lookup.join().unwrap_or_else(|_| Err(format!("cannot resolve host {host:?}"))),
                    // No thread to spare: look it up here.
                    Err(_) => resolve(host, port),
                });
            }
        });
    }
    results
}

/// Whether two backends' address lists share an address: then they are one backend, however
/// differently named (`localhost:3001` and `127.0.0.1:3001`). IPv4-mapped IPv6 addresses count
/// as the IPv4 address they carry.
pub fn overlap(first: &[SocketAddr], second: &[SocketAddr]) -> bool {
    let canonical = |addr: &SocketAddr| (addr.ip().to_canonical(), addr.port());
    first.iter().any(|one| second.iter().any(|other| canonical(one) == canonical(other)))
}

/// The addresses as the log shows them: `127.0.0.1:3001, [::1]:3001`.
pub fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether two address lists hold the same addresses, in whatever order (a resolver may rotate
/// them from one lookup to the next).
pub fn same_set(first: &[SocketAddr], second: &[SocketAddr]) -> bool {
    let sorted = |addrs: &[SocketAddr]| {
        let mut addrs = addrs.to_vec();
        addrs.sort();
        addrs.dedup();
        addrs
    };
    sorted(first) == sorted(second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn literals_resolve_to_themselves_and_localhost_to_loopback() {
        assert_eq!(resolve("127.0.0.1", 80), Ok(addrs(&["127.0.0.1:80"])));
        assert_eq!(resolve("[::1]", 8000), Ok(addrs(&["[::1]:8000"])));
        let local = resolve("localhost", 3001).unwrap();
        assert!(local.iter().all(|addr| addr.ip().is_loopback() && addr.port() == 3001), "{local:?}");
        let all = resolve_all(&[("127.0.0.2".to_string(), 1), ("[::1]".to_string(), 2)]);
        assert_eq!(all, [Ok(addrs(&["127.0.0.2:1"])), Ok(addrs(&["[::1]:2"]))]);
    }

    #[test]
    fn any_shared_address_is_the_same_backend() {
        let localhost = addrs(&["[::1]:3001", "127.0.0.1:3001"]);
        assert!(overlap(&localhost, &addrs(&["127.0.0.1:3001"])));
        assert!(overlap(&addrs(&["[::ffff:127.0.0.1]:3001"]), &addrs(&["127.0.0.1:3001"])));
        assert!(!overlap(&localhost, &addrs(&["127.0.0.1:3002"])), "another port is another backend");
        assert!(!overlap(&localhost, &addrs(&["127.0.0.2:3001"])));
        assert!(!overlap(&[], &localhost));
    }

    #[test]
    fn order_does_not_make_a_different_set() {
        assert!(same_set(&addrs(&["10.0.0.1:80", "10.0.0.2:80"]), &addrs(&["10.0.0.2:80", "10.0.0.1:80"])));
        assert!(!same_set(&addrs(&["10.0.0.1:80"]), &addrs(&["10.0.0.1:80", "10.0.0.2:80"])));
        assert_eq!(list(&addrs(&["127.0.0.1:1", "[::1]:1"])), "127.0.0.1:1, [::1]:1");
    }
}
