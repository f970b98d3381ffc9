//! Backend selection: one function per algorithm, all of them choosing only healthy backends.
//!
//! A [`Balancer`] holds the little state an algorithm needs (a round-robin counter, the smooth
//! weighted round-robin's current weights) and answers "which backend next?" for a request, given
//! the backends already tried for it, so that a retry goes somewhere new. Selection never blocks on
//! I/O; only `weighted_round_robin` takes a lock, held for one pass over the weights.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::backend::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    IpHash,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] =
        [Algorithm::RoundRobin, Algorithm::WeightedRoundRobin, Algorithm::LeastConn, Algorithm::IpHash];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::IpHash => "ip_hash",
        }
    }

    /// Parses a config name; the error lists every valid name.
    pub fn from_name(name: &str) -> Result<Algorithm, String> {
        Algorithm::ALL.into_iter().find(|algorithm| algorithm.name() == name).ok_or_else(|| {
            let valid: Vec<&str> = Algorithm::ALL.iter().map(|algorithm| algorithm.name()).collect();
            format!("unknown algorithm {name:?} (valid: {})", valid.join(", "))
        })
    }
}

/// Chooses backends for requests under one algorithm.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    next: AtomicUsize,
    smooth_weights: Mutex<Vec<i64>>,
}

impl Balancer {
    pub fn new(algorithm: Algorithm, backend_count: usize) -> Balancer {
        Balancer { algorithm, next: AtomicUsize::new(0), smooth_weights: Mutex::new(vec![0; backend_count]) }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The index of the backend for this attempt, skipping unhealthy backends and those in `tried`;
    /// `None` if no backend is left.
    ///
    /// A retry (non-empty `tried`) under `round_robin` or `ip_hash` goes to the next eligible
    /// backend after the one that failed, in list order, as nginx's "next upstream" does; it does
    /// not take a turn from the shared counter, so retries do not skew the rotation.
    pub fn pick(&self, backends: &[Arc<Backend>], client_ip: IpAddr, tried: &[usize]) -> Option<usize> {
        let eligible = |index: usize| backends[index].is_healthy() && !tried.contains(&index);
        let next_after = |failed: usize| {
            (1..=backends.len()).map(|offset| (failed + offset) % backends.len()).find(|&index| eligible(index))
        };
        match self.algorithm {
            Algorithm::RoundRobin | Algorithm::IpHash if !tried.is_empty() => next_after(tried[tried.len() - 1]),
            Algorithm::RoundRobin => {
                let count = (0..backends.len()).filter(|&index| eligible(index)).count();
                if count == 0 {
                    return None;
                }
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % count;
                (0..backends.len()).filter(|&index| eligible(index)).nth(turn)
            }
            Algorithm::WeightedRoundRobin => self.smooth_weighted(backends, eligible),
            Algorithm::LeastConn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..backends.len())
                    .map(|offset| (start + offset) % backends.len())
                    .filter(|&index| eligible(index))
                    .min_by_key(|&index| backends[index].active())
            }
            Algorithm::IpHash => {
                let count = (0..backends.len()).filter(|&index| eligible(index)).count();
                if count == 0 {
                    return None;
                }
                let slot = (fnv1a(&ip_octets(client_ip)) % count as u64) as usize;
                (0..backends.len()).filter(|&index| eligible(index)).nth(slot)
            }
        }
    }

    /// nginx's smooth weighted round robin: every eligible backend gains its weight, the richest is
    /// chosen and pays back the total. Weights 5:1:1 give a a b a c a a, never a run of five.
    fn smooth_weighted(&self, backends: &[Arc<Backend>], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.smooth_weights.lock();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for index in (0..backends.len()).filter(|&index| eligible(index)) {
            let weight = i64::from(backends[index].weight);
            current[index] += weight;
            total += weight;
            if best.is_none_or(|chosen| current[index] > current[chosen]) {
                best = Some(index);
            }
        }
        let chosen = best?;
        current[chosen] -= total;
        Some(chosen)
    }
}

fn ip_octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    }
}

