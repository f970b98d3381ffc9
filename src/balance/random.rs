//! A small per-thread random number generator for `random` and `p2c`.
//!
//! Selection needs cheap, uncorrelated numbers, not secrets: xorshift64* per thread, seeded from
//! the clock and the thread's identity, so threads never share (or lock) generator state.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // std's RandomState is seeded randomly per process; hashing the thread id with it gives each
    // thread its own starting point.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    );
    std::hash::Hash::hash(&std::thread::current().id(), &mut hasher);
    hasher.finish() | 1
}

/// A uniformly distributed 64-bit number.
pub fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A number in `[0, 1)`, with 53 random bits.
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A number in `0..bound` (`bound` > 0), by Lemire's multiply-shift (no division, negligible bias).
pub fn below(bound: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(bound)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_numbers_stay_in_range_and_cover_it() {
        let mut seen = [0usize; 5];
        for _ in 0..5_000 {
            let number = unit();
            assert!((0.0..1.0).contains(&number));
            seen[(number * 5.0) as usize] += 1;
            assert!(below(7) < 7);
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
    }
}
