//! The requests `compare` sends: a deterministic sequence per client, the same for every algorithm.
//!
//! Each client draws from its own xorshift generator, seeded from one constant and the client's
//! number, so client 3's tenth request is `GET /item/417` from `10.0.3.25` under every algorithm
//! and in every run. Keys spread requests over many URLs (for URL-hashing algorithms); addresses
//! in `X-Forwarded-For` stand for many visitors (for address-hashing ones), client `c` speaking
//! for visitors `10.0.c.0` to `10.0.c.(visitors - 1)`. Pure: no I/O here.

use std::net::Ipv4Addr;

/// The seed every run starts from; changing it changes the requests, not their statistics.
pub const SEED: u64 = 0x5eed_cafe_f00d_0001;

/// Marsaglia's xorshift64: tiny, fast, and the same on every machine. Not for secrets.
#[derive(Debug, Clone)]
pub struct Xorshift {
    state: u64,
}

impl Xorshift {
    /// A generator starting from `seed` (zero, which xorshift cannot leave, is replaced).
    pub fn new(seed: u64) -> Xorshift {
        Xorshift { state: if seed == 0 { SEED } else { seed } }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A number in `0..bound` (`bound` ≥ 1); the slight modulo bias does not matter here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The shape of the requests: how many distinct URLs and visitors there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Requests go to `/item/0` … `/item/(keys - 1)`.
    pub keys: u64,
    /// Distinct `X-Forwarded-For` addresses per client, at most 256.
    pub visitors_per_client: u16,
}

/// One request to send: its path and the visitor it claims to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub path: String,
    pub forwarded_for: Ipv4Addr,
}

impl Workload {
    /// The endless request sequence of client number `client` (0 to 255).
    pub fn requests(&self, client: u8) -> impl Iterator<Item = PlannedRequest> + use<> {
        let seed = SEED ^ (u64::from(client) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut random = Xorshift::new(seed);
        let (keys, visitors) = (self.keys, u64::from(self.visitors_per_client.clamp(1, 256)));
        std::iter::repeat_with(move || {
            let key = random.below(keys);
            let visitor = random.below(visitors) as u8;
            PlannedRequest { path: format!("/item/{key}"), forwarded_for: Ipv4Addr::new(10, 0, client, visitor) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: Workload = Workload { keys: 1000, visitors_per_client: 64 };

    #[test]
    fn xorshift_is_the_published_generator() {
        // x = 1: x ^= x << 13 → 8193; x ^= x >> 7 → 8257; x ^= x << 17 → 1082269761.
        assert_eq!(Xorshift::new(1).next_u64(), 1_082_269_761);
        let mut zero = Xorshift::new(0);
        assert_ne!(zero.next_u64(), 0, "a zero seed would stay zero forever");
    }

    #[test]
    fn the_same_client_gets_the_same_requests_every_time() {
        let first: Vec<PlannedRequest> = WORKLOAD.requests(3).take(500).collect();
        let again: Vec<PlannedRequest> = WORKLOAD.requests(3).take(500).collect();
        assert_eq!(first, again);
        let other: Vec<PlannedRequest> = WORKLOAD.requests(4).take(500).collect();
        assert_ne!(
            first.iter().map(|request| &request.path).collect::<Vec<_>>(),
            other.iter().map(|request| &request.path).collect::<Vec<_>>(),
            "clients differ"
        );
    }

    #[test]
    fn requests_stay_within_the_key_space_and_the_clients_visitors() {
        let mut keys = std::collections::HashSet::new();
        let mut visitors = std::collections::HashSet::new();
        for request in WORKLOAD.requests(7).take(5000) {
            let key: u64 = request.path.strip_prefix("/item/").unwrap().parse().unwrap();
            assert!(key < WORKLOAD.keys, "{request:?}");
            let [ten, zero, client, visitor] = request.forwarded_for.octets();
            assert_eq!((ten, zero, client), (10, 0, 7), "{request:?}");
            assert!(u16::from(visitor) < WORKLOAD.visitors_per_client, "{request:?}");
            keys.insert(key);
            visitors.insert(visitor);
        }
        assert!(keys.len() > 900, "keys are spread: {}", keys.len());
        assert_eq!(visitors.len(), 64, "every visitor appears");
    }
}