/// FNV-1a, 64 bits: the same on every machine, process and build, unlike std's seeded hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_backend;

    fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights.iter().enumerate().map(|(index, &weight)| Arc::new(test_backend(3001 + index as u16, weight))).collect()
    }

    fn mark_down(backend: &Backend) {
        while backend.is_healthy() {
            backend.record_probe(false, 1, 1);
        }
    }

    fn sequence(balancer: &Balancer, backends: &[Arc<Backend>], count: usize) -> Vec<usize> {
        let client = IpAddr::from([10, 0, 0, 1]);
        (0..count).map(|_| balancer.pick(backends, client, &[]).unwrap()).collect()
    }

    #[test]
    fn names_round_trip_and_unknown_lists_valid_ones() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(algorithm.name()), Ok(algorithm));
        }
        assert_eq!(
            Algorithm::from_name("random").unwrap_err(),
            "unknown algorithm \"random\" (valid: round_robin, weighted_round_robin, least_conn, ip_hash)"
        );
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let backends = pool(&[1, 1, 1]);
        let balancer = Balancer::new(Algorithm::RoundRobin, backends.len());
        assert_eq!(sequence(&balancer, &backends, 6), [0, 1, 2, 0, 1, 2]);
        mark_down(&backends[1]);
        let after = sequence(&balancer, &backends, 4);
        assert!(after.iter().all(|&index| index != 1), "{after:?}");
        assert_eq!(after.iter().filter(|&&index| index == 0).count(), 2, "{after:?}");
    }

    #[test]
    fn round_robin_retry_takes_the_next_backend_without_skewing_the_rotation() {
        let backends = pool(&[1, 1, 1]);
        let balancer = Balancer::new(Algorithm::RoundRobin, backends.len());
        let client = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(balancer.pick(&backends, client, &[]), Some(0));
        assert_eq!(balancer.pick(&backends, client, &[]), Some(1));
        assert_eq!(balancer.pick(&backends, client, &[1]), Some(2), "retry after 1 goes to 2");
        assert_eq!(balancer.pick(&backends, client, &[1, 2]), Some(0));
        assert_eq!(balancer.pick(&backends, client, &[]), Some(2), "the rotation continues where it was");
    }

    #[test]
    fn weighted_round_robin_is_exact_and_smooth() {
        let backends = pool(&[1, 3, 2]);
        let balancer = Balancer::new(Algorithm::WeightedRoundRobin, backends.len());
        let picks = sequence(&balancer, &backends, 60);
        for window in picks.chunks(6) {
            let count = |wanted| window.iter().filter(|&&index| index == wanted).count();
            assert_eq!((count(0), count(1), count(2)), (1, 3, 2), "{window:?}");
        }
        assert_eq!(&picks[..6], [1, 2, 0, 1, 2, 1], "interleaved, not in runs");

        let skewed = pool(&[5, 1, 1]);
        let balancer = Balancer::new(Algorithm::WeightedRoundRobin, skewed.len());
        assert_eq!(sequence(&balancer, &skewed, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_prefers_fewest_in_flight_and_rotates_ties() {
        let backends = pool(&[1, 1, 1]);
        let balancer = Balancer::new(Algorithm::LeastConn, backends.len());
        let _busy = backends[0].begin_request();
        let _busier = [backends[1].begin_request(), backends[1].begin_request()];
        assert_eq!(sequence(&balancer, &backends, 3), [2, 2, 2]);
        let _third = backends[2].begin_request();
        // Now 0 and 2 tie with one each: ties rotate between them.
        let picks = sequence(&balancer, &backends, 4);
        assert!(picks.contains(&0) && picks.contains(&2) && !picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn ip_hash_is_stable_per_client_and_spreads_clients() {
        let backends = pool(&[1, 1, 1]);
        let balancer = Balancer::new(Algorithm::IpHash, backends.len());
        let mut seen = [0usize; 3];
        for last in 0..=255u8 {
            let client = IpAddr::from([192, 168, 7, last]);
            let first = balancer.pick(&backends, client, &[]).unwrap();
            assert_eq!(balancer.pick(&backends, client, &[]), Some(first));
            seen[first] += 1;
        }
        assert!(seen.iter().all(|&count| count > 50), "{seen:?}");
        let mapped = IpAddr::from("::ffff:192.168.7.9".parse::<std::net::Ipv6Addr>().unwrap());
        let plain = IpAddr::from([192, 168, 7, 9]);
        assert_eq!(balancer.pick(&backends, mapped, &[]), balancer.pick(&backends, plain, &[]));
    }

    #[test]
    fn every_algorithm_skips_tried_and_unhealthy_and_returns_none_when_none_left() {
        for algorithm in Algorithm::ALL {
            let backends = pool(&[1, 2, 3]);
            let balancer = Balancer::new(algorithm, backends.len());
            let client = IpAddr::from([127, 0, 0, 1]);
            mark_down(&backends[2]);
            for _ in 0..20 {
                let first = balancer.pick(&backends, client, &[]).unwrap();
                assert_ne!(first, 2, "{algorithm:?}");
                let second = balancer.pick(&backends, client, &[first]).unwrap();
                assert!(second != first && second != 2, "{algorithm:?}");
                assert_eq!(balancer.pick(&backends, client, &[first, second]), None, "{algorithm:?}");
            }
            mark_down(&backends[0]);
            mark_down(&backends[1]);
            assert_eq!(balancer.pick(&backends, client, &[]), None, "{algorithm:?}");
        }
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
