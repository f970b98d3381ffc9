//! Hashes that every process agrees on, and the rendezvous (highest random weight) choice.
//!
//! The hashing algorithms (`ip_hash`, `url_hash`, `sticky`, `maglev`) must send a key to the same
//! backend from any number of load balancer instances, on any machine and from any build, so none
//! of them uses std's randomly seeded hasher: keys go through FNV-1a, then a fixed 64-bit mixer.

use std::net::IpAddr;

/// FNV-1a, 64 bits: the same on every machine, process and build, unlike std's seeded hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finaliser: spreads every input bit over the whole output, so that hashes of
/// similar keys (10.0.0.1, 10.0.0.2, …) land far apart.
pub fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// The hash of a byte-string key, well mixed.
pub fn key_hash(key: &[u8]) -> u64 {
    mix(fnv1a(key))
}

/// The bytes a client address is hashed by: an IPv4-mapped IPv6 address as its IPv4 form.
pub fn ip_octets(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The hash of a client address, well mixed (see [`ip_octets`]).
pub fn ip_hash(ip: IpAddr) -> u64 {
    key_hash(&ip_octets(ip))
}

/// Weighted rendezvous hashing: the score of `backend` (its identity hash) for `key`. The
/// backend with the highest score among those eligible takes the key, so when one leaves only
/// its own keys move, each to the runner-up, and when it returns exactly those keys come back.
///
/// The score is `-weight / ln(u)`, `u` uniform in (0, 1) from the pair's hash: a backend's
/// chance to win is its share of the total weight (Schindelhauer and Schomaker, 2005).
pub fn rendezvous_score(key: u64, backend: u64, weight: f64) -> f64 {
    let pair = mix(key ^ backend.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15);
    // 53 random bits, never 0 and never 1.
    let uniform = ((pair >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / uniform.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn hashes_are_fixed_values_not_seeded_per_process() {
        // Pinned outputs: a change here would move every key of every running instance.
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
        assert_eq!(ip_hash(IpAddr::from([10, 0, 0, 1])), ip_hash("::ffff:10.0.0.1".parse().unwrap()));
        assert_ne!(ip_hash(IpAddr::from([10, 0, 0, 1])), ip_hash(IpAddr::from([10, 0, 0, 2])));
    }

    #[test]
    fn rendezvous_scores_grow_with_weight() {
        let key = key_hash(b"/cart");
        assert!(rendezvous_score(key, 7, 2.0) > rendezvous_score(key, 7, 1.0));
        assert!(rendezvous_score(key, 7, 1.0) > 0.0);
    }
}
