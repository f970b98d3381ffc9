//! Per-client rate limiting: one token bucket per client IP, in bounded memory. Shared state,
//! used by the worker threads (from [`crate::proxy`]) under one short lock per request.
//!
//! A bucket holds up to `burst` tokens and refills at `requestsPerSecond`; each request takes one.
//! A bucket that has refilled completely is the same as no bucket, so buckets of clients that went
//! quiet are swept away, and memory holds only recently active clients.
//!
//! At most `rateLimit.maxClients` (default [`DEFAULT_MAX_CLIENTS`]) clients are tracked at once,
//! and that bound is checked whenever a client is added, not only now and then. Buckets are spread
//! over up to [`SHARDS`] mutexes by address, so that workers serving different clients rarely wait
//! for each other; each shard holds its share of the bound (the shares add up to it exactly). A
//! new client whose shard is full first has the shard swept of refilled buckets; if none has
//! refilled, the client is refused (429) until one has, rather than letting memory grow or letting
//! new addresses through unlimited. Clients already tracked are served by their buckets as usual.
//!
//! A shard knows the earliest moment one of its buckets can have refilled, so a full shard is
//! swept only once that moment has come: a flood of new addresses against a full table costs one
//! comparison per request, not a scan.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::balance::hash::fnv1a;
use crate::config::RateLimitSettings;

/// The most shards a limiter has.
pub const SHARDS: usize = 16;
/// Most clients tracked at once unless `rateLimit.maxClients` says otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
/// A limiter for fewer clients than this per shard has fewer shards (down to one), so that a
/// small bound is not split into shares too small to be useful.
const MIN_CLIENTS_PER_SHARD: usize = 1024;
/// A shard is swept for refilled buckets when it grows past this many (or its share, if smaller),
/// then whenever it doubles, up to its share.
const SWEEP_ABOVE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allowed,
    /// Over the limit, or a new client with every slot taken; a token (or a slot) will be
    /// available after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    /// This shard's share of `maxClients`: it never holds more buckets.
    capacity: usize,
    /// The size at which the next new client first has the shard swept.
    next_sweep_at: usize,
    /// No bucket here can have refilled before this moment (`None`: no bucket is known to be
    /// waiting for one), so sweeping earlier would find nothing to remove.
    refill_due: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        let max_clients = settings.max_clients.max(1);
        let count = (max_clients / MIN_CLIENTS_PER_SHARD).clamp(1, SHARDS);
        let shards = (0..count)
            .map(|index| {
                let capacity = max_clients / count + usize::from(index < max_clients % count);
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    capacity,
                    next_sweep_at: SWEEP_ABOVE.min(capacity),
                    refill_due: None,
                })
            })
            .collect();
        RateLimiter { settings, shards }
    }

    /// Takes a token for `client` at time `now`, or says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Decision {
        let client = client.to_canonical();
        let RateLimitSettings { requests_per_second: rate, burst, .. } = self.settings;
        let mut shard = self.shards[self.shard_of(client)].lock();
        if let Some(bucket) = shard.buckets.get_mut(&client) {
            bucket.tokens = refilled(bucket, rate, burst, now);
            bucket.updated = now;
            return take_token(bucket, rate);
        }
        if let Err(retry_after) = shard.make_room(rate, burst, now) {
            return Decision::Limited { retry_after };
        }
        let mut bucket = Bucket { tokens: burst, updated: now };
        let decision = take_token(&mut bucket, rate);
        shard.buckets.insert(client, bucket);
        let full_at = now + Duration::from_secs_f64((burst - bucket.tokens) / rate);
        shard.refill_due = Some(shard.refill_due.map_or(full_at, |due| due.min(full_at)));
        decision
    }

    /// Clients currently tracked, for tests and metrics.
    pub fn tracked_clients(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().buckets.len()).sum()
    }

    /// The most clients tracked at once: the shards' shares added up.
    pub fn max_clients(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().capacity).sum()
    }

    /// Which shard holds `client`: a fixed hash of its address bytes (no allocation).
    fn shard_of(&self, client: IpAddr) -> usize {
        let hash = match client {
            IpAddr::V4(address) => fnv1a(&address.octets()),
            IpAddr::V6(address) => fnv1a(&address.octets()),
        };
        (hash % self.shards.len() as u64) as usize
    }
}

impl Shard {
    /// Makes sure a new bucket fits: sweeps refilled buckets when that can help, and says how
    /// long until a slot may be free if the shard is still full.
    fn make_room(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= self.next_sweep_at && self.refill_due.is_none_or(|due| due <= now) {
            self.sweep(rate, burst, now);
        }
        if self.buckets.len() < self.capacity {
            return Ok(());
        }
        let wait = self.refill_due.map_or(Duration::ZERO, |due| due.saturating_duration_since(now));
        Err(wait)
    }

    /// Removes every bucket that has refilled completely, and notes when the next one will.
    fn sweep(&mut self, rate: f64, burst: f64, now: Instant) {
        let mut refill_due: Option<Instant> = None;
        self.buckets.retain(|_, bucket| {
            let tokens = refilled(bucket, rate, burst, now);
            if tokens >= burst {
                return false;
            }
            let full_at = now + Duration::from_secs_f64((burst - tokens) / rate);
            refill_due = Some(refill_due.map_or(full_at, |due| due.min(full_at)));
            true
        });
        self.refill_due = refill_due;
        let remaining = self.buckets.len();
        self.next_sweep_at = (remaining * 2).clamp(SWEEP_ABOVE.min(self.capacity), self.capacity);
        // A table that was swept nearly empty gives back its memory.
        if self.buckets.capacity() > 4 * remaining.max(SWEEP_ABOVE) {
            self.buckets.shrink_to(remaining * 2);
        }
    }
}

