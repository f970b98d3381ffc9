//! Per-client rate limiting: one token bucket per client IP, in bounded memory.
//!
//! A bucket holds up to `burst` tokens and refills at `requestsPerSecond`; each request takes one.
//! A bucket that has refilled completely is the same as no bucket, so buckets of clients that went
//! quiet are swept away; memory holds only clients seen within the last `burst / rate` seconds, and
//! never more than [`MAX_TRACKED_CLIENTS`] of them. Buckets are spread over [`SHARDS`] mutexes by
//! address so that workers serving different clients rarely wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::balance::hash::fnv1a;
use crate::config::RateLimitSettings;

pub const SHARDS: usize = 16;
/// Most clients tracked at once. Past it, a new client is refused (429) until buckets expire,
/// rather than letting memory grow or letting new addresses through unlimited.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;
/// A shard is swept for full buckets when it grows past this many entries.
const SWEEP_ABOVE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allowed,
    /// Over the limit; a token will be available after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    next_sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        let shards =
            (0..SHARDS).map(|_| Mutex::new(Shard { buckets: HashMap::new(), next_sweep_at: SWEEP_ABOVE })).collect();
        RateLimiter { settings, shards }
    }

    /// Takes a token for `client` at time `now`, or says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Decision {
        let shard_index = (fnv1a(client.to_string().as_bytes()) % SHARDS as u64) as usize;
        let mut shard = self.shards[shard_index].lock();
        let RateLimitSettings { requests_per_second: rate, burst } = self.settings;
        if !shard.buckets.contains_key(&client) && shard.buckets.len() >= shard.next_sweep_at {
            shard.buckets.retain(|_, bucket| refilled(bucket, rate, burst, now) < burst);
            shard.next_sweep_at = (shard.buckets.len() * 2).max(SWEEP_ABOVE);
            if shard.buckets.len() >= MAX_TRACKED_CLIENTS / SHARDS {
                return Decision::Limited { retry_after: Duration::from_secs_f64(burst / rate) };
            }
        }
        let bucket = shard.buckets.entry(client).or_insert(Bucket { tokens: burst, updated: now });
        bucket.tokens = refilled(bucket, rate, burst, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision::Allowed
        } else {
            Decision::Limited { retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rate) }
        }
    }

    /// Clients currently tracked, for tests and metrics.
    pub fn tracked_clients(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().buckets.len()).sum()
    }
}

fn refilled(bucket: &Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter::new(RateLimitSettings { requests_per_second: rate, burst })
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = limiter(2.0, 3.0);
        let client = IpAddr::from([10, 0, 0, 1]);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(client, start), Decision::Allowed);
        }
        match limiter.check(client, start) {
            Decision::Limited { retry_after } => assert_eq!(retry_after, Duration::from_millis(500)),
            Decision::Allowed => panic!("the fourth request in a burst of three must be limited"),
        }
        assert_eq!(limiter.check(client, start + Duration::from_millis(500)), Decision::Allowed);
        assert!(matches!(limiter.check(client, start + Duration::from_millis(600)), Decision::Limited { .. }));
        let other = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(limiter.check(other, start), Decision::Allowed, "buckets are per client");
    }

    #[test]
    fn quiet_clients_are_forgotten_so_memory_stays_bounded() {
        let limiter = limiter(100.0, 1.0);
        let start = Instant::now();
        for round in 0..20u32 {
            let now = start + Duration::from_secs(u64::from(round));
            for host in 0..1000u32 {
                let client = IpAddr::from((round * 1000 + host).to_be_bytes());
                assert_eq!(limiter.check(client, now), Decision::Allowed);
            }
        }
        // Only the last round's clients can still be mid-refill; every shard stays near its sweep size.
        assert!(limiter.tracked_clients() <= 1000 + SHARDS * SWEEP_ABOVE * 2, "{}", limiter.tracked_clients());
    }
}