fn take_token(bucket: &mut Bucket, rate: f64) -> Decision {
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Decision::Allowed
    } else {
        Decision::Limited { retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rate) }
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
        bounded(rate, burst, DEFAULT_MAX_CLIENTS)
    }

    fn bounded(rate: f64, burst: f64, max_clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimitSettings { requests_per_second: rate, burst, max_clients })
    }

    fn address(number: u32) -> IpAddr {
        IpAddr::from(number.to_be_bytes())
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
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(matches!(limiter.check(mapped, start), Decision::Limited { .. }), "one client, however written");
    }

    #[test]
    fn quiet_clients_are_forgotten_so_memory_stays_bounded() {
        let limiter = limiter(100.0, 1.0);
        let start = Instant::now();
        for round in 0..20u32 {
            let now = start + Duration::from_secs(u64::from(round));
            for host in 0..1000u32 {
                assert_eq!(limiter.check(address(round * 1000 + host), now), Decision::Allowed);
            }
        }
        // Only the last round's clients can still be mid-refill; every shard stays near its sweep size.
        assert!(limiter.tracked_clients() <= 1000 + SHARDS * SWEEP_ABOVE * 2, "{}", limiter.tracked_clients());
    }

    #[test]
    fn shares_add_up_to_the_bound() {
        assert_eq!(limiter(1.0, 1.0).shards.len(), SHARDS);
        assert_eq!(limiter(1.0, 1.0).max_clients(), DEFAULT_MAX_CLIENTS);
        for max_clients in [1, 3, 1000, 1023, 1024, 5000, 16_385, 99_999] {
            let limiter = bounded(1.0, 1.0, max_clients);
            assert_eq!(limiter.max_clients(), max_clients);
            assert!((1..=SHARDS).contains(&limiter.shards.len()));
        }
        assert_eq!(bounded(1.0, 1.0, 1000).shards.len(), 1, "a small bound is one shard, exact");
    }

    #[test]
    fn four_hundred_thousand_new_addresses_never_exceed_the_bound() {
        // Buckets that take a minute to refill, and no time passing: nothing can be swept.
        let limiter = bounded(1.0 / 60.0, 1.0, DEFAULT_MAX_CLIENTS);
        let start = Instant::now();
        let (mut admitted, mut refused) = (0, 0);
        for number in 0..400_000u32 {
            match limiter.check(address(0x0a00_0000 + number), start) {
                Decision::Allowed => admitted += 1,
                Decision::Limited { retry_after } => {
                    refused += 1;
                    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60), "{retry_after:?}");
                }
            }
            let tracked = limiter.tracked_clients();
            assert!(tracked <= DEFAULT_MAX_CLIENTS, "{tracked} tracked after {} addresses", number + 1);
            assert_eq!(tracked, admitted, "every admitted client, and only those, is tracked");
        }
        assert_eq!(admitted, DEFAULT_MAX_CLIENTS, "each shard filled its share");
        assert_eq!(refused, 300_000, "every client past the bound was limited");
        assert!(matches!(limiter.check(address(0x0b00_0000), start), Decision::Limited { .. }));

        // A client already tracked is served by its own bucket, full table or not.
        let known = address(0x0a00_0000);
        assert_eq!(limiter.check(known, start + Duration::from_secs(61)), Decision::Allowed);

        // Once the buckets have refilled, a sweep makes room: new clients are admitted again.
        let later = start + Duration::from_secs(61);
        for number in 0..1000u32 {
            assert_eq!(limiter.check(address(0x0c00_0000 + number), later), Decision::Allowed, "new client {number}");
        }
        assert!(limiter.tracked_clients() <= DEFAULT_MAX_CLIENTS);
        assert!(limiter.tracked_clients() < 10_000, "refilled buckets were swept: {}", limiter.tracked_clients());
    }

    #[test]
    fn a_small_bound_is_exact_and_refuses_until_a_bucket_refills() {
        let limiter = bounded(1.0, 2.0, 3);
        let start = Instant::now();
        for number in 1..=3 {
            assert_eq!(limiter.check(address(number), start), Decision::Allowed);
        }
        match limiter.check(address(4), start) {
            Decision::Limited { retry_after } => assert_eq!(retry_after, Duration::from_secs(1), "until one refills"),
            Decision::Allowed => panic!("a fourth client is past the bound"),
        }
        assert_eq!(limiter.check(address(1), start), Decision::Allowed, "a known client keeps its bucket");
        assert_eq!(limiter.tracked_clients(), 3);
        // Client 2 and 3 refill one second on; client 1, used twice, two seconds on.
        let refilled = start + Duration::from_secs(1);
        assert_eq!(limiter.check(address(4), refilled), Decision::Allowed);
        assert_eq!(limiter.check(address(5), refilled), Decision::Allowed);
        assert!(matches!(limiter.check(address(6), refilled), Decision::Limited { .. }), "client 1 is still there");
        assert_eq!(limiter.tracked_clients(), 3);
    }
}
